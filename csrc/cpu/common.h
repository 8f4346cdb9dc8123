// Shared pieces of the CPU kernels: element loads that upcast to float, the fp32 micro-kernels,
// and the chunk size that keeps one column block of every row of J in L2.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace gradsurg {

// 2048 columns × T rows × 4 bytes: 64 KiB at T = 8, 512 KiB at T = 64. Small enough that a
// block of every row stays in L2 while all T(T+1)/2 dot products of the block are formed, so J
// is read from memory exactly once; large enough that per-block overhead is noise.
constexpr int64_t kBlock = 2048;

// Runtime dispatch to AVX-512/AVX2+FMA clones (x86-64-v4/v3) of the hot loops where the compiler supports it, so
// one portable build (no -march=native) still runs at full vector width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GRADSURG_NO_CLONES)
#define GRADSURG_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GRADSURG_CLONES
#endif

template <typename T>
inline float to_float(T x) {
  return static_cast<float>(x);
}

}  // namespace gradsurg
