// safetensors reading (mmap, single file or sharded index) and writing.
//
// File layout: u64 little-endian header size N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data section; offsets are relative to the data section start.
// The header is untrusted: parse_safetensors_header validates everything
// against the file size before any tensor byte is touched.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace lowbit {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data section
};

struct SafetensorsHeader {
  uint64_t header_size = 0;   // N (JSON bytes)
  uint64_t data_start = 0;    // 8 + N
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// Largest JSON header accepted (the format's reference implementation uses 100 MB).
constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

// Parses and validates the header of a safetensors image of `size` bytes
// (only the first 8 + N bytes are read). `path` is used in error messages.
// Throws FormatError on anything inconsistent: header size beyond the cap or the
// file, bad JSON, unknown dtype, negative/overflowing shapes, offsets that do
// not match dtype*numel, run past the file, overlap, or leave holes.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& path);

// One mmap'd .safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool has(const std::string& name) const { return header_.tensors.count(name) != 0; }
  // Zero-copy view into the mapping (kept alive by the returned tensor). Throws IoError if absent.
  Tensor get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  SafetensorsHeader header_;
  std::shared_ptr<void> map_;  // munmap on release
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

// All weights of a model directory: model.safetensors, or the shards listed in
// model.safetensors.index.json ("weight_map": name -> shard file).
class WeightStore {
 public:
  static WeightStore open_dir(const std::string& dir);
  static WeightStore open_file(const std::string& path);
  bool has(const std::string& name) const;
  Tensor get(const std::string& name) const;  // IoError naming the tensor and dir if missing
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;     // sorted
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> index_;  // name -> files_ index
};

// Writes a safetensors file atomically (temp file in the same dir, then rename),
// tensors in the given order, 8-byte aligned header. Throws IoError on failure
// and leaves no partial file behind.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace lowbit
