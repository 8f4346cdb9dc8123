// Wolfe's min-norm point of a convex hull from the Gram matrix of its vertices: the C++ twin of
// min_norm_weights_np in gradsurg/methods/_minnorm.py, which documents the algorithm (P. Wolfe
// 1976, "Finding the nearest point in a polytope") and every numerical choice; this file follows
// it step for step. Why C++: the algorithm is a chain of tiny dependent steps (one affine solve of
// a k×k system per step, k ≤ T), where numpy's ~1–5 µs per call, not arithmetic, was the cost —
// MGDA at T = 16 took ~4 ms in numpy, ~0.1 ms here.
//
// Differences from the numpy path, both at rounding level:
// * the corral's system is solved by the Cholesky factor's two triangular solves (numpy: its
//   explicit inverse); the refinement with exact residuals fixes both to the same answer;
// * the refinement residuals are summed in double-double (Ogita, Rump & Oishi 2005, "Accurate
//   sum and dot product", Sum2, with error-free products by fma) instead of numpy's correctly
//   rounded fsum: as accurate as twice the working precision.
// When a corral's system is not safely positive definite (smallest Cholesky pivot² ≤ 1e-10: an
// affinely dependent corral, which needs the SVD least squares of the numpy path) the solver
// gives up and returns an empty tensor; the caller then runs the numpy path from the start.
//
// Error-free transformations need every product and sum rounded as written: no contraction into
// fused multiply-adds, whatever the build flags (setup.py passes -ffp-contract=fast).
#pragma GCC optimize("fp-contract=off")

#include "ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace gradsurg {
namespace {

constexpr double kKktTol = 1e-13;
constexpr double kZeroTol = 1e-15;
constexpr int kRefine = 6;
constexpr double kRefineTol = 1e-16;
constexpr double kCholMin = 1e-10;

// The affine problem of one corral S (see _Corral in _minnorm.py).
class Corral {
 public:
  Corral(const double* gram, int64_t num, const std::vector<int64_t>& corral, const std::vector<double>& norms)
      : k_(static_cast<int64_t>(corral.size())), gs_(k_ * k_), ns_(k_) {
    for (int64_t a = 0; a < k_; ++a) {
      ns_[a] = norms[corral[a]];
      for (int64_t b = 0; b < k_; ++b) gs_[a * k_ + b] = gram[corral[a] * num + corral[b]];
    }
    pos_ = 0;
    for (int64_t a = 1; a < k_; ++a)
      if (ns_[a] < ns_[pos_]) pos_ = a;
    for (int64_t a = 0; a < k_; ++a)
      if (a != pos_) rest_.push_back(a);
    const int64_t n = k_ - 1;
    const double g_rr = gs_[pos_ * k_ + pos_];
    shift_.resize(n);
    inv_.resize(n);
    chol_.assign(n * n, 0.0);
    std::vector<double> m(n * n);
    for (int64_t a = 0; a < n; ++a) shift_[a] = gs_[rest_[a] * k_ + pos_] - g_rr;
    for (int64_t a = 0; a < n; ++a) {
      const double g_ar = gs_[rest_[a] * k_ + pos_];
      for (int64_t b = 0; b < n; ++b) {
        m[a * n + b] = gs_[rest_[a] * k_ + rest_[b]] - g_ar - gs_[rest_[b] * k_ + pos_] + g_rr;
      }
    }
    for (int64_t a = 0; a < n; ++a) {
      const double dn = std::sqrt(std::max(m[a * n + a], 0.0));
      inv_[a] = dn > 0 ? 1.0 / dn : 0.0;  // d_i = 0: g_i duplicates g_r (t_i = 0)
    }
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) m[a * n + b] *= inv_[a] * inv_[b];
    // Cholesky of the unit-diagonal m; "safe" = positive pivots with min pivot² > kCholMin.
    ok_ = true;
    double min_pivot = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n && ok_; ++j) {
      double d = m[j * n + j];
      for (int64_t p = 0; p < j; ++p) d -= chol_[j * n + p] * chol_[j * n + p];
      if (!(d > 0)) {
        ok_ = false;
        break;
      }
      const double ljj = std::sqrt(d);
      chol_[j * n + j] = ljj;
      min_pivot = std::min(min_pivot, ljj);
      for (int64_t i = j + 1; i < n; ++i) {
        double s = m[i * n + j];
        for (int64_t p = 0; p < j; ++p) s -= chol_[i * n + p] * chol_[j * n + p];
        chol_[i * n + j] = s / ljj;
      }
    }
    if (ok_ && n > 0 && !(min_pivot * min_pivot > kCholMin)) ok_ = false;
  }

  bool ok() const { return ok_; }
  int64_t size() const { return k_; }
  const std::vector<double>& norms() const { return ns_; }

  // Solve G_S v − λ 1 = f, 1ᵀ v = h (see _Corral.solve).
  void solve(const std::vector<double>& f, double h, std::vector<double>& v, double& lam) const {
    const int64_t n = k_ - 1;
    v.assign(k_, 0.0);
    v[pos_] = h;
    if (n > 0) {
      std::vector<double> y(n);
      for (int64_t a = 0; a < n; ++a) {
        double s = (f[rest_[a]] - f[pos_] - h * shift_[a]) * inv_[a];
        for (int64_t p = 0; p < a; ++p) s -= chol_[a * n + p] * y[p];
        y[a] = s / chol_[a * n + a];
      }
      for (int64_t a = n - 1; a >= 0; --a) {
        double s = y[a];
        for (int64_t p = a + 1; p < n; ++p) s -= chol_[p * n + a] * y[p];
        y[a] = s / chol_[a * n + a];
      }
      double total = 0.0;
      for (int64_t a = 0; a < n; ++a) {
        const double t = y[a] * inv_[a];
        v[rest_[a]] = t;
        total += t;
      }
      v[pos_] = h - total;
    }
    double s = 0.0;
    for (int64_t b = 0; b < k_; ++b) s += gs_[pos_ * k_ + b] * v[b];
    lam = s - f[pos_];
  }

  // f − (G_S v − λ 1) in double-double: error-free products (fma) and Sum2.
  void residual(const std::vector<double>& v, double lam, const std::vector<double>& f, std::vector<double>& out) const {
    out.resize(k_);
    for (int64_t a = 0; a < k_; ++a) {
      double s = f[a];
      double comp = 0.0;
      for (int64_t b = 0; b < k_; ++b) {
        const double x = -v[b];
        const double g = gs_[a * k_ + b];
        const double p = g * x;
        const double e = std::fma(g, x, -p);
        const double t = s + p;
        const double z = t - s;
        comp += ((s - (t - z)) + (p - z)) + e;
        s = t;
      }
      const double t = s + lam;
      const double z = t - s;
      comp += (s - (t - z)) + (lam - z);
      out[a] = t + comp;
    }
  }

 private:
  int64_t k_;
  int64_t pos_ = 0;
  std::vector<double> gs_, ns_, shift_, inv_, chol_;
  std::vector<int64_t> rest_;
  bool ok_ = true;
};

