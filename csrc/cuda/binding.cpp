// Torch glue of the CUDA kernels: the module gradsurg._cuda (semantics:
// gradsurg/kernels/reference.py). Checks devices, dtypes and shapes, builds the device tables
// the kernels read, and calls the extern "C" launchers of the .cu files on the current stream.
//
// Built with the host compiler, so the .cu files never see torch headers (see common.cuh).
//
// Stream and device: c10::cuda::getCurrentCUDAStream() (c10/cuda/CUDAStream.h) and
// c10::cuda::CUDAGuard (c10/cuda/CUDAGuard.h). Both are c10-level headers that need only the
// CUDA runtime headers; ATen/cuda/CUDAContext.h is deliberately NOT included, because it pulls in
// cuBLAS/cuSPARSE/cuSOLVER headers that a minimal CUDA toolkit does not ship. Every launch thus
// runs on the caller's current stream of the tensors' device (torch.cuda.stream(...) contexts
// and CUDA graphs capture work as for any torch op); nothing here synchronises the host.
//
// Device tables: written into a pinned host tensor and copied with one non-blocking copy_ on the
// same current stream. The caching host allocator keeps the pinned block alive until that copy
// has executed (copy_ records an event on the stream), and the device table is returned to the
// caching device allocator when this function returns, which is safe because that allocator
// reuses blocks in stream order. The same holds for temporary .contiguous() copies.
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "common.cuh"

