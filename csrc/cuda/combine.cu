// out <- beta * out + sum_t w[t] * J[t]: the combined gradient written in place into the flat
// buffer whose views are the shared parameters' .grad.
//
// Memory-bound (T rows read once, out read at most once and written once), so the kernel is a
// grid-stride loop in which each thread owns one 16-byte group of columns: it loads the group
// from every row (one 16-byte load per row when J, out and the row stride are 16-byte aligned;
// a scalar kernel otherwise), accumulates in fp32 registers (fp64 for fp64 J) and stores once.
// The T weights are staged in shared memory once per block. The row loop is unrolled so several
// rows' loads are in flight at once.
//
// beta == 0 overwrites: out is then never read, so NaN/inf left in it (e.g. uninitialised
// memory from torch.empty) cannot propagate, matching torch's addmv with beta=0.
#include "common.cuh"

namespace gradsurg_cuda {
namespace {

constexpr int kThreads = 256;
// Rows whose loads one thread keeps in flight together (4 x 16 bytes).
constexpr int kRows = 4;

// kWidth consecutive elements upcast to Acc: one 16-byte read-only load, or one scalar load.
template <int kWidth, typename T>
__device__ __forceinline__ void load_cols(const T* p, typename Traits<T>::Acc (&x)[kWidth]) {
  if constexpr (kWidth > 1) {
    load16(p, x);
  } else {
    x[0] = to_acc(__ldg(p));
  }
}

template <typename T, int kWidth>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(T* out, const T* __restrict__ J, const typename Traits<T>::Acc* __restrict__ w, int num_tasks,
                   int64_t size, typename Traits<T>::Acc beta) {
  using Acc = typename Traits<T>::Acc;
  extern __shared__ __align__(16) unsigned char smem[];
  Acc* w_s = reinterpret_cast<Acc*>(smem);
  for (int t = threadIdx.x; t < num_tasks; t += kThreads) w_s[t] = w[t];
  __syncthreads();

  const bool read_out = beta != Acc(0);
  // kWidth elements per thread per step: a 16-byte vector (vector kernel) or one element.
  const int64_t groups = size / kWidth;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; g < groups; g += stride) {
    const int64_t col = g * kWidth;
    Acc acc[kWidth];
    if constexpr (kWidth > 1) {
      if (read_out) {
        load16</*kReadOnly=*/false>(out + col, acc);  // out is written by this kernel: coherent load
#pragma unroll
        for (int e = 0; e < kWidth; ++e) acc[e] *= beta;
      } else {
#pragma unroll
        for (int e = 0; e < kWidth; ++e) acc[e] = Acc(0);
      }
    } else {
      acc[0] = read_out ? beta * to_acc(out[col]) : Acc(0);
    }
    // Rows in groups of kRows: all their loads are issued before the FMAs that consume them.
    const T* p = J + col;
    int t = 0;
    for (; t + kRows <= num_tasks; t += kRows) {
      Acc x[kRows][kWidth];
#pragma unroll
      for (int r = 0; r < kRows; ++r) load_cols<kWidth>(p + r * size, x[r]);
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int e = 0; e < kWidth; ++e) acc[e] = fma(w_s[t + r], x[r][e], acc[e]);
      p += kRows * size;
    }
    for (; t < num_tasks; ++t, p += size) {
      Acc x[kWidth];
      load_cols<kWidth>(p, x);
#pragma unroll
      for (int e = 0; e < kWidth; ++e) acc[e] = fma(w_s[t], x[e], acc[e]);
    }
    if constexpr (kWidth > 1) {
      store16(out + col, acc);
    } else {
      out[col] = from_acc<T>(acc[0]);
    }
  }

  if constexpr (kWidth > 1) {
    // The last size % kWidth columns, element by element, in the first block.
    if (blockIdx.x == 0) {
      for (int64_t col = groups * kWidth + threadIdx.x; col < size; col += kThreads) {
        Acc a = read_out ? beta * to_acc(out[col]) : Acc(0);
        for (int t = 0; t < num_tasks; ++t) a = fma(w_s[t], to_acc(__ldg(J + t * size + col)), a);
        out[col] = from_acc<T>(a);
      }
    }
  }
}

template <typename T>
cudaError_t launch_combine(T* out, const T* J, const void* w, int num_tasks, int64_t size, double beta,
                           cudaStream_t stream) {
  using Acc = typename Traits<T>::Acc;
  constexpr int kVec = Traits<T>::kVec;
  if (size == 0) return cudaSuccess;
  const size_t smem = sizeof(Acc) * (num_tasks > 0 ? num_tasks : 1);
  // Vector loads need every row start 16-byte aligned: J and out, and the row stride in bytes.
  const bool vec = (reinterpret_cast<uintptr_t>(J) & 15u) == 0 && (reinterpret_cast<uintptr_t>(out) & 15u) == 0 &&
                   (size * static_cast<int64_t>(sizeof(T))) % 16 == 0;
  const auto* weights = static_cast<const Acc*>(w);
  const Acc b = static_cast<Acc>(beta);
  const int width = vec ? kVec : 1;
  const int64_t groups = size / width;
  const void* kernel = vec ? reinterpret_cast<const void*>(combine_kernel<T, kVec>)
                           : reinterpret_cast<const void*>(combine_kernel<T, 1>);
  int resident = 0;
  cudaError_t err = resident_blocks(kernel, kThreads, smem, &resident);
  if (err != cudaSuccess) return err;
  int64_t grid = (groups + kThreads - 1) / kThreads;
  if (grid > resident) grid = resident;
  if (grid < 1) grid = 1;  // the tail loop runs in block 0
  if (vec) {
    combine_kernel<T, kVec><<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(out, J, weights, num_tasks,
                                                                                    size, b);
  } else {
    combine_kernel<T, 1><<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(out, J, weights, num_tasks,
                                                                                 size, b);
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace gradsurg_cuda

using namespace gradsurg_cuda;

extern "C" cudaError_t gradsurg_cuda_combine(void* out, const void* J, const void* w, int num_tasks, int64_t size,
                                             double beta, int dtype, cudaStream_t stream) {
  if (num_tasks < 0 || size < 0) return cudaErrorInvalidValue;
  switch (dtype) {
    case GS_FLOAT32:
      return launch_combine(static_cast<float*>(out), static_cast<const float*>(J), w, num_tasks, size, beta, stream);
    case GS_FLOAT16:
      return launch_combine(static_cast<__half*>(out), static_cast<const __half*>(J), w, num_tasks, size, beta,
                            stream);
    case GS_BFLOAT16:
      return launch_combine(static_cast<__nv_bfloat16*>(out), static_cast<const __nv_bfloat16*>(J), w, num_tasks,
                            size, beta, stream);
    case GS_FLOAT64:
      return launch_combine(static_cast<double*>(out), static_cast<const double*>(J), w, num_tasks, size, beta,
                            stream);
    default:
      return cudaErrorInvalidValue;
  }
}
