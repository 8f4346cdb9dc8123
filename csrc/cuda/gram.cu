// G = J J^T (T x T, float64) for J of shape (T, P), and the same from per-parameter gradient
// lists without J (gram_lists).
//
// Design
//  * The columns are cut into chunks of C columns; a grid-stride loop hands chunks to blocks, and
//    the grid is sized to what is resident on the GPU, so every block walks many chunks and
//    amortises its set-up and its final atomics.
//  * A block stages its chunk of all T rows in shared memory, upcast to the accumulation type
//    right after the (16-byte vectorised where aligned, coalesced) global load: J is read from
//    DRAM exactly once, while every row is used by up to T/4 dot-product tiles.
//  * The T x T result is cut into 4x4 tiles (only tiles on or below the diagonal); a warp owns a
//    tile (a "unit"; small T splits one tile's columns over several warps) for the whole kernel.
//    Each lane forms the 16 dot products of its columns in fp32 registers (4 + 4 row values per
//    16 FMAs), then the warp reduces them with shuffles (16 shuffles for 16 sums, see
//    transpose_reduce16 in common.cuh).
//  * fp32 partial sums per chunk, fp64 across chunks: one fp32 accumulation over all of a large P
//    drifts (~2e-3 relative at P = 1e7 for an fp32 matmul, see reference.py), while at most
//    C / 32 <= 64 terms per lane plus a 32-lane tree in fp32 keep ~1e-7 (fp32 math is also 2x
//    (A100) to 64x (consumer GPUs) faster than fp64, and fp16/bf16 products are exact in fp32);
//    the per-chunk sums are added into float64 shared-memory accumulators (one slot per unit
//    and product, owned by one warp, so no atomics there). fp64 J keeps fp64 throughout.
//  * Range: fp32 products overflow for entries >~ 1e19 and lose their digits or flush to zero for
//    entries <~ 1e-22 (a row of 1e20 would give G = inf, a row of 1e-25 a zero Gram row, where the
//    float64 reference is exact). While staging, each row's max |x| over the chunk is taken (in
//    registers, a half-warp shuffle max, one shared atomicMax per half-warp). A row whose max is
//    0, inf/NaN or within [2^-50, 2^50) is used as staged: products <= 2^100 * C cannot
//    overflow, and what underflow loses (<= 2^-150 per product) is <= 2^-38 of the rows' scale.
//    Any other row (rare: entries beyond ~1e+-15) is multiplied in shared memory by an exact
//    power of two 2^s (max |x| into [2, 4) for large rows, [2^-23, 2^-22) for small ones, so
//    that s in [-126, 126] is one normal float) and the tile products are multiplied back by
//    2^-(s_i + s_j) in float64. So every finite fp32/bf16 input, subnormals (~1e-45) to 3.4e38,
//    rows of very different scales in one matrix, gets the accuracy of ordinary inputs, for one
//    max per staged element and, only in chunks that need it, one multiply. float16 (6e-8 to
//    65504) cannot leave the safe range and skips all of it; fp64 is fp64 throughout. The
//    scaling relies on fp32 subnormals not being flushed: nvcc's default -ftz=false (setup.py
//    does not pass --use_fast_math).
//  * At the end each block adds its sums into G with atomicAdd(double*) (native on sm_60+): one
//    atomic per product per block, not per chunk, so contention is ~(#blocks) per entry.
//    A second tiny kernel mirrors the lower triangle, so G is exactly symmetric (atomics into
//    both halves would add the same terms in different orders).
#include "common.cuh"

#include <type_traits>

namespace gradsurg_cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Budget of the staged chunk: T * C * sizeof(Acc) <= 32 KiB keeps ~3 blocks resident per SM on
// A100 even at T = 64 (plus <= 17 KiB of float64 accumulators).
constexpr int kTileBytes = 32 * 1024;
// Upper bound of C: longer chunks would only lengthen the fp32 partial sums.
constexpr int kMaxChunkCols = 2048;

// Row data of these storage types can leave fp32's safe product range (see the top): fp32 and
// bfloat16 share fp32's exponent range; float16 cannot, and fp64 is accumulated in fp64.
template <typename T>
constexpr bool kMayRescale = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16>;

