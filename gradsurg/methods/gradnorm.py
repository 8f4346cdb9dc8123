"""``gradnorm``: GradNorm (Chen et al. 2018, "GradNorm: Gradient Normalization for Adaptive
Loss Balancing in Deep Multitask Networks", ICML, arXiv:1711.02257, Eqs. (1)–(2), Algorithm 1).

The model is trained on Σ_t w_t L_t with learnable weights w (initialised to 1). The weights
are trained on the gradient-norm loss, measured on the parameters W of the last shared layer:

    G_t = ‖∇_W (w_t L_t)‖₂,   Ḡ = mean_t G_t,
    L̃_t = L_t / L_t(0),      r_t = L̃_t / mean_i L̃_i,
    L_grad = Σ_t | G_t − Ḡ · r_t^α |,

where the target Ḡ r_t^α is a constant and L_grad is differentiated with respect to w only.
After every optimizer step the weights are renormalised so that Σ_t w_t = T.

How it enters one backward: since G_t = |w_t| ‖∇_W L_t‖, ∂L_grad/∂w only needs the T norms
‖∇_W L_t‖ (no double backward). :meth:`GradNorm.objective` computes them with T extra
``autograd.grad`` calls restricted to W, forms ``grad_w = ∂L_grad/∂w`` and returns

    Σ_t w_t.detach() L_t + Σ_t (w_t − w_t.detach()) grad_w_t,

whose value is Σ w_t L_t, whose gradient for the model is Σ_t w_t ∇L_t and whose gradient for
w is exactly ∂L_grad/∂w — so one ordinary backward writes both into ``.grad``, and the wrapped
optimizer updates w with everything else (give w its own learning rate through its parameter
group if wanted). L(0) is the first call's losses (state).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .base import LossWeighting

__all__ = ["GradNorm"]


class GradNorm(LossWeighting):
    """GradNorm with learnable weights ``w`` (``nn.Parameter`` of shape ``(num_tasks,)``).

    Args:
        num_tasks: number of tasks T (required; w is a parameter the optimizer must know).
        layer: the parameters W of the last shared layer (a tensor or an iterable of tensors
            that require grad; required). They are only referenced, not owned by the method.
        alpha: asymmetry α ≥ 0 (the paper uses 0.12–3; 1.5 on NYUv2).

    ``after_step()`` renormalises ``w`` to Σ w = T. State: the initial losses L(0).
    """

    name = "gradnorm"
    needs = frozenset({"num_tasks", "layer"})
    permutation_invariant = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(
        self, num_tasks: int | None = None, layer: Tensor | Iterable[Tensor] | None = None, alpha: float = 1.5
    ) -> None:
        super().__init__()
        if num_tasks is None:
            raise ValueError("num_tasks: gradnorm needs the number of tasks (its weights are parameters)")
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks: must be an int >= 1, got {num_tasks!r}")
        if layer is None:
            raise ValueError("layer: gradnorm needs the parameters of the last shared layer")
        layer = [layer] if isinstance(layer, Tensor) else list(layer)
        if not layer:
            raise ValueError("layer: no parameters given")
        for i, p in enumerate(layer):
            if not isinstance(p, Tensor):
                raise ValueError(f"layer: item {i} is a {type(p).__name__}, not a tensor")
            if not p.requires_grad:
                raise ValueError(f"layer: parameter {i} (shape {tuple(p.shape)}) does not require grad")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < float("inf"):
            raise ValueError(f"alpha: must be a finite number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        # A tuple, not a ParameterList: W belongs to the model, not to the method.
        self.layer: tuple[Tensor, ...] = tuple(layer)
        self.loss_scales = nn.Parameter(torch.ones(num_tasks))
        self.initial_losses: Tensor | None = None
        self._num_tasks = num_tasks

    def check_num_tasks(self, num_tasks: int) -> None:
        if num_tasks != self.loss_scales.numel():
            raise ValueError(f"losses: gradnorm was built for {self.loss_scales.numel()} tasks; got {num_tasks}")

    def layer_grad_norms(self, losses: Tensor) -> Tensor:
        """‖∇_W L_t‖₂ for every task (float64 CPU, detached; 0 for a loss that misses W)."""
        norms = []
        for t in range(losses.numel()):
            grads = torch.autograd.grad(losses[t], self.layer, retain_graph=True, allow_unused=True)
            sq = sum((g.detach().to(torch.float64).pow(2).sum().cpu() for g in grads if g is not None),
                     torch.zeros((), dtype=torch.float64))
            norms.append(sq.sqrt())
        return torch.stack(norms)

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        num_tasks = losses.numel()
        self.check_num_tasks(num_tasks)
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        initial = values.clone() if self.initial_losses is None else self.initial_losses
        if not bool((initial > 0).all()):
            raise ValueError(f"losses: gradnorm needs positive initial losses L(0), got {initial.tolist()}")
        norms = self.layer_grad_norms(losses)
        with torch.enable_grad():
            w = self.loss_scales
            w64 = w.to(device="cpu", dtype=torch.float64)
            g_norm = (w64 * norms).abs()
            ratio = values / initial
            ratio = ratio / ratio.mean()
            target = (g_norm.mean() * ratio.pow(self.alpha)).detach()
            l_grad = (g_norm - target).abs().sum()
            (grad_w,) = torch.autograd.grad(l_grad, w)
        self.initial_losses = initial
        w_model = w.detach().to(device=losses.device, dtype=losses.dtype)
        w_dev = w.to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w.detach().to(device="cpu", dtype=torch.float64)
        self.last_gradnorm_loss = float(l_grad.detach())
        return (w_model * losses).sum() + ((w_dev - w_dev.detach()) * grad_w.to(w_dev)).sum()

    @torch.no_grad()
    def after_step(self) -> None:
        """Renormalise the weights so that Σ_t w_t = T (skipped if the sum is not positive)."""
        total = self.loss_scales.sum()
        if bool(torch.isfinite(total)) and float(total) > 0:
            self.loss_scales.mul_(self.loss_scales.numel() / total)

    def reset(self) -> None:
        """Forget L(0) (the weights are parameters; re-initialise them yourself)."""
        self.initial_losses = None

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus the initial losses L(0)."""
        return {**super().get_extra_state(), "initial_losses": self.initial_losses}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        init = state.get("initial_losses")
        self.initial_losses = None if init is None else init.clone()
        self._num_tasks = self.loss_scales.numel()

    def extra_repr(self) -> str:
        return f"num_tasks={self.loss_scales.numel()}, alpha={self.alpha}, layer={len(self.layer)} tensor(s)"