namespace {

int dtype_code(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return GS_FLOAT32;
    case at::kHalf: return GS_FLOAT16;
    case at::kBFloat16: return GS_BFLOAT16;
    case at::kDouble: return GS_FLOAT64;
    default:
      TORCH_CHECK(false, op, ": the cuda backend takes float32, float16, bfloat16 or float64 tensors, got ", t);
  }
  return -1;
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

cudaStream_t current_stream(const at::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

// A table of `bytes` bytes, filled on the host by `fill(uint8_t*)`, then copied to `device`
// asynchronously on the current stream (see the header comment for why this is safe).
template <typename Fill>
at::Tensor device_table(size_t bytes, const at::Device& device, Fill&& fill) {
  const auto n = static_cast<int64_t>(bytes > 0 ? bytes : 1);
  at::Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  fill(host.data_ptr<uint8_t>());
  at::Tensor dev = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(device));
  dev.copy_(host, /*non_blocking=*/true);
  return dev;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// Copy one task's gradients into its row views of J in one kernel launch; None writes zeros.
void flatten_into(const std::vector<at::Tensor>& dst, const std::vector<std::optional<at::Tensor>>& grads) {
  TORCH_CHECK(dst.size() == grads.size(), "flatten_into: ", dst.size(), " destinations but ", grads.size(),
              " gradients");
  if (dst.empty()) return;
  const at::Device device = dst[0].device();
  TORCH_CHECK(device.is_cuda(), "flatten_into: the cuda backend takes CUDA tensors, got ", device);
  const at::ScalarType dtype = dst[0].scalar_type();
  const int code = dtype_code(dtype, "flatten_into");
  const int64_t elem = gradsurg_cuda_dtype_size(code);
  c10::cuda::CUDAGuard guard(device);

  std::vector<GsFlattenEntry> entries;
  std::vector<at::Tensor> held;  // contiguous copies of strided gradients, alive until the launch
  entries.reserve(dst.size());
  held.reserve(dst.size());
  int64_t total_chunks = 0;
  for (size_t k = 0; k < dst.size(); ++k) {
    const at::Tensor& d = dst[k];
    TORCH_CHECK(d.device() == device && d.scalar_type() == dtype && d.is_contiguous(), "flatten_into: destination ",
                k, " must be a contiguous view of a row of J (", dtype, " on ", device, "), got ", d.scalar_type(),
                " on ", d.device());
    const void* src = nullptr;
    if (grads[k].has_value() && grads[k]->defined()) {
      const at::Tensor& g = *grads[k];
      TORCH_CHECK(g.numel() == d.numel(), "flatten_into: gradient ", k, " has ", g.numel(),
                  " elements, its destination ", d.numel());
      if (g.device() != device || g.scalar_type() != dtype) {
        // Another device or dtype: torch's copy converts (rare; the fast path is one launch).
        d.copy_(g.reshape(d.sizes()));
        continue;
      }
      if (g.is_contiguous()) {
        src = g.data_ptr();
      } else {
        held.push_back(g.contiguous());
        src = held.back().data_ptr();
      }
    }
    const int64_t numel = d.numel();
    if (numel == 0) continue;
    entries.push_back(GsFlattenEntry{src, d.data_ptr(), numel, total_chunks});
    total_chunks += ceil_div(numel * elem, GS_FLATTEN_CHUNK_BYTES);
  }
  if (entries.empty()) return;
  TORCH_CHECK(entries.size() <= static_cast<size_t>(INT32_MAX), "flatten_into: too many tensors");

  const size_t entry_bytes = entries.size() * sizeof(GsFlattenEntry);
  const size_t bytes = entry_bytes + static_cast<size_t>(total_chunks) * sizeof(int32_t);
  at::Tensor table = device_table(bytes, device, [&](uint8_t* h) {
    std::memcpy(h, entries.data(), entry_bytes);
    auto* chunk_entry = reinterpret_cast<int32_t*>(h + entry_bytes);
    for (size_t e = 0; e < entries.size(); ++e) {
      const int64_t end = e + 1 < entries.size() ? entries[e + 1].first_chunk : total_chunks;
      for (int64_t c = entries[e].first_chunk; c < end; ++c) chunk_entry[c] = static_cast<int32_t>(e);
    }
  });
  check_launch(gradsurg_cuda_flatten(table.data_ptr(), static_cast<int>(entries.size()), total_chunks, code,
                                     current_stream(device)),
               "flatten_into");
}

// G = J J^T in float64 for J of shape (T, P) on a CUDA device.
at::Tensor gram(const at::Tensor& matrix) {
  TORCH_CHECK(matrix.dim() == 2, "gram: expected a (T, P) matrix, got ", matrix.dim(), " dims");
  TORCH_CHECK(matrix.is_cuda(), "gram: the cuda backend takes CUDA tensors, got ", matrix.device());
  const int64_t T = matrix.size(0);
  TORCH_CHECK(T <= GS_MAX_TASKS, "gram: the cuda kernels take at most ", GS_MAX_TASKS, " tasks, got ", T);
  const int code = dtype_code(matrix.scalar_type(), "gram");
  c10::cuda::CUDAGuard guard(matrix.device());
  const at::Tensor J = matrix.contiguous();
  at::Tensor G = at::empty({T, T}, J.options().dtype(at::kDouble));
  if (T == 0) return G;
  check_launch(gradsurg_cuda_gram(J.data_ptr(), static_cast<int>(T), J.size(1), code, G.data_ptr<double>(),
                                  current_stream(J.device())),
               "gram");
  return G;
}

// G from per-task lists of per-parameter gradients (grads[t][k]), without building J.
at::Tensor gram_lists(const std::vector<std::vector<at::Tensor>>& grads) {
  TORCH_CHECK(!grads.empty() && !grads[0].empty(), "gram_lists: no gradients");
  const int64_t T = static_cast<int64_t>(grads.size());
  TORCH_CHECK(T <= GS_MAX_TASKS, "gram_lists: the cuda kernels take at most ", GS_MAX_TASKS, " tasks, got ", T);
  const size_t K = grads[0].size();
  const at::Device device = grads[0][0].device();
  const at::ScalarType dtype = grads[0][0].scalar_type();
  TORCH_CHECK(device.is_cuda(), "gram_lists: the cuda backend takes CUDA tensors, got ", device);
  const int code = dtype_code(dtype, "gram_lists");
  c10::cuda::CUDAGuard guard(device);

  std::vector<at::Tensor> held;  // contiguous gradients, alive until the launch
  held.reserve(static_cast<size_t>(T) * K);
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(grads[t].size() == K, "gram_lists: task ", t, " has ", grads[t].size(), " gradients, task 0 has ",
                K);
    for (size_t k = 0; k < K; ++k) {
      const at::Tensor& g = grads[t][k];
      TORCH_CHECK(g.device() == device && g.scalar_type() == dtype, "gram_lists: all gradients must be ", dtype,
                  " tensors on ", device, "; task ", t, " parameter ", k, " is ", g.scalar_type(), " on ",
                  g.device());
      TORCH_CHECK(g.numel() == grads[0][k].numel(), "gram_lists: parameter ", k, " has ", grads[0][k].numel(),
                  " elements in task 0 but ", g.numel(), " in task ", t);
      held.push_back(g.contiguous());  // no copy when already contiguous
    }
  }

  const int64_t C = gradsurg_cuda_gram_chunk_cols(static_cast<int>(T), code);
  TORCH_CHECK(C > 0, "gram_lists: unsupported number of tasks ", T);
  std::vector<size_t> params;  // non-empty parameters
  std::vector<int64_t> chunk_start;
  int64_t total_chunks = 0;
  for (size_t k = 0; k < K; ++k) {
    const int64_t numel = held[k].numel();  // task 0's gradient of parameter k
    if (numel == 0) continue;
    params.push_back(k);
    chunk_start.push_back(total_chunks);
    total_chunks += ceil_div(numel, C);
  }
  at::Tensor G = at::empty({T, T}, held[0].options().dtype(at::kDouble));
  const int64_t Kn = static_cast<int64_t>(params.size());
  if (Kn == 0) return G.zero_();
  TORCH_CHECK(Kn <= INT32_MAX, "gram_lists: too many parameters");

  // Layout (common.cuh): rows[Kn*T] | numel[Kn] | chunk_start[Kn] | chunk_param[total_chunks].
  const size_t rows_bytes = sizeof(void*) * static_cast<size_t>(Kn * T);
  const size_t meta_bytes = sizeof(int64_t) * static_cast<size_t>(Kn);
  const size_t bytes = rows_bytes + 2 * meta_bytes + sizeof(int32_t) * static_cast<size_t>(total_chunks);
  at::Tensor table = device_table(bytes, device, [&](uint8_t* h) {
    auto* rows = reinterpret_cast<const void**>(h);
    auto* numel = reinterpret_cast<int64_t*>(h + rows_bytes);
    auto* start = reinterpret_cast<int64_t*>(h + rows_bytes + meta_bytes);
    auto* chunk_param = reinterpret_cast<int32_t*>(h + rows_bytes + 2 * meta_bytes);
    for (int64_t p = 0; p < Kn; ++p) {
      const size_t k = params[p];
      for (int64_t t = 0; t < T; ++t) rows[p * T + t] = held[static_cast<size_t>(t) * K + k].data_ptr();
      numel[p] = held[k].numel();
      start[p] = chunk_start[p];
      const int64_t end = p + 1 < Kn ? chunk_start[p + 1] : total_chunks;
      for (int64_t c = chunk_start[p]; c < end; ++c) chunk_param[c] = static_cast<int32_t>(p);
    }
  });
  check_launch(gradsurg_cuda_gram_lists(table.data_ptr(), Kn, static_cast<int>(T), total_chunks, code,
                                        G.data_ptr<double>(), current_stream(device)),
               "gram_lists");
  return G;
}

// out <- beta * out + w^T J in place; beta == 0 never reads out.
void combine_into(at::Tensor& out, const at::Tensor& matrix, const at::Tensor& weights, double beta) {
  TORCH_CHECK(matrix.dim() == 2, "combine_into: expected a (T, P) matrix, got ", matrix.dim(), " dims");
  TORCH_CHECK(matrix.is_cuda() && out.device() == matrix.device(),
              "combine_into: out and matrix must be on one CUDA device, got ", out.device(), " and ",
              matrix.device());
  TORCH_CHECK(out.is_contiguous() && out.numel() == matrix.size(1),
              "combine_into: out must be contiguous with P = ", matrix.size(1), " elements");
  TORCH_CHECK(out.scalar_type() == matrix.scalar_type(), "combine_into: out is ", out.scalar_type(),
              " but matrix is ", matrix.scalar_type());
  TORCH_CHECK(weights.numel() == matrix.size(0), "combine_into: expected ", matrix.size(0), " weights, got ",
              weights.numel());
  TORCH_CHECK(matrix.size(0) <= INT32_MAX, "combine_into: too many tasks");
  const int code = dtype_code(matrix.scalar_type(), "combine_into");
  c10::cuda::CUDAGuard guard(matrix.device());
  const at::Tensor J = matrix.contiguous();
  // fp32 weights (fp64 for fp64 J), whatever J's dtype: rounding w to half/bfloat16 first would
  // only lose precision.
  const at::Tensor w = weights.reshape({-1})
                           .to(J.device(), code == GS_FLOAT64 ? at::kDouble : at::kFloat)
                           .contiguous();
  check_launch(gradsurg_cuda_combine(out.data_ptr(), J.data_ptr(), w.data_ptr(), static_cast<int>(J.size(0)),
                                     J.size(1), beta, code, current_stream(J.device())),
               "combine_into");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gradsurg CUDA kernels: flatten, Gram (fp64 accumulation) and combine over J.";
  m.def("flatten_into", &flatten_into, "copy one task's gradients into its row of J (one launch)", py::arg("dst"),
        py::arg("grads"));
  m.def("gram", &gram, "G = J J^T in float64 for J of shape (T, P)", py::arg("matrix"));
  m.def("gram_lists", &gram_lists, "G from per-task lists of per-parameter gradients", py::arg("grads"));
  m.def("combine_into", &combine_into, "out <- beta*out + w^T J, in place", py::arg("out"), py::arg("matrix"),
        py::arg("weights"), py::arg("beta"));
  m.attr("MAX_TASKS") = GS_MAX_TASKS;
}
