"""The engine: one surgery step as a pipeline of small stages, one module each.

::

    plan        losses → names, scalars, α_t, which parameters each loss reaches, the shared set
    capture     per-task autograd: gradients of the shared parameters → rows of J,
                task-specific gradients → Σ_t α_t ∇L_t (held until the write stage)
    accumulate  sync=False: the micro-batches of one step, summed in J (accumulate.py)
    reduce      identity in one process; DDP: all-reduce J; FSDP2: all-reduce the partial Gram
    gram        G = J·Jᵀ in float64, brought to the host with the finiteness flags and the losses
    decide      the non-finite policy: raise, or skip the step with nothing changed
    weights     the method's weights from G (its kind decides how: paths.py)
    write       wᵀ·J into the shared ``.grad`` in place; task-specific gradients into ``.grad``
    stats       one :class:`~gradsurg.SurgeryStats` describing what was applied

:class:`~.engine.Engine` owns the state between steps and runs them; each method kind brings its
own path through the stages (per_task.py, loss_space.py), and three options bring theirs:
``refresh_every`` (refresh.py), ``groups`` (groups.py), ``features=`` (representation.py).
Data flows one way: the optimizer and the functional API call the engine, the engine calls the
stages, the stages call kernels and methods.
"""

from .engine import Engine

__all__ = ["Engine"]
