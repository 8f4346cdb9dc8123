// Shared declarations of the CUDA kernels (built into gradsurg._cuda).
//
// This header has two halves:
//  * a host-visible half (dtype codes, the layouts of the device tables, tuning constants and the
//    extern "C" launchers) that binding.cpp includes with the host compiler, so the table layouts
//    the binding writes and the kernels read are defined exactly once;
//  * a device half (#ifdef __CUDACC__): load/upcast helpers for float/__half/__nv_bfloat16/double
//    and the warp reduction of the Gram kernel, used by the .cu files only.
//
// No torch headers here or in the .cu files: ATen headers cost ~70 s of nvcc time per
// architecture and the CPU torch wheel does not ship the CUDA ones. The .cu files take raw
// pointers, sizes, a dtype code and a cudaStream_t, and report errors as cudaError_t
// (cudaGetLastError() right after each launch); binding.cpp turns them into exceptions.
//
// Semantics of every operation: gradsurg/kernels/reference.py.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// ---------------------------------------------------------------------------------------------
// Host-visible half.
// ---------------------------------------------------------------------------------------------

// dtype codes of J (and of the gradients): the binding maps at::ScalarType onto these.
enum GsDtype : int {
  GS_FLOAT32 = 0,
  GS_FLOAT16 = 1,
  GS_BFLOAT16 = 2,
  GS_FLOAT64 = 3,
};

// Largest number of tasks (rows of J) the Gram kernels take: one shared-memory slot per row
// pointer, and the 4x4 tile bookkeeping stays within a few KiB of shared memory. Larger T falls
// back to the torch backend in gradsurg/kernels/cuda.py.
#define GS_MAX_TASKS 64

// flatten: each tensor is cut into chunks of this many bytes; one chunk is one work item of the
// 1-D grid. 32 KiB = 8 x 16-byte vectors per thread of a 256-thread block: enough bytes in
// flight per block to cover DRAM latency, small enough that a model with a few large tensors
// still yields thousands of work items to spread over the SMs.
#define GS_FLATTEN_CHUNK_BYTES 32768

// One tensor to copy into (or zero in) a row of J.
// The table lives in device memory (not in the kernel's parameter space) because the number of
// parameter tensors of a model is unbounded, while kernel parameters are limited to a few KiB.
struct GsFlattenEntry {
  const void* src;      // contiguous gradient, or nullptr: zero-fill dst
  void* dst;            // destination inside row t of J (row base + the parameter's offset)
  int64_t numel;        // elements (all entries share J's dtype)
  int64_t first_chunk;  // index of this entry's first work item; entries are in chunk order
};
// Device layout of the flatten table (one allocation, one host->device copy):
//   GsFlattenEntry entries[num_entries];
//   int32_t chunk_entry[total_chunks];   // work item -> entry, so no search in the kernel

// Device layout of the gram_lists table (one allocation, one host->device copy), for K
// parameters (empty ones removed) of T tasks, cut in chunks of gradsurg_cuda_gram_chunk_cols():
//   const void* rows[K * T];             // rows[k * T + t]: task t's gradient of parameter k
//   int64_t numel[K];
//   int64_t chunk_start[K];              // first chunk of parameter k
//   int32_t chunk_param[total_chunks];   // chunk -> parameter
// (pointers and int64 first, so every array is naturally aligned.)

