// libFuzzer target: config.json text through the path LlamaConfig::load takes
// (parse_json + from_json), then what loading a model does with an accepted config
// (RoPE inverse frequencies, the to_json round trip). Any malformed input must end
// in a lowbit::Error — never another exception, a crash, a hang, a huge allocation
// or a sanitizer report (ASan/UBSan on).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "models/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    lowbit::LlamaConfig c = lowbit::LlamaConfig::parse(text, "fuzz/config.json");
    // An accepted config is consistent: positive sizes, GQA divisibility, even head_dim.
    if (c.hidden_size <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0 ||
        c.head_dim <= 0 || c.head_dim % 2 != 0)
      __builtin_trap();
    std::vector<float> f = c.inv_freq();
    if (int64_t(f.size()) != c.head_dim / 2) __builtin_trap();
    // What save_quantized writes must load back as the same config.
    lowbit::LlamaConfig back = lowbit::LlamaConfig::from_json(c.to_json(), "fuzz/config.json (round trip)");
    if (back.hidden_size != c.hidden_size || back.head_dim != c.head_dim || back.vocab_size != c.vocab_size ||
        back.num_kv_heads != c.num_kv_heads || back.rope.type != c.rope.type)
      __builtin_trap();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
