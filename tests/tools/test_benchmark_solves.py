"""Smoke test of ``benchmarks/solves.py`` (the per-method solve-time table): it runs on tiny T
and the table has one row per Gram method and one column per T, each entry a positive number
of milliseconds, marked against the targets only where a target exists. No timing is asserted:
the machine running the tests is shared."""

from __future__ import annotations

from benchmarks import solves
from gradsurg.methods.base import GramMethod
from gradsurg.methods.registry import available_methods, get_method


def _gram_method_names() -> list[str]:
    names = []
    for name in available_methods():
        try:
            method = get_method(name)
        except (TypeError, ValueError):
            continue
        if isinstance(method, GramMethod):
            names.append(name)
    return names


def test_table_has_a_row_per_gram_method_and_a_column_per_t() -> None:
    ts = [2, 3]
    rows = solves.table(ts, budget=0.0)
    assert [row["method"] for row in rows] == _gram_method_names()
    for row in rows:
        assert set(row) == {"method", *ts}
        assert all(float(row[t]) > 0 for t in ts)  # type: ignore[arg-type]


def test_main_prints_a_markdown_table_marked_against_the_targets(capsys) -> None:
    text = solves.main(["--ts", "3,16", "--methods", "mean,pcgrad", "--budget", "0"])
    assert capsys.readouterr().out.strip() == text
    lines = text.splitlines()
    assert lines[0] == "| method | T=3 (ms) | T=16 (ms) |"
    assert len(lines) == 2 + 2
    for line, name in zip(lines[2:], ["mean", "pcgrad"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == name
        assert not cells[1].endswith(("ok", "MISS"))  # no target at T = 3
        assert cells[2].endswith((" ok", " MISS"))  # T = 16 has one
