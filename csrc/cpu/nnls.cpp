// The non-negative least squares of the dual-cone projections (UPGrad, DualProj): the C++ twin
// of _Factored.nnls + the polish of _Factored.projection_weights in gradsurg/methods/_qp.py,
// which documents the algorithm (Lawson & Hanson 1974, Algorithm 23.10, from a block-pivoting
// warm start, Júdice & Pires 1994) and every numerical choice; this file follows it step for
// step, for many right-hand sides with one factor. Why C++: UPGrad solves T such problems per
// step, each a chain of small dependent solves, where numpy's per-call cost dominated (T = 16:
// ~6 ms in numpy).
//
// Declines (the row's flag is 0, and the caller runs the numpy path for that right-hand side):
// * a passive system that is not safely positive definite (smallest Cholesky pivot² ≤ 1e-10 on
//   the unit-diagonal scale), where the numpy path switches to SVD least squares;
// * a polish whose system might have a singular value at or below rcond·σ_max: decided here by a
//   conservative bound (λ_min ≥ 1/‖L⁻¹‖_F², λ_max ≤ trace), where the numpy path computes the
//   eigenvalues; only clear cases are solved here, and they are the ones numpy solves by the
//   same corrected semi-normal equations.
#include "ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace gradsurg {
namespace {

constexpr double kKktTol = 1e-13;
constexpr double kCholMin = 1e-10;

struct Problem {
  const double* r;    // k×n factor
  const double* nrm;  // n×n RᵀR + ridge·I
  const double* b;    // k
  int64_t k, n;
  double ridge;

  void neg_grad(const std::vector<double>& y, std::vector<double>& out) const {
    std::vector<double> res(k);
    for (int64_t i = 0; i < k; ++i) {
      double s = b[i];
      for (int64_t j = 0; j < n; ++j) s -= r[i * n + j] * y[j];
      res[i] = s;
    }
    out.assign(n, 0.0);
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < k; ++i) s += r[i * n + j] * res[i];
      out[j] = ridge != 0.0 ? s - ridge * y[j] : s;
    }
  }

  // Corrected semi-normal equations on the passive set with normal matrix `normal` (p×p) and
  // the given ridge; false if its Cholesky factor is not safe (pivot² ≤ min_pivot2).
  static bool csne(const double* r, const double* b, int64_t k, int64_t n, const std::vector<int64_t>& p,
                   const std::vector<double>& normal, double ridge, double min_pivot2, std::vector<double>& sol,
                   std::vector<double>* chol_out = nullptr) {
    const int64_t m = static_cast<int64_t>(p.size());
    std::vector<double> chol(m * m, 0.0);
    for (int64_t j = 0; j < m; ++j) {
      double d = normal[j * m + j];
      for (int64_t q = 0; q < j; ++q) d -= chol[j * m + q] * chol[j * m + q];
      if (!(d > min_pivot2)) return false;
      const double ljj = std::sqrt(d);
      chol[j * m + j] = ljj;
      for (int64_t i = j + 1; i < m; ++i) {
        double s = normal[i * m + j];
        for (int64_t q = 0; q < j; ++q) s -= chol[i * m + q] * chol[j * m + q];
        chol[i * m + j] = s / ljj;
      }
    }
    auto chol_solve = [&](std::vector<double>& x) {
      for (int64_t a = 0; a < m; ++a) {
        double s = x[a];
        for (int64_t q = 0; q < a; ++q) s -= chol[a * m + q] * x[q];
        x[a] = s / chol[a * m + a];
      }
      for (int64_t a = m - 1; a >= 0; --a) {
        double s = x[a];
        for (int64_t q = a + 1; q < m; ++q) s -= chol[q * m + a] * x[q];
        x[a] = s / chol[a * m + a];
      }
    };
    auto at_times = [&](const std::vector<double>& v, std::vector<double>& out) {  // R_Pᵀ v
      out.assign(m, 0.0);
      for (int64_t a = 0; a < m; ++a) {
        double s = 0.0;
        for (int64_t i = 0; i < k; ++i) s += r[i * n + p[a]] * v[i];
        out[a] = s;
      }
    };
    std::vector<double> bv(b, b + k);
    at_times(bv, sol);
    chol_solve(sol);
    std::vector<double> res(k);
    for (int64_t i = 0; i < k; ++i) {
      double s = b[i];
      for (int64_t a = 0; a < m; ++a) s -= r[i * n + p[a]] * sol[a];
      res[i] = s;
    }
    std::vector<double> corr;
    at_times(res, corr);
    if (ridge != 0.0)
      for (int64_t a = 0; a < m; ++a) corr[a] -= ridge * sol[a];
    chol_solve(corr);
    for (int64_t a = 0; a < m; ++a) sol[a] += corr[a];
    if (chol_out != nullptr) *chol_out = std::move(chol);
    return true;
  }

  bool passive_solve(const std::vector<int64_t>& p, std::vector<double>& out) const {
    const int64_t m = static_cast<int64_t>(p.size());
    std::vector<double> normal(m * m);
    for (int64_t a = 0; a < m; ++a)
      for (int64_t c = 0; c < m; ++c) normal[a * m + c] = nrm[p[a] * n + p[c]];
    std::vector<double> sol;
    // min pivot² > kCholMin, as numpy's test min(diag L)² > kCholMin
    if (!csne(r, b, k, n, p, normal, ridge, kCholMin, sol)) return false;
    out.assign(n, 0.0);
    for (int64_t a = 0; a < m; ++a) out[p[a]] = sol[a];
    return true;
  }
};

