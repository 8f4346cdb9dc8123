"""Optional dependencies stay optional: importing gradsurg imports no trainer package, and an
integration used without its package says what to install."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import gradsurg, gradsurg.integrations, gradsurg.integrations._stats_log
heavy = sorted(m for m in ("transformers", "accelerate", "lightning", "pytorch_lightning") if m in sys.modules)
print("imported:", heavy)
"""

MISSING = """
import importlib, sys
for module, names in [("gradsurg.integrations.hf", ["transformers"]),
                      ("gradsurg.integrations.lightning", ["lightning", "lightning.pytorch", "pytorch_lightning"])]:
    saved = {n: sys.modules.get(n) for n in names}
    for name in names:
        sys.modules[name] = None  # as if not installed
    try:
        importlib.import_module(module)
    except ImportError as error:
        print(module, "hint:", error)
    for name, value in saved.items():
        sys.modules.pop(name) if value is None else sys.modules.__setitem__(name, value)
"""


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_importing_gradsurg_imports_no_trainer_package():
    assert "imported: []" in _run(PROBE)


def test_an_integration_without_its_package_gives_an_install_hint():
    out = _run(MISSING)
    assert "gradsurg.integrations.hf hint:" in out and "pip install transformers accelerate" in out
    assert "gradsurg.integrations.lightning hint:" in out and "pip install lightning" in out