// Rows whose max |x| is below 2^kSafeMinExp or at/above 2^(kSafeMaxExp + 1) are rescaled.
constexpr int kSafeMinExp = -50;
constexpr int kSafeMaxExp = 49;

// 2^k, exact: as a float for k in [-126, 127], as a double for k in [-1022, 1023].
__device__ __forceinline__ float pow2f(int k) { return __int_as_float((k + 127) << 23); }
__device__ __forceinline__ double pow2d(int k) {
  return __longlong_as_double(static_cast<long long>(k + 1023) << 52);
}

// The exponent s a staged row is multiplied by 2^s with, from the bits of its max |x| (a
// non-negative float, or NaN): 0 for zero, inf/NaN and safe rows; otherwise max into [2, 4)
// (large rows) or [2^-23, 2^-22) (small rows), s in [-126, 126].
__device__ __forceinline__ int rescale_shift(unsigned bits) {
  if (bits == 0u || bits >= 0x7f800000u) return 0;
  // floor(log2(max)); a subnormal is bits * 2^-149.
  const int e = bits < 0x00800000u ? (31 - __clz(static_cast<int>(bits))) - 149 : static_cast<int>(bits >> 23) - 127;
  if (e >= kSafeMinExp && e <= kSafeMaxExp) return 0;
  return e > 0 ? 1 - e : -23 - e;
}

// Acc values per 16-byte shared-memory access (a variable template, usable in host and device
// code without --expt-relaxed-constexpr).
template <typename Acc>
constexpr int kSmemVecOf = 16 / static_cast<int>(sizeof(Acc));

struct ChunkPos {
  int64_t seg;   // parameter (gram_lists) or 0 (gram)
  int64_t col0;  // first column of the chunk within the segment
  int n;         // columns in this chunk, 1..C
};

// Rows of a contiguous J: one segment of P columns.
template <typename T>
struct DenseRows {
  const T* base;
  int64_t size;
  __device__ ChunkPos locate(int64_t chunk, int C) const {
    const int64_t col0 = chunk * C;
    const int64_t left = size - col0;
    return {0, col0, static_cast<int>(left < C ? left : C)};
  }
  __device__ const T* row(int64_t /*seg*/, int t) const { return base + static_cast<int64_t>(t) * size; }
};

// Rows of per-parameter gradient lists: K segments with T row pointers each. The chunk ->
// parameter map is precomputed by the binding, so locating a chunk is one load, not a search.
template <typename T>
struct ListRows {
  const T* const* rows;  // rows[k * T + t]
  const int64_t* numel;
  const int64_t* chunk_start;
  const int32_t* chunk_param;
  int num_tasks;
  __device__ ChunkPos locate(int64_t chunk, int C) const {
    const int64_t k = chunk_param[chunk];
    const int64_t col0 = (chunk - chunk_start[k]) * C;
    const int64_t left = numel[k] - col0;
    return {k, col0, static_cast<int>(left < C ? left : C)};
  }
  __device__ const T* row(int64_t seg, int t) const { return rows[seg * num_tasks + t]; }
};

// Stage kVec elements (one 16-byte group) of one row into shared memory as Acc, zero-filling
// columns at or past the end of the chunk (`remaining` <= 0: all zeros, src not read). Returns
// the bits of the group's max |x| where rows may need rescaling (kMayRescale), else 0.
template <typename T>
__device__ __forceinline__ unsigned stage_group(const T* src, typename Traits<T>::Acc* dst, int remaining) {
  using Acc = typename Traits<T>::Acc;
  constexpr int kVec = Traits<T>::kVec;
  Acc v[kVec];
  if (remaining >= kVec && is_aligned16(src)) {
    load16(src, v);
  } else {
    // Unaligned rows (P or a parameter size not a multiple of the vector width) and chunk tails:
    // scalar loads, still coalesced across the warp.
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[e] = e < remaining ? to_acc(src[e]) : Acc(0);
  }
  // dst is 16-byte aligned: rows of the tile start at multiples of C >= 64 elements, and the
  // group offset is a multiple of kVec.
  constexpr int kSmemVec = kSmemVecOf<Acc>;
#pragma unroll
  for (int e = 0; e < kVec; e += kSmemVec) {
    if constexpr (kSmemVec == 4) {
      *reinterpret_cast<float4*>(dst + e) = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
    } else {
      *reinterpret_cast<double2*>(dst + e) = make_double2(v[e], v[e + 1]);
    }
  }
  if constexpr (kMayRescale<T>) {
    float m = 0.f;
#pragma unroll
    for (int e = 0; e < kVec; ++e) m = fmaxf(m, fabsf(v[e]));  // NaN ignored, inf kept
    return __float_as_uint(m);
  } else {
    return 0u;
  }
}

