// FairGrad's Newton solve of G w = w^(−1/α): the C++ twin of _solve in
// gradsurg/methods/fairgrad.py (Ban & Ji 2024), which documents the method (damped Newton on the
// strictly convex φ(w) = ½ wᵀGw − Σ h(w_t), fraction-to-boundary step, Armijo backtracking,
// rounding-level steps accepted when they lower the residual) and its tolerances; this file
// follows it step for step. The Hessian G + diag(w^(−1/α−1)/α) is positive definite and is
// solved by Cholesky (numpy: LU; the same solution to rounding). If a Cholesky factorisation
// fails (a Hessian singular to working precision) the solve declines (empty result) and the
// numpy path runs. Why C++: a few dozen dependent steps on T-sized arrays, where numpy's
// per-call cost was ~1 ms at T = 4–16.
#include "ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace gradsurg {
namespace {

constexpr double kResTol = 1e-13;
constexpr int kMaxIter = 200;

double h_of(double w, double alpha) {
  if (alpha == 1.0) return std::log(w);
  const double q = 1.0 - 1.0 / alpha;
  return std::pow(w, q) / q;
}

double phi(const double* g, const std::vector<double>& w, int64_t n, double alpha) {
  double quad = 0.0, h = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += g[i * n + j] * w[j];
    quad += w[i] * s;
    h += h_of(w[i], alpha);
  }
  return 0.5 * quad - h;
}

}  // namespace

at::Tensor fairgrad_solve(const at::Tensor& gram_in, double alpha) {
  const at::Tensor gram = gram_in.to(at::kCPU, at::kDouble).contiguous();
  const int64_t n = gram.size(0);
  TORCH_CHECK(gram.dim() == 2 && gram.size(1) == n, "fairgrad_solve: expected a square matrix");
  const double* g = gram.data_ptr<double>();
  const double power = -1.0 / alpha;
  const double eps = std::numeric_limits<double>::epsilon();
  std::vector<double> w(n, 1.0), gw(n), wp(n), res(n), step(n), chol(n * n), cand(n), h0(n);
  for (int iter = 0; iter < kMaxIter; ++iter) {
    double size = 0.0, side = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += g[i * n + j] * w[j];
      gw[i] = s;
      wp[i] = std::pow(w[i], power);
      res[i] = gw[i] - wp[i];
      size = std::max(size, std::abs(res[i]));
      side = std::max(side, std::max(std::abs(gw[i]), wp[i]));
    }
    if (size <= kResTol * side) break;
    // Cholesky of the Hessian G + diag(w^(−1/α−1)/α), then step = −H⁻¹ res.
    for (int64_t j = 0; j < n; ++j) {
      double d = g[j * n + j] + wp[j] / (alpha * w[j]);
      for (int64_t p = 0; p < j; ++p) d -= chol[j * n + p] * chol[j * n + p];
      if (!(d > 0)) return at::empty({0}, gram.options());
      const double ljj = std::sqrt(d);
      chol[j * n + j] = ljj;
      for (int64_t i = j + 1; i < n; ++i) {
        double s = g[i * n + j];
        for (int64_t p = 0; p < j; ++p) s -= chol[i * n + p] * chol[j * n + p];
        chol[i * n + j] = s / ljj;
      }
    }
    for (int64_t a = 0; a < n; ++a) {
      double s = -res[a];
      for (int64_t p = 0; p < a; ++p) s -= chol[a * n + p] * step[p];
      step[a] = s / chol[a * n + a];
    }
    for (int64_t a = n - 1; a >= 0; --a) {
      double s = step[a];
      for (int64_t p = a + 1; p < n; ++p) s -= chol[p * n + a] * step[p];
      step[a] = s / chol[a * n + a];
    }
    bool finite = true;
    for (double s : step) finite = finite && std::isfinite(s);
    if (!finite) break;
    double t = 1.0;
    bool any_neg = false;
    double bound = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i)
      if (step[i] < 0) {
        any_neg = true;
        bound = std::min(bound, -w[i] / step[i]);
      }
    if (any_neg) t = std::min(1.0, 0.99 * bound);
    double quad = 0.0, hsum = 0.0, habs = 0.0, slope = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      h0[i] = h_of(w[i], alpha);
      quad += w[i] * gw[i];
      hsum += h0[i];
      habs += std::abs(h0[i]);
      slope += res[i] * step[i];
    }
    const double f0 = 0.5 * quad - hsum;
    double noise = -1.0;
    while (t > 1e-20) {
      bool positive = true;
      for (int64_t i = 0; i < n; ++i) {
        cand[i] = w[i] + t * step[i];
        positive = positive && cand[i] > 0;
      }
      if (positive) {
        const double f = phi(g, cand, n, alpha);
        if (f <= f0 + 1e-4 * t * slope) break;
        if (noise < 0) noise = 8 * eps * (std::abs(f0) + 0.5 * std::abs(quad) + habs);
        if (std::abs(f - f0) <= noise) {
          double cand_size = 0.0;
          for (int64_t i = 0; i < n; ++i) {
            double s = 0.0;
            for (int64_t j = 0; j < n; ++j) s += g[i * n + j] * cand[j];
            cand_size = std::max(cand_size, std::abs(s - std::pow(cand[i], power)));
          }
          if (cand_size < size) break;
        }
      }
      t *= 0.5;
    }
    bool positive = true, same = true;
    for (int64_t i = 0; i < n; ++i) {
      cand[i] = w[i] + t * step[i];
      positive = positive && cand[i] > 0;
      same = same && cand[i] == w[i];
    }
    if (!positive || same) break;
    w = cand;
  }
  at::Tensor out = at::empty({n}, gram.options());
  std::copy(w.begin(), w.end(), out.data_ptr<double>());
  return out;
}

}  // namespace gradsurg
