"""pytest-benchmark suites for the kernels of a surgery step, per backend, dtype, T and P.

Run (from the repository root)::

    .venv/bin/python -m pytest benchmarks/test_bench_kernels.py --benchmark-only
    .venv/bin/python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        --benchmark-group-by=group --benchmark-json out.json
    .venv/bin/python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        --benchmark-autosave                       # saves under .benchmarks/
    .venv/bin/python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        --benchmark-compare                        # against the last autosaved run (or =NNNN)
    .venv/bin/python -m pytest benchmarks/test_bench_kernels.py --benchmark-only \\
        -k "T2-P1e5-fp32"                          # one shape, every op and backend

The grid is T ∈ {2, 4, 8, 16}, P ∈ {1e5, 1e6, 1e7}, dtype ∈ {fp32, bf16};
``GRADSURG_BENCH_QUICK=1`` shrinks it to T ∈ {2, 4}, P ∈ {1e3, 1e4} (the smoke test uses it).
Test ids read ``test_gram[T8-P1e6-fp32-cpp]``, so ``-k`` selects by any part of them.

Groups (``benchmark.group``, e.g. ``"gram T=8 P=1e6 fp32"``) put the backends of one operation
and shape side by side; ``--benchmark-group-by=group`` sorts the report by them:

- ``gram``: G = J·Jᵀ in float64 from the T×P buffer J;
- ``combine``: ``combine_into``, wᵀ·J written into a flat P-vector;
- ``flatten``: ``flatten_into`` of every task's 10 per-parameter gradients into its row of J;
- ``step``: what ``GradSurgery`` does per step once the per-task gradients exist: flatten, Gram
  (moved to the CPU), ``PCGrad().weights(G)``, combine;
- ``backward``: a real ``GradSurgery(..., method="pcgrad", backend=...).backward(losses)`` on T
  dot-product losses of 10 parameters totalling P elements; it adds the forward passes, the T
  autograd passes and the shared-parameter detection to ``step``.

Backends: ``torch`` (the reference) and ``cpp`` on CPU tensors (``cpp`` is skipped, naming the
reason, when the extension ``gradsurg._C`` is not built); ``triton`` and ``cuda`` on CUDA tensors,
skipped without a GPU. GPU cases synchronise inside the timed function. Triton's interpreter
(``TRITON_INTERPRET=1``, which tests/conftest.py sets for the tests) is refused: its timings mean
nothing.

Every benchmark records ``extra_info``: T, P, dtype, backend, device, threads
(``torch.get_num_threads()``), torch (version), bytes_moved and, when timed, GBps
(bytes_moved / median). Bytes moved, with e the element size (4 for fp32, 2 for bf16): gram
reads J (eTP); combine reads J and writes out (e(T+1)P); flatten reads the gradients and writes J
(2eTP); step is their sum (e(4T+1)P); backward reports step's bytes, a lower bound (its autograd
traffic is not counted).

Timings mean something only on an otherwise idle machine: the multi-threaded kernels (OpenMP in
``cpp``, BLAS in ``torch``) wait for their slowest thread, so a busy core inflates them by whole
scheduler ticks. ``OMP_NUM_THREADS`` sets the thread count; ``threads`` records it.

Cases with P ≥ 1e7 run 5 rounds of one call (``benchmark.pedantic``); smaller ones use plain
``benchmark(fn)``, so ``--benchmark-min-rounds``/``--benchmark-max-time`` apply to them. Every
case is called once before timing (extension loading, Triton compilation, buffer allocation).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="the kernel suites need pytest-benchmark")

from gradsurg import GradSurgery
from gradsurg.kernels import cpp, reference
from gradsurg.methods import PCGrad

from ._harness import bytes_moved, random_grads, split_rows, split_sizes

QUICK = os.environ.get("GRADSURG_BENCH_QUICK") == "1"
TASKS = (2, 4) if QUICK else (2, 4, 8, 16)
SIZES = (10**3, 10**4) if QUICK else (10**5, 10**6, 10**7)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BACKENDS = ("torch", "cpp", "triton", "cuda")

#: dtypes each backend's kernels take: the C++ kernels dispatch float/double/half/bfloat16
#: (csrc/cpu/gram.cpp, combine.cpp; flatten is a byte copy), the CUDA binding float32, float16,
#: bfloat16 and float64, the Triton launchers float32, float16 and bfloat16.
SUPPORTED_DTYPES = {name: frozenset(DTYPES.values()) for name in BACKENDS}

#: Shared parameters per task (gradients are lists of this many tensors, as in a real model).
NUM_PARAMS = 10
#: From this P on, a call takes long enough that 5 rounds of one call are a stable median.
LARGE_P = 10**7
LARGE_ROUNDS = 5

NO_GPU = "needs a CUDA GPU (none on this machine)"


@dataclass(frozen=True)
class Shape:
    """One point of the grid."""

    tasks: int
    size: int
    dtype_name: str

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of J and the gradients."""
        return DTYPES[self.dtype_name]

    @property
    def element_size(self) -> int:
        """Bytes per element."""
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def id(self) -> str:
        """Test id part, e.g. ``T8-P1e6-fp32``."""
        return f"T{self.tasks}-P{_sci(self.size)}-{self.dtype_name}"

    def group(self, op: str) -> str:
        """Benchmark group, e.g. ``gram T=8 P=1e6 fp32``."""
        return f"{op} T={self.tasks} P={_sci(self.size)} {self.dtype_name}"


