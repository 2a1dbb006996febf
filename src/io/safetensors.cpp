// safetensors: u64 LE header length N, N bytes of JSON header, then the data
// section. Header entries: name -> {dtype, shape, data_offsets [begin, end)}
// relative to the data section; optional "__metadata__" of string -> string.
// The header is untrusted input: everything is checked before any byte of
// tensor data is touched.
#include "io/safetensors.h"
#include "io/files.h"
#include "io/json_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lowbit {

namespace {
using json = nlohmann::json;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& path) {
  LOWBIT_CHECK(size >= 8, FormatError, "{}: file too small for a safetensors header ({} bytes)", path, size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  LOWBIT_CHECK(n <= kMaxSafetensorsHeader, FormatError, "{}: header size {} exceeds the {} byte limit", path, n,
               kMaxSafetensorsHeader);
  LOWBIT_CHECK(n <= size - 8, FormatError, "{}: header size {} runs past the end of the file ({} bytes): truncated?",
               path, n, size);
  SafetensorsHeader h;
  h.header_size = n;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  const json j = parse_json(std::string_view(reinterpret_cast<const char*>(data) + 8, size_t(n)), path + " header");
  LOWBIT_CHECK(j.is_object(), FormatError, "{}: header must be a JSON object", path);
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      LOWBIT_CHECK(e.is_object(), FormatError, "{}: __metadata__ must be an object", path);
      for (auto m = e.begin(); m != e.end(); ++m) {
        LOWBIT_CHECK(m.value().is_string(), FormatError, "{}: __metadata__ value '{}' must be a string", path,
                     m.key());
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      return FormatError(fmt::format("{}: tensor '{}': {}", path, name, why));
    };
    if (!e.is_object()) throw bad("entry must be an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) throw bad("missing or non-string dtype");
    if (!e.contains("shape") || !e["shape"].is_array()) throw bad("missing or non-array shape");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
      throw bad("data_offsets must be [begin, end]");
    TensorInfo ti;
    ti.name = name;
    std::string dt = e["dtype"].get<std::string>();
    if (!dtype_from_safetensors(dt, &ti.dtype)) throw bad("unsupported dtype " + dt);
    uint64_t bytes = dtype_size(ti.dtype);
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw bad("shape entries must be non-negative integers, got " + json_excerpt(d));
      uint64_t v = d.get<uint64_t>();
      if (v > uint64_t(INT64_MAX) || mul_overflows(bytes, v, &bytes))
        throw bad("shape " + json_excerpt(e["shape"]) + " overflows");
      ti.shape.push_back(int64_t(v));
    }
    for (const json& o : e["data_offsets"])
      if (!o.is_number_unsigned()) throw bad("data_offsets must be non-negative integers, got " + json_excerpt(o));
    ti.begin = e["data_offsets"][0].get<uint64_t>();
    ti.end = e["data_offsets"][1].get<uint64_t>();
    if (ti.begin > ti.end) throw bad(fmt::format("data_offsets [{}, {}] are reversed", ti.begin, ti.end));
    if (ti.end - ti.begin != bytes)
      throw bad(fmt::format("data_offsets [{}, {}] do not match dtype {} x shape {} ({} bytes)", ti.begin, ti.end, dt,
                            shape_str(ti.shape), bytes));
    if (ti.end > data_size)
      throw bad(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes): truncated file?", ti.begin,
                            ti.end, data_size));
    if (ti.end > ti.begin) spans.push_back({{ti.begin, ti.end}, name});
    h.tensors[name] = std::move(ti);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    LOWBIT_CHECK(spans[i].first.first >= spans[i - 1].first.second, FormatError,
                 "{}: tensors '{}' and '{}' overlap in the data section", path, spans[i - 1].second, spans[i].second);
  return h;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  LOWBIT_CHECK(!std::filesystem::is_directory(path), IoError, "cannot open {}: is a directory", path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOWBIT_CHECK(fd >= 0, IoError, "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw IoError(fmt::format("cannot stat {}: {}", path, std::strerror(e)));
  }
  size_t size = size_t(st.st_size);
  void* p = nullptr;
  if (size > 0) {
    p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw IoError(fmt::format("cannot map {}: {}", path, std::strerror(e)));
    }
  }
  ::close(fd);
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = std::shared_ptr<void>(p, [size](void* q) {
    if (q) munmap(q, size);
  });
  f->base_ = static_cast<const uint8_t*>(p);
  f->size_ = size;
  static const uint8_t empty[1] = {0};
  f->header_ = parse_safetensors_header(p ? f->base_ : empty, size, path);
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = header_.tensors.find(name);
  LOWBIT_CHECK(it != header_.tensors.end(), IoError, "{}: no tensor named '{}'", path_, name);
  const TensorInfo& ti = it->second;
  void* p = const_cast<uint8_t*>(base_ + header_.data_start + ti.begin);
  return Tensor::wrap(p, ti.shape, ti.dtype, map_);
}

