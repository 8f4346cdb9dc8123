"""The GLUE + summarization experiment, one concept per module; the scripts in ``examples/``
(``train_glue_summarization``, ``demo``, ``run_comparison``) are thin command lines over it.

- :mod:`.cli`: the flags and their checks;
- :mod:`.data`: GLUE / summarization loading (local JSONL/CSV or the Hub), tokenisation, the
  byte-level fallback tokenizer and the deterministic per-task batch sampler;
- :mod:`.tasks`: a run's tasks, their batch sizes and losses;
- :mod:`.model`: the shared causal-LM backbone, the classification heads (last-token or mean
  pooling) and the summarization (LM-head) loss;
- :mod:`.build`: the model (LoRA) and the optimizer (``GradSurgery`` with the method built from
  what it declares it needs);
- :mod:`.train`: the training loop; :mod:`.evaluate`: the evaluation; :mod:`.checkpoint`: resume;
- :mod:`.metrics`: accuracy, binary F1, Matthews correlation and ROUGE-1/2/L F1;
- :mod:`.report` and :mod:`.plots`: ``log.csv``, ``metrics.json``, tables and PNGs;
- :mod:`.aggregate`: mean ± std, Δm% and paired differences over seeds.
"""
