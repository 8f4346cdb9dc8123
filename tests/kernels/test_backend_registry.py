"""The backend registry: names, errors, availability per device and what ``"auto"`` picks."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from gradsurg import kernels
from gradsurg.kernels import (
    BACKENDS,
    Backend,
    available_backends,
    get_backend,
    reference,
    unavailable_reason,
)

registry = importlib.import_module("gradsurg.kernels.registry")
cpp = importlib.import_module("gradsurg.kernels.cpp")
ROOT = Path(__file__).resolve().parents[2]

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def _triton_importable() -> bool:
    return not isinstance(registry._load("gradsurg.kernels.triton"), str)


def test_names():
    assert BACKENDS == ("auto", "torch", "cpp", "triton", "cuda")
    # The compatibility shim is gone: the package is the one place to import from.
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("gradsurg.kernels.dispatch")
    assert set(kernels.__all__) >= {"BACKENDS", "Backend", "available_backends", "get_backend"}


def test_unknown_backend_lists_the_known_ones():
    message = "backend: unknown backend 'cuda9'; known backends: auto, torch, cpp, triton, cuda"
    for call in (lambda: get_backend("cuda9", CPU), lambda: unavailable_reason("cuda9", CPU)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("device", [CPU, GPU], ids=str)
def test_every_available_backend_satisfies_the_protocol(device):
    names = available_backends(device)
    assert "torch" in names and "auto" not in names
    for name in names:
        backend = get_backend(name, device)
        assert isinstance(backend, Backend)
        assert backend.name == name == name.lower()
        assert unavailable_reason(name, device) is None


def test_torch_runs_everywhere():
    for device in (CPU, GPU, torch.device("meta")):
        assert get_backend("torch", device) is reference
        assert get_backend("auto", torch.device("meta")) is reference


def test_auto_priorities():
    order = {dev: [s.name for s in registry._auto_candidates(dev)] for dev in ("cuda", "cpu", "mps")}
    assert order == {"cuda": ["cuda", "triton", "torch"], "cpu": ["cpp", "torch"], "mps": ["torch"]}


@pytest.mark.skipif(not cpp.available(), reason=f"C++ extension not built: {cpp.load_error()}")
def test_auto_picks_cpp_on_cpu():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("auto", CPU) is cpp
        assert get_backend("auto", "cpu").name == "cpp"


def test_auto_on_gpu_tensors_never_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = get_backend("auto", GPU).name
    expected = "cuda" if unavailable_reason("cuda", GPU) is None else "triton" if _triton_importable() else "torch"
    assert chosen == expected


@pytest.fixture
def cpp_missing(monkeypatch):
    monkeypatch.setattr(cpp, "available", lambda: False)
    monkeypatch.setattr(cpp, "load_error", lambda: "the extension gradsurg._C is not built (test)")
    monkeypatch.setattr(registry, "_warned", set())
    monkeypatch.delenv("GRADSURG_NO_EXT", raising=False)


def test_auto_falls_back_to_torch_with_one_warning(cpp_missing):
    with pytest.warns(RuntimeWarning, match=r"C\+\+ CPU kernels are unavailable \(the extension gradsurg._C is not built"):
        assert get_backend("auto", CPU) is reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("auto", CPU) is reference  # once per process


def test_no_warning_when_the_extension_is_left_out_on_purpose(cpp_missing, monkeypatch):
    monkeypatch.setenv("GRADSURG_NO_EXT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_backend("auto", CPU) is reference


def test_explicit_cpp_says_why_it_is_unavailable(cpp_missing):
    assert "cpp" not in available_backends(CPU)
    with pytest.raises(RuntimeError, match=r"backend: 'cpp' is unavailable: the extension gradsurg._C is not built"):
        get_backend("cpp", CPU)


def test_explicit_backend_on_the_wrong_device():
    with pytest.raises(RuntimeError, match=r"backend: 'cpp' is unavailable: it runs on CPU tensors, got cuda"):
        get_backend("cpp", GPU)
    if unavailable_reason("cuda", GPU) is None:  # pragma: no cover - needs a GPU build
        with pytest.raises(RuntimeError, match=r"backend: 'cuda' is unavailable: it runs on CUDA tensors, got cpu"):
            get_backend("cuda", CPU)
    else:
        with pytest.raises(RuntimeError, match=r"backend: 'cuda' is unavailable: "):
            get_backend("cuda", CPU)


def test_triton_on_cpu_only_under_the_interpreter(monkeypatch):
    if not _triton_importable():
        pytest.skip("triton not installed")
    module = importlib.import_module("gradsurg.kernels.triton")
    monkeypatch.setattr(module, "interpreted", lambda kernel=None: False)
    with pytest.raises(
        RuntimeError, match=r"backend: 'triton' is unavailable: it runs on CUDA tensors \(got cpu\).*TRITON_INTERPRET=1"
    ):
        get_backend("triton", CPU)
    assert get_backend("triton", GPU) is module
    monkeypatch.setattr(module, "interpreted", lambda kernel=None: True)
    assert get_backend("triton", CPU) is module


def test_triton_missing(monkeypatch):
    real = registry._load
    monkeypatch.setattr(registry, "_load", lambda m: "No module named 'triton'" if m.endswith(".triton") else real(m))
    with pytest.raises(
        RuntimeError, match=r"backend: 'triton' is unavailable: it needs the triton package \(pip install triton\)"
    ):
        get_backend("triton", GPU)
    assert "triton" not in available_backends(GPU)
    assert get_backend("auto", GPU).name in ("cuda", "torch")


def test_importing_the_kernels_package_imports_no_triton_and_no_extension():
    code = (
        "import sys, gradsurg.kernels as k; k.get_backend('torch', 'cpu'); k.available_backends; "
        "print(sorted(m for m in ('triton', 'gradsurg._C', 'gradsurg._cuda') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
