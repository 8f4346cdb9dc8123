"""Section 4 of ``benchmarks.compare``: peak resident memory of each case, in its own process.

    python -m benchmarks.memory training \
        '{"model": "mlp", "T": 4, "method": "pcgrad", "library": "gradsurg[cpp]"}'
    python -m benchmarks.memory aggregation \
        '{"T": 8, "P": 1000000, "method": "pcgrad", "library": "torchjd"}'

The child builds the case (model, optimizer, batch — or, for ``aggregation``, the shared
parameters and T per-task gradient lists), runs one plain ``sum(losses).backward()`` (the
autograd engine's threads and lazily loaded kernels are then not charged to any library),
materialises the optimizer state and returns freed heap to the OS. Then it resets the kernel's
high-water mark (``echo 5 > /proc/self/clear_refs`` sets VmHWM back to the current RSS) and
reads it: that is ``setup_mb``, the model's own footprint. It runs a few steps of the case and
reads VmHWM again: ``peak_mb``. ``extra_mb = peak − setup`` is what the step itself needs
(activations, gradients, the library's buffers) and is compared with one T×P fp32 buffer
(``bound_mb``). Without ``clear_refs`` (not Linux) the baseline is ``ru_maxrss`` after setup,
which can only over-state it (:mod:`benchmarks._peak` reads the peak and runs the child). MB
here are MiB (2^20 bytes). A library's first use still allocates ~2–3 MB once (measured on tiny
models), included in its extra.

``section`` ``training`` runs the cases of :mod:`benchmarks.compare_training`; ``aggregation``
runs section 1's operation, per-task gradient lists → combined ``.grad``, for ``naive`` (the
plain sum), ``gradsurg[cpp]``/``gradsurg[torch]`` (``gradsurg.aggregate`` on the lists, J never
built), ``torchjd`` (``.jac`` stacked per parameter + ``jac_to_grad``) and ``libmtl``
(``LibMTLHost.aggregate_lists``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

import gradsurg

from ._harness import gradsurg_backend, random_grads, sum_backward
from ._peak import MIB, measure, peak_of

__all__ = ["measure", "run"]


def _model_spec(spec: dict):
    """The ``ModelSpec`` of a training case: ``spec["spec"]`` (its fields) if given, else the
    section's model of kind ``spec["model"]`` at ``spec["quick"]`` size."""
    from . import compare_training as ct

    if "spec" in spec:
        return ct.ModelSpec(**spec["spec"])
    return next(s for s in ct.model_specs(spec.get("quick", True)) if s.kind == spec["model"])


def _settle(optimizer, params) -> None:
    """Step ``optimizer`` once on zero gradients, then drop them: its state (AdamW's two moments)
    belongs to the model's footprint, not to the step being measured."""
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _training_case(spec: dict) -> tuple[Callable[[], None], int]:
    from . import compare_training as ct

    model, batch = ct.build(_model_spec(spec), spec["T"])
    # A plain backward first: the autograd engine's threads and lazily loaded kernels are paid
    # once per process by every library alike, not by the step being measured.
    sum_backward(model(*batch)[1])
    model.zero_grad(set_to_none=True)
    case = ct.make_step(
        spec["library"], spec["method"], model, batch, libmtl_path=spec.get("libmtl_path")
    )
    _settle(case.optimizer, model.parameters())
    return case.step, sum(p.numel() for p in model.shared())


def _cheap_case(spec: dict) -> tuple[Callable[[], None], int]:
    """A variant of section 5 (benchmarks.compare_cheap): ``workload``, ``T``, ``variant``,
    ``method``, ``quick``, optionally ``spec`` (the transformer's ModelSpec fields)."""
    from . import compare_cheap as cc

    work = cc.load_workload(spec["workload"], spec["T"], spec.get("quick", True), spec.get("spec"))
    sum_backward(work.forward()[1])  # autograd's threads and kernels, as above
    step, opt = cc.make_step(spec["variant"], work, spec.get("method", "upgrad"))
    _settle(opt, work.shared + work.heads)
    return step, sum(p.numel() for p in work.shared)


def _aggregation_case(spec: dict) -> tuple[Callable[[], None], int]:
    num_tasks, size, library, method = spec["T"], int(spec["P"]), spec["library"], spec["method"]
    lists = random_grads(num_tasks, size, seed=0)
    params = [torch.zeros_like(g, requires_grad=True) for g in lists[0]]

    if library == "naive":

        def step() -> None:
            for k, p in enumerate(params):
                total = lists[0][k].clone()
                for row in lists[1:]:
                    total += row[k]
                p.grad = total

    elif (backend := gradsurg_backend(library)) is not None:
        agg_method = gradsurg.get_method(method)

        def step() -> None:
            for p, g in zip(params, gradsurg.aggregate(lists, agg_method, backend=backend)):
                p.grad = g

    elif library == "torchjd":
        from torchjd.autojac import jac_to_grad

        from .peers import torchjd_pair

        aggregator = torchjd_pair(method, num_tasks=num_tasks)[0]

        def step() -> None:
            # TorchJD's input format: a (T, *shape) .jac on every parameter.
            for k, p in enumerate(params):
                p.jac = torch.stack([row[k] for row in lists])
            jac_to_grad(params, aggregator)

    elif library == "libmtl":
        from .peers import libmtl_host

        host = libmtl_host(method, params, num_tasks, path=spec.get("libmtl_path"))

        def step() -> None:
            host.aggregate_lists(lists)

    else:
        raise ValueError(f"library: unknown {library!r}")

    def fresh_step() -> None:
        for p in params:
            p.grad = None
        step()

    return fresh_step, size


