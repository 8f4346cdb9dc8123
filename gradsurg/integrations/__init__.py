"""Trainer integrations. Importing :mod:`gradsurg` imports none of these (nor their packages):

- :mod:`gradsurg.integrations.hf` — ``GradSurgeryTrainer``, a Hugging Face ``Trainer``;
- :mod:`gradsurg.integrations.lightning` — ``GradSurgeryModule``, a Lightning module mixin;
- :mod:`gradsurg.integrations.stats_log` — the conflict statistics as flat, named scalars.
"""