#ifdef __cplusplus
extern "C" {
#endif

// Bytes of one element of a dtype code, 0 for an unknown code.
int gradsurg_cuda_dtype_size(int dtype);

// Copy/zero-fill every entry of the table in one launch.
//   table: device pointer to the layout above; total_chunks: work items.
cudaError_t gradsurg_cuda_flatten(const void* table, int num_entries, int64_t total_chunks, int dtype,
                                  cudaStream_t stream);

// Columns per Gram chunk for T tasks of this dtype (the binding needs it to cut gram_lists'
// parameters into chunks exactly as the kernel does). 0 for an unsupported T or dtype.
int gradsurg_cuda_gram_chunk_cols(int num_tasks, int dtype);

// G (T x T float64, device, row-major) = J J^T for a contiguous row-major J (T x P).
// Zeroes G itself, then accumulates; the full symmetric matrix is written.
cudaError_t gradsurg_cuda_gram(const void* J, int num_tasks, int64_t size, int dtype, double* G,
                               cudaStream_t stream);

// G from per-parameter gradient lists (the table layout above, in device memory), without J.
cudaError_t gradsurg_cuda_gram_lists(const void* table, int64_t num_params, int num_tasks,
                                     int64_t total_chunks, int dtype, double* G, cudaStream_t stream);

// out[k] = beta * out[k] + sum_t w[t] * J[t][k] for a contiguous J (T x P).
//   w: device array of T floats (T doubles when dtype is GS_FLOAT64).
//   beta == 0 never reads out, so NaN/inf already in out cannot leak into the result.
cudaError_t gradsurg_cuda_combine(void* out, const void* J, const void* w, int num_tasks, int64_t size,
                                  double beta, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

// ---------------------------------------------------------------------------------------------
// Device half.
// ---------------------------------------------------------------------------------------------
#ifdef __CUDACC__

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

namespace gradsurg_cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Per storage type: the accumulation type and how many elements one 16-byte load carries.
// Half and bfloat16 are accumulated in fp32: they are upcast right after the load and never
// summed in their own 11- or 8-bit mantissa.
template <typename T>
struct Traits;
template <>
struct Traits<float> {
  using Acc = float;
  static constexpr int kVec = 4;
};
template <>
struct Traits<__half> {
  using Acc = float;
  static constexpr int kVec = 8;
};
template <>
struct Traits<__nv_bfloat16> {
  using Acc = float;
  static constexpr int kVec = 8;
};
template <>
struct Traits<double> {
  using Acc = double;
  static constexpr int kVec = 2;
};

__device__ __forceinline__ bool is_aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Scalar upcast. bfloat16 is the top half of a float32, so a shift is exact and cheaper than a
// conversion instruction; the explicit intrinsics also keep this compiling under torch's
// -D__CUDA_NO_HALF_CONVERSIONS__ / -D__CUDA_NO_BFLOAT16_CONVERSIONS__.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) {
  return __uint_as_float(static_cast<unsigned>(__bfloat16_as_ushort(x)) << 16);
}

// Scalar downcast with round-to-nearest-even.
template <typename T>
__device__ __forceinline__ T from_acc(typename Traits<T>::Acc x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Two bfloat16 packed in a 32-bit word -> two floats (low half is the lower address).
__device__ __forceinline__ float2 bf16x2_to_float2(unsigned w) {
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}
__device__ __forceinline__ float2 halfx2_to_float2(unsigned w) {
  __half2 h;
  static_assert(sizeof(h) == sizeof(w), "__half2 is 32 bits");
  memcpy(&h, &w, sizeof(w));
  return __half22float2(h);
}

// One 16-byte global load, through the read-only (non-coherent) data path unless kReadOnly is
// false (data this kernel also writes, e.g. combine's out). p must be 16-byte aligned.
template <typename V, bool kReadOnly>
__device__ __forceinline__ V ld16(const void* p) {
  static_assert(sizeof(V) == 16, "16-byte vector type");
  if constexpr (kReadOnly) {
    return __ldg(reinterpret_cast<const V*>(p));
  } else {
    return *reinterpret_cast<const V*>(p);
  }
}

// 16 bytes (kVec elements) loaded and upcast to the accumulation type at once.
template <bool kReadOnly = true>
__device__ __forceinline__ void load16(const float* p, float (&v)[4]) {
  const float4 x = ld16<float4, kReadOnly>(p);
  v[0] = x.x;
  v[1] = x.y;
  v[2] = x.z;
  v[3] = x.w;
}
template <bool kReadOnly = true>
__device__ __forceinline__ void load16(const double* p, double (&v)[2]) {
  const double2 x = ld16<double2, kReadOnly>(p);
  v[0] = x.x;
  v[1] = x.y;
}
template <bool kReadOnly = true>
__device__ __forceinline__ void load16(const __half* p, float (&v)[8]) {
  const uint4 x = ld16<uint4, kReadOnly>(p);
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = halfx2_to_float2(w[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}
template <bool kReadOnly = true>
__device__ __forceinline__ void load16(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 x = ld16<uint4, kReadOnly>(p);
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = bf16x2_to_float2(w[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}

// One 16-byte global store of kVec elements rounded from the accumulation type.
__device__ __forceinline__ void store16(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store16(double* p, const double (&v)[2]) {
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
}
__device__ __forceinline__ void store16(__half* p, const float (&v)[8]) {
  unsigned w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __half2 h = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
    memcpy(&w[k], &h, sizeof(unsigned));
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ __forceinline__ void store16(__nv_bfloat16* p, const float (&v)[8]) {
  unsigned w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    memcpy(&w[k], &h, sizeof(unsigned));
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Reduces the 16 independent per-lane partial sums of a 4x4 tile of dot products across the
// warp with 16 shuffles in total, instead of 16 x 5 for 16 separate shuffle trees: at each
// butterfly step (lane offset 16, 8, 4, 2) the two lanes of a pair swap half of their remaining
// values, so the values per lane halve while the lanes summed double; a last xor-1 step adds the
// final pair. Lane L ends with the warp-wide sum of value (L >> 1) & 15 in v[0] (offset 16
// chooses bit 3 of the value index, offset 8 bit 2, offset 4 bit 1, offset 2 bit 0).
template <int N, int Offset, typename Acc>
__device__ __forceinline__ void transpose_reduce_step(Acc (&v)[16], int lane) {
  const bool upper = (lane & Offset) != 0;
#pragma unroll
  for (int q = 0; q < N / 2; ++q) {
    const Acc send = upper ? v[q] : v[q + N / 2];
    const Acc keep = upper ? v[q + N / 2] : v[q];
    v[q] = keep + __shfl_xor_sync(kFullMask, send, Offset);
  }
  if constexpr (N / 2 > 1) transpose_reduce_step<N / 2, Offset / 2>(v, lane);
}

template <typename Acc>
__device__ __forceinline__ void transpose_reduce16(Acc (&v)[16], int lane) {
  transpose_reduce_step<16, 16>(v, lane);  // 8 + 4 + 2 + 1 shuffles
  v[0] += __shfl_xor_sync(kFullMask, v[0], 1);
}

// Number of SMs of the current device times the resident blocks of `kernel` per SM: the grid
// size of the grid-stride kernels (more blocks would only queue).
inline cudaError_t resident_blocks(const void* kernel, int threads, size_t dynamic_smem, int* out) {
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, dynamic_smem);
  if (err != cudaSuccess) return err;
  *out = (sms > 0 ? sms : 1) * (per_sm > 0 ? per_sm : 1);
  return cudaSuccess;
}

}  // namespace gradsurg_cuda

#endif  // __CUDACC__
