"""One surgery step as a pipeline of small stages.

::

    plan      losses → names, scalars, α_t, which parameters each loss reaches, the shared set
    capture   per-task autograd: gradients of the shared parameters → rows of J,
              task-specific gradients → Σ_t α_t ∇L_t (held until the write stage)
    reduce    identity in one process (the seam for an all-reduce across processes)
    gram      G = J·Jᵀ in float64, brought to the host with the finiteness flags and the losses
    decide    the non-finite policy: raise, or skip the step with nothing changed
    weights   the method's weights from G (its kind decides how: see :mod:`.paths`)
    write     wᵀ·J into the shared ``.grad`` in place; task-specific gradients into ``.grad``
    stats     one :class:`~gradsurg.SurgeryStats` describing what was applied

Each method kind brings its own path through these stages (:func:`~.paths.path_for`), chosen
once when :class:`~gradsurg.GradSurgery` is built.
"""

from .paths import StepPath, path_for
from .plan import StepPlan, plan_step

__all__ = ["StepPath", "StepPlan", "path_for", "plan_step"]
