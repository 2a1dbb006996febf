// LLaVA-1.5 (HF LlavaForConditionalGeneration): CLIP vision tower → 2-layer MLP projector →
// LLaMA decoder, with the image features written into the embedding rows of the prompt's
// image tokens:
//   v       = concat_l hidden_states_l(pixels) [drop CLS when strategy = default]   [F, d_v·|layers|]
//   feat    = linear_2(GELU(linear_1(v)))                                          [F, d]
//   x_t     = feat_j   if ids_t = image_token_index (the j-th such token), else embed(ids_t)
//   logits  = LLaMA(x)
// The prompt's image placeholders are already expanded to one token per feature
// (F = (image_size/patch)² under strategy default, +1 under full).
//
// The language model is an ordinary LlamaModel loaded through a name-mapping tensor source,
// so eval ppl, the KV cache, generation and quantization run on it unchanged; text alone
// goes straight to language.forward.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/image.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/block.h"
#include "models/clip.h"
#include "models/config.h"
#include "models/llama.h"
#include "nn/activation.h"
#include "vision/clip_processor.h"

namespace lowbit {

// The original LLaVA repository's layout (liuhaotian/llava-v1.5-*: LlavaLlamaForCausalLM) holds
// the same model under other names and keys:
//   model.embed_tokens / model.layers.* / model.norm / lm_head   the LLaMA decoder, under LLaMA's own names
//   model.mm_projector.0 / .2                                     the projector (mm_projector_type mlp2x_gelu)
//   config: LLaMA keys at the top level; mm_vision_tower (a hub name, e.g.
//   openai/clip-vit-large-patch14-336: the CLIP tower is not in the checkpoint), mm_hidden_size,
//   mm_vision_select_layer (= vision_feature_layer), mm_vision_select_feature (patch = strategy
//   default, cls_patch = full), image_aspect_ratio (pad: expand_to_square with the mean colour
//   before the CLIP steps), mm_use_im_start_end (must be false).
// The CLIP tower comes from a local directory in HF CLIPVisionModel (or CLIPModel) layout:
// config.json, safetensors with vision_model.*, preprocessor_config.json; its processor runs in
// the Slow flavour (original LLaVA preprocesses with PIL). Prompts are tokenized as LLaVA's
// tokenizer_image_token does: the text split at each `<image>`, each piece encoded on its own (BOS
// only before the first), joined by the image's tokens. Those tokens carry the id
// kOriginalImageTokenIndex (LLaVA's IMAGE_TOKEN_INDEX, outside the vocabulary; never embedded).
inline constexpr int32_t kOriginalImageTokenIndex = -200;

// A HF checkpoint class whose config LlavaConfig::from_json parses: architectures[0], or
// model_type when the config names no architecture.
struct LlavaFamily {
  const char* architecture;
  const char* model_type;
};
inline constexpr LlavaFamily kLlavaFamily{"LlavaForConditionalGeneration", "llava"};
inline constexpr LlavaFamily kLlavaNextFamily{"LlavaNextForConditionalGeneration", "llava_next"};

struct LlavaConfig {
  // LlavaForConditionalGeneration | LlavaNextForConditionalGeneration | LlavaLlamaForCausalLM (original layout)
  std::string architecture;
  bool original_layout = false;
  std::string mm_vision_tower;  // original layout: the tower the checkpoint was trained with (a name)
  bool pad_to_square = false;   // original layout: image_aspect_ratio pad
  LlamaConfig text;           // text_config (HF LlamaConfig defaults filled in for absent keys)
  ClipVisionConfig vision;    // vision_config
  int32_t image_token_index = 32000;
  Activation projector_act = Activation::gelu;
  bool projector_bias = true;
  // hidden_states indices of the vision tower (−2: second-to-last layer's output), as in the
  // file (negative counts from the end of the L + 1 states); several are concatenated.
  std::vector<int64_t> vision_feature_layers = {-2};
  bool keep_cls = false;  // vision_feature_select_strategy: default (drop CLS) | full (keep it)

  // The text/vision/projector keys shared by LLaVA-1.5 and LLaVA-NeXT; the config must name
  // `family` (ConfigError otherwise). architecture is the file's (or family's) class name.
  static LlavaConfig from_json(const nlohmann::json& j, const std::string& path,
                               const LlavaFamily& family = kLlavaFamily);
  // Original layout: the checkpoint's config.json and the vision tower's vision config.
  static LlavaConfig from_original_json(const nlohmann::json& j, const std::string& path,
                                        const ClipVisionConfig& vision);
  static LlavaConfig load(const std::string& model_dir);
  // hidden_states index k ∈ [0, L] of each selected layer.
  std::vector<int64_t> feature_states() const;
  int64_t features_per_image() const { return vision.num_patches() + (keep_cls ? 1 : 0); }
};

// True when `model_dir`'s config.json names a LLaVA model (architecture or model_type "llava"),
// in either layout.
bool is_llava_dir(const std::string& model_dir);
// True for the original layout (architecture LlavaLlamaForCausalLM, or model_type llava with
// mm_vision_tower and no text_config).
bool is_llava_original_dir(const std::string& model_dir);

// linear_2(act(linear_1(v))) as a block: groups {linear_1} → {linear_2}. Boundaries:
// 0 {x = v [T, d_in]}, 1 {x = v, a = act(linear_1(v)) [T, d]}, 2 {x = feat [T, d]}.
class LlavaProjector : public Block {
 public:
  int64_t d_in = 0, d = 0;
  Activation act = Activation::gelu;
  Backend* backend = &default_backend();
  Linear linear_1, linear_2;

