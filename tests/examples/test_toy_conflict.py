"""The CAGrad toy example (examples/toy_conflict.py): its formula, its Pareto test, a quick run."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def toy():
    """The example as a module of the package ``examples`` (``python -m pytest`` from the
    repository root puts it on sys.path); the worker processes find its functions by name."""
    from examples import toy_conflict

    return toy_conflict


@pytest.fixture(scope="module")
def quick_result(toy, tmp_path_factory):
    """One quick run of three methods, shared by the tests that inspect its output."""
    out = tmp_path_factory.mktemp("toy_out")
    return toy.main(["--quick", "--out", str(out), "--methods", "mean,pcgrad,mgda"]), out


def test_fused_losses_match_the_formula(toy):
    """The fused autograd node used for the runs gives the paper formula's values and gradients,
    including at the kinks the starting points sit on (x2 = 0 is where both gates switch)."""
    gen = torch.Generator().manual_seed(0)
    points = torch.cat(
        [
            torch.rand(100, 2, generator=gen, dtype=torch.float64) * 22 - 11,
            torch.tensor(toy.START_POINTS, dtype=torch.float64),
            torch.tensor([[0.0, -8.3552], [-5.0, 3.0], [5.0, 3.0]], dtype=torch.float64),
        ]
    )
    for p in points:
        x_ref = p.clone().requires_grad_()
        x_fused = p.clone().requires_grad_()
        ref = toy.toy_losses(x_ref)
        fused = toy.fused_toy_losses(x_fused)
        for r, f in zip(ref, fused):
            g_ref = torch.autograd.grad(r, x_ref, retain_graph=True)[0]
            g_fused = torch.autograd.grad(f, x_fused, retain_graph=True)[0]
            torch.testing.assert_close(f.detach(), r.detach(), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_fused, g_ref, rtol=1e-10, atol=1e-10)


def test_min_norm_point_is_the_minimum_over_the_segment(toy):
    """The closed form agrees with a dense search over γ, in the interior and at both ends."""
    rng = np.random.default_rng(0)
    gammas = np.linspace(0.0, 1.0, 20001)
    for g1, g2 in [
        (np.array([1.0, 0.0]), np.array([-1.0, 0.0])),  # opposite: the origin is in the hull
        (np.array([1.0, 0.0]), np.array([3.0, 1.0])),  # g1 is the nearest end
        (np.array([3.0, 1.0]), np.array([1.0, 0.0])),  # g2 is the nearest end
        *[(rng.normal(size=2), rng.normal(size=2)) for _ in range(20)],
    ]:
        gamma, point = toy.min_norm_point(g1, g2)
        assert 0.0 <= gamma <= 1.0
        np.testing.assert_allclose(point, gamma * g1 + (1 - gamma) * g2)
        brute = np.linalg.norm(gammas[:, None] * g1 + (1 - gammas[:, None]) * g2, axis=1).min()
        assert np.linalg.norm(point) <= brute + 1e-12
        assert np.linalg.norm(point) >= brute - 1e-3
    # The paper's Pareto set (x1 ∈ [-7, 7] near x2 = -8.36) is stationary; start points are not.
    assert toy.pareto_stationarity(0.0, -8.3552) < 1e-5
    assert toy.pareto_stationarity(0.0, 0.0) > 1.0
    assert toy.pareto_stationarity(9.0, -1.0) > 1.0


def test_quick_run_writes_a_png(quick_result):
    """The PNG is where --out says, has a PNG signature, header and end, and decodes to an
    image of the size its header states."""
    result, out = quick_result
    png = Path(result["png"])
    assert png.parent == out and png.is_file()
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # The first chunk is IHDR with the image size.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 300
    assert data[-8:-4] == b"IEND"
    image = pytest.importorskip("matplotlib.image").imread(png)
    assert image.shape[:2] == (height, width)
    # Not a blank canvas: contours, trajectories and markers put many colours on it.
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 50


def test_quick_run_table_and_results(toy, quick_result):
    """One table row per method in order; every run starts at its start point, stays finite,
    and reports the losses and Pareto verdict of its own last iterate."""
    result, _ = quick_result
    methods = ["mean", "pcgrad", "mgda"]
    assert list(result["methods"]) == methods
    assert result["config"]["steps"] == toy.QUICK_STEPS
    lines = result["table"].splitlines()
    assert lines[0].startswith("| method |") and lines[1].startswith("| --- |")
    assert [row.split("|")[1].strip() for row in lines[2:]] == methods

    starts = toy.START_POINTS
    for name in methods:
        summary = result["methods"][name]
        runs = summary["runs"]
        assert [r["start"] for r in runs] == list(starts)
        assert math.isfinite(summary["mean_f1"]) and math.isfinite(summary["mean_f2"])
        assert summary["mean_f1"] == pytest.approx(np.mean([r["f1"] for r in runs]))
        assert summary["num_pareto"] == sum(r["pareto"] for r in runs)
        for run, start in zip(runs, starts):
            traj = run["trajectory"]
            assert traj.shape == (toy.QUICK_STEPS + 1, 2)
            assert np.isfinite(traj).all()
            np.testing.assert_array_equal(traj[0], start)
            assert math.isfinite(run["f1"]) and math.isfinite(run["f2"])
            # The reported losses and the Pareto verdict are those of the last iterate.
            ref = toy.toy_losses(torch.tensor(traj[-1]))
            assert run["f1"] == pytest.approx(float(ref[0]), abs=1e-9)
            assert run["f2"] == pytest.approx(float(ref[1]), abs=1e-9)
            assert run["pareto"] == (toy.pareto_stationarity(*traj[-1]) < toy.PARETO_TOL)
        # Every run ends with a lower total loss than it started with.
        for run in runs:
            start = torch.tensor(run["start"], dtype=torch.float64)
            assert run["f1"] + run["f2"] < float(sum(toy.toy_losses(start)))


def test_mgda_stops_at_the_first_pareto_stationary_point(quick_result):
    """MGDA reaches Pareto stationarity in finitely many steps from some start, and — unlike the
    mean, which keeps sliding along the front to (0, -8.36) — stays where it first lands: from
    (9, -1) it stops on the right half of the front, where f1 < f2."""
    result, _ = quick_result
    mgda = result["methods"]["mgda"]
    assert mgda["num_pareto"] >= 1

    by_start = {r["start"]: r for r in mgda["runs"]}
    right = by_start[(9.0, -1.0)]
    # Settled, not merely passing through: stationary to far below the tolerance, and every
    # update after some step within the budget was tiny.
    assert right["pareto"] and right["stationarity"] < 1e-6
    assert right["steps_to_converge"] is not None
    assert right["final_x"][0] > 3.0 and right["f1"] < right["f2"] - 5.0
    mean_right = {r["start"]: r for r in result["methods"]["mean"]["runs"]}[(9.0, -1.0)]
    assert mean_right["pareto"] and abs(mean_right["final_x"][0]) < 0.5
