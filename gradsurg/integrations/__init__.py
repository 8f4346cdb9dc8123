"""Trainer integrations. Importing :mod:`gradsurg` imports none of these (nor their packages):

- :mod:`gradsurg.integrations.hf` — ``GradSurgeryTrainer``, a Hugging Face ``Trainer``;
- :mod:`gradsurg.integrations.lightning` — ``GradSurgeryModule``, a Lightning module mixin;
- :func:`stats_scalars` and :class:`StatsAverager` (here) — the conflict statistics as flat,
  named scalars, for any logger.
"""

from ._stats_log import StatsAverager, stats_scalars

__all__ = ["StatsAverager", "stats_scalars"]