// Weights (summing to 1) of the min-norm point of the corral's affine hull; false if its system
// is not safely non-singular (see _affine_solve).
bool affine_min_norm(const Corral& sys, std::vector<double>& v) {
  const int64_t k = sys.size();
  if (k == 1) {
    v.assign(1, 1.0);
    return true;
  }
  if (!sys.ok()) return false;
  const std::vector<double> zero(k, 0.0);
  double lam = 0.0;
  sys.solve(zero, 1.0, v, lam);
  double prev = std::numeric_limits<double>::infinity();
  std::vector<double> r_g, dv;
  const auto& ns = sys.norms();
  for (int it = 0; it < kRefine; ++it) {
    sys.residual(v, lam, zero, r_g);
    double sum = 0.0, scale = 0.0, worst = 0.0;
    for (int64_t a = 0; a < k; ++a) {
      sum += v[a];
      scale += std::abs(v[a]) * ns[a];
      worst = std::max(worst, std::abs(r_g[a]) / ns[a]);
    }
    const double r_1 = 1.0 - sum;
    const double size = std::max(worst / scale, std::abs(r_1));
    if (!(size < prev / 2) || size <= kRefineTol) break;
    prev = size;
    double dlam = 0.0;
    sys.solve(r_g, r_1, dv, dlam);
    for (int64_t a = 0; a < k; ++a) v[a] += dv[a];
    lam += dlam;
  }
  double sum = 0.0;
  for (double x : v) sum += x;
  for (double& x : v) x /= sum;
  return true;
}

bool all_positive(const std::vector<double>& contrib) {
  double tot = 0.0;
  for (double c : contrib) tot += std::abs(c);
  for (double c : contrib)
    if (!(c > kZeroTol * tot)) return false;
  return true;
}

}  // namespace

