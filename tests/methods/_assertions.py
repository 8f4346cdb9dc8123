"""Assertion helpers shared by the method tests.

Tolerances in the method tests are absolute and proportional to the size of the data (see each
test module's docstring for the reason of each); these helpers only check finiteness first and
make the messages say which case failed.
"""

from __future__ import annotations

import math

import numpy as np
import torch

F64 = torch.float64


def close(actual, expected, atol: float, msg: str = "") -> None:
    """``actual`` is finite and within ``atol`` (absolute, elementwise) of ``expected``."""
    actual = torch.as_tensor(actual, dtype=F64)
    expected = torch.as_tensor(expected, dtype=F64)
    assert torch.isfinite(actual).all(), f"non-finite result {actual} {msg}"
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol, msg=lambda m: f"{msg}\n{m}")


def close_np(actual: np.ndarray, expected: np.ndarray, atol: float, msg: str = "") -> None:
    """numpy version of :func:`close`, reporting the largest error."""
    assert np.all(np.isfinite(actual)), f"non-finite {actual} {msg}"
    err = float(np.abs(actual - expected).max()) if actual.size else 0.0
    assert err <= atol, f"{msg}: max error {err:.3e} > {atol:.3e}"


def assert_identical(a, b, what: str = "") -> None:
    """Bit-identical nested structures of tensors / numbers / containers (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{what}: tensor vs {type(b).__name__}"
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        if a.is_floating_point():
            nan_a, nan_b = torch.isnan(a), torch.isnan(b)
            same = torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])
        else:
            same = torch.equal(a, b)
        assert same, f"{what}: tensors differ\n{a}\n{b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys {list(a)} vs {b!r:.200}"
        for k in a:
            assert_identical(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: {a} vs {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{what}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{what}: nan vs {b}"
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def lib_weights(name: str, J: torch.Tensor, **kwargs) -> torch.Tensor:
    """``gradsurg.get_method(name, **kwargs).weights(J Jᵀ)``, checked: float64, (T,), finite."""
    import gradsurg

    w = gradsurg.get_method(name, **kwargs).weights(J @ J.T)
    assert w.dtype == F64 and w.shape == (J.shape[0],)
    assert torch.isfinite(w).all(), f"{name}: non-finite weights {w}"
    return w


def lib_update(weights_fn, J: np.ndarray, **kw) -> np.ndarray:
    """``weights_fn(J Jᵀ, **kw) @ J`` for a numpy ``J`` (weights checked: float64, (T,), finite)."""
    Jt = torch.from_numpy(J)
    w = weights_fn(Jt @ Jt.T, **kw)
    assert w.dtype == F64 and w.shape == (J.shape[0],)
    assert torch.isfinite(w).all(), w
    return (w @ Jt).numpy()


def requires_solver(name: str):
    """Skip marker for the tests that compare a C++ solver of ``gradsurg._C`` with its numpy
    twin: they need the extension, which ``pip install -e .`` builds only where a C++ compiler
    is found (the reason says why it is missing here)."""
    import pytest

    from gradsurg.kernels import cpp
    from gradsurg.methods import _compiled

    missing = _compiled.solver(name) is None
    why = cpp.load_error() or f"this build of gradsurg._C has no {name}; rebuild it (pip install -e .)"
    return pytest.mark.skipif(missing, reason=f"gradsurg._C not built here (needs a C++ compiler at install): {why}")
