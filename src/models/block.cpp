#include "models/block.h"

#include <utility>

namespace lowbit {

// Meyers' idiom: this object is mutable here, so its linears are too.
std::vector<std::vector<Linear*>> Block::groups() {
  std::vector<std::vector<Linear*>> out;
  for (auto& g : std::as_const(*this).groups()) {
    out.emplace_back();
    for (const Linear* l : g) out.back().push_back(const_cast<Linear*>(l));
  }
  return out;
}

std::vector<Linear*> Block::linears() {
  std::vector<Linear*> out;
  for (auto& g : groups()) out.insert(out.end(), g.begin(), g.end());
  return out;
}

std::vector<const Linear*> Block::linears() const {
  std::vector<const Linear*> out;
  for (auto& g : groups()) out.insert(out.end(), g.begin(), g.end());
  return out;
}

void Block::forward(BlockState& st, const BlockCtx& ctx) const {
  const int G = int(groups().size());
  for (int g = 0; g < G; ++g) advance(g, st, ctx);
}

std::string Block::site(int g) const { return groups().at(size_t(g)).front()->name; }

}  // namespace lowbit
