#include "models/vlm.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "models/idefics3.h"
#include "models/llava.h"
#include "models/llava_next.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"
#include "vision/anyres.h"
#include "vision/idefics3_processor.h"

namespace lowbit {

namespace {

VlmParts llava_parts(LlavaModel& m, const char* family) {
  VlmParts p;
  p.family = family;
  p.vision = &m.vision;
  const std::vector<int64_t> states = m.cfg.feature_states();
  p.vision_layers = *std::max_element(states.begin(), states.end());
  p.projector = &m.projector;
  p.projector_out = &m.projector.linear_2;
  p.language = &m.language;
  p.language_root = m.language_root;
  p.head_root = m.head_root;
  p.image_token_id = m.cfg.image_token_index;
  p.vision_dir = m.vision_dir;
  return p;
}

class LlavaVlm : public Vlm {
 public:
  explicit LlavaVlm(LlavaModel m) : m_(std::move(m)) {}
  std::string architecture() const override { return m_.cfg.architecture; }
  LlamaModel& language() override { return m_.language; }
  std::vector<int64_t> set_images(const std::vector<Image>& images) override {
    n_ = int64_t(images.size());
    pixels_ = n_ ? m_.pixel_values(images) : Tensor();
    return std::vector<int64_t>(size_t(n_), m_.cfg.features_per_image());
  }
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text) const override {
    return m_.prompt_ids(tok, text, n_);
  }
  std::vector<float> embed(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override {
    const Tensor feat = n_ ? m_.image_features(pixels_, opt) : Tensor();
    std::vector<float> x(ids.size() * size_t(m_.cfg.text.hidden_size));
    m_.embed_multimodal(ids.data(), int64_t(ids.size()), feat, x.data());
    return x;
  }
  VlmParts parts() override { return llava_parts(m_, m_.cfg.original_layout ? "llava_original" : "llava"); }

 private:
  LlavaModel m_;
  Tensor pixels_;
  int64_t n_ = 0;
};

class LlavaNextVlm : public Vlm {
 public:
  LlavaNextVlm(LlavaNextModel m, std::string dir) : m_(std::move(m)), dir_(std::move(dir)) {}
  std::string architecture() const override { return m_.cfg.architecture; }
  LlamaModel& language() override { return m_.llava.language; }
  std::vector<int64_t> set_images(const std::vector<Image>& images) override {
    pixels_.clear();
    sizes_.clear();
    if (!images.empty() && !processor_) processor_ = AnyresProcessorConfig::load(dir_);
    for (const Image& im : images) {
      sizes_.push_back({im.height, im.width});
      pixels_.push_back(anyres_preprocess(im, *processor_));  // [1 + R·C, 3, S, S]
    }
    return m_.image_tokens_per_image(sizes_);
  }
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text) const override {
    return m_.prompt_ids(tok, text, sizes_);
  }
  std::vector<float> embed(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override {
    const int64_t d = m_.cfg.llava.text.hidden_size;
    std::vector<float> feat;  // every image's packed features, in order
    for (size_t i = 0; i < pixels_.size(); ++i) {
      const Tensor f = m_.single_image_features(pixels_[i], sizes_[i], opt);
      feat.insert(feat.end(), f.f32(), f.f32() + f.numel());
    }
    const Tensor features = feat.empty() ? Tensor() : Tensor::from_vector(feat, {int64_t(feat.size()) / d, d});
    std::vector<float> x(ids.size() * size_t(d));
    m_.embed_multimodal(ids.data(), int64_t(ids.size()), features, sizes_, x.data());
    return x;
  }
  VlmParts parts() override {
    VlmParts p = llava_parts(m_.llava, "llava_next");
    p.stream_rows = &m_.image_newline;
    p.image_newline_name = m_.image_newline_name;
    return p;
  }

 private:
  LlavaNextModel m_;
  std::string dir_;
  std::optional<AnyresProcessorConfig> processor_;
  std::vector<Tensor> pixels_;
  std::vector<Resolution> sizes_;
};

class Idefics3Vlm : public Vlm {
 public:
  Idefics3Vlm(Idefics3Model m, std::string dir) : m_(std::move(m)), dir_(std::move(dir)) {}
  std::string architecture() const override { return m_.cfg.architecture; }
  LlamaModel& language() override { return m_.language; }
  std::vector<int64_t> set_images(const std::vector<Image>& images) override {
    grids_.clear();
    frames_.clear();
    if (!images.empty() && !processor_) {
      processor_ = Idefics3ProcessorConfig::load(dir_);
      LOWBIT_CHECK(processor_->image_seq_len == m_.cfg.features_per_frame(), ConfigError,
                   "{}: the processor's image_seq_len {} differs from the model's {} features per frame "
                   "((image_size/patch)² / scale_factor²)",
                   dir_, processor_->image_seq_len, m_.cfg.features_per_frame());
      LOWBIT_CHECK(processor_->max_image_size == m_.cfg.vision.image_size, ConfigError,
                   "{}: the processor's max_image_size {} differs from the vision tower's image_size {}", dir_,
                   processor_->max_image_size, m_.cfg.vision.image_size);
    }
    std::vector<int64_t> tokens;
    for (const Image& im : images) {
      Idefics3Pixels p = idefics3_preprocess(im, *processor_);
      grids_.push_back({p.rows, p.cols});
      tokens.push_back(p.frames() * m_.cfg.features_per_frame());
      frames_.push_back(std::move(p.pixel_values));
    }
    return tokens;
  }
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text) const override {
    const std::string expanded =
        idefics3_expand_prompt(text, grids_, processor_ ? processor_->image_seq_len : m_.cfg.features_per_frame());
    std::vector<int32_t> ids = tok.encode(expanded);
    const int32_t bos = tok.bos_id();
    if (bos >= 0 && tok.add_bos() && (ids.empty() || ids[0] != bos)) ids.insert(ids.begin(), bos);
    return ids;
  }
  std::vector<float> embed(const std::vector<int32_t>& ids, const ForwardOptions& opt) const override {
    Tensor features;
    if (!frames_.empty()) {
      int64_t n = 0;
      for (const Tensor& f : frames_) n += f.size(0);
      const Shape& s = frames_[0].shape();
      Tensor all = Tensor::zeros({n, s[1], s[2], s[3]});
      int64_t at = 0;
      for (const Tensor& f : frames_) {
        std::memcpy(all.data<float>() + at, f.data<float>(), size_t(f.numel()) * sizeof(float));
        at += f.numel();
      }
      features = m_.image_features(all, Tensor(), opt);
    }
    std::vector<float> x(ids.size() * size_t(m_.cfg.text.hidden_size));
    m_.embed_multimodal(ids.data(), int64_t(ids.size()), features, x.data());
    return x;
  }
  VlmParts parts() override {
    VlmParts p;
    p.family = "idefics3";
    p.vision = &m_.vision;
    p.vision_layers = m_.cfg.vision.num_layers;  // all layers, then post_layernorm
    p.projector = &m_.connector;
    p.projector_out = &m_.connector.proj;
    p.language = &m_.language;
    p.language_root = idefics3_names::kTextRoot;
    p.head_root = idefics3_names::kHeadRoot;
    p.image_token_id = m_.cfg.image_token_id;
    return p;
  }