def _sci(size: int) -> str:
    exponent = round(math.log10(size))
    return f"1e{exponent}" if 10**exponent == size else str(size)


@dataclass
class Workload:
    """The tensors of one shape on one device, allocated once and shared by every op."""

    grads: list[list[torch.Tensor]]  # grads[t][k]: task t's gradient of parameter k
    matrix: torch.Tensor  # J, (T, P)
    rows: list[list[torch.Tensor]]  # rows[t][k]: the view of J's row t for parameter k
    out: torch.Tensor  # (P,) combine target
    weights: torch.Tensor  # (T,) float64 on the CPU, as a method returns them


def _make_workload(shape: Shape, device: torch.device) -> Workload:
    grads = random_grads(shape.tasks, shape.size, NUM_PARAMS, dtype=shape.dtype, device=device, seed=0)
    matrix = torch.empty(shape.tasks, shape.size, dtype=shape.dtype, device=device)
    rows = split_rows(matrix, split_sizes(shape.size, NUM_PARAMS))
    # J holds real gradients, so gram and combine see the data a step would.
    for row, task_grads in zip(rows, grads):
        reference.flatten_into(row, task_grads)
    out = torch.empty(shape.size, dtype=shape.dtype, device=device)
    weights = torch.ones(shape.tasks, dtype=torch.float64)
    return Workload(grads, matrix, rows, out, weights)


# One workload per device, for the current shape only: at P=1e7, T=16 a workload is 1.3 GB in
# fp32. The module-scoped ``shape`` fixture makes pytest run every test of a shape together and
# empties this cache when it moves on.
_WORKLOADS: dict[torch.device, tuple[Shape, Workload]] = {}


def workload(shape: Shape, device: torch.device) -> Workload:
    """The cached workload of ``shape`` on ``device``, built on first use."""
    cached = _WORKLOADS.get(device)
    if cached is None or cached[0] != shape:
        _WORKLOADS.pop(device, None)  # free the old tensors before allocating the new ones
        _WORKLOADS[device] = (shape, _make_workload(shape, device))
    return _WORKLOADS[device][1]


@dataclass(frozen=True)
class Backend:
    """A kernel backend ready to run: its name, module and the device of its tensors."""

    name: str
    kernels: ModuleType
    device: torch.device


def _gpu_backend(name: str) -> ModuleType:
    if not torch.cuda.is_available():
        pytest.skip(NO_GPU)
    if name == "triton":
        if os.environ.get("TRITON_INTERPRET") == "1":
            pytest.skip(
                "TRITON_INTERPRET=1 is set: the Triton interpreter's timings are not representative"
            )
        try:
            from gradsurg.kernels import triton as module
        except ImportError as exc:
            pytest.skip(f"triton backend needs the triton package ({exc})")
        return module
    from gradsurg.kernels import cuda as module

    if not module.available():
        pytest.skip(f"cuda backend unavailable (extension gradsurg._cuda): {module.load_error()}")
    return module


_SHAPES = [Shape(t, p, d) for t, p, d in itertools.product(TASKS, SIZES, DTYPES)]


