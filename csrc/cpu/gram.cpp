// G = J·Jᵀ for J of shape (T, P), or for per-parameter gradient lists without J.
//
// One pass over the data: the columns are cut into blocks (at most kBlock, fewer for large T so
// that a block of every row stays in L1); for every block all
// T(T+1)/2 dot products are formed while the block is in cache, in fp32 (fast, and exact
// enough over 2048 terms), then added to per-thread float64 accumulators. A single fp32 GEMM
// over 1e7 columns is off by ~2e-3 relative; these fp32-per-block, fp64-across-blocks sums
// stay within ~1e-7.
//
// Range. fp32 products are only as good as fp32's exponent range: entries ≳ 1e19 square to
// inf, entries ≲ 1e-22 square to (sub)normals that lose their digits or flush to 0, so a row of
// 1e20 would give G = inf and a row of 1e-25 a zero Gram row (and the methods would then ignore
// that task), where the float64 reference is exact. So every block is checked, at no extra pass
// over the data, through its own fp32 sums of squares d_t = Σ_k x_tk² (the diagonal of the
// block's Gram, computed first): if every d_t lies in [2^-100, 2^100] (or the row is exactly
// zero), no product or partial sum can overflow (|Σ_k x_ik x_jk| ≤ √(d_i d_j), Cauchy–Schwarz)
// and what underflow loses (≤ 2^-150 per product, ≤ 2^-138 per block) is ≤ 2^-38 of
// √(d_i d_j): the rest of the block is computed and added as usual. Otherwise (rare: only blocks
// with entries beyond ~1e±15, or inf/NaN) the block is recomputed with each row t scaled by an
// exact power of two 2^-e_t that brings its max |x| into [0.5, 1), and its products are
// multiplied back by 2^(e_i + e_j) in float64. The
// scaling is exact (done in double, rounded once to fp32; only entries 2^126 times below their
// row's max become fp32 subnormals, an error ≤ 2^-150 of that max), so every finite fp32 input —
// subnormals (~1e-45) to 3e38, rows of very different scales in one matrix — gets the accuracy
// of ordinary inputs. Ordinary inputs pay T comparisons per block.
#include "common.h"

#include <cmath>
#include <limits>


namespace gradsurg {
namespace {

// Sixteen independent fp32 lanes per product: written as fixed-width inner loops that the
// compiler turns into one vector register per accumulator (AVX-512) or two (AVX2), whatever the
// clone's target, and that give the adder several independent chains.
constexpr int kLanes = 16;

// Dot products of row a with four rows at once: a is loaded once per four products, which
// halves the loads per multiply-add compared with one product at a time.
__attribute__((always_inline)) inline void dot4(const float* __restrict__ a,
                                                const float* __restrict__ b0,
                                                const float* __restrict__ b1,
                                                const float* __restrict__ b2,
                                                const float* __restrict__ b3, int64_t n,
                                                float* out) {
  float s0[kLanes] = {}, s1[kLanes] = {}, s2[kLanes] = {}, s3[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const float x = a[k + l];
      s0[l] += x * b0[k + l];
      s1[l] += x * b1[k + l];
      s2[l] += x * b2[k + l];
      s3[l] += x * b3[k + l];
    }
  }
  for (; k < n; ++k) {
    const float x = a[k];
    s0[0] += x * b0[k];
    s1[0] += x * b1[k];
    s2[0] += x * b2[k];
    s3[0] += x * b3[k];
  }
  float r0 = 0.f, r1 = 0.f, r2 = 0.f, r3 = 0.f;
  for (int l = 0; l < kLanes; ++l) {
    r0 += s0[l];
    r1 += s1[l];
    r2 += s2[l];
    r3 += s3[l];
  }
  out[0] = r0;
  out[1] = r1;
  out[2] = r2;
  out[3] = r3;
}

__attribute__((always_inline)) inline float dot1(const float* __restrict__ a,
                                                 const float* __restrict__ b, int64_t n) {
  float s[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) s[l] += a[k + l] * b[k + l];
  }
  for (; k < n; ++k) s[0] += a[k] * b[k];
  float r = 0.f;
  for (int l = 0; l < kLanes; ++l) r += s[l];
  return r;
}

