"""Section 5 of ``benchmarks.compare``: the cheap paths, T tasks on one shared input batch.

When every task reads the same batch, exact surgery pays T backward passes through the shared
trunk where the plain sum of the losses pays one. This section times what each path costs on
that workload, as same-run ratios:

- ``naive``: ``sum(losses).backward()`` (no surgery; the time every ratio divides by);
- ``per-task floor``: T ``autograd.grad`` passes and nothing else, the least any exact method
  can cost;
- ``exact``: ``GradSurgery(AdamW, method)``, one pass per task;
- ``exact batched``: ``batch_tasks=True`` (the T passes as one vmapped call);
- ``refresh_every=4`` / ``refresh_every=16``: the surgery every k-th step, one backward of the
  cached weighted sum in between (timed over whole cycles of k steps);
- ``representation``: ``backward(losses, features=h)`` (per-task gradients of the shared
  representation only, one backward through the trunk);
- ``exact, bf16 J``: ``j_dtype=torch.bfloat16``.

Workloads: the shared-input transformer of section 2 (~1 M shared parameters with ``--quick``,
~5 M otherwise) with T linear heads, and SmolLM2-135M-Instruct + LoRA (r = 8 on q/v, the
example's model) with T classification heads on the pooled last hidden state of one SST-2
batch. Each case is checked before it is timed: ``exact batched`` and ``bf16 J`` against
``exact`` (relative difference of the shared ``.grad``); the approximations are marked so.
Peak memory comes from section 4's subprocess measurement (``benchmarks._peak.measure``, which
runs ``benchmarks.memory``'s ``cheap`` case), for T = 4.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsurg import GradSurgery

from ._harness import flat_grad, rel_diff, restore, snapshot, sum_backward, synchronizer
from ._peak import measure

__all__ = ["VARIANTS", "Workload", "load_workload", "make_step", "run"]

#: Variant → GradSurgery options (None: not gradsurg; "features": representation-level).
VARIANTS: dict[str, Any] = {
    "naive": None,
    "per-task floor": None,
    "exact": {},
    "exact batched": {"batch_tasks": True},
    "refresh_every=4": {"refresh_every": 4},
    "refresh_every=16": {"refresh_every": 16},
    "representation": "features",
    "exact, bf16 J": {"j_dtype": torch.bfloat16},
}


@dataclass
class Workload:
    """T tasks on one input: ``forward()`` returns ``(h, [L_t])`` with h the shared
    representation; ``shared`` are the trunk's trainable parameters, ``heads`` the heads'."""

    name: str
    forward: Callable[[], tuple[Tensor, list[Tensor]]]
    shared: list[Tensor]
    heads: list[Tensor]


def _transformer(num_tasks: int, quick: bool, spec: dict | None = None, seed: int = 0, device: str = "cpu") -> Workload:
    from . import compare_training as ct

    spec = ct.ModelSpec(**spec) if spec else next(s for s in ct.model_specs(quick) if s.kind == "transformer")
    model, (inputs, labels) = ct.build(spec, num_tasks, seed)
    model, inputs, labels = model.to(device), inputs.to(device), labels.to(device)
    size = sum(p.numel() for p in model.shared())
    return Workload(
        ct.model_name(spec, size),
        lambda: model(inputs, labels),
        model.shared(),
        list(model.heads.parameters()),
    )


def _smollm2(num_tasks: int, seed: int = 0, rows: int = 4, seq: int = 64) -> Workload:
    """SmolLM2 + LoRA (the example's model) with T two-class heads on the pooled hidden state
    of one SST-2 batch; task t's labels are the SST-2 labels flipped for odd t, so the tasks
    conflict as real opposite objectives would."""
    from . import compare_llm

    model, shared, cls, _, _ = compare_llm.load_workload(rows, seq, seed)
    torch.manual_seed(seed)
    width = model.heads["sst2"].in_features
    heads = nn.ModuleList(nn.Linear(width, 2) for _ in range(num_tasks))
    labels = cls["labels"]

    def forward() -> tuple[Tensor, list[Tensor]]:
        h = model.pooled(cls["input_ids"], cls["attention_mask"])
        return h, [F.cross_entropy(head(h), labels if t % 2 == 0 else 1 - labels) for t, head in enumerate(heads)]

    return Workload("smollm2-135m-lora", forward, shared, list(heads.parameters()))


def load_workload(name: str, num_tasks: int, quick: bool, spec: dict | None = None, device: str = "cpu") -> Workload:
    """``"transformer"`` (section 2's, or the ``ModelSpec`` fields ``spec``; on ``device``) or
    ``"smollm2"`` (CPU) with ``num_tasks`` heads (compare_llm.LLMUnavailable when SmolLM2 cannot
    be loaded)."""
    if name == "transformer":
        return _transformer(num_tasks, quick, spec, device=device)
    if name == "smollm2":
        return _smollm2(num_tasks)
    raise ValueError(f"name: expected 'transformer' or 'smollm2', got {name!r}")


def make_step(variant: str, work: Workload, method: str = "upgrad") -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """``(step, optimizer)``: ``step()`` runs zero_grad, the forward pass, the variant's backward
    and the AdamW step."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}; known: {', '.join(VARIANTS)}")
    base = torch.optim.AdamW([{"params": work.shared}, {"params": work.heads}], lr=1e-4)
    options = VARIANTS[variant]
    opt: torch.optim.Optimizer = base
    if variant == "naive":

        def backward() -> None:
            sum_backward(work.forward()[1])

    elif variant == "per-task floor":
        params = work.shared + work.heads

        def backward() -> None:
            losses = work.forward()[1]
            for t, loss in enumerate(losses):
                grads = torch.autograd.grad(loss, params, retain_graph=t < len(losses) - 1, allow_unused=True)
            # No combination: the optimizer reads the last task's gradient.
            for p, g in zip(params, grads):
                p.grad = g

    else:
        surgery = GradSurgery(base, method, shared=work.shared, **({} if options == "features" else options))
        opt = surgery

        def backward() -> None:
            h, losses = work.forward()
            if options == "features":
                surgery.backward(losses, features=h)
            else:
                surgery.backward(losses)

    def step() -> None:
        opt.zero_grad()
        backward()
        opt.step()

    return step, opt


def _check(variant: str, work: Workload, method: str, reference: Tensor | None) -> tuple[str, Tensor | None]:
    """One step from the current weights without updating them: the check column and, for
    ``exact``, the shared gradient the others are compared with."""
    if VARIANTS[variant] is None:
        return "—", None
    if variant in ("representation",) or variant.startswith("refresh_every"):
        return "approximation", None
    state = snapshot(work.shared + work.heads)
    step, _ = make_step(variant, work, method)
    step()
    grad = flat_grad(work.shared)
    restore(work.shared + work.heads, state)
    if variant == "exact":
        return "reference", grad
    assert reference is not None
    return f"rel {rel_diff(grad, reference):.1e}", None


def _time(variants: Sequence[str], work: Workload, method: str, rounds: int) -> dict[str, float]:
    """Median seconds per step of each variant. The variants take turns within each round, so
    the machine's drift hits them alike; a round of ``refresh_every=k`` is a whole cycle of k
    steps (one refresh), its time divided by k. (Not ``_harness.median_time``, which times one
    function after another: the turns are the point here.)"""
    steps = {v: make_step(v, work, method)[0] for v in variants}
    cycle = {v: (VARIANTS[v] or {}).get("refresh_every", 1) if isinstance(VARIANTS[v], dict) else 1 for v in variants}
    sync = synchronizer(work.shared[0].device)
    for v in variants:  # warm-up (lazy kernels, buffers, the first refresh)
        steps[v]()
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v in variants:
            sync()
            start = time.perf_counter()
            for _ in range(cycle[v]):
                steps[v]()
            sync()
            samples[v].append((time.perf_counter() - start) / cycle[v])
    return {v: statistics.median(s) for v, s in samples.items()}


def run(
    quick: bool,
    log: Callable[[str], None] = print,
    *,
    workloads: Sequence[str] | None = None,
    tasks: Sequence[int] | None = None,
    variants: Sequence[str] | None = None,
    method: str = "upgrad",
    rounds: int | None = None,
    memory: bool = True,
    spec: dict | None = None,
    device: str = "cpu",
) -> list[dict]:
    """Time every (workload, T, variant); one row each.

    Args:
        quick: the ~1 M transformer and SmolLM2 at T ∈ {2, 4}, 3 rounds; otherwise the ~5 M
            transformer and SmolLM2 at T ∈ {2, 4, 8}, 5 rounds.
        workloads, tasks, variants, method, rounds: override the grid.
        spec: ``ModelSpec`` fields of the transformer instead of section 2's (tests).
        device: where the transformer runs (``benchmarks.gpu_check`` times it on a GPU).
        memory: also measure peak memory at T = 4 (one subprocess per case).

    Rows: ``section`` ("cheap"), ``model``, ``T``, ``P``, ``variant``, ``method``, ``median_ms``,
    ``vs_naive``, ``vs_floor``, ``check``, ``extra_mb`` / ``over_floor_mb`` / ``bound_mb`` (one
    T×P fp32 buffer; None where not measured), ``note``.
    """
    from . import compare_llm

    workloads = list(workloads or ("transformer", "smollm2"))
    tasks = list(tasks or ((2, 4) if quick else (2, 4, 8)))
    variants = list(variants or VARIANTS)
    rounds = rounds or (3 if quick else 5)
    out: list[dict] = []
    for name in workloads:
        for num_tasks in tasks:
            try:
                work = load_workload(name, num_tasks, quick, spec, device)
            except compare_llm.LLMUnavailable as exc:
                log(f"cheap: {name} skipped ({exc})")
                break
            size = sum(p.numel() for p in work.shared)
            checks, reference = {}, None
            for v in sorted(variants, key=lambda v: v != "exact"):  # exact first: the reference
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    checks[v], grad = _check(v, work, method, reference)
                reference = grad if grad is not None else reference
            times = _time(variants, work, method, rounds)
            peaks = {}
            if memory and num_tasks == 4 and device == "cpu":
                for v in variants:
                    try:
                        peaks[v] = measure(
                            "cheap",
                            {"workload": name, "T": num_tasks, "variant": v, "method": method, "quick": quick, "spec": spec},
                        )
                    except Exception as exc:  # a failed child is reported, not fatal
                        log(f"  memory {name} {v}: not measured ({exc})")
            bound = num_tasks * size * 4 / (1 << 20)
            for v in variants:
                extra = peaks.get(v, {}).get("extra_mb")
                floor = peaks.get("per-task floor", {}).get("extra_mb")
                row = {
                    "section": "cheap",
                    "model": work.name,
                    "T": num_tasks,
                    "P": size,
                    "variant": v,
                    "method": "—" if VARIANTS[v] is None else method,
                    "median_ms": 1e3 * times[v],
                    "vs_naive": times[v] / times["naive"] if "naive" in times else None,
                    "vs_floor": times[v] / times["per-task floor"] if "per-task floor" in times else None,
                    "check": checks[v],
                    "extra_mb": extra,
                    "over_floor_mb": None if extra is None or floor is None else extra - floor,
                    "bound_mb": bound,
                    "note": "",
                }
                out.append(row)
                log(
                    f"  {work.name} T={num_tasks} {v:18s} {row['median_ms']:9.1f} ms"
                    f"  ×naive {row['vs_naive'] or float('nan'):.2f}  ×floor {row['vs_floor'] or float('nan'):.2f}"
                    f"  {checks[v]}" + ("" if extra is None else f"  extra {extra:.1f} MiB")
                )
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one line per (model, T, variant), time ratios and memory over the floor."""

    def fmt(x: float | None, spec: str) -> str:
        return "—" if x is None else format(x, spec)

    lines = [
        "| model | T | variant | ms / step | × naive | × floor | check | extra MiB | over floor (× T·P fp32) |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        over = r["over_floor_mb"]
        ratio = "—" if over is None else f"{over:.1f} ({over / r['bound_mb']:.2f}×)"
        lines.append(
            f"| {r['model']} | {r['T']} | {r['variant']} | {r['median_ms']:.1f} | {fmt(r['vs_naive'], '.2f')} | "
            f"{fmt(r['vs_floor'], '.2f')} | {r['check']} | {fmt(r['extra_mb'], '.1f')} | {ratio} |"
        )
    return "\n".join(lines)
