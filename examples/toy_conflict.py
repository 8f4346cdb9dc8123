"""Every gradsurg method on the two-objective toy of CAGrad, with a table and a trajectory plot.

The problem is the one of Fig. 1 of Liu, Liu, Jin, Stone & Liu (2021), "Conflict-Averse Gradient
Descent for Multi-task Learning", NeurIPS, arXiv:2110.14048 (the ``Toy`` class of the paper's
``toy.py``), later reused by Navon et al. (2022), "Multi-Task Learning as a Bargaining Game"
(Nash-MTL), ICML, arXiv:2202.01017. For x = (x1, x2), with L = 5e-6 and τ = tanh(x2):

    f1 = max(tanh(x2/2), 0) · (log max(|-x1/2 - 7/2 + τ|, L) + 6)
       + max(tanh(-x2/2), 0) · (((x1 - 7)² + 0.1 (x2 + 8)²) / 10 - 20)
    f2 = max(tanh(x2/2), 0) · (log max(|-x1/2 + 7/2 - τ|, L) + 6)
       + max(tanh(-x2/2), 0) · (((x1 + 7)² + 0.1 (x2 + 8)²) / 10 - 20)

In the upper half-plane each loss is a log valley (the two valleys pull x1 in opposite
directions); in the lower half both are quadratics centred at x1 = +7 and x1 = -7. The Pareto
set is a thin band over x1 ∈ [-7, 7] at x2 ≈ -8.1 to -8.44; the mean loss is smallest at its
middle, (0, -8.36).

Every method of ``gradsurg.available_methods()`` runs with Adam from the same five starting
points, and for each method the script prints one row of a Markdown table: mean final f1 and
f2, the median number of steps to converge, and how many of the runs ended on the Pareto front.
A run is on the front when its last iterate is Pareto-stationary: the min-norm point of the
convex hull of the two task gradients, min_{γ∈[0,1]} ‖γ g1 + (1-γ) g2‖, is below a tolerance
(J.-A. Désidéri 2012, "Multiple-gradient descent algorithm (MGDA) for multiobjective
optimization", Comptes Rendus Mathématique 350:313-318: a point is Pareto-stationary iff some
convex combination of the gradients vanishes). The PNG shows the trajectories over contours of
the mean loss, one panel per method, with the Pareto set of a dense grid drawn in grey.

Run ``python examples/toy_conflict.py`` (about 16 s on 2 idle cores), or ``--help`` for the
options; ``--lr 1e-3 --steps 100000 --beta2 0.999`` is the paper's own budget (about half an
hour).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import gradsurg
from gradsurg import GradSurgery

#: The small clamp constant of the paper's code: it keeps log|·| finite at the valley floors.
CLAMP_LOWER = 5e-6

#: Starting points. The CAGrad paper itself starts from three points, (-8.5, 7.5), (-8.5, -5)
#: and (9, 9); these five are the ones Nash-MTL's toy experiment uses on the same functions
#: (``experiments/toy/trainer.py`` of its code), the published set of five.
START_POINTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)

# The paper runs Adam at lr 1e-3 for 100k steps per start: 35 such runs would take about half an
# hour here, since a gradsurg step on this 2-D problem costs ~0.5-1 ms of fixed per-step overhead
# (two autograd calls, the Gram matrix, the method), whatever the parameter count. 800 steps at
# lr 0.04 fit the whole script in ~16 s on 2 idle cores and still leave room to travel: Adam
# moves each coordinate by at most ~lr per step, and lr × steps = 32 is more than the ~20 units
# from the farthest start, (9, 9), to the front.
DEFAULT_LR = 0.04
DEFAULT_STEPS = 800
QUICK_STEPS = 600
# Adam's second-moment average remembers ~1/(1 - β2) steps. In the paper's run that is 1000 of
# 100k steps; with the default β2 = 0.999 it would span the whole short run, so the large
# gradients met early (the log valleys) would keep the steps small to the end and most runs
# would still be creeping towards the front. β2 = 0.98 keeps that memory (50 steps) short
# compared with the run, as it is in the paper.
DEFAULT_BETA2 = 0.98

#: Options that differ from gradsurg's defaults: the paper's toy runs CAGrad with c = 0.5
#: (gradsurg's default, 0.4, is the value of its multi-task experiments).
#: cosreg's λ here: the cosine term's gradient must be comparable with the losses' for the
#: regulariser to show on this scale (its losses move by ~20 units).
COSREG_LAM = 1.0

METHOD_OPTIONS: dict[str, dict[str, float]] = {
    "cagrad": {"c": 0.5},
    "cosreg": {"lam": COSREG_LAM},
}

#: The default set (under 30 s on two cores): the classic surgery methods, UPGrad, and the
#: paper's regulariser. Left out for time only: ``mean`` (Adam is invariant to the 1/T scale, so
#: it repeats ``sum``) and ``nash_mtl`` (its Newton solve takes ~9 ms per step on this toy's
#: ill-conditioned Gram matrices, ~35 s in all). ``--methods all`` runs every applicable method.
DEFAULT_METHODS = ("sum", "pcgrad", "gradvac", "cagrad", "mgda", "imtl_g", "upgrad", "cosreg")

#: Methods that are not defined on this toy, and why: its losses are signed (they reach −20),
#: and these weight tasks by logarithms or ratios of the losses themselves.
NOT_APPLICABLE = {
    "db_mtl": "takes log L_t: needs positive losses",
    "gls": "geometric mean of the losses: needs positive losses",
    "famo": "takes log(L_t − min L_t + ε): needs losses above their running minimum",
    "dwa": "ratios of consecutive losses: meaningless for signed losses",
    "gradnorm": "loss ratios L_t / L_t(0): needs positive initial losses",
}

#: Norm of the min-norm point of conv{g1, g2} below which a point counts as Pareto-stationary.
#: Runs that settle on the front reach ~1e-7 or less; runs still sliding towards it measure a few
#: 1e-3 (near the front the measure is ~0.02 × the distance to it in x2), trapped ones ~1.
PARETO_TOL = 1e-3
#: A run has converged from the first step after which every update ‖x_{t+1} - x_t‖ stays
#: below this fraction of the learning rate (Adam's steps are ~lr while it is still moving).
CONVERGE_RTOL = 1e-2
#: ... provided it stayed there for at least this fraction of the run: a run whose updates only
#: dropped in its last few steps may just be turning.
CONVERGE_MIN_TAIL = 0.05

PNG_NAME = "toy_conflict.png"


# -- the problem -------------------------------------------------------------------------------


def toy_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two toy losses at ``x[..., 0], x[..., 1]`` (any leading batch shape), as in the paper.

    This is the readable reference: the plots evaluate it on a grid, and the optimisation uses
    :class:`FusedToyLosses`, which must agree with it (the tests check values and gradients).
    """
    x1, x2 = x[..., 0], x[..., 1]
    upper = torch.clamp(torch.tanh(x2 * 0.5), min=0.0)
    lower = torch.clamp(torch.tanh(-x2 * 0.5), min=0.0)
    log1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), min=CLAMP_LOWER).log() + 6
    log2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), min=CLAMP_LOWER).log() + 6
    sq1 = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    sq2 = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    return log1 * upper + sq1 * lower, log2 * upper + sq2 * lower


