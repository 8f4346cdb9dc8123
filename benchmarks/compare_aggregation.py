"""Comparison, section 1 — aggregation only: per-parameter gradient lists (T tasks × n params,
total P) → combined ``.grad``, gradsurg vs TorchJD vs LibMTL, in one process, on the same tensors.

    python -m benchmarks.compare_aggregation            # T ∈ {2,4,8}, P ∈ {1e5,1e6,1e7}
    python -m benchmarks.compare_aggregation --quick    # T ∈ {2,4},   P ∈ {1e5,1e6}

What each library's timed call is (everything after the per-task backward passes):

* ``gradsurg[cpp]``, ``gradsurg[torch]`` — what :class:`gradsurg.GradSurgery` does after its
  backward, with its own pieces (``GradBuffer`` and the backend's kernels, as in
  ``GradSurgery._backward_surgery``; not :func:`gradsurg.aggregate`, which on lists computes the
  Gram per parameter and combines with Python sums, without the reused buffer): flatten the lists
  into the reused T×P buffer, float64 Gram, ``method.weights(G)``, combine into the flat buffer
  whose views become the parameters' ``.grad``. The buffer is allocated once, as in training;
  the step's O(T²) finiteness checks and stats are left out. The method is gradsurg's default
  configuration (exact UPGrad/DualProj, ``reg_eps = 0``), except CAGrad's ``c = 0.5`` as the
  peers'; the checks use the configurations paired in :mod:`benchmarks.peers`.
* ``torchjd`` — ``torchjd.autojac.jac_to_grad(params, aggregator)``. Its input is each
  parameter's ``.jac`` of shape ``(T, *shape)``, which is exactly what TorchJD's own
  ``autojac.backward`` produces, so stacking the lists into ``.jac`` is set-up, not timed.
  ``retain_jac=True`` keeps ``.jac`` across calls (the default only deletes the attribute after
  reading it, the same work).
* ``libmtl`` — :meth:`benchmarks.peers.LibMTLHost.aggregate_lists`: LibMTL's own ``backward``
  with its per-task backward replaced by handing it the given gradients (its ``_grad2vec``
  flatten, its math, its ``_reset_grad`` run unchanged).

``.grad`` is reset to None before every call of every library (as after ``zero_grad()``), so no
library pays for accumulating into an old gradient.

Correctness comes first: before timing, each output is compared with gradsurg's output for the
same definition (same options, same random orders replayed), as float64 values of the fp32
results: ``rel = ‖peer − gradsurg‖ / ‖gradsurg‖``, where gradsurg's output comes from its float64
Gram with the peer's definition (:func:`benchmarks.peers.torchjd_pair`,
:func:`benchmarks.peers.libmtl_method`) and the peer's random orders replayed (PCGrad, GradVac).
``check`` is ``ok (rel …)`` within the tolerance — 1e-4 for closed forms and the same algorithm in
fp32; 1e-3 where the peer's solver is iterative (TorchJD's CAGrad with cvxpy, Nash-MTL with ≤20
ECOS solves and MGDA with Frank–Wolfe; LibMTL's MGDA with Frank–Wolfe and CAGrad with SLSQP) —
else ``differs (rel …): <why>``. TorchJD computes in the dtype of ``.jac`` (an fp32 Gram, fp32
pinv/SVD, …): when it misses the tolerance it is run again on float64 copies of the same
gradients, and ``ok (rel … fp32 / … fp64)`` says its fp32 rounding, not its definition, made the
difference. The ``note`` column says what differs between the libraries (empty: nothing).
LibMTL's CAGrad only runs with T = 3 (it hard-codes the shape), so it has no rows on this grid.

The gradients: T rows g_t = s_t (z_t + b_t z_0) from standard normal z, with b_t ∈ [−1, 1]
(pairs conflict when b_i b_j < 0) and norms s_t spanning 0.5…2, split into ``num_params``
parameters.
"""

from __future__ import annotations

import argparse
import functools
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import gradsurg
from gradsurg._buffer import GradBuffer
from gradsurg.kernels import cpp, reference
from gradsurg.methods import Method
from gradsurg.methods.gradvac import gradvac_weights
from gradsurg.methods.pcgrad import pcgrad_weights