// Shared memory of one block (dynamic part), in this order:
//   double acc[num_units * 16]     per-unit float64 sums of the 16 products of its tile
//   Acc    tile[T * C]             the staged chunk, row t at tile + t * C
//   int    tile_ij[num_tiles]      tile -> (row block << 16 | column block)
// Blocks of 256 threads per SM the register allocation must allow: fp32-accumulating variants
// fit in 64 registers (4 blocks; without the bound ptxas gives the gram_lists variants that may
// rescale 80, one block fewer), fp64 ones in 80 (3 blocks, as without a bound).
template <typename T>
constexpr int kMinBlocksPerSm = std::is_same_v<typename Traits<T>::Acc, float> ? 4 : 3;

template <typename T, typename Rows>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm<T>)
    gram_kernel(Rows rows, int num_tasks, int C, int num_tiles, int splits, int64_t num_chunks,
                double* __restrict__ G) {
  using Acc = typename Traits<T>::Acc;
  constexpr int kVec = Traits<T>::kVec;  // elements per 16-byte global load
  constexpr int kSmemVec = kSmemVecOf<Acc>;
  constexpr int kStep = 32 * kSmemVec;  // columns a warp covers per iteration

  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ const T* row_ptr[GS_MAX_TASKS];
  // Per row of the current chunk: max |x| (float bits; unsigned order is float order for
  // non-negative floats), the rescale exponent s and 2^-s (see rescale_shift).
  __shared__ unsigned row_bits[GS_MAX_TASKS];
  __shared__ int row_shift[GS_MAX_TASKS];
  __shared__ double row_back[GS_MAX_TASKS];
  static_assert(!kMayRescale<T> || (32 * kSmemVec / kVec) % 16 == 0,
                "a half-warp of staging groups must lie in one row (groups per row % 16 == 0)");

  const int num_units = num_tiles * splits;
  double* acc = reinterpret_cast<double*>(smem);
  Acc* tile = reinterpret_cast<Acc*>(smem + static_cast<size_t>(num_units) * 16 * sizeof(double));
  int* tile_ij = reinterpret_cast<int*>(tile + static_cast<size_t>(num_tasks) * C);

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;

  for (int i = tid; i < num_units * 16; i += kThreads) acc[i] = 0.0;
  for (int it = tid; it < num_tiles; it += kThreads) {
    // Tiles are numbered row block by row block: tile ib*(ib+1)/2 + jb is (ib, jb), jb <= ib.
    int ib = 0;
    while ((ib + 1) * (ib + 2) / 2 <= it) ++ib;
    tile_ij[it] = (ib << 16) | (it - ib * (ib + 1) / 2);
  }

  for (int64_t chunk = blockIdx.x; chunk < num_chunks; chunk += gridDim.x) {
    const ChunkPos pos = rows.locate(chunk, C);
    if (tid < num_tasks) {
      row_ptr[tid] = rows.row(pos.seg, tid) + pos.col0;
      row_bits[tid] = 0u;  // read last by this thread, before the previous chunk's barrier
    }
    // Orders: row_ptr (and, first time, acc/tile_ij) written before use; the previous chunk's
    // dot products finished before the tile is overwritten.
    __syncthreads();

    // Columns [n, n_round) are zero-filled so the dot loops below need no bounds checks.
    const int n_round = (pos.n + kStep - 1) / kStep * kStep;
    const int groups = n_round / kVec;  // 16-byte groups per row
    // groups is a multiple of 16, so a half-warp stages 16 groups of one row: its max is one
    // 4-step shuffle reduction and one shared atomic. The loop bound is warp-uniform (g = tid +
    // k * kThreads as before) so that the shuffles see the full warp.
    const int total = num_tasks * groups;
    for (int base = warp * 32; base < total; base += kThreads) {
      const int g = base + lane;
      unsigned m = 0u;
      if (g < total) {
        const int t = g / groups;
        const int c = (g - t * groups) * kVec;
        m = stage_group<T>(row_ptr[t] + c, tile + static_cast<size_t>(t) * C + c, pos.n - c);
      }
      if constexpr (kMayRescale<T>) {
#pragma unroll
        for (int off = 8; off > 0; off >>= 1) m = max(m, __shfl_xor_sync(kFullMask, m, off));
        if ((lane & 15) == 0 && g < total && m != 0u) atomicMax(&row_bits[g / groups], m);
      }
    }
    __syncthreads();

    // Rows out of the safe range are rescaled in shared memory (rare). One more barrier per
    // chunk: it publishes row_shift/row_back and, as __syncthreads_or, tells every thread
    // whether any row of this chunk was rescaled (block-uniform, so the barrier below is too).
    bool rescaled = false;
    if constexpr (kMayRescale<T>) {
      bool mine = false;
      if (tid < num_tasks) {
        const int sh = rescale_shift(row_bits[tid]);
        row_shift[tid] = sh;
        row_back[tid] = pow2d(-sh);
        mine = sh != 0;
      }
      rescaled = __syncthreads_or(mine) != 0;
      if (rescaled) {
        const int vecs = n_round / kSmemVec;  // float4s per row (kSmemVec == 4 for fp32 Acc)
        for (int q = tid; q < num_tasks * vecs; q += kThreads) {
          const int t = q / vecs;
          const int sh = row_shift[t];
          if (sh != 0) {
            float4* p = reinterpret_cast<float4*>(tile + static_cast<size_t>(t) * C) + (q - t * vecs);
            const float f = pow2f(sh);
            float4 v = *p;
            v.x *= f, v.y *= f, v.z *= f, v.w *= f;
            *p = v;
          }
        }
        __syncthreads();
      }
    }

    for (int u = warp; u < num_units; u += kWarps) {
      const int item = u / splits;
      const int part = u - item * splits;
      const int code = tile_ij[item];
      const int i0 = (code >> 16) * 4;
      const int j0 = (code & 0xffff) * 4;
      // Rows past T (T not a multiple of 4) read row T-1 instead; their products are dropped.
      const Acc* a[4];
      const Acc* b[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        a[x] = tile + static_cast<size_t>(min(i0 + x, num_tasks - 1)) * C;
        b[x] = tile + static_cast<size_t>(min(j0 + x, num_tasks - 1)) * C;
      }
      Acc s[16];
#pragma unroll
      for (int p = 0; p < 16; ++p) s[p] = Acc(0);
      // Every lane of the warp runs the same number of iterations (n_round is a multiple of
      // kStep), so the shuffles below see the full warp.
      for (int c = (part * 32 + lane) * kSmemVec; c < n_round; c += splits * kStep) {
        Acc av[4][kSmemVec];
        Acc bv[4][kSmemVec];
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          if constexpr (kSmemVec == 4) {
            const float4 fa = *reinterpret_cast<const float4*>(a[x] + c);
            const float4 fb = *reinterpret_cast<const float4*>(b[x] + c);
            av[x][0] = fa.x, av[x][1] = fa.y, av[x][2] = fa.z, av[x][3] = fa.w;
            bv[x][0] = fb.x, bv[x][1] = fb.y, bv[x][2] = fb.z, bv[x][3] = fb.w;
          } else {
            const double2 da = *reinterpret_cast<const double2*>(a[x] + c);
            const double2 db = *reinterpret_cast<const double2*>(b[x] + c);
            av[x][0] = da.x, av[x][1] = da.y;
            bv[x][0] = db.x, bv[x][1] = db.y;
          }
        }
#pragma unroll
        for (int x = 0; x < 4; ++x)
#pragma unroll
          for (int y = 0; y < 4; ++y)
#pragma unroll
            for (int e = 0; e < kSmemVec; ++e) s[x * 4 + y] = fma(av[x][e], bv[y][e], s[x * 4 + y]);
      }
      transpose_reduce16(s, lane);
      // Lane L holds product (L >> 1) & 15; the even lanes write (unit owned by this warp only).
      if ((lane & 1) == 0) {
        double v = static_cast<double>(s[0]);
        if (rescaled) {
          const int p = lane >> 1;
          v *= row_back[min(i0 + (p >> 2), num_tasks - 1)] * row_back[min(j0 + (p & 3), num_tasks - 1)];
        }
        acc[u * 16 + (lane >> 1)] += v;
      }
    }
  }
  __syncthreads();

  // Sum the column splits of each tile, then one float64 atomic per product of this block.
  for (int q = tid; q < num_tiles * 16; q += kThreads) {
    const int item = q >> 4;
    const int p = q & 15;
    const int code = tile_ij[item];
    const int i = (code >> 16) * 4 + (p >> 2);
    const int j = (code & 0xffff) * 4 + (p & 3);
    if (i < num_tasks && j <= i) {
      double sum = 0.0;
      for (int part = 0; part < splits; ++part) sum += acc[(item * splits + part) * 16 + p];
      atomicAdd(G + static_cast<size_t>(i) * num_tasks + j, sum);
    }
  }
}

