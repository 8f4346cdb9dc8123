"""What ``--out FILE`` writes: FILE.md (facts, summary, sweep failures, kernel table, notes) and
FILE.csv (the kernel table)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sweep import Check
from .table import format_csv, format_markdown
from .verdict import Part

__all__ = ["write_outputs"]


def write_outputs(out: Path, facts: Sequence[tuple[str, str]], parts: Sequence[Part], rows: Sequence[dict[str, Any]],
                  notes: Sequence[str], failures: Sequence[Check], extra: dict[str, Any]) -> tuple[Path, Path]:
    """FILE.md (facts, summary, sweep failures, table, notes) and FILE.csv (the table)."""
    md_path, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# gradsurg GPU check", "", *[f"- **{k}**: {v}" for k, v in facts], "", "## Summary", "", "```",
             *[p.line() for p in parts], "```", ""]
    if failures:
        lines += ["## Sweep failures", "", *[f"- {c.line()}" for c in failures[:200]], ""]
    lines += ["## Kernel table", "", format_markdown(rows) if rows else "(no timings)", ""]
    if notes:
        lines += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    md_path.write_text("\n".join(lines))
    csv_path.write_text(format_csv(rows, extra))
    return md_path, csv_path
