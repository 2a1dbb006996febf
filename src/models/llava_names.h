// Tensor-name roots of LlavaForConditionalGeneration checkpoints, spelled once. The same
// model is saved under several spellings; a loader probes them in this order:
//   transformers 4.4x (llava-hf)   vision_tower.vision_model.*        multi_modal_projector.*        language_model.model.* + language_model.lm_head
//   transformers ≥ 4.52            model.vision_tower.vision_model.*  model.multi_modal_projector.*  model.language_model.* + lm_head
//   transformers 5 save (tiny)     vision_tower.*                     multi_modal_projector.*        language_model.model.* + language_model.lm_head
// The language model's names are those of llama_names with "model." replaced by the
// decoder root and "lm_head" prefixed by the head root.
#pragma once

namespace lowbit::llava_names {

// Roots of the CLIP tower (followed by clip_names), probed for "<root>embeddings.class_embedding".
inline constexpr const char* kVisionRoots[] = {"vision_tower.vision_model.", "model.vision_tower.vision_model.",
                                               "vision_tower.", "model.vision_tower."};
// Roots of the projector, probed for "<root>linear_1.weight".
inline constexpr const char* kProjectorRoots[] = {"multi_modal_projector.", "model.multi_modal_projector."};
inline constexpr const char* kLinear1 = "linear_1";
inline constexpr const char* kLinear2 = "linear_2";

// Decoder root (replacing llama_names' "model.") and lm_head root, probed for "<decoder>embed_tokens.weight".
struct LanguageRoots {
  const char* decoder;
  const char* head;
};
inline constexpr LanguageRoots kLanguageRoots[] = {{"language_model.model.", "language_model."},
                                                   {"model.language_model.", ""}};

// Original LLaVA layout (LlavaLlamaForCausalLM): the projector is an nn.Sequential
// (Linear, GELU, Linear) at model.mm_projector; the decoder has LLaMA's own names; the CLIP tower
// lives in its own CLIPVisionModel/CLIPModel directory under vision_model.*.
inline constexpr const char* kOriginalProjectorRoot = "model.mm_projector.";
inline constexpr const char* kOriginalLinear1 = "0";
inline constexpr const char* kOriginalLinear2 = "2";
inline constexpr const char* kClipVisionModelRoot = "vision_model.";

}  // namespace lowbit::llava_names
