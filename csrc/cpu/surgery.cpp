// PCGrad and GradVac weights from the Gram matrix: the C++ twins of pcgrad_weights
// (gradsurg/methods/pcgrad.py, Yu et al. 2020, Algorithm 1) and gradvac_weights
// (gradsurg/methods/gradvac.py, Wang et al. 2021), which document the rules and every numerical
// choice; this file follows them step for step. The rows of the coefficient matrix C (g_i^PC =
// Σ_k C_ik g_k) are independent, so each task's T visits run one after the other here, where
// the Python versions run round r of every task at once; the arithmetic per visit is the same.
// Why C++: T sequential rounds of small array operations, where numpy's per-call cost dominated
// (GradVac at T = 16: ~2.6 ms in numpy).
#include "ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace gradsurg {

at::Tensor pcgrad_weights(const at::Tensor& gram_in, const at::Tensor& order_in) {
  const at::Tensor gram = gram_in.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor order = order_in.to(at::kCPU, at::kLong).contiguous();
  const int64_t num = gram.size(0);
  TORCH_CHECK(gram.dim() == 2 && gram.size(1) == num && order.sizes() == gram.sizes(), "pcgrad_weights: shapes");
  const double* g = gram.data_ptr<double>();
  const int64_t* ord = order.data_ptr<int64_t>();
  at::Tensor out = at::zeros({num}, gram.options());
  double* w = out.data_ptr<double>();
  std::vector<double> coef(num);
  for (int64_t i = 0; i < num; ++i) {
    std::fill(coef.begin(), coef.end(), 0.0);
    coef[i] = 1.0;
    for (int64_t r = 0; r < num; ++r) {
      const int64_t j = ord[i * num + r];
      const double norm_sq = g[j * num + j];
      if (j == i || !(norm_sq > 0)) continue;
      double dot = 0.0;  // g_i^PC · g_j = Σ_k C_ik G_jk
      for (int64_t k = 0; k < num; ++k) dot += coef[k] * g[j * num + k];
      if (dot < 0) coef[j] -= dot / norm_sq;
    }
    for (int64_t k = 0; k < num; ++k) w[k] += coef[k];
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> gradvac_weights(const at::Tensor& gram_in, const at::Tensor& order_in,
                                                   const at::Tensor& rho_in, double beta) {
  const at::Tensor gram = gram_in.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor order = order_in.to(at::kCPU, at::kLong).contiguous();
  const int64_t num = gram.size(0);
  TORCH_CHECK(gram.dim() == 2 && gram.size(1) == num && order.sizes() == gram.sizes() && rho_in.sizes() == gram.sizes(),
              "gradvac_weights: shapes");
  at::Tensor rho = rho_in.to(at::kCPU, at::kDouble).contiguous().clone();
  const double* g = gram.data_ptr<double>();
  const int64_t* ord = order.data_ptr<int64_t>();
  double* rh = rho.data_ptr<double>();
  at::Tensor out = at::zeros({num}, gram.options());
  double* w = out.data_ptr<double>();
  std::vector<double> norms(num), coef(num), cg(num);
  for (int64_t k = 0; k < num; ++k) norms[k] = std::sqrt(std::max(g[k * num + k], 0.0));
  const double noise = 1e3 * static_cast<double>(num) * std::numeric_limits<double>::epsilon();
  for (int64_t i = 0; i < num; ++i) {
    std::fill(coef.begin(), coef.end(), 0.0);
    coef[i] = 1.0;
    // (C G)_i·, kept up to date as C_i changes (one entry per correction: O(T) instead of the
    // O(T²) product per visit, so O(T³) per call; it differs from the product at rounding level)
    for (int64_t c = 0; c < num; ++c) cg[c] = g[i * num + c];
    for (int64_t r = 0; r < num; ++r) {
      const int64_t j = ord[i * num + r];
      double dot = 0.0, norm2 = 0.0, reach = 0.0;
      for (int64_t k = 0; k < num; ++k) {
        dot += coef[k] * g[j * num + k];
        norm2 += cg[k] * coef[k];
        reach += std::abs(coef[k]) * norms[k];  // ≥ ‖g_i^PC‖; rounding of norm2 is ~eps·reach²
      }
      const double norm_i = norm2 > noise * reach * reach ? std::sqrt(norm2) : 0.0;
      const double norm_j = norms[j];
      const double prod = norm_i * norm_j;
      double phi = prod > 0 ? dot / prod : 0.0;
      phi = std::min(std::max(phi, -1.0), 1.0);
      const double target = rh[i * num + j];
      const double sin_target = std::sqrt(std::max(1.0 - target * target, 0.0));
      const bool active = j != i;
      if (active && phi < target && norm_j > 0 && sin_target > 0) {
        const double sin_phi = std::sqrt(std::max(1.0 - phi * phi, 0.0));
        const double step = norm_i * (target * sin_phi - phi * sin_target) / (norm_j * sin_target);
        coef[j] += step;
        for (int64_t c = 0; c < num; ++c) cg[c] += step * g[j * num + c];
      }
      if (active) rh[i * num + j] = (1.0 - beta) * target + beta * phi;
    }
    for (int64_t k = 0; k < num; ++k) w[k] += coef[k];
  }
  return {out, rho};
}

}  // namespace gradsurg
