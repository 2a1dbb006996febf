// Idefics3 / SmolVLM (HF Idefics3ForConditionalGeneration): SigLIP vision tower → connector
// (pixel shuffle + bias-free linear) → LLaMA decoder with tied embeddings, the image features
// written into the embedding rows of the prompt's <image> tokens:
//   h_i     = post_layernorm(SigLIP(frame_i))                              [G², d_v]   (G = image_size/patch)
//   s_i     = pixel_shuffle(h_i, r)                                        [G²/r², d_v·r²]
//             row (y, x) of the (G/r) x (G/r) grid, column (i·r + j)·d_v + e  =  h_i[(y·r + i)·G + x·r + j, e]
//             (Idefics3Connector.pixel_shuffle's view/permute/reshape sequence, r = scale_factor)
//   feat_i  = s_i · W_projᵀ                                                [G²/r², d]  (modality_projection.proj)
//   x_t     = feat rows in order for the tokens equal to image_token_id, else embed(ids_t)
//   logits  = LLaMA(x), lm_head tied to embed_tokens
// The frames are an image's tiles and its global image (vision/idefics3_processor.h); a frame
// whose pixel values are all exactly 0 is a batch-padding image and is skipped, as HF does.
// pixel_attention_mask (optional): every real frame's mask must be all ones — what the
// processor produces for every image, since all its frames are max_image_size squares; a frame
// with padded pixels (a partial mask, which needs position-id bucketing and masked attention)
// is refused with ArgError.
//
// Like LLaVA, the language model is an ordinary LlamaModel under LLaMA's own names (a mapping
// tensor source), so eval ppl, the KV cache, generation and quantization run on it unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "models/block.h"
#include "models/clip.h"
#include "models/config.h"
#include "models/llama.h"

namespace lowbit {

// Tensor-name roots of Idefics3 checkpoints (transformers 4.4x and 5 save the same layout):
//   model.vision_model.* (clip_names under it), model.connector.modality_projection.proj.weight,
//   model.text_model.* (llama_names with "model." replaced), lm_head.weight (absent when tied).
namespace idefics3_names {
inline constexpr const char* kVisionRoot = "model.vision_model.";
inline constexpr const char* kProjection = "model.connector.modality_projection.proj";
inline constexpr const char* kTextRoot = "model.text_model.";
inline constexpr const char* kHeadRoot = "";  // "lm_head.weight"
}  // namespace idefics3_names

struct Idefics3Config {
  std::string architecture;  // Idefics3ForConditionalGeneration
  LlamaConfig text;           // text_config (LlamaConfig defaults for absent keys; tie from the top level)
  ClipVisionConfig vision;    // vision_config (SigLIP switches)
  int64_t scale_factor = 2;
  int32_t image_token_id = 128257;

  static Idefics3Config from_json(const nlohmann::json& j, const std::string& path);
  static Idefics3Config load(const std::string& model_dir);
  int64_t features_per_frame() const { return vision.num_patches() / (scale_factor * scale_factor); }
  int64_t connector_in() const { return vision.hidden_size * scale_factor * scale_factor; }
};

// True when `model_dir`'s config.json names an Idefics3 model (architecture or model_type "idefics3").
bool is_idefics3_dir(const std::string& model_dir);

// Idefics3Connector.pixel_shuffle of one frame's states x [G·G, E] (row-major G x G grid) by r:
// out [(G/r)², E·r²] (see the formula above).
void idefics3_pixel_shuffle(const float* x, int64_t G, int64_t E, int64_t r, float* out);

// The connector's linear as a block: group {proj}. Boundaries: 0 {x = pixel-shuffled states
// [T, d_in]}, 1 {x = feat [T, d]}.
class Idefics3Connector : public Block {
 public:
  int64_t d_in = 0, d = 0;
  Backend* backend = &default_backend();
  Linear proj;

 private:
  template <class Self>
  static auto groups_of(Self& s) {
    using P = decltype(&s.proj);
    return std::vector<std::vector<P>>{{&s.proj}};
  }

 public:
  std::string kind() const override { return "idefics3_connector"; }
  std::unique_ptr<Block> clone() const override { return std::make_unique<Idefics3Connector>(*this); }
  std::vector<std::vector<const Linear*>> groups() const override { return groups_of(*this); }
  std::vector<std::vector<Linear*>> groups() override { return groups_of(*this); }
  const float* group_input(int g, const BlockState& st, std::vector<float>& buf) const override;
  void advance(int g, BlockState& st, const BlockCtx& ctx) const override;
  int64_t state_floats(int boundary, int64_t T) const override;
};

class Idefics3Model {
 public:
  Idefics3Config cfg;
  ClipVisionTower vision;
  Idefics3Connector connector;
  LlamaModel language;
  std::string dir;

  static Idefics3Model load(const std::string& dir);
  static Idefics3Model from_store(const Idefics3Config& cfg, const WeightStore& store, const std::string& dir,
                                  const PackedSource& packed = {});

  // Connector output for pixel_values [n, C, S, S] or [1, n, C, S, S] (any float dtype;
  // S = image_size) with an optional pixel_attention_mask [n, S, S] or [1, n, S, S] (u8, bool,
  // i32, i64; undefined = all valid): [n_real · F, d] f32, F = features_per_frame(), n_real =
  // frames that are not all zero. ShapeError for wrong shapes, ArgError for a partial mask.
  Tensor image_features(const Tensor& pixel_values, const Tensor& pixel_attention_mask = Tensor(),
                        const ForwardOptions& opt = {}) const;
  // x [T, d]: the token embeddings of ids with the rows of image tokens replaced, in order, by
  // the rows of features [n, d]. ArgError when the prompt's image tokens are not n.
  void embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features, float* x) const;
  // Logits [T, vocab] (or [1, vocab] with last_only) of the prompt ids with the frames' features
  // in its image tokens; an undefined pixel_values means text only. Advances the cache.
  Tensor forward(const int32_t* ids, int64_t T, const Tensor& pixel_values,
                 const Tensor& pixel_attention_mask = Tensor(), KVCache* cache = nullptr,
                 const ForwardOptions& opt = {});

  // Vision layers, the connector, then the decoder layers (what the quantization driver walks).
  std::vector<Block*> blocks();
};

}  // namespace lowbit