@pytest.fixture(scope="module", params=_SHAPES, ids=lambda s: s.id)
def shape(request: pytest.FixtureRequest):
    """The grid point; module scope groups the tests by shape (see ``_WORKLOADS``)."""
    yield request.param
    _WORKLOADS.clear()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, shape: Shape) -> Backend:
    """The backend under test, or a skip naming why it cannot run here."""
    name = request.param
    if name == "torch":
        kernels, device = reference, torch.device("cpu")
    elif name == "cpp":
        if not cpp.available():
            pytest.skip(f"cpp backend unavailable (extension gradsurg._C): {cpp.load_error()}")
        kernels, device = cpp, torch.device("cpu")
    else:
        kernels, device = _gpu_backend(name), torch.device("cuda")
    if shape.dtype not in SUPPORTED_DTYPES[name]:
        pytest.skip(f"{name} backend does not take {shape.dtype_name}")
    return Backend(name, kernels, device)


def _bytes_moved(op: str, shape: Shape) -> int:
    # backward reports the step's bytes, a lower bound (its autograd traffic is not counted).
    return bytes_moved("step" if op == "backward" else op, shape.tasks, shape.size, shape.element_size)


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    if device.type != "cuda":
        return fn  # type: ignore[return-value]

    def timed() -> None:
        fn()
        torch.cuda.synchronize(device)

    return timed


def run(benchmark, op: str, shape: Shape, backend: Backend, fn: Callable[[], object]) -> None:
    """Time ``fn`` as ``op`` on ``shape`` with ``backend``, recording group and extra_info."""
    bytes_moved = _bytes_moved(op, shape)
    benchmark.group = shape.group(op)
    benchmark.extra_info.update(
        T=shape.tasks,
        P=shape.size,
        dtype=shape.dtype_name,
        backend=backend.name,
        device=str(backend.device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        bytes_moved=bytes_moved,
    )
    timed = _synchronized(fn, backend.device)
    timed()  # outside the timing: extension loading, Triton compilation, first allocations
    if shape.size >= LARGE_P:
        benchmark.pedantic(timed, rounds=LARGE_ROUNDS, iterations=1)
    else:
        benchmark(timed)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["GBps"] = bytes_moved / benchmark.stats.stats.median / 1e9


def test_gram(benchmark, shape: Shape, backend: Backend) -> None:
    """G = J·Jᵀ (float64) of the T×P buffer."""
    work = workload(shape, backend.device)
    run(benchmark, "gram", shape, backend, lambda: backend.kernels.gram(work.matrix))


def test_combine(benchmark, shape: Shape, backend: Backend) -> None:
    """wᵀ·J into a flat P-vector (``combine_into``, beta=0)."""
    work = workload(shape, backend.device)
    run(
        benchmark,
        "combine",
        shape,
        backend,
        lambda: backend.kernels.combine_into(work.out, work.matrix, work.weights),
    )


def test_flatten(benchmark, shape: Shape, backend: Backend) -> None:
    """Every task's per-parameter gradients into its row of J (``flatten_into``)."""
    work = workload(shape, backend.device)

    def flatten() -> None:
        for row, task_grads in zip(work.rows, work.grads):
            backend.kernels.flatten_into(row, task_grads)

    run(benchmark, "flatten", shape, backend, flatten)


def test_step(benchmark, shape: Shape, backend: Backend) -> None:
    """The kernel part of a GradSurgery step: flatten, Gram, PCGrad weights, combine."""
    work = workload(shape, backend.device)
    kernels = backend.kernels
    method = PCGrad()

    def step() -> None:
        for row, task_grads in zip(work.rows, work.grads):
            kernels.flatten_into(row, task_grads)
        # GradSurgery brings G to the host, where the T×T method runs.
        weights = method.weights(kernels.gram(work.matrix).cpu())
        kernels.combine_into(work.out, work.matrix, weights)

    run(benchmark, "step", shape, backend, step)


def test_backward(benchmark, shape: Shape, backend: Backend) -> None:
    """A real ``GradSurgery.backward`` with PCGrad on T losses sharing every parameter."""
    work = workload(shape, backend.device)
    # Loss t = Σ_k ⟨w_k, g_tk⟩, so task t's gradient is exactly the workload's gradient list.
    params = [torch.zeros_like(g, requires_grad=True) for g in work.grads[0]]
    opt = GradSurgery(torch.optim.SGD(params, lr=0.0), method="pcgrad", backend=backend.name)

    def backward() -> None:
        losses = [
            sum(torch.dot(w, g) for w, g in zip(params, task_grads)) for task_grads in work.grads
        ]
        opt.zero_grad()
        opt.backward(losses)

    run(benchmark, "backward", shape, backend, backward)