 private:
  template <class Self>
  static auto groups_of(Self& s) {
    using P = decltype(&s.linear_1);
    return std::vector<std::vector<P>>{{&s.linear_1}, {&s.linear_2}};
  }

 public:
  std::string kind() const override { return "llava_projector"; }
  std::unique_ptr<Block> clone() const override { return std::make_unique<LlavaProjector>(*this); }
  std::vector<std::vector<const Linear*>> groups() const override { return groups_of(*this); }
  std::vector<std::vector<Linear*>> groups() override { return groups_of(*this); }
  const float* group_input(int g, const BlockState& st, std::vector<float>& buf) const override;
  void advance(int g, BlockState& st, const BlockCtx& ctx) const override;
  int64_t state_floats(int boundary, int64_t T) const override;
};

class LlavaModel {
 public:
  LlavaConfig cfg;
  ClipVisionTower vision;
  LlavaProjector projector;
  LlamaModel language;
  std::string dir;
  std::string vision_dir;  // original layout: the --vision-tower directory
  // The file roots of the language model (HF layout: llava_names::kLanguageRoots; original
  // layout: "model." and ""), for saving.
  std::string language_root, head_root;
  // The image processor (Fast flavour for the HF layout, Slow + pad for the original one);
  // unset when the directory has no processor config (pixel_values() then fails).
  std::optional<ClipProcessorConfig> processor;

  // Either layout. The original layout needs `vision_tower_dir` (ArgError naming --vision-tower
  // when it is empty); the HF layout refuses one (ArgError: it would be ignored).
  // packed: a quantized checkpoint's codes by file tensor name (either layout; the original
  // layout's tower linears are named as in the tower directory's file, vision_model.*).
  static LlavaModel load(const std::string& dir, const std::string& vision_tower_dir = "",
                         const PackedSource& packed = {});
  // packed: a quantized checkpoint's codes by file tensor name (empty: none).
  static LlavaModel from_store(const LlavaConfig& cfg, const WeightStore& store, const std::string& dir,
                               const PackedSource& packed = {});
  // The language model alone (either layout; no vision tower needed): eval ppl on text.
  static LlamaModel load_language(const std::string& dir);

  // pixel_values [n, C, S, S] f32 of decoded images through the processor (pad first for the
  // original layout's image_aspect_ratio pad).
  Tensor pixel_values(const std::vector<Image>& images) const;
  // The prompt's ids with the k-th `<image>` of `text` expanded to tokens_per_image[k] image
  // tokens (LLaVA-NeXT: each image its own count), otherwise as below.
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text,
                                  const std::vector<int64_t>& tokens_per_image) const;
  // The prompt's ids with each `<image>` of `text` expanded to features_per_image() image tokens,
  // exactly as the HF processor (HF layout: the placeholder repeated in the text, then encoded)
  // or LLaVA's tokenizer_image_token (original layout) does; BOS first when the tokenizer adds
  // one. ArgError when the placeholders are not n_images; ConfigError when the tokenizer does
  // not encode `<image>` as the image token.
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text, int64_t n_images) const;

  // Projector output for pixel_values [n_images, C, S, S] (any float dtype; S = image_size):
  // [n_images · F, d] f32 (ShapeError naming the tensor when the shape is not that).
  Tensor image_features(const Tensor& pixel_values, const ForwardOptions& opt = {}) const;
  // x [T, d]: the token embeddings of ids with the rows of image tokens replaced, in order,
  // by the rows of features [n, d]. ArgError when the prompt's image tokens are not n; its message
  // gives *tokens_per_image (LLaVA-NeXT's per-image counts) when given, else features_per_image()
  // per image.
  void embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features, float* x,
                        const std::vector<int64_t>* tokens_per_image = nullptr) const;
  // Logits [T, vocab] (or [1, vocab] with last_only) of the prompt ids with the images'
  // features in its image tokens; an undefined pixel_values means text only. Advances the cache.
  Tensor forward(const int32_t* ids, int64_t T, const Tensor& pixel_values, KVCache* cache = nullptr,
                 const ForwardOptions& opt = {});

  // Vision layers, the projector, then the decoder layers (what the quantization driver walks).
  std::vector<Block*> blocks();
};

}  // namespace lowbit