// Block principal pivoting (see _block_pivot); false: a passive solve declined.
bool block_pivot(const Problem& prob, double tol, std::vector<int64_t>& start, std::vector<double>& x, bool& solved) {
  const int64_t n = prob.n;
  std::vector<char> passive(n, 0);
  int64_t best = n + 1;
  int backup = 3;
  std::vector<double> grad;
  solved = false;
  for (int64_t it = 0; it < 4 * n + 10; ++it) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n; ++i)
      if (passive[i]) idx.push_back(i);
    if (idx.empty()) {
      x.assign(n, 0.0);
    } else if (!prob.passive_solve(idx, x)) {
      return false;
    }
    prob.neg_grad(x, grad);
    std::vector<int64_t> wrong;
    for (int64_t i = 0; i < n; ++i)
      if (passive[i] ? !(x[i] > 0) : grad[i] > tol) wrong.push_back(i);
    if (wrong.empty()) {
      start = idx;
      solved = true;
      return true;
    }
    const int64_t count = static_cast<int64_t>(wrong.size());
    if (count < best) {
      best = count;
      backup = 3;
      for (int64_t i : wrong) passive[i] = !passive[i];
    } else if (backup > 0) {
      --backup;
      for (int64_t i : wrong) passive[i] = !passive[i];
    } else {
      passive[wrong.back()] = !passive[wrong.back()];
    }
  }
  start.clear();
  for (int64_t i = 0; i < n; ++i)
    if (passive[i]) start.push_back(i);
  return true;
}

// Lawson–Hanson from an optional start (see _lawson_hanson); false: a passive solve declined.
bool lawson_hanson(const Problem& prob, int64_t max_iter, std::vector<int64_t> start, std::vector<double> start_sol,
                   bool have_sol, std::vector<double>& y) {
  const int64_t n = prob.n;
  y.assign(n, 0.0);
  double bnorm = 0.0;
  for (int64_t i = 0; i < prob.k; ++i) bnorm += prob.b[i] * prob.b[i];
  const double tol = kKktTol * std::sqrt(bnorm);
  std::vector<int64_t> passive;
  std::vector<double> s;
  while (!start.empty()) {
    if (have_sol) {
      s = start_sol;
      have_sol = false;
    } else if (!prob.passive_solve(start, s)) {
      return false;
    }
    std::vector<int64_t> positive;
    for (int64_t q : start)
      if (s[q] > 0) positive.push_back(q);
    if (positive.size() == start.size()) {
      y = s;
      passive = start;
      break;
    }
    start = positive;
  }
  std::vector<char> blocked(n, 0), closed(n, 0);
  std::vector<double> grad;
  for (int64_t it = 0; it < max_iter; ++it) {
    prob.neg_grad(y, grad);
    std::fill(closed.begin(), closed.end(), 0);
    for (int64_t q : passive) closed[q] = 1;
    int64_t j = -1;
    for (int64_t i = 0; i < n; ++i)
      if (!closed[i] && !blocked[i] && (j < 0 || grad[i] > grad[j])) j = i;
    if (j < 0 || !(grad[j] > tol)) break;
    passive.push_back(j);
    while (true) {
      if (!prob.passive_solve(passive, s)) return false;
      bool all = true;
      for (int64_t q : passive) all = all && s[q] > 0;
      if (all) {
        y = s;
        break;
      }
      double alpha = std::numeric_limits<double>::infinity();
      int64_t first = -1;
      for (int64_t q : passive) {
        const double ratio = s[q] <= 0 ? y[q] / (y[q] - s[q]) : std::numeric_limits<double>::infinity();
        if (first < 0 || ratio < alpha) {
          alpha = ratio;
          first = q;
        }
      }
      alpha = std::min(std::max(alpha, 0.0), 1.0);
      for (int64_t i = 0; i < n; ++i) y[i] = y[i] + alpha * (s[i] - y[i]);
      std::vector<int64_t> keep;
      for (int64_t q : passive)
        if (y[q] > 0 && q != first && !(q == j && alpha == 0.0)) keep.push_back(q);
      bool j_kept = false;
      for (int64_t q : passive) {
        const bool kept = std::find(keep.begin(), keep.end(), q) != keep.end();
        if (!kept) y[q] = 0.0;
        if (q == j && kept) j_kept = true;
      }
      if (!j_kept && alpha == 0.0) blocked[j] = 1;
      passive = keep;
      if (passive.empty()) break;
    }
    if (!passive.empty() && std::find(passive.begin(), passive.end(), j) != passive.end())
      std::fill(blocked.begin(), blocked.end(), 0);
  }
  for (double& v : y) v = std::max(v, 0.0);
  return true;
}