def toy_values_and_gradients(
    x1: float, x2: float
) -> tuple[float, float, tuple[float, float], tuple[float, float]]:
    """``(f1, f2, ∇f1, ∇f2)`` at one point, in float64, by hand-derived derivatives.

    The derivatives follow PyTorch's conventions at the kinks of :func:`toy_losses`, so the two
    agree everywhere: ``clamp(·, min)`` passes the gradient where its input is ≥ min (at
    x2 = 0 both gates pass it), and ``abs`` has derivative 0 at 0 (irrelevant here, as the clamp
    has already cut the gradient there).
    """
    tau = math.tanh(x2)
    dtau = 1.0 - tau * tau
    u1 = -0.5 * x1 - 3.5 + tau  # 0.5 (-x1 - 7) - tanh(-x2)
    u2 = -0.5 * x1 + 3.5 - tau  # 0.5 (-x1 + 3) + tanh(-x2) + 2
    if abs(u1) >= CLAMP_LOWER:
        log1, dlog1 = math.log(abs(u1)) + 6, (-0.5 / u1, dtau / u1)
    else:
        log1, dlog1 = math.log(CLAMP_LOWER) + 6, (0.0, 0.0)
    if abs(u2) >= CLAMP_LOWER:
        log2, dlog2 = math.log(abs(u2)) + 6, (-0.5 / u2, -dtau / u2)
    else:
        log2, dlog2 = math.log(CLAMP_LOWER) + 6, (0.0, 0.0)

    half = math.tanh(0.5 * x2)
    dhalf = 0.5 * (1.0 - half * half)
    upper, dupper = (half, dhalf) if half >= 0 else (0.0, 0.0)
    lower, dlower = (-half, -dhalf) if -half >= 0 else (0.0, 0.0)

    common = 0.1 * (x2 + 8) ** 2
    dcommon = 0.02 * (x2 + 8)  # d/dx2 of common / 10
    sq1 = ((x1 - 7) ** 2 + common) / 10 - 20
    sq2 = ((x1 + 7) ** 2 + common) / 10 - 20

    f1 = log1 * upper + sq1 * lower
    f2 = log2 * upper + sq2 * lower
    g1 = (
        dlog1[0] * upper + 0.2 * (x1 - 7) * lower,
        dlog1[1] * upper + log1 * dupper + dcommon * lower + sq1 * dlower,
    )
    g2 = (
        dlog2[0] * upper + 0.2 * (x1 + 7) * lower,
        dlog2[1] * upper + log2 * dupper + dcommon * lower + sq2 * dlower,
    )
    return f1, f2, g1, g2


