// The CPU kernels exported to Python as gradsurg._C (semantics: gradsurg/kernels/reference.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>
#include <vector>

namespace gradsurg {

at::Tensor gram(const at::Tensor& matrix);
at::Tensor gram_lists(const std::vector<std::vector<at::Tensor>>& grads);
void combine_into(at::Tensor& out, const at::Tensor& matrix, const at::Tensor& weights, double beta);
void flatten_into(const std::vector<at::Tensor>& dst, const std::vector<c10::optional<at::Tensor>>& grads);
// Wolfe's min-norm point from the Gram matrix (minnorm.cpp; semantics: min_norm_weights_np in
// gradsurg/methods/_minnorm.py). Empty result: not handled here, use the Python solver.
at::Tensor min_norm_weights(const at::Tensor& gram, int64_t max_iter, const c10::optional<at::Tensor>& start);
// The dual-cone projections' non-negative least squares for the rows of bs (nnls.cpp;
// semantics: _Factored in gradsurg/methods/_qp.py): (ys, ok), ok[i] false where declined.
std::tuple<at::Tensor, at::Tensor> dual_cone_nnls(const at::Tensor& r, const at::Tensor& rtr, const at::Tensor& normal,
                                                  const at::Tensor& bs, double ridge, bool warm, double polish_rcond,
                                                  int64_t max_iter);
// PCGrad / GradVac weights for given visiting orders (surgery.cpp; semantics: pcgrad_weights,
// gradvac_weights in gradsurg/methods/).
at::Tensor pcgrad_weights(const at::Tensor& gram, const at::Tensor& order);
std::tuple<at::Tensor, at::Tensor> gradvac_weights(const at::Tensor& gram, const at::Tensor& order,
                                                   const at::Tensor& rho, double beta);
// FairGrad's Newton solve of G w = w^(−1/α) (fairgrad.cpp; semantics: _solve in
// gradsurg/methods/fairgrad.py). Empty result: declined, use the Python solver.
at::Tensor fairgrad_solve(const at::Tensor& gram, double alpha);

}  // namespace gradsurg
