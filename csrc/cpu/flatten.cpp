// One task's per-parameter gradients → its row of J, in one parallel pass over all tensors.
#include "common.h"


#include <cstring>

namespace gradsurg {

void flatten_into(const std::vector<at::Tensor>& dst, const std::vector<c10::optional<at::Tensor>>& grads) {
  TORCH_CHECK(dst.size() == grads.size(), "flatten_into: ", dst.size(), " destinations but ",
              grads.size(), " gradients");
  struct Item {
    char* dst;
    const char* src;  // nullptr: zero-fill
    int64_t bytes;
  };
  // 256 KiB pieces: big tensors are split across threads, small ones are one item each.
  constexpr int64_t kPiece = 256 * 1024;
  std::vector<Item> items;
  std::vector<at::Tensor> held;  // contiguous copies of strided gradients, alive until the end
  for (size_t k = 0; k < dst.size(); ++k) {
    const at::Tensor& d = dst[k];
    TORCH_CHECK(d.is_contiguous() && d.device().is_cpu(), "flatten_into: destination ", k,
                " must be a contiguous CPU view of a row of J");
    const char* src = nullptr;
    if (grads[k].has_value()) {
      const at::Tensor& g = *grads[k];
      TORCH_CHECK(g.numel() == d.numel(), "flatten_into: gradient ", k, " has ", g.numel(),
                  " elements, its destination ", d.numel());
      TORCH_CHECK(g.device().is_cpu(), "flatten_into: gradient ", k, " is not on the CPU");
      if (g.scalar_type() != d.scalar_type() || !g.is_contiguous()) {
        // Strided (e.g. channels-last) or differently typed gradients: torch's copy handles the
        // layout; the remaining contiguous ones go through the raw parallel copy below.
        at::Tensor(d).copy_(g.reshape(d.sizes()));
        continue;
      }
      src = static_cast<const char*>(g.data_ptr());
    }
    const int64_t bytes = d.numel() * static_cast<int64_t>(d.element_size());
    char* base = static_cast<char*>(d.data_ptr());
    for (int64_t off = 0; off < bytes; off += kPiece)
      items.push_back({base + off, src ? src + off : nullptr, std::min(kPiece, bytes - off)});
  }
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (items[i].src) std::memcpy(items[i].dst, items[i].src, items[i].bytes);
      else std::memset(items[i].dst, 0, items[i].bytes);
    }
  });
}

}  // namespace gradsurg