class FusedToyLosses(torch.autograd.Function):
    """Both toy losses of a 2-vector as one autograd node with the hand-derived Jacobian.

    :func:`toy_losses` builds ~30 autograd nodes of 2-element tensors; recording and
    back-propagating them twice per step costs several times more than the surgery itself and
    would about halve the step budget. One node computed with Python floats gives the same
    numbers.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Return ``tensor([f1, f2])`` and keep the 2×2 Jacobian for the backward pass."""
        x1, x2 = x.detach().tolist()
        f1, f2, g1, g2 = toy_values_and_gradients(x1, x2)
        ctx.jacobian = torch.tensor([g1, g2], dtype=x.dtype, device=x.device)
        return x.new_tensor([f1, f2])

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Vector-Jacobian product: ``grad_output @ J``."""
        return grad_output @ ctx.jacobian


def fused_toy_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f1, f2)`` of the parameter ``x`` (shape ``(2,)``) through :class:`FusedToyLosses`."""
    f1, f2 = FusedToyLosses.apply(x).unbind()
    return f1, f2


# -- Pareto stationarity -----------------------------------------------------------------------


def min_norm_point(g1: np.ndarray, g2: np.ndarray) -> tuple[float, np.ndarray]:
    """The min-norm point of the segment conv{g1, g2}, in closed form.

    Minimising ‖γ g1 + (1-γ) g2‖² over γ ∈ [0, 1] gives γ* = clip((g2 - g1)·g2 / ‖g1 - g2‖², 0, 1)
    (the two-task case of MGDA; Sener & Koltun 2018, Algorithm 1). Returns ``(γ*, point)``.
    """
    g1 = np.asarray(g1, dtype=np.float64)
    g2 = np.asarray(g2, dtype=np.float64)
    diff = g1 - g2
    denom = float(diff @ diff)
    # Equal gradients: every γ gives the same point.
    gamma = 0.5 if denom == 0.0 else min(1.0, max(0.0, float((g2 - g1) @ g2) / denom))
    return gamma, gamma * g1 + (1.0 - gamma) * g2


def pareto_stationarity(x1: float, x2: float) -> float:
    """Norm of the min-norm point of conv{∇f1, ∇f2} at (x1, x2): 0 exactly at Pareto-stationary
    points (Désidéri 2012)."""
    _, _, g1, g2 = toy_values_and_gradients(x1, x2)
    return float(np.linalg.norm(min_norm_point(np.array(g1), np.array(g2))[1]))


def steps_to_converge(trajectory: np.ndarray, tol: float, min_tail: int) -> int | None:
    """First step after which every update ‖x_{t+1} - x_t‖ of ``trajectory`` stays below ``tol``.

    ``None`` if there is none, or if the updates stayed below ``tol`` for fewer than ``min_tail``
    final steps (too short to tell a settled run from one that is only turning).
    """
    updates = np.linalg.norm(np.diff(trajectory, axis=0), axis=1)
    if updates.size == 0:
        return None
    # Largest update from step t to the end, for every t.
    tail_max = np.maximum.accumulate(updates[::-1])[::-1]
    below = np.flatnonzero(tail_max < tol)
    if below.size == 0 or updates.size - int(below[0]) < min_tail:
        return None
    return int(below[0])


