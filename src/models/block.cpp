#include "models/block.h"


namespace lowbit {

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

}  // namespace lowbit