// Products of rows a0..a3 with rows b0..b3 (a 4×4 tile of G): 8 loads feed 16 multiply-adds,
// where one row against four (dot4) needs 5 loads for 4. The 16 accumulators take 16 of the 32
// AVX-512 registers.
__attribute__((always_inline)) inline void tile4x4(const float* const* a, const float* const* b,
                                                   int64_t n, float* out) {
  float s[16][kLanes] = {};
  const float* __restrict__ a0 = a[0];
  const float* __restrict__ a1 = a[1];
  const float* __restrict__ a2 = a[2];
  const float* __restrict__ a3 = a[3];
  const float* __restrict__ b0 = b[0];
  const float* __restrict__ b1 = b[1];
  const float* __restrict__ b2 = b[2];
  const float* __restrict__ b3 = b[3];
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const float x0 = a0[k + l], x1 = a1[k + l], x2 = a2[k + l], x3 = a3[k + l];
      const float y0 = b0[k + l], y1 = b1[k + l], y2 = b2[k + l], y3 = b3[k + l];
      s[0][l] += x0 * y0; s[1][l] += x0 * y1; s[2][l] += x0 * y2; s[3][l] += x0 * y3;
      s[4][l] += x1 * y0; s[5][l] += x1 * y1; s[6][l] += x1 * y2; s[7][l] += x1 * y3;
      s[8][l] += x2 * y0; s[9][l] += x2 * y1; s[10][l] += x2 * y2; s[11][l] += x2 * y3;
      s[12][l] += x3 * y0; s[13][l] += x3 * y1; s[14][l] += x3 * y2; s[15][l] += x3 * y3;
    }
  }
  for (int q = 0; q < 16; ++q) {
    float r = 0.f;
    for (int l = 0; l < kLanes; ++l) r += s[q][l];
    const float* __restrict__ x = a[q / 4];
    const float* __restrict__ y = b[q % 4];
    for (int64_t kk = k; kk < n; ++kk) r += x[kk] * y[kk];
    out[q] = r;
  }
}

// Block sums of squares in this range mean the block's fp32 products are safe (see the top).
constexpr float kSafeLo = 0x1p-100f;
constexpr float kSafeHi = 0x1p100f;

// max |x| over n values (NaN ignored, inf kept), in fixed-width lanes that vectorise.
float max_abs(const float* __restrict__ x, int64_t n) {
  float m[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const float v = std::fabs(x[k + l]);
      m[l] = m[l] < v ? v : m[l];
    }
  }
  for (; k < n; ++k) m[0] = m[0] < std::fabs(x[k]) ? std::fabs(x[k]) : m[0];
  float r = 0.f;
  for (int l = 0; l < kLanes; ++l) r = r < m[l] ? m[l] : r;
  return r;
}

// Whether row t of a block can keep its fp32 products: its fp32 sum of squares d is in the safe
// range, or it is exactly zero (d == 0 can also be a row of entries ≲ 1e-23 whose squares all
// underflowed, so zero is checked on the data).
inline bool row_is_safe(float d, const float* row, int64_t n) {
  if (d >= kSafeLo && d <= kSafeHi) return true;
  return d == 0.f && max_abs(row, n) == 0.f;
}

// All pair products of one block of fp32 rows, added into the T×T lower triangle of acc, times
// pow2[r]·pow2[c] when pow2 is given. Rows are taken four at a time as 4×4 tiles (diagonal
// tiles compute their 6 redundant products rather than branch); the rows past the last
// multiple of 4 use dot4/dot1. The diagonal tiles (and the tail rows' squares) come first, into
// diag (4·T floats of scratch): with `check`, if a row's sum of squares is outside the safe
// range nothing is added and false is returned, so ordinary blocks pay T comparisons for the
// range check and add their off-diagonal tiles straight into acc.
GRADSURG_CLONES
bool block_gram_f32(const float* const* rows, int64_t T, int64_t n, const double* pow2, bool check, float* diag,
                    double* acc) {
  const int64_t T4 = T / 4 * 4;
  float* tail = diag + 4 * T4;  // squares of rows T4..T-1
  for (int64_t i = 0; i < T4; i += 4) tile4x4(rows + i, rows + i, n, diag + 4 * i);
  for (int64_t i = T4; i < T; ++i) tail[i - T4] = dot1(rows[i], rows[i], n);
  if (check) {
    for (int64_t t = 0; t < T; ++t) {
      // Product (t%4, t%4) of diagonal tile t/4 is entry 5·(t%4) of its 16.
      const float d = t < T4 ? diag[4 * (t - t % 4) + 5 * (t % 4)] : tail[t - T4];
      if (!row_is_safe(d, rows[t], n)) return false;
    }
  }
  auto add = [&](int64_t r, int64_t c, float v) {
    acc[r * T + c] += pow2 ? static_cast<double>(v) * (pow2[r] * pow2[c]) : static_cast<double>(v);
  };
  for (int64_t i = 0; i < T4; i += 4)
    for (int q = 0; q < 16; ++q)
      if (q % 4 <= q / 4) add(i + q / 4, i + q % 4, diag[4 * i + q]);
  for (int64_t i = T4; i < T; ++i) add(i, i, tail[i - T4]);
  float part[16];
  for (int64_t i = 4; i < T4; i += 4) {
    for (int64_t j = 0; j < i; j += 4) {
      tile4x4(rows + i, rows + j, n, part);
      for (int q = 0; q < 16; ++q) add(i + q / 4, j + q % 4, part[q]);
    }
  }
  for (int64_t i = T4; i < T; ++i) {
    const float* a = rows[i];
    int64_t j = 0;
    for (; j + 4 <= i; j += 4) {
      dot4(a, rows[j], rows[j + 1], rows[j + 2], rows[j + 3], n, part);
      for (int q = 0; q < 4; ++q) add(i, j + q, part[q]);
    }
    for (; j < i; ++j) add(i, j, dot1(a, rows[j], n));
  }
  return true;
}