// G[j][i] = G[i][j] for j < i: the kernel above only fills the lower triangle.
__global__ void mirror_kernel(double* __restrict__ G, int num_tasks) {
  const int n = num_tasks * num_tasks;
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += gridDim.x * blockDim.x) {
    const int i = idx / num_tasks;
    const int j = idx - i * num_tasks;
    if (j > i) G[idx] = G[static_cast<size_t>(j) * num_tasks + i];
  }
}

template <typename T>
int chunk_cols(int num_tasks) {
  using Acc = typename Traits<T>::Acc;
  constexpr int kMin = 32 * kSmemVecOf<Acc>;  // one warp-wide vector step
  const int budget = kTileBytes / (num_tasks * static_cast<int>(sizeof(Acc)));
  int c = kMin;
  while (c * 2 <= budget && c * 2 <= kMaxChunkCols) c *= 2;
  return c;
}

template <typename T, typename Rows>
cudaError_t launch_gram(const Rows& rows, int num_tasks, int64_t num_chunks, double* G, cudaStream_t stream) {
  using Acc = typename Traits<T>::Acc;
  cudaError_t err = cudaMemsetAsync(G, 0, sizeof(double) * num_tasks * num_tasks, stream);
  if (err != cudaSuccess || num_chunks == 0) return err;

  const int C = chunk_cols<T>(num_tasks);
  const int blocks4 = (num_tasks + 3) / 4;
  const int num_tiles = blocks4 * (blocks4 + 1) / 2;
  // Few tiles (small T): split each tile's columns over several warps so all warps compute.
  const int splits = num_tiles >= kWarps ? 1 : kWarps / num_tiles;
  const size_t smem = static_cast<size_t>(num_tiles) * splits * 16 * sizeof(double) +
                      static_cast<size_t>(num_tasks) * C * sizeof(Acc) + static_cast<size_t>(num_tiles) * sizeof(int);

  auto kernel = gram_kernel<T, Rows>;
  if (smem > 48 * 1024) {
    // Above 48 KiB of dynamic shared memory a kernel must opt in (sm_80: up to 163 KiB).
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  int resident = 0;
  err = resident_blocks(reinterpret_cast<const void*>(kernel), kThreads, smem, &resident);
  if (err != cudaSuccess) return err;
  const int64_t grid = num_chunks < resident ? num_chunks : resident;

  kernel<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(rows, num_tasks, C, num_tiles, splits,
                                                                  num_chunks, G);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  mirror_kernel<<<(num_tasks * num_tasks + 255) / 256, 256, 0, stream>>>(G, num_tasks);
  return cudaGetLastError();
}

}  // namespace
}  // namespace gradsurg_cuda