at::Tensor min_norm_weights(const at::Tensor& gram_in, int64_t max_iter, const c10::optional<at::Tensor>& start_in) {
  TORCH_CHECK(gram_in.dim() == 2 && gram_in.size(0) == gram_in.size(1), "gram: expected a square matrix");
  const at::Tensor gram = gram_in.to(at::kCPU, at::kDouble).contiguous();
  const int64_t num = gram.size(0);
  const double* g = gram.data_ptr<double>();
  at::Tensor out = at::zeros({num}, gram.options());
  double* w = out.data_ptr<double>();
  std::vector<double> diag(num), norms(num);
  int64_t zeros = 0;
  for (int64_t i = 0; i < num; ++i) {
    diag[i] = std::max(g[i * num + i], 0.0);
    if (diag[i] <= 0) ++zeros;
  }
  if (zeros > 0) {
    for (int64_t i = 0; i < num; ++i) w[i] = diag[i] <= 0 ? 1.0 / static_cast<double>(zeros) : 0.0;
    return out;
  }
  if (num <= 2) return at::empty({0}, gram.options());  // closed forms: the Python side
  for (int64_t i = 0; i < num; ++i) norms[i] = std::sqrt(diag[i]);
  int64_t first = 0;
  for (int64_t i = 1; i < num; ++i)
    if (diag[i] < diag[first]) first = i;
  std::vector<double> wv(num, 0.0), v, contrib;
  wv[first] = 1.0;
  std::vector<int64_t> corral{first};
  if (start_in.has_value() && start_in->defined()) {
    const at::Tensor start = start_in->to(at::kCPU, at::kDouble).contiguous();
    TORCH_CHECK(start.numel() == num, "start: expected one weight per vertex");
    const double* st = start.data_ptr<double>();
    std::vector<int64_t> support;
    for (int64_t i = 0; i < num; ++i)
      if (st[i] > 0) support.push_back(i);
    if (support.size() > 1) {
      Corral sys(g, num, support, norms);
      if (sys.ok() && affine_min_norm(sys, v)) {
        contrib.resize(v.size());
        for (size_t a = 0; a < v.size(); ++a) contrib[a] = v[a] * norms[support[a]];
        if (all_positive(contrib)) {
          wv[first] = 0.0;
          for (size_t a = 0; a < v.size(); ++a) wv[support[a]] = v[a];
          corral = support;
        }
      }
    }
  }
  const double tiny = std::numeric_limits<double>::min();
  double prev_norm_sq = std::numeric_limits<double>::infinity();
  std::vector<double> gw(num);
  std::vector<char> in_corral(num);
  for (int64_t iter = 0; iter < max_iter; ++iter) {
    double norm_sq = 0.0, m = 0.0;
    for (int64_t i = 0; i < num; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < num; ++j) s += g[i * num + j] * wv[j];
      gw[i] = s;
    }
    for (int64_t i = 0; i < num; ++i) {
      norm_sq += wv[i] * gw[i];
      m += wv[i] * norms[i];
    }
    if (!(norm_sq < prev_norm_sq)) break;
    prev_norm_sq = norm_sq;
    std::fill(in_corral.begin(), in_corral.end(), 0);
    for (int64_t c : corral) in_corral[c] = 1;
    int64_t j = -1;
    double best = -1.0;
    for (int64_t i = 0; i < num; ++i) {
      const double viol = norm_sq - gw[i];
      if (in_corral[i] || !(viol > kKktTol * m * (norms[i] + m))) continue;
      const double dist_sq = std::max(norm_sq - 2 * gw[i] + diag[i], tiny);
      const double gain = viol * viol / dist_sq;
      if (gain > best) {
        best = gain;
        j = i;
      }
    }
    if (j < 0) break;
    std::vector<int64_t> before(corral);
    std::sort(before.begin(), before.end());
    corral.push_back(j);
    while (true) {
      Corral sys(g, num, corral, norms);
      if (!affine_min_norm(sys, v)) return at::empty({0}, gram.options());
      const size_t k = corral.size();
      contrib.resize(k);
      for (size_t a = 0; a < k; ++a) contrib[a] = v[a] * norms[corral[a]];
      double tot = 0.0;
      for (double c : contrib) tot += std::abs(c);
      std::vector<char> positive(k);
      bool all = true;
      for (size_t a = 0; a < k; ++a) {
        positive[a] = contrib[a] > kZeroTol * tot;
        all = all && positive[a];
      }
      if (all) {
        std::fill(wv.begin(), wv.end(), 0.0);
        for (size_t a = 0; a < k; ++a) wv[corral[a]] = v[a];
        break;
      }
      // Walk from w towards the affine minimiser until the first coefficient reaches zero.
      std::vector<double> w_s(k);
      double theta = 1.0;
      bool any = false;
      for (size_t a = 0; a < k; ++a) {
        w_s[a] = wv[corral[a]];
        const double den = w_s[a] - v[a];
        const double ratio = (!positive[a] && den > 0) ? w_s[a] / den : 1.0;
        theta = any ? std::min(theta, ratio) : ratio;
        any = true;
      }
      theta = std::min(std::max(theta, 0.0), 1.0);
      double tot2 = 0.0, top = -std::numeric_limits<double>::infinity();
      for (size_t a = 0; a < k; ++a) {
        w_s[a] = (1 - theta) * w_s[a] + theta * v[a];
        contrib[a] = w_s[a] * norms[corral[a]];
        tot2 += std::abs(contrib[a]);
        top = std::max(top, contrib[a]);
      }
      std::vector<int64_t> kept;
      std::vector<double> kept_w;
      for (size_t a = 0; a < k; ++a)
        if (contrib[a] > kZeroTol * tot2) {
          kept.push_back(corral[a]);
          kept_w.push_back(w_s[a]);
        }
      if (kept.empty())
        for (size_t a = 0; a < k; ++a)
          if (contrib[a] == top) {
            kept.push_back(corral[a]);
            kept_w.push_back(w_s[a]);
          }
      std::fill(wv.begin(), wv.end(), 0.0);
      double sum = 0.0;
      for (size_t a = 0; a < kept.size(); ++a) {
        wv[kept[a]] = kept_w[a];
        sum += kept_w[a];
      }
      for (double& x : wv) x /= sum;
      corral = kept;
    }
    std::vector<int64_t> after(corral);
    std::sort(after.begin(), after.end());
    if (after == before) break;  // the entering vertex left at once
  }
  std::copy(wv.begin(), wv.end(), w);
  return out;
}

}  // namespace gradsurg