// The Gram of one block of fp32 rows added into the lower triangle of acc, exact over the whole
// fp32 range (see the top of this file). If the block is out of the safe range, rows[t] is
// redirected to a scaled copy in scratch (row t at scratch + t * ld, ld >= n; rows may already
// point there, e.g. upcast half rows, and are then scaled in place). diag (4·T floats) and pow2
// (T doubles) are scratch too.
void block_gram_accumulate(const float** rows, int64_t T, int64_t n, std::vector<float>& scratch, int64_t ld,
                           float* diag, double* pow2, double* acc) {
  if (block_gram_f32(rows, T, n, nullptr, /*check=*/true, diag, acc)) return;
  // Rare path: scale every row by 2^-e (max |x| = f·2^e, f in [0.5, 1); exact) and redo the
  // block. Zero rows, and rows with no finite nonzero max (inf), keep scale 1; inf and NaN then
  // propagate as in the float64 reference.
  scratch.resize(static_cast<size_t>(T) * ld);
  for (int64_t t = 0; t < T; ++t) {
    pow2[t] = 1.0;
    const float m = max_abs(rows[t], n);
    if (!(m > 0.f && m <= std::numeric_limits<float>::max())) continue;
    int e = 0;
    std::frexp(m, &e);  // m = f·2^e, e in [-148, 128]
    const double down = std::ldexp(1.0, -e);
    const float* src = rows[t];
    float* dst = scratch.data() + t * ld;  // may be src itself (in place): elementwise, no restrict
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<float>(static_cast<double>(src[k]) * down);
    rows[t] = dst;
    pow2[t] = std::ldexp(1.0, e);
  }
  block_gram_f32(rows, T, n, pow2, /*check=*/false, diag, acc);
}

GRADSURG_CLONES
void block_gram_f64(const double* const* rows, int64_t T, int64_t n, double* acc) {
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      const double* __restrict__ a = rows[i];
      const double* __restrict__ b = rows[j];
      double s = 0.0;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
      acc[i * T + j] += s;
    }
  }
}

// A segment is T rows of equal length (rows of J, or one parameter's T task gradients).
template <typename scalar_t>
struct Segment {
  std::vector<const scalar_t*> rows;
  int64_t numel;
};

