// One task's per-parameter gradients -> its row of J, in ONE launch for all tensors.
//
// A model has hundreds of parameter tensors, many tiny (biases, norms): one cudaMemcpyAsync or
// one kernel per tensor would be bound by launch overhead (~2-5 us each), not by bandwidth.
// Instead the binding writes a table {src, dst, numel, first_chunk} per tensor into device
// memory (device memory, not kernel parameters, because the number of tensors is unbounded),
// cuts every tensor into GS_FLATTEN_CHUNK_BYTES chunks, and the kernel's 1-D grid-stride loop
// walks the (tensor, chunk) work items, so large tensors are spread over all SMs and small ones
// cost one work item each. A precomputed chunk -> tensor map makes locating an item one load.
//
// The copy is a byte copy (no dtype conversion: all entries have J's dtype), done with the
// widest access (16/8/4/2/1 bytes) that the alignment of both pointers allows. A null source
// zero-fills the destination (a task that does not reach the parameter).
#include "common.cuh"

namespace gradsurg_cuda {
namespace {

constexpr int kThreads = 256;
// Words per thread per batch: loads are issued together before the stores, so each thread has
// several independent 16-byte requests in flight.
constexpr int kUnroll = 4;

template <typename W>
__device__ __forceinline__ void copy_words(char* __restrict__ dst, const char* __restrict__ src, int64_t nbytes) {
  W* d = reinterpret_cast<W*>(dst);
  const int64_t nwords = nbytes / static_cast<int64_t>(sizeof(W));
  if (src != nullptr) {
    const W* s = reinterpret_cast<const W*>(src);
    int64_t i = threadIdx.x;
    for (; i + (kUnroll - 1) * kThreads < nwords; i += kUnroll * kThreads) {
      W v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = s[i + u * kThreads];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) d[i + u * kThreads] = v[u];
    }
    for (; i < nwords; i += kThreads) d[i] = s[i];
  } else {
    W zero;
    memset(&zero, 0, sizeof(W));
    for (int64_t i = threadIdx.x; i < nwords; i += kThreads) d[i] = zero;
  }
  // Bytes past the last whole word (< sizeof(W) of them).
  const int64_t done = nwords * static_cast<int64_t>(sizeof(W));
  for (int64_t b = done + threadIdx.x; b < nbytes; b += kThreads) dst[b] = src != nullptr ? src[b] : char(0);
}

__global__ void __launch_bounds__(kThreads)
    flatten_kernel(const GsFlattenEntry* __restrict__ entries, const int32_t* __restrict__ chunk_entry,
                   int64_t total_chunks, int elem_size) {
  for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
    const GsFlattenEntry e = entries[chunk_entry[chunk]];
    const int64_t bytes = e.numel * elem_size;
    const int64_t offset = (chunk - e.first_chunk) * GS_FLATTEN_CHUNK_BYTES;
    const int64_t left = bytes - offset;
    const int64_t n = left < GS_FLATTEN_CHUNK_BYTES ? left : GS_FLATTEN_CHUNK_BYTES;
    char* dst = static_cast<char*>(e.dst) + offset;
    const char* src = e.src != nullptr ? static_cast<const char*>(e.src) + offset : nullptr;
    // Chunk offsets are multiples of 32 KiB, so the alignment of the chunk is that of the
    // tensor; it is uniform across the block, so the branch does not diverge.
    const uintptr_t align = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src);
    if ((align & 15u) == 0) copy_words<uint4>(dst, src, n);
    else if ((align & 7u) == 0) copy_words<uint2>(dst, src, n);
    else if ((align & 3u) == 0) copy_words<unsigned>(dst, src, n);
    else if ((align & 1u) == 0) copy_words<unsigned short>(dst, src, n);
    else copy_words<unsigned char>(dst, src, n);
  }
}

}  // namespace
}  // namespace gradsurg_cuda

using namespace gradsurg_cuda;

extern "C" int gradsurg_cuda_dtype_size(int dtype) {
  switch (dtype) {
    case GS_FLOAT32: return 4;
    case GS_FLOAT16: return 2;
    case GS_BFLOAT16: return 2;
    case GS_FLOAT64: return 8;
    default: return 0;
  }
}

extern "C" cudaError_t gradsurg_cuda_flatten(const void* table, int num_entries, int64_t total_chunks, int dtype,
                                             cudaStream_t stream) {
  const int elem_size = gradsurg_cuda_dtype_size(dtype);
  if (elem_size == 0 || num_entries < 0 || total_chunks < 0) return cudaErrorInvalidValue;
  if (num_entries == 0 || total_chunks == 0) return cudaSuccess;
  const auto* entries = static_cast<const GsFlattenEntry*>(table);
  const auto* chunk_entry = reinterpret_cast<const int32_t*>(entries + num_entries);
  int resident = 0;
  cudaError_t err = resident_blocks(reinterpret_cast<const void*>(flatten_kernel), kThreads, 0, &resident);
  if (err != cudaSuccess) return err;
  const int64_t grid = total_chunks < resident ? total_chunks : resident;
  flatten_kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(entries, chunk_entry, total_chunks,
                                                                       elem_size);
  return cudaGetLastError();
}