from . import peers
from ._harness import machine_facts, median_time, split_sizes

__all__ = ["METHODS", "run"]

SECTION = "aggregation"
#: Methods of this section, in table order.
METHODS = (
    "mean", "pcgrad", "mgda", "imtl_g", "upgrad", "cagrad", "config", "dualproj", "aligned_mtl",
    "nash_mtl",
)
TASKS, QUICK_TASKS = (2, 4, 8), (2, 4)
SIZES, QUICK_SIZES = (100_000, 1_000_000, 10_000_000), (100_000, 1_000_000)

_CLOSED_TOL = 1e-4
_ITERATIVE_TOL = 1e-3
# (library, method) → tolerance where the peer's solver is iterative.
_TOLERANCES = {
    ("torchjd", "cagrad"): _ITERATIVE_TOL,
    ("torchjd", "nash_mtl"): _ITERATIVE_TOL,
    ("torchjd", "mgda"): _ITERATIVE_TOL,
    ("libmtl", "mgda"): _ITERATIVE_TOL,
    ("libmtl", "cagrad"): _ITERATIVE_TOL,
}
_SEED = 1234


def make_grads(num_tasks: int, size: int, num_params: int = 10, seed: int = 0) -> list[list[Tensor]]:
    """``grads[t][k]``: task t's fp32 gradient of parameter k, ``num_params`` parameters totalling
    ``size`` elements, with mixed conflicts and norms (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = split_sizes(size, num_params)
    b = torch.rand(num_tasks, generator=gen, dtype=torch.float64) * 2 - 1
    s = 2.0 ** (torch.rand(num_tasks, generator=gen, dtype=torch.float64) * 2 - 1)
    grads: list[list[Tensor]] = [[] for _ in range(num_tasks)]
    for n in sizes:
        common = torch.randn(n, generator=gen)
        for t in range(num_tasks):
            g = torch.randn(n, generator=gen)
            g.add_(common, alpha=float(b[t])).mul_(float(s[t]))
            grads[t].append(g)
    return grads


def _rel(out: Sequence[Tensor], ref: Sequence[Tensor]) -> float:
    num = sum(float((o.double() - r.double()).pow(2).sum()) for o, r in zip(out, ref))
    den = sum(float(r.double().pow(2).sum()) for r in ref)
    return (num / den) ** 0.5 if den > 0 else num**0.5


def _check(rel: float, tol: float, note: str) -> str:
    if rel <= tol:
        return f"ok (rel {rel:.0e})"
    return f"differs (rel {rel:.0e}): {note}" if note else f"differs (rel {rel:.0e})"


def _clear(params: Sequence[Tensor]) -> None:
    for p in params:
        p.grad = None


def _grads_of(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.grad.detach().clone() for p in params]


class GradsurgStep:
    """gradsurg's step after the backward, on given per-task gradient lists (see the module
    docstring): a reused ``GradBuffer``, the backend's kernels, a method."""

    def __init__(self, params: Sequence[Tensor], num_tasks: int, kernels: Any) -> None:
        self.params = list(params)
        self.kernels = kernels
        self.buffer = GradBuffer(self.params, num_tasks)

    def gram(self, lists: Sequence[Sequence[Tensor]]) -> Tensor:
        """Flatten ``lists`` into the buffer and return the float64 CPU Gram matrix."""
        for t, row in enumerate(lists):
            self.kernels.flatten_into(self.buffer.rows[t], row)
        return self.kernels.gram(self.buffer.matrix).cpu()

    def combine(self, weights: Tensor) -> None:
        """Write ``wᵀ J`` into the flat buffer and make its views the parameters' ``.grad``."""
        self.kernels.combine_into(self.buffer.flat, self.buffer.matrix, weights, beta=0.0)
        for k, p in enumerate(self.params):
            p.grad = self.buffer.grads[k]

    def __call__(self, lists: Sequence[Sequence[Tensor]], method: Method) -> None:
        """One step: flatten, Gram, weights, combine into ``.grad``."""
        self.combine(method.weights(self.gram(lists)))


