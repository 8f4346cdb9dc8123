"""``famo``: Fast Adaptive Multitask Optimization (Liu et al. 2023, "FAMO: Fast Adaptive
Multitask Optimization", NeurIPS, arXiv:2306.03792, Algorithm 1).

Task logits ξ (zeros at the start) give z = softmax(ξ). With D_t = L_t − ℓ_t* + ε (ℓ* lower
bounds of the losses, default 0), the model minimises

    objective = Σ_t z_t log D_t / c,   c = Σ_t z_t / D_t (a constant),

whose gradient is Σ_t (z_t / (c D_t)) ∇L_t: effective loss weights z_t / (c D_t), summing to 1.
After a step, with the losses D' at the new parameters, the logits follow the log-loss decrease

    δ = log D − log D',   d = J_softmax(ξ)ᵀ δ = z ⊙ (δ − ⟨z, δ⟩),   ξ ← ξ − β (d + γ ξ)

(the paper's update; ``optimizer="adam"``, the default, feeds the same d + γξ to Adam, as the
authors' official implementation does with ``Adam(lr=β, weight_decay=γ)``).

Difference from the official code: there, ``update(new_losses)`` is called after the step on
the *same* batch (an extra forward). Here, by default, the ξ update of a step happens at the
next :meth:`FAMO.objective` call, with the losses of the next batch as D'. To get the official
behaviour, call :meth:`FAMO.update` with the post-step losses yourself; the next call then
does not update again. ξ is state of the method (checkpointed), not an optimizer parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .base import LossWeighting

__all__ = ["FAMO"]


class FAMO(LossWeighting):
    """FAMO: loss weights from logits ξ that follow the per-task log-loss decrease.

    Args:
        lr: step size β of the ξ update (official default 0.025).
        gamma: decay γ of ξ (official default 0.01).
        eps: ε added to L_t − ℓ_t* (official 1e-8).
        min_losses: ℓ*, T numbers (default zeros).
        optimizer: ``"adam"`` (official code; betas 0.9, 0.999, eps 1e-8) or ``"sgd"`` (the
            paper's plain update).

    State (in ``state_dict()``): ξ, the losses of the last call not yet used for an update, and
    the Adam moments. The number of tasks may not change without :meth:`reset`.
    """

    name = "famo"
    xi: Tensor | None
    prev_losses: Tensor | None
    adam_m: Tensor | float
    adam_v: Tensor | float
    adam_step: int
    permutation_invariant = True
    stateful = True
    tied_to_num_tasks = True

    def __init__(
        self,
        lr: float = 0.025,
        gamma: float = 0.01,
        eps: float = 1e-8,
        min_losses: Sequence[float] | None = None,
        optimizer: str = "adam",
    ) -> None:
        super().__init__()
        for argname, value in (("lr", lr), ("gamma", gamma), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"{argname}: must be a finite number >= 0, got {value!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
        self.lr, self.gamma, self.eps, self.optimizer = float(lr), float(gamma), float(eps), optimizer
        if min_losses is None:
            self.min_losses: Tensor | None = None
        else:
            try:
                self.min_losses = torch.as_tensor(list(min_losses), dtype=torch.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"min_losses: expected a sequence of numbers, got {min_losses!r}") from None
            if not bool(torch.isfinite(self.min_losses).all()):
                raise ValueError(f"min_losses: must be finite, got {min_losses!r}")
        self.betas, self.adam_eps = (0.9, 0.999), 1e-8
        self.reset()

    def _shifted(self, values: Tensor) -> Tensor:
        lower = torch.zeros_like(values) if self.min_losses is None else self.min_losses
        if lower.numel() != values.numel():
            raise ValueError(f"min_losses: has {lower.numel()} entries but there are {values.numel()} losses")
        shifted = values - lower + self.eps
        if not bool((shifted > 0).all()):
            raise ValueError(f"losses: famo needs L_t - min_losses_t + eps > 0, got {shifted.tolist()}")
        return shifted

    def objective(self, losses: Tensor) -> Tensor:
        losses = losses.reshape(-1)
        num_tasks = losses.numel()
        self.check_num_tasks(num_tasks)
        values = losses.detach().to(device="cpu", dtype=torch.float64)
        shifted = self._shifted(values)
        if self.xi is None:
            self.xi = torch.zeros(num_tasks, dtype=torch.float64)
        if self.prev_losses is not None:
            self.update(values)
        z = torch.softmax(self.xi, dim=0)
        c = (z / shifted).sum()
        lower = (torch.zeros(num_tasks) if self.min_losses is None else self.min_losses).to(losses)
        obj = (z.to(losses) * torch.log(losses - lower + self.eps)).sum() / c.to(losses)
        self.last_weights = z / (c * shifted)
        self.prev_losses = values
        self._num_tasks = num_tasks
        return obj

    @torch.no_grad()
    def update(self, losses: Tensor | Sequence[float]) -> None:
        """Update ξ from the loss decrease between the last :meth:`objective` call and
        ``losses`` (the (T,) losses after the step). No-op if there is nothing to compare."""
        if self.prev_losses is None or self.xi is None:
            return
        values = torch.as_tensor(losses).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        if values.numel() != self.prev_losses.numel():
            raise ValueError(f"losses: expected {self.prev_losses.numel()} losses, got {values.numel()}")
        delta = torch.log(self._shifted(self.prev_losses)) - torch.log(self._shifted(values))
        z = torch.softmax(self.xi, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.gamma * self.xi
        if self.optimizer == "sgd":
            self.xi = self.xi - self.lr * grad
        else:
            b1, b2 = self.betas
            self.adam_step += 1
            self.adam_m = b1 * self.adam_m + (1 - b1) * grad
            self.adam_v = b2 * self.adam_v + (1 - b2) * grad * grad
            m_hat = self.adam_m / (1 - b1**self.adam_step)
            v_hat = self.adam_v / (1 - b2**self.adam_step)
            self.xi = self.xi - self.lr * m_hat / (v_hat.sqrt() + self.adam_eps)
        self.prev_losses = None

    def reset(self) -> None:
        """ξ back to zeros (at the next call), no pending losses, fresh Adam moments."""
        super().reset()
        self.xi = None
        self.prev_losses = None
        self.adam_m = 0.0
        self.adam_v = 0.0
        self.adam_step = 0

    def get_extra_state(self) -> dict[str, Any]:
        """The base state plus ξ, the pending losses and the Adam moments."""
        clone = lambda x: x.clone() if isinstance(x, Tensor) else x  # noqa: E731
        return {
            **super().get_extra_state(),
            "xi": clone(self.xi),
            "prev_losses": clone(self.prev_losses),
            "adam_m": clone(self.adam_m),
            "adam_v": clone(self.adam_v),
            "adam_step": self.adam_step,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        super().set_extra_state(state)
        clone = lambda x: x.clone() if isinstance(x, Tensor) else x  # noqa: E731
        self.xi = clone(state["xi"])
        self.prev_losses = clone(state["prev_losses"])
        self.adam_m = clone(state["adam_m"])
        self.adam_v = clone(state["adam_v"])
        self.adam_step = int(state["adam_step"])

    def extra_repr(self) -> str:
        return f"lr={self.lr}, gamma={self.gamma}, eps={self.eps}, optimizer={self.optimizer!r}"