def child(section: str, spec: dict) -> dict:
    """Build the case, reset the peak, run ``spec["steps"]`` (default 3) steps; the JSON
    result of the subprocess: ``setup_mb``, ``peak_mb``, ``extra_mb``, ``P``, ``how``."""
    builders = {"training": _training_case, "aggregation": _aggregation_case, "cheap": _cheap_case}
    if section not in builders:
        raise ValueError(f"section: expected one of {', '.join(builders)}, got {section!r}")
    step, size = builders[section](spec)
    return peak_of(step, size, int(spec.get("steps", 3)))


def _cases(quick: bool) -> list[tuple[str, dict]]:
    """(section, spec) of every measured case: each training model at one T, and one
    aggregation size, for naive (and the per-task floor) and the libraries' PCGrad (the one
    method all three define), plus UPGrad (gradsurg, TorchJD) in the full run."""
    methods = ("pcgrad",) if quick else ("pcgrad", "upgrad")
    training = ["gradsurg[cpp]", "torchjd-autojac", "torchjd-autogram", "libmtl"]
    aggregation = ["gradsurg[cpp]", "torchjd", "libmtl"]
    num_tasks = 4 if quick else 8
    cases: list[tuple[str, dict]] = []
    for model in ("mlp", "transformer"):
        base = {"model": model, "quick": quick, "T": num_tasks}
        # The per-task floor holds the task gradients and nothing else: gradsurg's extra over
        # it is its J buffer.
        cases += [
            ("training", {**base, "method": "—", "library": lib})
            for lib in ("naive", "per-task-floor")
        ]
        cases += [
            ("training", {**base, "method": m, "library": lib})
            for m in methods
            for lib in training
            if not (lib == "libmtl" and m == "upgrad")
        ]
    base = {"T": 8, "P": 10**6 if quick else 10**7}
    cases.append(("aggregation", {**base, "method": "mean", "library": "naive"}))
    cases += [
        ("aggregation", {**base, "method": m, "library": lib})
        for m in methods
        for lib in aggregation
        if not (lib == "libmtl" and m == "upgrad")
    ]
    return cases


def run(
    quick: bool,
    log: Callable[[str], None] = print,
    *,
    cases: list[tuple[str, dict]] | None = None,
    jobs: int = 2,
) -> list[dict]:
    """Measure every case in its own subprocess; one row per case.

    Args:
        quick: T = 4 training cases of the ~1 M-parameter models and P = 1e6 aggregation, PCGrad
            only (under ~30 s); otherwise T = 8, the full-size models, P = 1e7, PCGrad and UPGrad.
        cases: ``(section, spec)`` pairs to measure instead (the tests use tiny models).
        jobs: subprocesses run at the same time.

    Rows: ``section`` ("memory"), ``case`` (``training <model>`` or ``aggregation``),
    ``library``, ``method``, ``T``, ``P``, ``peak_mb``, ``extra_mb``, ``bound_mb`` (one T×P fp32
    buffer), ``over_naive_mb`` and ``over_floor_mb`` (extra − the naive / per-task-floor case's
    extra, None where that case was not measured; over the floor, which already holds the task
    gradients, is what the library itself adds), ``note``.
    """
    from .compare_training import model_name

    cases = cases or _cases(quick)

    def attempt(item: tuple[str, dict]) -> dict | str:
        try:
            return measure(*item)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return str(exc)

    # Each case is its own process and only its own peak is read: two at a time on two cores
    # does not change what is measured.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(attempt, cases))
    rows: list[dict] = []
    baselines: dict[tuple[str, str, int], float] = {}
    for (section, spec), result in zip(cases, results):
        if isinstance(result, str):
            log(
                f"  memory {section} {spec.get('library')} {spec.get('method')}: "
                f"not measured ({result})"
            )
            continue
        case = "aggregation"
        if section == "training":
            case = f"training {model_name(_model_spec(spec), result['P'])}"
        if spec["library"] in ("naive", "per-task-floor"):
            baselines[spec["library"], case, spec["T"]] = result["extra_mb"]
        note = (
            ""
            if result["how"] == "VmHWM"
            else "baseline from ru_maxrss (no clear_refs): extra is a lower bound"
        )
        if section == "aggregation" and spec["library"].startswith("gradsurg"):
            note = "; ".join(filter(None, [note, "gradsurg.aggregate on the lists (J not built)"]))
        rows.append(
            {
                "section": "memory",
                "case": case,
                "library": spec["library"],
                "method": spec["method"],
                "T": spec["T"],
                "P": result["P"],
                "peak_mb": result["peak_mb"],
                "extra_mb": result["extra_mb"],
                "bound_mb": spec["T"] * result["P"] * 4 / MIB,
                "note": note,
            }
        )
    for row in rows:
        for library, key in (("naive", "over_naive_mb"), ("per-task-floor", "over_floor_mb")):
            base = baselines.get((library, row["case"], row["T"]))
            row[key] = None if base is None else row["extra_mb"] - base
        log(
            f"  {row['case']:>24} {row['library']:>17} {row['method']:>6}: "
            f"peak {row['peak_mb']:7.0f} MB, "
            f"extra {row['extra_mb']:6.1f} MB, one T×P buffer {row['bound_mb']:6.1f} MB"
        )
    return rows


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], json.loads(sys.argv[2]))))