def _torchjd_orders(name: str, num_tasks: int) -> Tensor:
    # The order in which TorchJD's PCGrad / GradVac draw their permutations from the global RNG,
    # replayed after torch.manual_seed(_SEED).
    torch.manual_seed(_SEED)
    if name == "pcgrad":
        return torch.stack([torch.randperm(num_tasks) for _ in range(num_tasks)])
    rows = []
    for i in range(num_tasks):
        others = [j for j in range(num_tasks) if j != i]
        rows.append([i] + [others[k] for k in torch.randperm(num_tasks - 1).tolist()])
    return torch.tensor(rows, dtype=torch.int64)


def _libmtl_orders(name: str, num_tasks: int) -> Tensor:
    # LibMTL's PCGrad shuffles all T indices per task (its own included, which pcgrad_weights
    # skips); its GradVac shuffles the others. Replayed after random.seed(_SEED).
    random.seed(_SEED)
    rows = []
    for i in range(num_tasks):
        index = list(range(num_tasks)) if name == "pcgrad" else [j for j in range(num_tasks) if j != i]
        random.shuffle(index)
        rows.append(index if name == "pcgrad" else [i, *index])
    return torch.tensor(rows, dtype=torch.int64)


def _expected_weights(library: str, name: str, method: Method, gram: Tensor) -> Tensor:
    """gradsurg's weights for the peer's definition, with the peer's random orders replayed."""
    num_tasks = gram.shape[0]
    if name in ("pcgrad", "gradvac"):
        order = (_torchjd_orders if library == "torchjd" else _libmtl_orders)(name, num_tasks)
        if name == "pcgrad":
            return pcgrad_weights(gram, order)
        beta = float(method.beta)
        return gradvac_weights(gram, order, torch.zeros(num_tasks, num_tasks, dtype=torch.float64), beta)[0]
    return method.weights(gram)


def _timing(size: int, quick: bool) -> dict[str, float]:
    # median_time makes two warm-up calls, then `repeat` rounds of enough calls to last
    # min_time/repeat: sub-millisecond calls are averaged, slow ones run once per round.
    if quick:
        return {"repeat": 3, "min_time": 0.01}
    if size >= 5_000_000:
        return {"repeat": 3, "min_time": 0.0}
    return {"repeat": 5, "min_time": 0.1}


def _backends() -> dict[str, Any]:
    found = {"cpp": cpp} if cpp.available() else {}
    found["torch"] = reference
    return found


def run(
    quick: bool,
    methods: list[str] | None = None,
    libmtl_path: str | None = None,
    log: Callable[[str], object] = print,
    *,
    tasks: Sequence[int] | None = None,
    sizes: Sequence[int] | None = None,
    num_params: int = 10,
) -> list[dict[str, Any]]:
    """Measure section 1 and return one row per (T, P, method, library).

    Args:
        quick: the small grid (T ∈ {2, 4}, P ∈ {1e5, 1e6}) and shorter timings.
        methods: gradsurg method names (default :data:`METHODS`; ``gradvac`` is also supported).
        libmtl_path: where LibMTL is (see :func:`benchmarks.peers.load_libmtl_weighting`).
        log: receives progress lines and the reasons peers are unavailable.
        tasks, sizes: override the grid's T and P values.
        num_params: how many parameters the P elements are split into.

    Returns:
        Dicts with keys ``section`` ("aggregation"), ``T``, ``P``, ``dtype``, ``method``,
        ``library`` ("gradsurg[cpp]", "gradsurg[torch]", "torchjd", "libmtl"), ``median_ms``,
        ``check`` and ``note``. An unavailable peer is logged and has no rows.
    """
    methods = list(METHODS if methods is None else methods)
    tasks = list(tasks if tasks is not None else (QUICK_TASKS if quick else TASKS))
    sizes = [int(p) for p in (sizes if sizes is not None else (QUICK_SIZES if quick else SIZES))]
    backends = _backends()
    if "cpp" not in backends:
        log(f"gradsurg[cpp]: unavailable ({cpp.load_error()})")
    try:
        from torchjd.autojac import jac_to_grad
    except ImportError as exc:
        jac_to_grad = None
        log(f"torchjd: unavailable ({exc})")
    libmtl_reason = None
    try:
        peers.load_libmtl_weighting(libmtl_path)
    except peers.PeerUnavailable as exc:
        libmtl_reason = exc.reason
        log(f"libmtl: unavailable ({exc.reason})")

    rows: list[dict[str, Any]] = []
    for num_tasks in tasks:
        for size in sizes:
            case = _Case.make(num_tasks, size, num_params, backends, _timing(size, quick))
            log(f"T={num_tasks} P={size:.0e}: {len(methods)} methods")
            for name in methods:
                rows.extend(_gradsurg_rows(case, name))
                measure = []
                if jac_to_grad is not None and name in peers.TORCHJD_METHODS:
                    measure.append(("torchjd", functools.partial(_torchjd, case, name, jac_to_grad)))
                if libmtl_reason is None and name in peers.LIBMTL_METHODS:
                    measure.append(("libmtl", functools.partial(_libmtl, case, name, libmtl_path)))
                for library, fn in measure:
                    try:
                        with warnings.catch_warnings():
                            # cvxpy's "not DPP" and similar solver chatter, once per call.
                            warnings.simplefilter("ignore")
                            seconds, check, note = fn()
                    except peers.PeerUnavailable as exc:
                        log(f"{library} {name}: unavailable ({exc.reason})")
                    except Exception as exc:
                        log(f"{library} {name} T={num_tasks} P={size:.0e}: failed ({exc!r}); no row")
                    else:
                        rows.append(case.row(name, library, seconds, check, note))
                    finally:
                        for p in case.params:
                            if hasattr(p, "jac"):
                                del p.jac
            _clear(case.params)
    return rows