using namespace gradsurg_cuda;

extern "C" int gradsurg_cuda_gram_chunk_cols(int num_tasks, int dtype) {
  if (num_tasks < 1 || num_tasks > GS_MAX_TASKS) return 0;
  switch (dtype) {
    case GS_FLOAT32: return chunk_cols<float>(num_tasks);
    case GS_FLOAT16: return chunk_cols<__half>(num_tasks);
    case GS_BFLOAT16: return chunk_cols<__nv_bfloat16>(num_tasks);
    case GS_FLOAT64: return chunk_cols<double>(num_tasks);
    default: return 0;
  }
}

extern "C" cudaError_t gradsurg_cuda_gram(const void* J, int num_tasks, int64_t size, int dtype, double* G,
                                          cudaStream_t stream) {
  if (num_tasks == 0) return cudaSuccess;
  const int C = gradsurg_cuda_gram_chunk_cols(num_tasks, dtype);
  if (C == 0 || size < 0) return cudaErrorInvalidValue;
  const int64_t num_chunks = (size + C - 1) / C;
  switch (dtype) {
    case GS_FLOAT32:
      return launch_gram<float>(DenseRows<float>{static_cast<const float*>(J), size}, num_tasks, num_chunks, G,
                                stream);
    case GS_FLOAT16:
      return launch_gram<__half>(DenseRows<__half>{static_cast<const __half*>(J), size}, num_tasks, num_chunks, G,
                                 stream);
    case GS_BFLOAT16:
      return launch_gram<__nv_bfloat16>(DenseRows<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(J), size},
                                        num_tasks, num_chunks, G, stream);
    case GS_FLOAT64:
      return launch_gram<double>(DenseRows<double>{static_cast<const double*>(J), size}, num_tasks, num_chunks, G,
                                 stream);
    default:
      return cudaErrorInvalidValue;
  }
}

