// Quantized checkpoints: a self-contained model directory that `lowbit eval ppl`
// and `lowbit generate` load and run with the same fake-quantized numerics.
//
//   config.json            the LLaMA config (tie_word_embeddings false after rotation)
//   tokenizer files        copied from the source model
//   model.safetensors      unquantized tensors as usual; every quantized linear X as
//                            X.qweight  U8  [out, ceil(in·bits/8)]  codes, bit-packed LSB-first
//                                       (unsigned: symmetric codes are stored as q + 2^(bits-1))
//                            X.scales   F32 [out, groups]
//                            X.qzeros   I32 [out, groups]   (stored like the codes)
//                            X.g_idx    I32 [in]            group of each input column
//                          (nn/linear.h PackedWeight; loading keeps them packed and mmap'd)
//   lowbit_quant.json      {"format": "lowbit-fakequant", "format_version": 1, the full
//                           versioned quantization config, rotation seed and Hadamard
//                           constructions, per-site auto-asym decisions}
// The directory is written under a temporary name and swapped in at the end, so a
// failed or killed run leaves either the old or the new complete checkpoint at --out.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "models/llama.h"
#include "quant/driver.h"

namespace lowbit {

// Refuses (ArgError) an --out that exists and is not a directory, or is a non-empty
// directory other than a lowbit checkpoint holding only files lowbit writes. Call it
// before any compute; save_quantized calls it again.
void check_output_dir(const std::string& out_dir);

// Writes to <out>.tmp.<pid>, then swaps it with an existing checkpoint atomically and
// deletes only lowbit's files of the old one; stale temp dirs of dead runs are removed.
void save_quantized(const LlamaModel& m, const QuantizedModel& q, const std::string& src_dir,
                    const std::string& out_dir);

// The atomic directory write behind save_quantized: `fill` writes the checkpoint's files into a
// fresh temporary directory, which then replaces --out (see above). Only files named in the
// owned list (checkpoint.cpp) may be written.
void write_checkpoint_atomically(const std::string& out_dir,
                                 const std::function<void(const std::filesystem::path& tmp)>& fill);

// Copies those of `names` that exist in src_dir into dst, owner-writable (the source may be a
// read-only model store; the copy is ours to replace).
void copy_model_files(const std::string& src_dir, const std::filesystem::path& dst, const std::vector<std::string>& names);
// The tokenizer files every written model carries.
const std::vector<std::string>& tokenizer_file_names();
// The fields every quantized checkpoint's lowbit_quant.json has (format, source, config, summary,
// rotation, auto-asym decisions, the quantized linears, the driver's report).
nlohmann::json quant_meta_common(const QuantRuntime& rt, const std::string& src_dir, const nlohmann::json& qlin,
                                 const nlohmann::json& report);

// Loads a lowbit quantized checkpoint: codes stay packed, runtime quantizers installed.
LlamaModel load_quantized(const std::string& dir);
bool is_quantized_checkpoint(const std::string& dir);

// Bit-packing of unsigned codes (a plain reference for tests).
std::vector<uint8_t> pack_codes(const std::vector<int32_t>& codes, int bits);
std::vector<int32_t> unpack_codes(const uint8_t* packed, size_t n, int bits);

}  // namespace lowbit