@dataclass
class _Case:
    """One (T, P): the gradients, the parameters, gradsurg's steps and the reference Gram."""

    num_tasks: int
    size: int
    lists: list[list[Tensor]]
    params: list[Tensor]
    jacs: list[Tensor]
    steps: dict[str, GradsurgStep]
    gram: Tensor
    timing: dict[str, float]

    @classmethod
    def make(cls, num_tasks: int, size: int, num_params: int, backends: dict[str, Any],
             timing: dict[str, float]) -> _Case:
        lists = make_grads(num_tasks, size, num_params)
        params = [torch.zeros_like(g, requires_grad=True) for g in lists[0]]
        jacs = [torch.stack([row[k] for row in lists]) for k in range(len(params))]
        steps = {name: GradsurgStep(params, num_tasks, kernels) for name, kernels in backends.items()}
        # The float64 Gram of the reference backend: the input to every expected result.
        gram = steps["torch"].gram(lists)
        return cls(num_tasks, size, lists, params, jacs, steps, gram, timing)

    def row(self, method: str, library: str, seconds: float, check: str, note: str) -> dict[str, Any]:
        return {
            "section": SECTION, "T": self.num_tasks, "P": self.size, "dtype": "float32",
            "method": method, "library": library, "median_ms": seconds * 1e3,
            "check": check, "note": note,
        }


def _gradsurg_rows(case: _Case, name: str) -> list[dict[str, Any]]:
    # The torch backend is the oracle; the C++ one is checked against it.
    rows, reference_out = [], None
    for backend, step in sorted(case.steps.items(), key=lambda kv: kv[0] != "torch"):
        _clear(case.params)
        step(case.lists, _gradsurg_method(name))
        out = _grads_of(case.params)
        if reference_out is None:
            reference_out, check = out, "n/a (reference)"
        else:
            check = _check(_rel(out, reference_out), _CLOSED_TOL, "")
        method = _gradsurg_method(name)

        def call(step: GradsurgStep = step, method: Method = method) -> None:
            _clear(case.params)
            step(case.lists, method)

        rows.append(case.row(name, f"gradsurg[{backend}]", median_time(call, **case.timing), check, ""))
    return rows


def _gradsurg_method(name: str) -> Method:
    # The gradsurg configuration timed in the gradsurg rows: the library's defaults, except the
    # options the peers are configured to (CAGrad c = 0.5 as TorchJD/LibMTL here).
    if name == "cagrad":
        return gradsurg.get_method("cagrad", c=peers.CAGRAD_C)
    return gradsurg.get_method(name)