// The polish (see _Factored.projection_weights and _lstsq_cut): false = declined.
bool polish(const double* r, const double* rtr, const double* b, int64_t k, int64_t n, double rcond,
            std::vector<double>& y) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < n; ++i)
    if (y[i] > 0) p.push_back(i);
  if (p.empty()) return true;
  const int64_t m = static_cast<int64_t>(p.size());
  std::vector<double> normal(m * m);
  double trace = 0.0;
  for (int64_t a = 0; a < m; ++a) {
    for (int64_t c = 0; c < m; ++c) normal[a * m + c] = rtr[p[a] * n + p[c]];
    trace += normal[a * m + a];
  }
  std::vector<double> sol, chol;
  if (!Problem::csne(r, b, k, n, p, normal, 0.0, 0.0, sol, &chol)) return false;
  // ‖L⁻¹‖_F² = trace(N⁻¹) ≥ 1/λ_min, and λ_max ≤ trace(N): a sure test of λ_min > 2 rcond² λ_max.
  double inv_f2 = 0.0;
  std::vector<double> col(m);
  for (int64_t c = 0; c < m; ++c) {
    for (int64_t a = 0; a < m; ++a) {
      double s = a == c ? 1.0 : 0.0;
      for (int64_t q = c; q < a; ++q) s -= chol[a * m + q] * col[q];
      col[a] = a < c ? 0.0 : s / chol[a * m + a];
      if (a >= c) inv_f2 += col[a] * col[a];
    }
  }
  if (!(1.0 / inv_f2 > 2 * rcond * rcond * trace)) return false;
  for (double v : sol)
    if (!(v > 0)) return true;  // as numpy: keep the ridge solution unless all are positive
  std::fill(y.begin(), y.end(), 0.0);
  for (int64_t a = 0; a < m; ++a) y[p[a]] = sol[a];
  return true;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> dual_cone_nnls(const at::Tensor& r_in, const at::Tensor& rtr_in,
                                                  const at::Tensor& normal_in, const at::Tensor& bs_in, double ridge,
                                                  bool warm, double polish_rcond, int64_t max_iter) {
  const at::Tensor r = r_in.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor rtr = rtr_in.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor normal = normal_in.to(at::kCPU, at::kDouble).contiguous();
  const at::Tensor bs = bs_in.to(at::kCPU, at::kDouble).contiguous();
  TORCH_CHECK(r.dim() == 2 && bs.dim() == 2 && bs.size(1) == r.size(0), "dual_cone_nnls: shapes");
  const int64_t k = r.size(0), n = r.size(1), rows = bs.size(0);
  at::Tensor ys = at::zeros({rows, n}, r.options());
  at::Tensor ok = at::zeros({rows}, r.options().dtype(at::kBool));
  double* yp = ys.data_ptr<double>();
  bool* okp = ok.data_ptr<bool>();
  for (int64_t row = 0; row < rows; ++row) {
    const double* b = bs.data_ptr<double>() + row * k;
    double bmax = 0.0, bnorm = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      bmax = std::max(bmax, std::abs(b[i]));
      bnorm += b[i] * b[i];
    }
    std::vector<double> y(n, 0.0);
    if (bmax > 0) {
      Problem prob{r.data_ptr<double>(), normal.data_ptr<double>(), b, k, n, ridge};
      std::vector<int64_t> start;
      std::vector<double> x;
      bool solved = false;
      if (warm && !block_pivot(prob, kKktTol * std::sqrt(bnorm), start, x, solved)) continue;
      if (!lawson_hanson(prob, max_iter, start, x, solved, y)) continue;
      if (polish_rcond > 0 && !polish(r.data_ptr<double>(), rtr.data_ptr<double>(), b, k, n, polish_rcond, y)) continue;
    }
    std::copy(y.begin(), y.end(), yp + row * n);
    okp[row] = true;
  }
  return {ys, ok};
}

}  // namespace gradsurg
