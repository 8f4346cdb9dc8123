"""Section 2 of ``benchmarks.compare``: a whole training step of a shared-trunk model.

Two trunks — an MLP on 64 feature rows and a small pre-norm transformer encoder on 8×64 token
ids — each with T linear classification heads on the trunk's output (mean-pooled over the
sequence for the transformer). Every case starts from the same initial weights and sees the same
batch; each case times ``zero_grad → forward → backward → AdamW.step()``:

- ``naive``: ``sum(losses).backward()``, the floor of any multi-task step;
- ``per-task-floor``: T ``torch.autograd.grad`` passes (shared + own head parameters), no
  aggregation at all — the shared ``.grad`` is just pointed at the last task's gradient so that
  the optimizer step is timed too. This is the unavoidable cost of having per-task gradients,
  against which gradsurg's overhead is judged;
- ``gradsurg[cpp]``, ``gradsurg[torch]``: ``GradSurgery(AdamW).backward(losses)`` per backend;
- ``torchjd-autojac``: ``mtl_backward(losses, features=trunk output)`` + ``jac_to_grad``;
- ``torchjd-autogram``: ``Engine(trunk, batch_dim=None)``; Gramian of the stacked losses,
  weights from the aggregator's Gramian weighting, ``losses.backward(weights)``;
- ``libmtl``: LibMTL's own per-task backward + weighting (``benchmarks.peers.libmtl_host``).

Before timing, one backward from the initial weights gives every library's shared ``.grad``,
compared with gradsurg's (``check`` column). The models, batches and step closures are public
so that ``benchmarks.memory`` can run the same cases in a subprocess.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gradsurg import GradSurgery, get_method
from gradsurg.kernels import cpp

from ._harness import flat_grad, gradsurg_backend, median_time, rel_diff, sum_backward

__all__ = [
    "LIBRARIES",
    "Case",
    "ModelSpec",
    "SharedTrunkModel",
    "build",
    "grad_check",
    "make_step",
    "model_name",
    "model_specs",
    "run",
    "vmap_note",
]

#: Library names of this section's rows, in table order.
LIBRARIES = (
    "naive",
    "per-task-floor",
    "gradsurg[cpp]",
    "gradsurg[torch]",
    "torchjd-autojac",
    "torchjd-autogram",
    "libmtl",
)

#: Relative tolerance ‖g − g_gradsurg‖ / ‖g_gradsurg‖ of the correctness check. The libraries
#: get their fp32 task gradients by different autograd paths (T passes, one batched VJP, a vmap
#: over the Gramian) and their weights from an fp32 or fp64 Gram matrix: observed differences
#: are ~1e-7..1e-6, a different definition is O(1e-2) or more.
CHECK_RTOL = 1e-4

_BASELINE = "—"  # the method of the method-independent rows (naive, per-task floor)


class Case(NamedTuple):
    """The closures of one (library, method) case and the optimizer they step."""

    backward: Callable[[], None]
    step: Callable[[], None]
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of one shared-trunk model and its batch.

    ``kind`` is ``"mlp"`` (``d_in`` → ``depth`` layers of ``width``) or ``"transformer"``
    (``vocab`` token ids, ``depth`` pre-norm blocks of ``width``, ``seq`` tokens per row).
    """

    kind: str
    width: int
    depth: int
    batch: int
    d_in: int = 0
    vocab: int = 0
    seq: int = 0
    classes: int = 4


def model_specs(quick: bool) -> list[ModelSpec]:
    """The section's two models: ~1 M shared parameters each in quick mode, ~10 M (MLP) and
    ~5 M (transformer) otherwise."""
    if quick:
        return [
            ModelSpec("mlp", width=512, depth=4, batch=64, d_in=256),
            # Half of the parameters in the embedding keeps the quick step cheap while the
            # trunk still has two full blocks of attention and MLP.
            ModelSpec("transformer", width=128, depth=2, batch=8, vocab=4096, seq=64),
        ]
    return [
        ModelSpec("mlp", width=1536, depth=5, batch=64, d_in=512),
        ModelSpec("transformer", width=256, depth=4, batch=8, vocab=8192, seq=64),
    ]