def _torchjd(case: _Case, name: str, jac_to_grad: Callable[..., Any]) -> tuple[float, str, str]:
    num_tasks, params, jacs = case.num_tasks, case.params, case.jacs
    aggregator, method = peers.torchjd_pair(name, num_tasks=num_tasks)
    note = peers.torchjd_note(name)
    for p, jac in zip(params, jacs):
        p.jac = jac  # what torchjd.autojac.backward leaves on the parameters
    expected_w = _expected_weights("torchjd", name, method, case.gram)
    _clear(params)
    case.steps["torch"].combine(expected_w)
    expected = _grads_of(params)
    tol = _TOLERANCES.get(("torchjd", name), _CLOSED_TOL)
    _clear(params)
    torch.manual_seed(_SEED)  # PCGrad/GradVac: the orders replayed in _expected_weights
    jac_to_grad(params, aggregator, retain_jac=True)
    rel = _rel(_grads_of(params), expected)
    check = _check(rel, tol, note)
    if rel > tol:
        # TorchJD computes in the dtype of .jac (fp32 Gram, fp32 SVD/pinv, ...), gradsurg from a
        # float64 Gram: rerun TorchJD, freshly built, on float64 copies of the same gradients to
        # tell its fp32 rounding from a difference of definition.
        fresh, _ = peers.torchjd_pair(name, num_tasks=num_tasks)
        for p, jac in zip(params, jacs):
            p.jac = jac.double()
        _clear(params)
        torch.manual_seed(_SEED)
        jac_to_grad(params, fresh, retain_jac=True)  # the result is cast to the fp32 parameters
        rel64 = _rel(_grads_of(params), expected)
        for p, jac in zip(params, jacs):
            p.jac = jac
        if rel64 <= tol:
            check = f"ok (rel {rel:.0e} fp32 / {rel64:.0e} fp64)"
            note = (note + "; " if note else "") + (
                f"TorchJD computes in fp32 from an fp32 Gram: off by {rel:.0e}; on float64 copies of "
                f"the inputs it agrees to {rel64:.0e}"
            )
        else:
            check = _check(rel, tol, note) + f" (fp64 inputs: rel {rel64:.0e})"
    if name == "nash_mtl":
        note += ("; timed on a repeated input, where its warm start (the previous call's α) "
                 "stops it after one solve: its best case")

    def call() -> None:
        _clear(params)
        jac_to_grad(params, aggregator, retain_jac=True)

    return median_time(call, **case.timing), check, note


def _libmtl(case: _Case, name: str, libmtl_path: str | None) -> tuple[float, str, str]:
    num_tasks, params, lists = case.num_tasks, case.params, case.lists
    host = peers.libmtl_host(name, params, num_tasks, libmtl_path)
    note = peers.libmtl_note(name)
    method = peers.libmtl_method(name)
    expected_w = _expected_weights("libmtl", name, method, case.gram)
    _clear(params)
    case.steps["torch"].combine(expected_w)
    expected = _grads_of(params)
    _clear(params)
    random.seed(_SEED)  # PCGrad/GradVac: the orders replayed in _expected_weights
    host.aggregate_lists(lists)
    check = _check(_rel(_grads_of(params), expected), _TOLERANCES.get(("libmtl", name), _CLOSED_TOL), note)

    def call() -> None:
        _clear(params)
        host.aggregate_lists(lists)

    return median_time(call, **case.timing), check, note


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| T | P | method | library | ms | check | note |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['P']:.0e} | {r['method']} | {r['library']} | {r['median_ms']:.3f} "
                     f"| {r['check']} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse arguments, run, print the Markdown table; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T ∈ {2, 4}, P ∈ {1e5, 1e6}")
    parser.add_argument("--methods", default=None, help="comma-separated gradsurg method names")
    parser.add_argument("--tasks", default=None, help="comma-separated T values (overrides the grid)")
    parser.add_argument("--sizes", default=None, help="comma-separated P values (overrides the grid)")
    parser.add_argument("--libmtl-path", default=None, help="directory containing LibMTL/ (default: installed)")
    args = parser.parse_args(argv)
    print(f"machine: {machine_facts()}")
    rows = run(
        args.quick,
        methods=None if args.methods is None else args.methods.split(","),
        libmtl_path=args.libmtl_path,
        tasks=None if args.tasks is None else [int(t) for t in args.tasks.split(",")],
        sizes=None if args.sizes is None else [int(float(p)) for p in args.sizes.split(",")],
    )
    print()
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
