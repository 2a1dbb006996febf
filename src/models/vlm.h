// One interface over the vision-language families lowbit runs (what `generate --image`, `eval
// ppl` and `inspect` need), so the CLI does not know the families apart:
//   LLaVA-1.5 (LlavaForConditionalGeneration, and the original LlavaLlamaForCausalLM layout with
//   a --vision-tower directory), LLaVA-NeXT (LlavaNextForConditionalGeneration) and Idefics3 /
//   SmolVLM (Idefics3ForConditionalGeneration).
// Use: set_images (runs the family's image processor, keeps the pixels), prompt_ids (the rendered
// prompt with each `<image>` expanded as the family's HF processor does), then embed (token
// embeddings with the image features written into the image tokens) for the language model.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/tokenizer.h"
#include "models/clip.h"
#include "models/llama.h"
#include "models/weights.h"

namespace lowbit {

// The towers of a VLM as the quantization driver and the checkpoint code walk them, without
// knowing the family: vision encoder layers → projector → decoder layers.
struct VlmParts {
  std::string family;                   // "llava" | "llava_next" | "idefics3" | "llava_original"
  ClipVisionTower* vision = nullptr;
  int64_t vision_layers = 0;            // layers whose output the image features read (the rest never run)
  Block* projector = nullptr;           // LlavaProjector | Idefics3Connector
  Linear* projector_out = nullptr;      // the linear that writes the image features into the LM's stream
  LlamaModel* language = nullptr;
  Tensor* stream_rows = nullptr;        // LLaVA-NeXT image_newline [d]: also written into the stream
  // File names: the LM's "model.X" is language_root + "X", its lm_head head_root + "lm_head.*".
  std::string language_root, head_root;
  std::string image_newline_name;       // LLaVA-NeXT
  int32_t image_token_id = -1;          // the id of the prompt's image tokens
  std::string vision_dir;               // original LLaVA layout: the CLIP tower's own directory
};

class Vlm {
 public:
  virtual ~Vlm() = default;
  virtual std::string architecture() const = 0;
  virtual LlamaModel& language() = 0;
  // Preprocesses the images with the processor of the model directory (IoError when it has no
  // processor config) and returns the image tokens (features) of each one.
  virtual std::vector<int64_t> set_images(const std::vector<Image>& images) = 0;
  // The prompt's ids for the images last set (none before set_images): LLaVA-1.5 / NeXT repeat
  // each `<image>` by its image's token count and encode (BOS when the tokenizer adds one);
  // Idefics3 writes its `<fake_token_around_image>` / `<row_R_col_C>` / `<global-img>` string
  // per image, encodes, and puts the tokenizer's BOS first unless the text already begins with
  // it (its chat template writes BOS as text). ArgError when `<image>` placeholders and images
  // differ in number.
  virtual std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text) const = 0;
  // Embeddings [T, d] of ids with the images' features in their image tokens (ArgError when the
  // counts differ).
  virtual std::vector<float> embed(const std::vector<int32_t>& ids, const ForwardOptions& opt = {}) const = 0;
  // The towers (pointers into this object).
  virtual VlmParts parts() = 0;
};

// The family of dir (is_llava_dir / is_llava_next_dir / is_idefics3_dir), loaded whole.
// vision_tower: the original LLaVA layout's --vision-tower directory (refused for the others).
// A lowbit quantized VLM checkpoint (quant/vlm_quant.h) loads here too: packed codes and the
// runtime quantizers installed.
std::unique_ptr<Vlm> load_vlm(const std::string& dir, const std::string& vision_tower = "");
// Any family with a quantized checkpoint's packed codes (by file tensor name); the original
// LLaVA layout's tower from the checkpoint's own subdirectory (quantized_vision_tower_dir).
// No runtime quantizers installed (load_quantized_vlm does that).
std::unique_ptr<Vlm> load_vlm_packed(const std::string& dir, const PackedSource& packed);

}  // namespace lowbit