# -- the runs ----------------------------------------------------------------------------------


def run_one(method: str, start: tuple[float, float], lr: float, steps: int, beta2: float) -> dict:
    """Optimise the toy from ``start`` with Adam wrapped in ``GradSurgery``, with the method
    registered as ``method`` and its options from :data:`METHOD_OPTIONS`.

    Returns the trajectory (``(steps + 1, 2)`` array, start included), the final losses, the
    Pareto-stationarity measure of the last iterate and the step it converged at (or ``None``).
    """
    # 2-element tensors: extra intra-op threads only add overhead, and the worker processes
    # already use every core.
    torch.set_num_threads(1)
    # float64 so that the stationarity measure is not limited by float32 rounding of x.
    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    # build_method hands a method what it declares it needs: the task count (uncertainty
    # weighting) and the last shared layer (GradNorm: here the 2-D parameter itself).
    surgery = gradsurg.methods.build_method(method, num_tasks=2, layer=[x], **METHOD_OPTIONS.get(method, {}))
    opt = GradSurgery(torch.optim.Adam([x], lr=lr, betas=(0.9, beta2)), method=surgery, shared=[x])
    # cosreg differentiates through the task gradients: it needs the formula's own autograd
    # graph (the fused function's backward is not differentiable again).
    losses_of = toy_losses if isinstance(surgery, gradsurg.methods.DoubleBackwardMethod) else fused_toy_losses
    trajectory = np.empty((steps + 1, 2))
    trajectory[0] = start
    for t in range(steps):
        opt.zero_grad()
        opt.backward(list(losses_of(x)))
        opt.step()
        trajectory[t + 1] = x.detach().numpy()
    x1, x2 = (float(v) for v in trajectory[-1])
    f1, f2, _, _ = toy_values_and_gradients(x1, x2)
    stationarity = pareto_stationarity(x1, x2)
    return {
        "method": method,
        "start": tuple(start),
        "trajectory": trajectory,
        "final_x": (x1, x2),
        "f1": f1,
        "f2": f2,
        "stationarity": stationarity,
        "pareto": stationarity < PARETO_TOL,
        "steps_to_converge": steps_to_converge(
            trajectory, CONVERGE_RTOL * lr, max(1, int(CONVERGE_MIN_TAIL * steps))
        ),
    }


def _run_one_packed(job: tuple) -> dict:
    """:func:`run_one` on a tuple of its arguments (what ``Executor.map`` hands a worker)."""
    return run_one(*job)


def run_all(
    methods: list[str],
    starts: tuple[tuple[float, float], ...],
    lr: float,
    steps: int,
    beta2: float,
    jobs: int,
) -> list[dict]:
    """Run every (method, start) pair, on ``jobs`` worker processes, in a deterministic order."""
    work = [(m, s, lr, steps, beta2) for m in methods for s in starts]
    # The first optimizer built in a process imports torch._dynamo (~1 s of CPU): doing it here,
    # before the fork, spares every worker from doing it again.
    run_one(methods[0], starts[0], lr, 2, beta2)
    if jobs <= 1:
        return [_run_one_packed(job) for job in work]
    # fork: the workers inherit the imported modules (spawn would re-import torch in each,
    # ~2 s) and this module, which a test may have loaded from a path that is not importable.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=context) as pool:
        return list(pool.map(_run_one_packed, work))


def summarise(runs: list[dict]) -> dict:
    """Per-method summary of its runs: mean final losses, convergence and Pareto counts."""
    converged = [r["steps_to_converge"] for r in runs if r["steps_to_converge"] is not None]
    return {
        "mean_f1": float(np.mean([r["f1"] for r in runs])),
        "mean_f2": float(np.mean([r["f2"] for r in runs])),
        "median_steps_to_converge": int(np.median(converged)) if converged else None,
        "num_converged": len(converged),
        "num_pareto": sum(r["pareto"] for r in runs),
        "num_runs": len(runs),
        "runs": runs,
    }


