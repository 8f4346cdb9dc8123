// The CPU kernels exported to Python as gradsurg._C (semantics: gradsurg/kernels/reference.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <vector>

namespace gradsurg {

at::Tensor gram(const at::Tensor& matrix);
at::Tensor gram_lists(const std::vector<std::vector<at::Tensor>>& grads);
void combine_into(at::Tensor& out, const at::Tensor& matrix, const at::Tensor& weights, double beta);
void flatten_into(const std::vector<at::Tensor>& dst, const std::vector<c10::optional<at::Tensor>>& grads);
// Wolfe's min-norm point from the Gram matrix (minnorm.cpp; semantics: min_norm_weights_np in
// gradsurg/methods/_minnorm.py). Empty result: not handled here, use the Python solver.
at::Tensor min_norm_weights(const at::Tensor& gram, int64_t max_iter, const c10::optional<at::Tensor>& start);

}  // namespace gradsurg