namespace {
template <typename T>
cudaError_t launch_gram_lists(const void* table, int64_t num_params, int num_tasks, int64_t total_chunks,
                              double* G, cudaStream_t stream) {
  const char* base = static_cast<const char*>(table);
  ListRows<T> rows;
  rows.rows = reinterpret_cast<const T* const*>(base);
  base += sizeof(void*) * num_params * num_tasks;
  rows.numel = reinterpret_cast<const int64_t*>(base);
  base += sizeof(int64_t) * num_params;
  rows.chunk_start = reinterpret_cast<const int64_t*>(base);
  base += sizeof(int64_t) * num_params;
  rows.chunk_param = reinterpret_cast<const int32_t*>(base);
  rows.num_tasks = num_tasks;
  return launch_gram<T>(rows, num_tasks, total_chunks, G, stream);
}
}  // namespace

extern "C" cudaError_t gradsurg_cuda_gram_lists(const void* table, int64_t num_params, int num_tasks,
                                                int64_t total_chunks, int dtype, double* G, cudaStream_t stream) {
  if (num_tasks == 0) return cudaSuccess;
  if (gradsurg_cuda_gram_chunk_cols(num_tasks, dtype) == 0 || num_params < 0 || total_chunks < 0)
    return cudaErrorInvalidValue;
  if (num_params == 0) total_chunks = 0;  // launch_gram then only zeroes G
  switch (dtype) {
    case GS_FLOAT32: return launch_gram_lists<float>(table, num_params, num_tasks, total_chunks, G, stream);
    case GS_FLOAT16: return launch_gram_lists<__half>(table, num_params, num_tasks, total_chunks, G, stream);
    case GS_BFLOAT16: return launch_gram_lists<__nv_bfloat16>(table, num_params, num_tasks, total_chunks, G, stream);
    case GS_FLOAT64: return launch_gram_lists<double>(table, num_params, num_tasks, total_chunks, G, stream);
    default: return cudaErrorInvalidValue;
  }
}