template <typename scalar_t>
void gram_segments(const std::vector<Segment<scalar_t>>& segments, int64_t T, double* out) {
  // Work items are (segment, block) pairs so that many small parameters and one huge J
  // parallelise the same way.
  // The block of all T rows is re-read for every pair, so it should sit in L1: 24 KiB of fp32
  // (fits the 32-48 KiB L1d of current x86 cores), i.e. 3072 columns at T = 2, 768 at T = 8.
  const int64_t block = std::max<int64_t>(256, std::min<int64_t>(kBlock, (24 * 1024 / 4 / T) / 16 * 16));
  std::vector<std::pair<int64_t, int64_t>> items;
  for (int64_t s = 0; s < static_cast<int64_t>(segments.size()); ++s)
    for (int64_t start = 0; start < segments[s].numel; start += block) items.emplace_back(s, start);
  const int64_t num_items = static_cast<int64_t>(items.size());
  const int num_threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(num_threads) * T * T, 0.0);

  at::parallel_for(0, num_items, 1, [&](int64_t begin, int64_t end) {
    double* acc = partial.data() + static_cast<size_t>(at::get_thread_num()) * T * T;
    std::vector<float> tile;  // half/bfloat16 rows upcast, or rows rescaled (rare)
    std::vector<float> diag(static_cast<size_t>(4) * T);
    std::vector<double> pow2(T);
    std::vector<const float*> f32_rows(T);
    std::vector<const double*> f64_rows(T);
    for (int64_t it = begin; it < end; ++it) {
      const auto& seg = segments[items[it].first];
      const int64_t start = items[it].second;
      const int64_t n = std::min(block, seg.numel - start);
      if constexpr (std::is_same_v<scalar_t, double>) {
        for (int64_t t = 0; t < T; ++t) f64_rows[t] = seg.rows[t] + start;
        block_gram_f64(f64_rows.data(), T, n, acc);
      } else if constexpr (std::is_same_v<scalar_t, float>) {
        for (int64_t t = 0; t < T; ++t) f32_rows[t] = seg.rows[t] + start;
        block_gram_accumulate(f32_rows.data(), T, n, tile, block, diag.data(), pow2.data(), acc);
      } else {
        // Half and bfloat16 are upcast once per block into a thread-local fp32 tile.
        tile.resize(static_cast<size_t>(T) * block);
        for (int64_t t = 0; t < T; ++t) {
          const scalar_t* src = seg.rows[t] + start;
          float* dst = tile.data() + t * block;
          for (int64_t k = 0; k < n; ++k) dst[k] = static_cast<float>(src[k]);
          f32_rows[t] = dst;
        }
        block_gram_accumulate(f32_rows.data(), T, n, tile, block, diag.data(), pow2.data(), acc);
      }
    }
  });

  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0.0;
      for (int th = 0; th < num_threads; ++th) s += partial[static_cast<size_t>(th) * T * T + i * T + j];
      out[i * T + j] = s;
      out[j * T + i] = s;
    }
  }
}

}  // namespace

at::Tensor gram(const at::Tensor& matrix) {
  TORCH_CHECK(matrix.dim() == 2, "gram: expected a (T, P) matrix, got ", matrix.dim(), " dims");
  TORCH_CHECK(matrix.device().is_cpu(), "gram: the cpp backend takes CPU tensors");
  const at::Tensor J = matrix.contiguous();
  const int64_t T = J.size(0), P = J.size(1);
  at::Tensor out = at::zeros({T, T}, J.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, J.scalar_type(), "gram", [&] {
    std::vector<Segment<scalar_t>> segments(1);
    segments[0].numel = P;
    for (int64_t t = 0; t < T; ++t) segments[0].rows.push_back(J.data_ptr<scalar_t>() + t * P);
    if (P > 0) gram_segments(segments, T, out.data_ptr<double>());
  });
  return out;
}

at::Tensor gram_lists(const std::vector<std::vector<at::Tensor>>& grads) {
  TORCH_CHECK(!grads.empty() && !grads[0].empty(), "gram_lists: no gradients");
  const int64_t T = static_cast<int64_t>(grads.size());
  const size_t K = grads[0].size();
  const auto dtype = grads[0][0].scalar_type();
  // Keep contiguous copies alive for the duration of the kernel.
  std::vector<std::vector<at::Tensor>> held(T);
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(grads[t].size() == K, "gram_lists: task ", t, " has ", grads[t].size(),
                " gradients, task 0 has ", K);
    for (size_t k = 0; k < K; ++k) {
      TORCH_CHECK(grads[t][k].scalar_type() == dtype && grads[t][k].device().is_cpu(),
                  "gram_lists: all gradients must be CPU tensors of one dtype");
      TORCH_CHECK(grads[t][k].numel() == grads[0][k].numel(), "gram_lists: parameter ", k,
                  " has different sizes across tasks");
      held[t].push_back(grads[t][k].contiguous());
    }
  }
  at::Tensor out = at::zeros({T, T}, grads[0][0].options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gram_lists", [&] {
    std::vector<Segment<scalar_t>> segments;
    for (size_t k = 0; k < K; ++k) {
      Segment<scalar_t> seg;
      seg.numel = held[0][k].numel();
      if (seg.numel == 0) continue;
      for (int64_t t = 0; t < T; ++t) seg.rows.push_back(held[t][k].data_ptr<scalar_t>());
      segments.push_back(std::move(seg));
    }
    if (!segments.empty()) gram_segments(segments, T, out.data_ptr<double>());
  });
  return out;
}

}  // namespace gradsurg
