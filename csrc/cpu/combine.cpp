// out ← beta·out + Σ_t w_t J[t]: the combined gradient written in place into the flat buffer
// whose views are the shared parameters' .grad. Memory-bound: T rows read once, out written
// once; the accumulator for one block lives in L1.
#include "common.h"


namespace gradsurg {
namespace {

GRADSURG_CLONES
void combine_block_f32(float* __restrict__ out, const float* __restrict__ J, int64_t P, int64_t T,
                       const float* __restrict__ w, float beta, int64_t n) {
  alignas(64) float acc[kBlock];
  if (beta == 0.f) {
    // beta == 0 overwrites: out is never read, so NaN or inf already there cannot leak in.
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) acc[k] = 0.f;
  } else {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) acc[k] = beta * out[k];
  }
  for (int64_t t = 0; t < T; ++t) {
    const float wt = w[t];  // hoisted: with the __restrict__ rows this lets the loop vectorise
    const float* __restrict__ row = J + t * P;
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) acc[k] += wt * row[k];
  }
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) out[k] = acc[k];
}

template <typename scalar_t, typename acc_t, typename weight_t>
void combine_block_generic(scalar_t* out, const scalar_t* J, int64_t P, int64_t T, const weight_t* w,
                           double beta, int64_t n) {
  acc_t acc[kBlock];
  for (int64_t k = 0; k < n; ++k)
    acc[k] = beta == 0.0 ? acc_t(0) : static_cast<acc_t>(beta) * static_cast<acc_t>(out[k]);
  for (int64_t t = 0; t < T; ++t) {
    const acc_t wt = static_cast<acc_t>(w[t]);
    const scalar_t* row = J + t * P;
    for (int64_t k = 0; k < n; ++k) acc[k] += wt * static_cast<acc_t>(row[k]);
  }
  for (int64_t k = 0; k < n; ++k) out[k] = static_cast<scalar_t>(acc[k]);
}

template <typename scalar_t>
void combine_impl(scalar_t* o, const scalar_t* j, int64_t P, int64_t T, const at::Tensor& weights,
                  double beta) {
  const int64_t num_blocks = (P + kBlock - 1) / kBlock;
  // float64 data keeps float64 weights (the exact path); the rest computes in fp32.
  const at::Tensor w = weights.to(std::is_same_v<scalar_t, double> ? at::kDouble : at::kFloat).contiguous();
  at::parallel_for(0, num_blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t start = b * kBlock;
      const int64_t n = std::min(kBlock, P - start);
      if constexpr (std::is_same_v<scalar_t, float>) {
        combine_block_f32(o + start, j + start, P, T, w.data_ptr<float>(), static_cast<float>(beta), n);
      } else if constexpr (std::is_same_v<scalar_t, double>) {
        combine_block_generic<double, double, double>(o + start, j + start, P, T, w.data_ptr<double>(), beta, n);
      } else {
        combine_block_generic<scalar_t, float, float>(o + start, j + start, P, T, w.data_ptr<float>(), beta, n);
      }
    }
  });
}

}  // namespace

void combine_into(at::Tensor& out, const at::Tensor& matrix, const at::Tensor& weights, double beta) {
  TORCH_CHECK(matrix.dim() == 2, "combine_into: expected a (T, P) matrix");
  TORCH_CHECK(out.is_contiguous() && out.numel() == matrix.size(1),
              "combine_into: out must be contiguous with P = ", matrix.size(1), " elements");
  TORCH_CHECK(out.scalar_type() == matrix.scalar_type(), "combine_into: out and matrix dtypes differ");
  TORCH_CHECK(weights.numel() == matrix.size(0), "combine_into: expected ", matrix.size(0), " weights");
  TORCH_CHECK(out.device().is_cpu() && matrix.device().is_cpu(),
              "combine_into: the cpp backend takes CPU tensors");
  const at::Tensor J = matrix.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, J.scalar_type(), "combine_into", [&] {
    combine_impl<scalar_t>(out.data_ptr<scalar_t>(), J.data_ptr<scalar_t>(), J.size(1), J.size(0), weights, beta);
  });
}

}  // namespace gradsurg