def markdown_table(summaries: dict[str, dict]) -> str:
    """The results as a Markdown table, one row per method."""
    lines = [
        "| method | mean f1 | mean f2 | steps to converge (median) | converged | on Pareto front |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summaries.items():
        steps = "-" if s["median_steps_to_converge"] is None else str(s["median_steps_to_converge"])
        lines.append(
            f"| {name} | {s['mean_f1']:.3f} | {s['mean_f2']:.3f} | {steps} "
            f"| {s['num_converged']}/{s['num_runs']} | {s['num_pareto']}/{s['num_runs']} |"
        )
    return "\n".join(lines)


# -- the plot ----------------------------------------------------------------------------------


def evaluate_grid(limit: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(X1, X2, F1, F2)`` on an ``n × n`` grid over ``[-limit, limit]²``."""
    axis = torch.linspace(-limit, limit, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)
    with torch.no_grad():
        f1, f2 = toy_losses(grid)
    return grid[..., 0].numpy(), grid[..., 1].numpy(), f1.numpy(), f2.numpy()


def pareto_mask(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Boolean mask of the points not dominated by any other point of the sample.

    Sorted by f1 (ties by f2), a point is non-dominated iff its f2 is below that of every point
    before it: one sort and a running minimum instead of a quadratic comparison.
    """
    a, b = f1.ravel(), f2.ravel()
    order = np.lexsort((b, a))
    b_sorted = b[order]
    best_before = np.concatenate(([np.inf], np.minimum.accumulate(b_sorted)[:-1]))
    mask = np.zeros(a.size, dtype=bool)
    mask[order[b_sorted < best_before]] = True
    return mask.reshape(f1.shape)


def plot(summaries: dict[str, dict], starts: tuple[tuple[float, float], ...], path: Path) -> None:
    """Trajectories over contours of the mean loss, one panel per method, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    limit = 11.0
    x1, x2, f1, f2 = evaluate_grid(limit, 301)
    mean = 0.5 * (f1 + f2)
    # The Pareto set is a thin band (a 2001² grid of the whole square puts every non-dominated
    # point at x2 ∈ [-8.44, -8.08]): a fine grid of the strip around it draws it far more
    # precisely than the coarse contour grid would, at a fraction of the cost of a fine square.
    s1, s2 = np.meshgrid(np.linspace(-limit, limit, 1501), np.linspace(-9.5, -7.5, 401))
    with torch.no_grad():
        p1, p2 = toy_losses(torch.from_numpy(np.stack([s1, s2], axis=-1)))
    front = pareto_mask(p1.numpy(), p2.numpy())

    names = list(summaries)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.7 * rows + 0.6), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    levels = np.linspace(mean.min(), mean.max(), 24)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        s = summaries[name]
        ax.contour(x1, x2, mean, levels=levels, cmap="viridis", linewidths=0.6)
        ax.plot(s1[front], s2[front], ".", color="0.55", markersize=2, zorder=1)
        for k, run in enumerate(s["runs"]):
            traj = run["trajectory"]
            c = colors[k % len(colors)]
            ax.plot(traj[:, 0], traj[:, 1], "-", color=c, linewidth=1.3, zorder=3)
            ax.plot(*traj[0], "o", color="k", markersize=5, zorder=4)
            end = "*" if run["pareto"] else "X"
            ax.plot(*traj[-1], end, color=c, markeredgecolor="k", markersize=10, zorder=5)
        ax.set_title(f"{name}: {s['num_pareto']}/{s['num_runs']} on the Pareto front", fontsize=10)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=8)
    handles = [
        Line2D([], [], color=colors[k % len(colors)], label=f"start {tuple(float(v) for v in s)}")
        for k, s in enumerate(starts)
    ] + [
        Line2D([], [], color="0.55", marker=".", linestyle="", label="Pareto set (grid)"),
        Line2D([], [], color="k", marker="o", linestyle="", label="start"),
        Line2D([], [], color="w", markeredgecolor="k", marker="*", markersize=10, linestyle="",
               label="end: Pareto-stationary"),
        Line2D([], [], color="w", markeredgecolor="k", marker="X", markersize=8, linestyle="",
               label="end: not stationary"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=8,
               frameon=False)
    fig.suptitle("CAGrad toy (Liu et al. 2021): Adam + gradsurg, contours of (f1 + f2) / 2",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.07 if rows > 1 else 0.12, 1, 0.97), h_pad=1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------


def _usable_cpus() -> int:
    """CPUs this process may run on (a container's limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (``argv`` without the program name; ``None`` reads ``sys.argv``)."""
    parser = argparse.ArgumentParser(
        description="Run every gradsurg method on the two-objective toy of CAGrad (Liu et al. "
        "2021, Fig. 1): a Markdown table and a PNG of the trajectories."
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "out",
        help="directory for the PNG (default: examples/out)",
    )
    parser.add_argument(
        "--steps", type=int, default=None,
        help=f"Adam steps per run (default {DEFAULT_STEPS}, {QUICK_STEPS} with --quick)",
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR})"
    )
    parser.add_argument(
        "--beta2", type=float, default=DEFAULT_BETA2,
        help=f"Adam's beta2 (default {DEFAULT_BETA2}; the paper's is 0.999, see the source)",
    )
    parser.add_argument(
        "--methods", default=None,
        help="comma-separated method names, or 'all' for every method defined on this toy "
        f"(default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_STEPS} steps per run, for tests"
    )
    parser.add_argument(
        "--jobs", type=int, default=_usable_cpus(),
        help="worker processes (default: the usable CPUs; 1 runs in this process)",
    )
    args = parser.parse_args(argv)

    known = gradsurg.available_methods()
    if args.methods is None:
        args.methods = list(DEFAULT_METHODS)
    elif args.methods == "all":
        args.methods = [m for m in known if m not in NOT_APPLICABLE]
    else:
        args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in args.methods if m not in known]
        if unknown or not args.methods:
            parser.error(f"--methods: unknown {unknown or 'empty list'}; known: {', '.join(known)}")
        inapplicable = [f"{m} ({NOT_APPLICABLE[m]})" for m in args.methods if m in NOT_APPLICABLE]
        if inapplicable:
            parser.error(f"--methods: not defined on this toy: {'; '.join(inapplicable)}")
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    if not 0.0 <= args.beta2 < 1.0:
        parser.error("--beta2 must be in [0, 1)")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if sys.platform != "linux":
        # Only Linux's fork is safe to rely on here (macOS's fork breaks some system libraries).
        args.jobs = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the experiment, print the table, write the PNG and return everything.

    Returns a dict with ``"config"`` (lr, steps, beta2, starts, tolerances), ``"methods"``
    (per method: ``mean_f1``, ``mean_f2``, ``median_steps_to_converge``, ``num_converged``,
    ``num_pareto``, ``num_runs`` and ``runs``, each run with its trajectory, final point,
    losses, stationarity, ``pareto`` and ``steps_to_converge``), ``"table"`` (the Markdown
    text), ``"png"`` (its path) and ``"seconds"`` (wall time).
    """
    began = time.perf_counter()
    args = parse_args(argv)
    print(
        f"{len(args.methods)} methods × {len(START_POINTS)} starts × {args.steps} Adam steps "
        f"(lr {args.lr}, β2 {args.beta2}) on {args.jobs} process(es)...",
        flush=True,
    )
    runs = run_all(args.methods, START_POINTS, args.lr, args.steps, args.beta2, args.jobs)
    summaries = {m: summarise([r for r in runs if r["method"] == m]) for m in args.methods}
    table = markdown_table(summaries)
    print()
    print(table)
    print()
    print(
        f"On the Pareto front: the min-norm point of conv{{∇f1, ∇f2}} at the last iterate has "
        f"norm < {PARETO_TOL:g}. Converged: every later update < {CONVERGE_RTOL:g} × lr."
    )
    png = Path(args.out) / PNG_NAME
    plot(summaries, START_POINTS, png)
    seconds = time.perf_counter() - began
    print(f"wrote {png} ({seconds:.1f} s)")
    return {
        "config": {
            "lr": args.lr,
            "steps": args.steps,
            "beta2": args.beta2,
            "starts": START_POINTS,
            "pareto_tol": PARETO_TOL,
            "converge_rtol": CONVERGE_RTOL,
            "method_options": METHOD_OPTIONS,
            "jobs": args.jobs,
        },
        "methods": summaries,
        "table": table,
        "png": str(png),
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
