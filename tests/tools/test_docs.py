"""The documentation: every Python block of the site's pages runs (each page's blocks in order,
in one namespace, in a scratch folder), and the site builds with warnings as errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: Pages whose blocks are executed: the start page, getting started and the guides.
PAGES = [DOCS / "index.md", DOCS / "getting-started.md", *sorted((DOCS / "guides").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, in order."""
    return _BLOCK.findall(page.read_text())


def test_every_guide_has_runnable_blocks():
    assert len(PAGES) >= 8
    for page in PAGES:
        assert python_blocks(page), f"{page.name} has no python block"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_page_s_python_blocks_run(page, tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="the trainers page needs transformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(python_blocks(page)):
        code = compile(block, f"{page.relative_to(DOCS)} block {i + 1}", "exec")
        exec(code, namespace)  # the documentation's own examples


def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed (the docs extra: pip install -e .[docs])")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (the docs extra)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for page in ("index.html", "methods.html", "api.html", "guides/multi-task-data.html"):
        assert (tmp_path / "html" / page).is_file(), page
