"""``cr_mogm``: correlation-reduced multi-objective gradient manipulation (Zhou, Zhang, Jiang,
Zhong, Gu & Zhu 2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
Beyond", NeurIPS).

Gradient-manipulation methods (MGDA, PCGrad, CAGrad, …) update along a composite d = Σ_t λ_t g_t
whose weights λ are computed from the same stochastic gradients they weigh; the paper shows that
this correlation can keep them from converging to Pareto-optimal points, and fixes it by
averaging the weights over the steps. With λ̂_k the weights of the base method at step k,

    λ_k = α λ_{k−1} + (1 − α) λ̂_k,   λ₀ = λ̂₁ (so the first step is the base method's),

and the update is Σ_t λ_{k,t} g_t. α = 0 is the base method; α → 1 freezes the weights. The
paper's analysis lets α_k grow towards 1 as the learning rate decays (α_k = 1 − lr_k/lr_0, say);
``alpha`` is a plain attribute, so a schedule can set ``method.alpha`` between steps.

The base method is any Gram method, by name (``base="cagrad"``, ``base_options={"c": 0.5}``) or
instance; its own state (PCGrad's generator, …) is a submodule of this one, checkpointed and reset
with it. Default: ``base="mgda"`` (one of the methods the paper's unified framework covers, with PCGrad
and CAGrad; TorchJD has no default) and ``alpha=0.9`` (TorchJD's default; the paper gives a schedule, not a constant).

Differences from TorchJD 0.18 (``torchjd.aggregation.CRMOGMWeighting``): the same average and
first step; TorchJD requires the wrapped weighting and takes an ``initial_weights`` λ₀ (here
λ₀ = λ̂₁ always, its default). Weights are float64 on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ._weight_state import WeightStateMethod
from .base import GramMethod

__all__ = ["CRMOGM"]


class CRMOGM(WeightStateMethod):
    """CR-MOGM: an exponential moving average of a base Gram method's weights.

    Args:
        base: the base Gram method, a registered name or an instance (default ``"mgda"``).
        alpha: α in [0, 1], the weight of the previous average (default 0.9).
        base_options: options of the base method when ``base`` is a name.

    State (in ``state_dict()``): the averaged weights and the base method's state. The number of
    tasks may not change without :meth:`reset`.

    No property is claimed, whatever the base: the average applies the weights of earlier
    matrices to the current one, so where the base's weights are not unique (0 in the hull for
    MGDA, T > P, duplicated tasks) the update depends on which of the equally valid weight
    vectors the base returned, and that choice need not follow a relabelling or a rescaling of
    the tasks (found by tests/methods/test_registry.py for MGDA on a T = 3, P = 1 matrix).
    """

    name = "cr_mogm"

    def __init__(self, base: str | GramMethod = "mgda", alpha: float = 0.9,
                 base_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"alpha: must be a number in [0, 1], got {alpha!r}")
        if base_options is not None and not isinstance(base_options, Mapping):
            raise ValueError(f"base_options: expected a mapping of option names to values, got {base_options!r}")
        if isinstance(base, str):
            from .registry import method_class  # the registry imports this module

            try:
                cls = method_class(base)
            except ValueError as err:
                raise ValueError(f"base: {str(err).removeprefix('method: ')}") from None
            if not issubclass(cls, GramMethod):
                raise ValueError(f"base: expected a Gram method (e.g. 'mgda', 'pcgrad', 'cagrad'), got {base!r}")
            if cls.needs:
                raise ValueError(f"base: {base!r} needs {sorted(cls.needs)} from the setup; pass an instance")
            try:
                base = cls(**dict(base_options or {}))
            except TypeError as err:  # an option the base method does not have
                raise ValueError(f"base_options: {err}") from None
        elif base_options:
            raise ValueError("base_options: only used when base is a name; configure the instance instead")
        if not isinstance(base, GramMethod):
            raise ValueError(f"base: expected a Gram method name or instance, got {type(base).__name__}")
        self.base = base
        self.alpha = float(alpha)
        # the base's losses pass through (DB-MTL's log-loss scaling, say)
        self.needs_losses = base.needs_losses  # type: ignore[misc]

    def _weights(self, gram: Tensor, losses: Tensor | None = None) -> Tensor:
        if not 0 <= self.alpha <= 1:  # a schedule may have set it
            raise ValueError(f"alpha: must be a number in [0, 1], got {self.alpha!r}")
        fresh = self.base.weights(gram, losses=losses)
        self.lam = fresh.clone() if self.lam is None else self.alpha * self.lam + (1.0 - self.alpha) * fresh
        return self.lam.clone()

    def reset(self) -> None:
        """Forget the average and reset the base method."""
        super().reset()
        self.base.reset()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