WeightStore WeightStore::open_file(const std::string& path) {
  WeightStore ws;
  ws.source_ = path;
  ws.files_.push_back(SafetensorsFile::open(path));
  for (auto& [name, ti] : ws.files_[0]->header().tensors) ws.index_[name] = 0;
  return ws;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  LOWBIT_CHECK(fs::is_directory(dir), IoError, "model directory '{}' does not exist", dir);
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  if (!fs::exists(index_path)) {
    LOWBIT_CHECK(fs::exists(single), IoError, "no model.safetensors or model.safetensors.index.json in {}", dir);
    return open_file(single);
  }
  json j;
  {
    LOWBIT_CHECK(std::ifstream(index_path).good(), IoError, "cannot open {}", index_path);
    j = parse_json(read_text_file(index_path), index_path);
  }
  LOWBIT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), FormatError,
               "{}: missing \"weight_map\" object", index_path);
  WeightStore ws;
  ws.source_ = dir;
  std::map<std::string, size_t> shard_ids;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    LOWBIT_CHECK(it.value().is_string(), FormatError, "{}: weight_map['{}'] must be a file name", index_path,
                 it.key());
    std::string shard = it.value().get<std::string>();
    LOWBIT_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
                 FormatError, "{}: shard name '{}' for '{}' must be a plain file name", index_path, shard, it.key());
    auto sit = shard_ids.find(shard);
    if (sit == shard_ids.end()) {
      std::string sp = (fs::path(dir) / shard).string();
      LOWBIT_CHECK(fs::exists(sp), IoError, "{}: shard {} listed in the index is missing", index_path, sp);
      ws.files_.push_back(SafetensorsFile::open(sp));
      sit = shard_ids.emplace(shard, ws.files_.size() - 1).first;
    }
    LOWBIT_CHECK(ws.files_[sit->second]->has(it.key()), FormatError, "{}: tensor '{}' is not in shard {}",
                 index_path, it.key(), shard);
    ws.index_[it.key()] = sit->second;
  }
  // Shards may hold tensors the map does not list; they stay reachable, but a
  // name in two shards is ambiguous.
  for (size_t f = 0; f < ws.files_.size(); ++f)
    for (auto& [name, ti] : ws.files_[f]->header().tensors) {
      auto it = ws.index_.find(name);
      if (it == ws.index_.end())
        ws.index_[name] = f;
      else
        LOWBIT_CHECK(it->second == f || !ws.files_[it->second]->has(name) || j["weight_map"].contains(name),
                     FormatError, "{}: tensor '{}' appears in more than one shard", dir, name);
    }
  return ws;
}

bool WeightStore::has(const std::string& name) const { return index_.count(name) != 0; }

Tensor WeightStore::get(const std::string& name) const {
  auto it = index_.find(name);
  LOWBIT_CHECK(it != index_.end(), IoError, "{}: no tensor named '{}'", source_, name);
  return files_[it->second]->get(name);
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  auto it = index_.find(name);
  LOWBIT_CHECK(it != index_.end(), IoError, "{}: no tensor named '{}'", source_, name);
  return files_[it->second]->header().tensors.at(name);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> v;
  for (auto& [k, _] : index_) v.push_back(k);
  return v;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  // Data laid out by descending element size (stable), so with the 8-byte padded header
  // every tensor starts aligned to its element type when the file is mmap'd.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  uint64_t off = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    LOWBIT_CHECK(!h.contains(name), Error, "save_safetensors: duplicate tensor name '{}'", name);
    h[name] = {{"dtype", dtype_safetensors_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  std::string hs = h.dump();
  hs.resize((hs.size() + 7) / 8 * 8, ' ');
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (f.good()) {
    uint64_t n = hs.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = char((n >> (8 * i)) & 0xff);
    f.write(len, 8);
    f.write(hs.data(), std::streamsize(hs.size()));
    for (size_t i : order)
      f.write(static_cast<const char*>(tensors[i].second.raw()), std::streamsize(tensors[i].second.nbytes()));
    f.close();
  }
  if (!f.good() || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    throw IoError(fmt::format("cannot write {}: {}", path, std::strerror(e)));
  }
}

}  // namespace lowbit
