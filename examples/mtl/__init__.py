"""Helpers of ``examples/train_glue_summarization.py``: data, metrics, model and plots.

Kept apart so that each file stays focused and can be read (and tested) on its own:

- :mod:`mtl.data`: GLUE / summarization loading from local folders or the Hub, tokenisation,
  the byte-level fallback tokenizer and the deterministic per-task batch sampler;
- :mod:`mtl.metrics`: accuracy, binary F1, Matthews correlation and ROUGE-1/2/L F1;
- :mod:`mtl.model`: the shared causal-LM backbone (optionally with LoRA), the classification
  heads and the summarization (LM-head) loss;
- :mod:`mtl.plots`: the loss-curve and gradient-cosine PNGs.
"""
