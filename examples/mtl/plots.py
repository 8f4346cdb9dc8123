"""The run's figures: loss curves per task (train and eval) and the task-gradient cosine."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_cosine", "plot_loss_curves", "plot_runs_loss"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(
    train: dict[str, list[tuple[int, float]]], evals: dict[str, list[tuple[int, float]]], path: Path
) -> None:
    """Train loss (thin) and eval loss (markers) of every task over steps, like the paper's
    Figure 2. ``train``/``evals`` map a task to ``[(step, loss), ...]``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, task in enumerate(sorted(set(train) | set(evals))):
        color = f"C{i}"
        if train.get(task):
            s, v = zip(*train[task])
            ax.plot(s, v, color=color, lw=1, alpha=0.8, label=f"{task} train")
        if evals.get(task):
            s, v = zip(*evals[task])
            ax.plot(s, v, color=color, lw=2, ls="--", marker="o", label=f"{task} eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss per task")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cosine(cosines: dict[str, list[tuple[int, float]]], path: Path, method: str) -> bool:
    """Cosine similarity of each task-gradient pair over steps; returns False (and writes
    nothing) when there is nothing to plot (loss-space methods, or a single task)."""
    if not any(cosines.values()):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for pair, points in sorted(cosines.items()):
        if points:
            s, v = zip(*points)
            ax.plot(s, v, lw=1, label=pair)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine of task gradients (shared params)")
    ax.set_title(f"Task-gradient cosine ({method})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average: small batches make single-step losses too noisy to compare."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs_loss(runs: dict[str, dict[str, list[tuple[int, float]]]], path: Path, window: int = 5) -> None:
    """Train loss per task of several runs (``{run: {task: [(step, loss), ...]}}``), one panel
    per task, one line per run (moving average over ``window`` steps)."""
    plt = _pyplot()
    tasks = sorted({t for series in runs.values() for t in series})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (label, series) in enumerate(runs.items()):
            if series.get(task):
                s, v = zip(*series[task])
                # Dashed over solid: runs that barely differ still show both lines.
                ax.plot(s, _smooth(list(v), window), color=f"C{i}", lw=2.5 - i, ls="-" if i == 0 else "--", label=label)
        ax.set_title(f"{task}: train loss (mean of {window} steps)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