 private:
  Idefics3Model m_;
  std::string dir_;
  std::optional<Idefics3ProcessorConfig> processor_;
  std::vector<std::pair<int64_t, int64_t>> grids_;
  std::vector<Tensor> frames_;
};

}  // namespace

std::unique_ptr<Vlm> load_vlm_packed(const std::string& dir, const PackedSource& packed) {
  if (is_llava_next_dir(dir)) {
    const LlavaNextConfig cfg = LlavaNextConfig::load(dir);
    const WeightStore st = WeightStore::open_dir(dir);
    return std::make_unique<LlavaNextVlm>(LlavaNextModel::from_store(cfg, st, dir, packed), dir);
  }
  if (is_idefics3_dir(dir)) {
    const Idefics3Config cfg = Idefics3Config::load(dir);
    const WeightStore st = WeightStore::open_dir(dir);
    return std::make_unique<Idefics3Vlm>(Idefics3Model::from_store(cfg, st, dir, packed), dir);
  }
  if (is_llava_original_dir(dir)) {  // its quantized CLIP tower in a subdirectory (quant/vlm_quant.h)
    const std::string tower = quantized_vision_tower_dir(dir);
    LOWBIT_CHECK(!tower.empty(), FormatError,
                 "{}: a quantized checkpoint of the original LLaVA layout must name its vision tower subdirectory "
                 "in config.json ('lowbit_vision_tower_dir')",
                 dir);
    return std::make_unique<LlavaVlm>(LlavaModel::load(dir, tower, packed));
  }
  return std::make_unique<LlavaVlm>(LlavaModel::load(dir, "", packed));
}

std::unique_ptr<Vlm> load_vlm(const std::string& dir, const std::string& vision_tower) {
  if (is_quantized_checkpoint(dir)) {
    LOWBIT_CHECK(vision_tower.empty(), ArgError, "--vision-tower: {} is a lowbit quantized checkpoint with its tower inside", dir);
    return load_quantized_vlm(dir);
  }
  const bool next = is_llava_next_dir(dir), idefics3 = !next && is_idefics3_dir(dir);
  if (next || idefics3) {
    LOWBIT_CHECK(vision_tower.empty(), ArgError,
                 "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} has its vision "
                 "tower inside",
                 dir);
    if (next) return std::make_unique<LlavaNextVlm>(LlavaNextModel::load(dir), dir);
    return std::make_unique<Idefics3Vlm>(Idefics3Model::load(dir), dir);
  }
  return std::make_unique<LlavaVlm>(LlavaModel::load(dir, vision_tower));
}

}  // namespace lowbit
