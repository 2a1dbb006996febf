// `lowbit export --format hf-dequantized`: a fake-quantized model written as a plain
// Hugging Face LLaMA checkpoint that transformers (and lm-eval) load without lowbit:
//
//   model.safetensors   every weight as F32: W_export = Ŵ (the dequantized codes,
//                       scales·(u − z)) for quantized linears, the stored weight otherwise;
//                       embeddings, biases; norms folded into the linears by a rotation
//                       are written as ones (RMSNorm·1 is the scale-free norm)
//   config.json         the model's config, dtype float32, no quantization keys
//   tokenizer files     copied from the source model
//
// Only what is in the weights can be exported. Online pieces — a linear's online
// transform (QuaRot's online Hadamards R4 / cross-head R2), activation quantizers, the
// layers' Q/K transform (R3) and K/V quantizers — have no place in a plain checkpoint;
// the export refuses a model that has any (export_blockers names them).
#pragma once
#include <string>
#include <vector>

#include "models/llama.h"

namespace lowbit {

// What stops a plain-HF export: one line per kind of online piece, naming the first
// module that has it and how many do ("online Hadamard on the input of
// model.layers.0.mlp.down_proj (and 4 more linears)"). Empty: exportable.
std::vector<std::string> export_blockers(const LlamaModel& m);

// Writes the checkpoint to out_dir (which must not exist or be empty): into
// <out>.tmp.<pid> first, renamed into place at the end. ArgError listing the blockers
// when export_blockers is not empty.
void export_hf_dequantized(const LlamaModel& m, const std::string& src_dir, const std::string& out_dir);

}  // namespace lowbit
