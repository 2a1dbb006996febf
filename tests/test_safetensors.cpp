// safetensors: round trips, sharded directories, real files, and every kind of
// corruption the untrusted header can carry (each a typed error naming the file).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "testing.h"

using namespace lowbit;
using json = nlohmann::json;
using lowbit::test::temp_dir;
using lowbit::test::write_file;

namespace {

std::string image(const json& header, const std::string& data) {
  std::string h = header.dump();
  uint64_t n = h.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + h + data;
}

// Expects `E` whose message contains every needle.
template <class E>
void expect_error(const std::string& bytes, std::initializer_list<std::string> needles) {
  std::string p = temp_dir("st") + "/bad.safetensors";
  write_file(p, bytes);
  try {
    SafetensorsFile::open(p);
    FAIL() << "no error for " << bytes.substr(0, 80);
  } catch (const E& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    for (auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

json entry(const char* dt, std::vector<int64_t> shape, uint64_t b, uint64_t e) {
  return {{"dtype", dt}, {"shape", shape}, {"data_offsets", {b, e}}};
}

}  // namespace

TEST(Safetensors, RoundTripAllDtypesWithMetadata) {
  std::string p = temp_dir("st") + "/m.safetensors";
  std::vector<float> v = {1.5f, -2.25f, 3.0f, 0.0f, 7.0f, -8.0f};
  std::vector<std::pair<std::string, Tensor>> ts;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I8, DType::I32})
    ts.push_back({std::string("t_") + dtype_name(t), Tensor::from_vector(v, {2, 3}).to(t)});
  save_safetensors(p, ts, {{"format", "pt"}});
  auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  EXPECT_EQ(f->header().data_start % 8, 0u);  // header padded to 8 bytes
  for (auto& [name, t] : ts) {
    Tensor back = f->get(name);
    EXPECT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(back.shape(), (Shape{2, 3}));
    std::vector<float> want = v;  // exact in every float dtype; integers round to nearest-even
    if (!dtype_is_float(t.dtype()))
      for (auto& x : want) x = std::nearbyint(x);
    EXPECT_EQ(back.to_vector(), want) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(p + ".tmp." + std::to_string(getpid())));
  EXPECT_THROW(f->get("nope"), IoError);
}

TEST(Safetensors, ShardedDirectory) {
  std::string d = temp_dir("shard");
  save_safetensors(d + "/a.safetensors", {{"x", Tensor::from_vector({1, 2}, {2})}});
  save_safetensors(d + "/b.safetensors", {{"y", Tensor::from_vector({3, 4, 5}, {3})}});
  write_file(d + "/model.safetensors.index.json",
             json{{"metadata", json::object()}, {"weight_map", {{"x", "a.safetensors"}, {"y", "b.safetensors"}}}}.dump());
  WeightStore ws = WeightStore::open_dir(d);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(ws.get("y").to_vector(), (std::vector<float>{3, 4, 5}));
  EXPECT_THROW(ws.get("z"), IoError);
  // Bad indexes: missing shard, tensor not in its shard, path traversal.
  write_file(d + "/model.safetensors.index.json", json{{"weight_map", {{"x", "c.safetensors"}}}}.dump());
  EXPECT_THROW(WeightStore::open_dir(d), IoError);
  write_file(d + "/model.safetensors.index.json", json{{"weight_map", {{"y", "a.safetensors"}}}}.dump());
  EXPECT_THROW(WeightStore::open_dir(d), FormatError);
  write_file(d + "/model.safetensors.index.json", json{{"weight_map", {{"x", "../a.safetensors"}}}}.dump());
  EXPECT_THROW(WeightStore::open_dir(d), FormatError);
  write_file(d + "/model.safetensors.index.json", "{not json");
  EXPECT_THROW(WeightStore::open_dir(d), FormatError);
  EXPECT_THROW(WeightStore::open_dir(d + "/missing"), IoError);
  EXPECT_THROW(WeightStore::open_dir(temp_dir("empty")), IoError);
}

TEST(Safetensors, RealModels) {
  LOWBIT_REQUIRE_SHARED(s, "models/stories260K/model.safetensors");
  auto f = SafetensorsFile::open(s);
  Tensor e = f->get("model.embed_tokens.weight");
  EXPECT_EQ(e.shape(), (Shape{512, 64}));
  EXPECT_EQ(e.dtype(), DType::F32);
  LOWBIT_REQUIRE_SHARED(t, "models/tiny-llama3/model.safetensors");
  EXPECT_EQ(SafetensorsFile::open(t)->get("model.embed_tokens.weight").dtype(), DType::BF16);
}

TEST(Safetensors, CorruptHeaders) {
  const std::string d16(16, '\0');
  expect_error<FormatError>("abc", {"too small"});
  expect_error<FormatError>(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", {"header size"});
  {  // header size beyond the file
    uint64_t n = 1000;
    expect_error<FormatError>(std::string(reinterpret_cast<const char*>(&n), 8) + "{}", {"past the end"});
  }
  {
    std::string h = "{\"a\": [1, 2";
    uint64_t n = h.size();
    expect_error<FormatError>(std::string(reinterpret_cast<const char*>(&n), 8) + h, {"JSON"});
  }
  expect_error<FormatError>(image(json::array(), ""), {"object"});
  expect_error<FormatError>(image({{"w", entry("F32", {2, 2}, 0, 16)}}, std::string(8, '\0')), {"'w'", "past"});
  expect_error<FormatError>(image({{"w", entry("F32", {2, 2}, 0, 12)}}, d16), {"'w'", "do not match"});
  expect_error<FormatError>(image({{"w", entry("Q4", {2}, 0, 2)}}, d16), {"'w'", "Q4"});
  expect_error<FormatError>(image({{"w", entry("F32", {-1, 2}, 0, 0)}}, d16), {"'w'", "shape"});
  expect_error<FormatError>(
      image({{"w", entry("F64", {1ll << 40, 1ll << 40}, 0, 8)}}, d16), {"'w'", "overflow"});
  expect_error<FormatError>(image({{"w", entry("F32", {2}, 8, 0)}}, d16), {"'w'", "reversed"});
  expect_error<FormatError>(image({{"a", entry("F32", {2}, 0, 8)}, {"b", entry("F32", {2}, 4, 12)}}, d16),
                            {"overlap"});
  expect_error<FormatError>(image({{"w", {{"dtype", "F32"}, {"shape", {1}}}}}, d16), {"'w'", "data_offsets"});
  expect_error<FormatError>(image({{"w", 5}}, d16), {"'w'"});
  expect_error<FormatError>(image({{"__metadata__", {{"k", 1}}}}, d16), {"__metadata__"});
  EXPECT_THROW(SafetensorsFile::open("/nonexistent/x.safetensors"), IoError);
  EXPECT_THROW(SafetensorsFile::open(temp_dir("dir")), IoError);
}