class _Block(nn.Module):
    """Pre-norm encoder block. Attention goes through ``Linear`` children called as modules (not
    ``nn.MultiheadAttention``, which reads its ``out_proj`` weight directly) so that TorchJD's
    autogram engine, which hooks parameterised modules, sees every parameter."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out(a.transpose(1, 2).reshape(b, s, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class _TransformerTrunk(nn.Module):
    """Token + position embeddings, pre-norm blocks, final norm, mean over the sequence."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.tokens = nn.Embedding(spec.vocab, spec.width)
        self.positions = nn.Embedding(spec.seq, spec.width)
        self.blocks = nn.Sequential(*[_Block(spec.width, heads=4) for _ in range(spec.depth)])
        self.norm = nn.LayerNorm(spec.width)
        self.register_buffer("index", torch.arange(spec.seq), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tokens(ids) + self.positions(self.index[: ids.shape[1]])
        return self.norm(self.blocks(x)).mean(1)


def _mlp_trunk(spec: ModelSpec) -> nn.Module:
    layers: list[nn.Module] = []
    d = spec.d_in
    for _ in range(spec.depth):
        layers += [nn.Linear(d, spec.width), nn.ReLU()]
        d = spec.width
    return nn.Sequential(*layers)


class SharedTrunkModel(nn.Module):
    """A shared trunk and one linear classification head per task."""

    def __init__(self, spec: ModelSpec, num_tasks: int) -> None:
        super().__init__()
        self.trunk = _mlp_trunk(spec) if spec.kind == "mlp" else _TransformerTrunk(spec)
        self.heads = nn.ModuleList(nn.Linear(spec.width, spec.classes) for _ in range(num_tasks))

    def forward(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(features, [loss_t])``: the trunk output and each task's cross-entropy."""
        features = self.trunk(inputs)
        return features, [F.cross_entropy(h(features), y) for h, y in zip(self.heads, labels)]

    def shared(self) -> list[nn.Parameter]:
        """The trunk's parameters, the shared parameters of every library."""
        return list(self.trunk.parameters())


def build(
    spec: ModelSpec, num_tasks: int, seed: int = 0
) -> tuple[SharedTrunkModel, tuple[Tensor, Tensor]]:
    """The model with seeded initial weights and one fixed batch ``(inputs, labels (T, B))``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SharedTrunkModel(spec, num_tasks)
    if spec.kind == "mlp":
        inputs = torch.randn(spec.batch, spec.d_in, generator=gen)
    else:
        inputs = torch.randint(spec.vocab, (spec.batch, spec.seq), generator=gen)
    labels = torch.randint(spec.classes, (num_tasks, spec.batch), generator=gen)
    return model, (inputs, labels)


def model_name(spec: ModelSpec, size: int) -> str:
    """``"mlp-0.92M"``-style label of a model with ``size`` shared parameters."""
    return f"{spec.kind}-{size / 1e6:.3g}M"


def _adamw(params: Sequence[Tensor]) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=1e-4)


def _peer_pair(method: str):
    """``(torchjd aggregator, gradsurg Method)`` of one definition, or ``(None, gradsurg
    method by name)`` when TorchJD does not define it the same way."""
    from .peers import TORCHJD_METHODS, PeerUnavailable, torchjd_pair

    if method not in TORCHJD_METHODS:
        return None, get_method(method)
    try:
        return torchjd_pair(method)
    except PeerUnavailable:
        return None, get_method(method)


def make_step(
    library: str,
    method: str,
    model: SharedTrunkModel,
    batch: tuple[Tensor, Tensor],
    *,
    libmtl_path: str | None = None,
) -> Case:
    """One case on ``model`` (which it owns from now on: autogram hooks it, the optimizer
    steps it).

    ``case.backward()`` runs ``zero_grad``, the forward pass and the library's backward, leaving
    the shared ``.grad``; ``case.step()`` is ``backward()`` followed by ``case.optimizer.step()``.

    Raises:
        benchmarks.peers.PeerUnavailable: the library does not define ``method`` or is missing.
        ValueError: unknown library.
    """
    from .peers import LIBMTL_METHODS, PeerUnavailable, libmtl_host

    inputs, labels = batch
    shared = model.shared()
    num_tasks = len(model.heads)
    backend = gradsurg_backend(library)
    if backend is not None:
        if backend == "cpp" and not cpp.available():
            raise PeerUnavailable(f"the C++ extension is not built ({cpp.load_error()})")
        opt = GradSurgery(
            _adamw(list(model.parameters())), method=_peer_pair(method)[1], backend=backend
        )

        def backward() -> None:
            opt.zero_grad()
            opt.backward(model(inputs, labels)[1])

    elif library == "naive":
        opt = _adamw(list(model.parameters()))

        def backward() -> None:
            opt.zero_grad()
            sum_backward(model(inputs, labels)[1])

    elif library == "per-task-floor":
        opt = _adamw(list(model.parameters()))

        def backward() -> None:
            opt.zero_grad()
            losses = model(inputs, labels)[1]
            for t, (loss, head) in enumerate(zip(losses, model.heads)):
                own = list(head.parameters())
                grads = torch.autograd.grad(loss, shared + own, retain_graph=t < num_tasks - 1)
                for p, g in zip(own, grads[len(shared) :]):
                    p.grad = g
            # No combination: the optimizer just reads the last task's gradient.
            for p, g in zip(shared, grads[: len(shared)]):
                p.grad = g

    elif library == "torchjd-autojac":
        from torchjd.autojac import jac_to_grad, mtl_backward

        aggregator = _torchjd_aggregator(method)
        opt = _adamw(list(model.parameters()))

        def backward() -> None:
            opt.zero_grad()
            features, losses = model(inputs, labels)
            mtl_backward(losses, features=features)
            jac_to_grad(shared, aggregator)

    elif library == "torchjd-autogram":
        from torchjd.autogram import Engine

        weighting = _gramian_weighting(method)
        engine = Engine(model.trunk, batch_dim=None)
        opt = _adamw(list(model.parameters()))

        def backward() -> None:
            opt.zero_grad()
            losses = torch.stack(model(inputs, labels)[1])
            weights = weighting(engine.compute_gramian(losses))
            # The heads get w_t ∇L_t here (gradsurg and autojac give them ∇L_t): only the shared
            # gradient is compared.
            losses.backward(weights)

    elif library == "libmtl":
        if method not in LIBMTL_METHODS:
            raise PeerUnavailable(f"LibMTL has no {method!r} weighting")
        host = libmtl_host(method, shared, num_tasks, path=libmtl_path)
        opt = _adamw(list(model.parameters()))

        def backward() -> None:
            opt.zero_grad()
            host.backward(model(inputs, labels)[1])

    else:
        raise ValueError(f"library: unknown {library!r}; known: {', '.join(LIBRARIES)}")

    def step() -> None:
        backward()
        opt.step()

    return Case(backward, step, opt)


def _torchjd_aggregator(method: str):
    """TorchJD's aggregator paired with gradsurg's ``method``; PeerUnavailable says why not
    (no pairing, or torchjd or one of its extras missing)."""
    from .peers import torchjd_pair

    return torchjd_pair(method)[0]


#: TorchJD matrix weightings that read nothing but the number of rows, which a Gramian has too
#: (TorchJD's autogram documentation lists them as compatible).
_ROW_COUNT_WEIGHTINGS = ("MeanWeighting", "SumWeighting", "ConstantWeighting", "RandomWeighting")


def _gramian_weighting(method: str):
    """The Gramian → weights part of TorchJD's aggregator, which is what autogram needs."""
    from torchjd.aggregation import GramianWeightedAggregator, WeightedAggregator

    from .peers import PeerUnavailable

    aggregator = _torchjd_aggregator(method)
    if isinstance(aggregator, GramianWeightedAggregator):
        return aggregator.gramian_weighting
    if (
        isinstance(aggregator, WeightedAggregator)
        and type(aggregator.weighting).__name__ in _ROW_COUNT_WEIGHTINGS
    ):
        return aggregator.weighting
    raise PeerUnavailable(
        f"autogram: TorchJD's {type(aggregator).__name__} does not weight from the Gramian alone"
    )


def vmap_note(caught: Sequence[warnings.WarningMessage]) -> str:
    """A note naming the operations ``torch.vmap`` warned it has no batching rule for (it then
    loops over the rows: TorchJD's batched backward is not batched there), or ``""``."""
    ops = sorted(
        {
            m.group(1)
            for w in caught
            if (m := re.search(r"batching rule for (\S+?)\.", str(w.message)))
        }
    )
    return f"torch.vmap falls back to a per-row loop for {', '.join(ops)}" if ops else ""


def grad_check(got: Tensor, ref: Tensor, rtol: float = CHECK_RTOL) -> str:
    """``"ok 3e-07"`` or ``"FAIL 2e-02"``: the relative difference of two flat gradients."""
    rel = rel_diff(got, ref)
    return f"{'ok' if rel <= rtol else 'FAIL'} {rel:.0e}"


def _skip_reason(library: str, method: str, num_tasks: int) -> str | None:
    """Why a peer's gradient cannot be compared with gradsurg's for this case, if it cannot."""
    if library in ("naive", "per-task-floor"):
        return None
    if method == "pcgrad" and num_tasks > 2 and library not in ("gradsurg[cpp]", "gradsurg[torch]"):
        return "skip: PCGrad's random projection order differs between libraries for T > 2"
    return None


def _case(
    base: SharedTrunkModel,
    batch: tuple[Tensor, Tensor],
    library: str,
    method: str,
    reference: Tensor | None,
    repeat: int,
    min_time: float,
    libmtl_path: str | None,
) -> tuple[float, str, Tensor, str]:
    """Check then time one case on a fresh copy of ``base``: ``(median ms, check, shared grad,
    note)``; the note names the operations ``torch.vmap`` had no batching rule for.

    ``reference`` is gradsurg's shared gradient for the library's definition of ``method`` (None
    for the reference row itself and the method-independent baselines)."""
    model = copy.deepcopy(base)
    backward, step, _ = make_step(library, method, model, batch, libmtl_path=libmtl_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backward()
    grad = flat_grad(model.shared())
    if library in ("naive", "per-task-floor"):
        check = _BASELINE
    elif reference is None:
        check = "reference" if library.startswith("gradsurg") else "unchecked"
    else:
        check = _skip_reason(library, method, len(base.heads)) or grad_check(grad, reference)
    with warnings.catch_warnings():
        # Reported once in the row's note rather than at every timed step.
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        seconds = median_time(step, repeat=repeat, min_time=min_time)
    return 1e3 * seconds, check, grad, vmap_note(caught)


def _gradsurg_grad(base: SharedTrunkModel, batch: tuple[Tensor, Tensor], method) -> Tensor:
    """gradsurg's shared gradient (torch backend) for ``method`` from ``base``'s weights."""
    model = copy.deepcopy(base)
    opt = GradSurgery(_adamw(list(model.parameters())), method=method, backend="torch")
    opt.backward(model(*batch)[1])
    return flat_grad(model.shared())


def run(
    quick: bool,
    log: Callable[[str], None] = print,
    libmtl_path: str | None = None,
    *,
    specs: Sequence[ModelSpec] | None = None,
    tasks: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    libraries: Sequence[str] = LIBRARIES,
    repeat: int | None = None,
) -> list[dict]:
    """Measure every (model, T, method, library) case; one row dict per case.

    Args:
        quick: ~1 M-parameter models, T ∈ {2, 4}, methods mean and upgrad (under ~40 s);
            otherwise ~10 M / ~5 M parameters, T ∈ {2, 4, 8}, mean, upgrad and pcgrad.
        log: where progress and skip reasons go.
        libmtl_path: a LibMTL checkout to import instead of the installed package.
        specs, tasks, methods, libraries, repeat: override the grid (the tests use tiny sizes).

    Rows have ``section`` ("training"), ``model``, ``T``, ``P`` (shared parameters), ``method``
    ("—" for the method-independent naive and per-task-floor rows), ``library``, ``median_ms``,
    ``check`` and ``note``.
    """
    from .peers import LIBMTL_METHODS, PeerUnavailable, libmtl_method, libmtl_note, torchjd_note

    specs = list(specs or model_specs(quick))
    tasks = list(tasks or ((2, 4) if quick else (2, 4, 8)))
    methods = list(methods or (("mean", "upgrad") if quick else ("mean", "upgrad", "pcgrad")))
    repeat = repeat or (3 if quick else 5)
    # Sub-10 ms steps (the MLP) are repeated within a round to last ~min_time / repeat.
    min_time = 0.1 if quick else 0.3
    ours = (
        "gradsurg[cpp]" if cpp.available() and "gradsurg[cpp]" in libraries else "gradsurg[torch]"
    )
    rows: list[dict] = []
    for spec in specs:
        for num_tasks in tasks:
            base, batch = build(spec, num_tasks)
            size = sum(p.numel() for p in base.shared())
            name = model_name(spec, size)
            log(f"training: {name}, T={num_tasks}")
            cases = [(lib, _BASELINE) for lib in ("naive", "per-task-floor") if lib in libraries]
            # gradsurg first: its gradient is the reference of the other libraries' checks.
            order = [ours] * (ours in libraries) + [lib for lib in libraries if lib != ours]
            cases += [
                (lib, m)
                for m in methods
                for lib in order
                if lib not in ("naive", "per-task-floor") and lib in libraries
            ]
            references: dict[str, Tensor] = {}
            for library, method in cases:
                reference = None if library == ours else references.get(method)
                comparable = _skip_reason(library, method, num_tasks) is None
                if library == "libmtl" and method in LIBMTL_METHODS and comparable:
                    # LibMTL's definition can differ from TorchJD's (EW sums the losses).
                    reference = _gradsurg_grad(base, batch, libmtl_method(method))
                try:
                    ms, check, grad, vmap_note = _case(
                        base, batch, library, method, reference, repeat, min_time, libmtl_path
                    )
                except PeerUnavailable as exc:
                    log(f"  {library} {method}: not measured ({exc})")
                    continue
                if library == ours:
                    references[method] = grad
                notes = [vmap_note]
                if library.startswith("torchjd"):
                    notes.append(torchjd_note(method))
                elif library == "libmtl":
                    notes.append(libmtl_note(method))
                if method == "pcgrad" and library not in ("gradsurg[cpp]", "gradsurg[torch]"):
                    notes.append(
                        "this section checks PCGrad at T = 2 only, where the order cannot matter"
                    )
                if library == "torchjd-autogram":
                    notes.append(
                        "Engine(trunk, batch_dim=None): the task losses are batch means, "
                        "with no batch dimension"
                    )
                note = "; ".join(n for n in notes if n)
                rows.append(
                    {
                        "section": "training",
                        "model": name,
                        "T": num_tasks,
                        "P": size,
                        "method": method,
                        "library": library,
                        "median_ms": ms,
                        "check": check,
                        "note": note,
                    }
                )
                log(f"  {library:>17} {method:>6}: {ms:9.2f} ms  {check}")
    return rows
