// Python bindings of the CPU kernels: the module gradsurg._C.
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gradsurg CPU kernels: flatten, Gram (fp64 accumulation) and combine over J.";
  m.def("gram", &gradsurg::gram, "G = J J^T in float64 for J of shape (T, P)");
  m.def("gram_lists", &gradsurg::gram_lists, "G from per-task lists of per-parameter gradients");
  m.def("combine_into", &gradsurg::combine_into, "out <- beta*out + w^T J, in place");
  m.def("flatten_into", &gradsurg::flatten_into, "copy one task's gradients into its row of J");
  m.def("min_norm_weights", &gradsurg::min_norm_weights, "Wolfe's min-norm point weights from a Gram matrix",
        pybind11::arg("gram"), pybind11::arg("max_iter"), pybind11::arg("start") = pybind11::none());
  m.def("dual_cone_nnls", &gradsurg::dual_cone_nnls,
        "non-negative least squares of the dual-cone projections, one per row of bs");
  m.def("pcgrad_weights", &gradsurg::pcgrad_weights, "PCGrad weights for given visiting orders");
  m.def("gradvac_weights", &gradsurg::gradvac_weights, "GradVac weights and new targets for given orders");
  m.def("fairgrad_solve", &gradsurg::fairgrad_solve, "FairGrad: the positive solution of G w = w^(-1/alpha)");
}
