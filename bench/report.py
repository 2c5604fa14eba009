"""The table a run prints, and the correctness checks that make its figures mean something.

Every figure sits next to the baseline measured in the same run and their ratio: these machines
are shared and noisy, so only ratios compare across runs. Targets are printed and judged, never
asserted; a failed correctness check (a delivery missing, duplicated or out of order) is what
makes the run exit non-zero, since a fast wrong answer measures nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
from collections.abc import Callable

__all__ = ["Check", "Judge", "Report", "Row", "at_least", "at_most", "machine"]

Judge = Callable[[float, float | None], bool]


def at_most(limit: float, *, of_ratio: bool = True) -> tuple[str, Judge]:
    """A target on the ratio (default) or on the value itself."""
    if of_ratio:
        return f"≤ {limit:g}x", lambda value, ratio: ratio is not None and ratio <= limit
    return f"≤ {limit:g}", lambda value, ratio: value <= limit


def at_least(limit: float) -> tuple[str, Judge]:
    return f"≥ {limit:g}x", lambda value, ratio: ratio is not None and ratio >= limit


@dataclasses.dataclass(frozen=True)
class Row:
    section: str
    metric: str
    value: float
    baseline: float | None = None  # the same figure for the baseline, same run
    unit: str = ""
    target: str = ""
    met: bool | None = None  # None: no target

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline):
            return None
        return self.value / self.baseline


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def _scenario_number(row: Row) -> int:
    head = row.section.split(" ", 1)[0]
    return int(head) if head.isdigit() else 99


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


@dataclasses.dataclass
class Report:
    rows: list[Row] = dataclasses.field(default_factory=list)
    checks: list[Check] = dataclasses.field(default_factory=list)
    notes: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (title, preformatted text)

    def add(
        self,
        section: str,
        metric: str,
        value: float,
        *,
        baseline: float | None = None,
        unit: str = "",
        target: tuple[str, Judge] | None = None,
    ) -> Row:
        ratio = Row(section, metric, value, baseline).ratio
        row = Row(
            section=section,
            metric=metric,
            value=value,
            baseline=baseline,
            unit=unit,
            target=target[0] if target else "",
            met=target[1](value, ratio) if target else None,
        )
        self.rows.append(row)
        return row

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, ok, detail))

    def note(self, title: str, text: str) -> None:
        self.notes.append((title, text.rstrip()))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def _cells(self) -> list[tuple[str, ...]]:
        header = ("scenario", "metric", "herald", "baseline", "ratio", "target", "met")
        cells: list[tuple[str, ...]] = [header]
        for r in sorted(self.rows, key=_scenario_number):  # stable: within a scenario, as added
            met = "-" if r.met is None else ("yes" if r.met else "NO")
            ratio = "-" if r.ratio is None else "n/a" if math.isnan(r.ratio) else f"{r.ratio:.2f}x"
            cells.append(
                (r.section, r.metric, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), ratio, r.target, met)
            )
        return cells

    def table(self) -> str:
        cells = self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def checks_text(self) -> str:
        lines = [
            f"[{'ok' if c.ok else 'FAILED'}] {c.name}{': ' + c.detail if c.detail else ''}"
            for c in self.checks
        ]
        summary = "all correctness checks passed" if self.ok else "SOME CORRECTNESS CHECKS FAILED"
        return "\n".join([*lines, summary])

    def text(self) -> str:
        parts = [self.table(), "", "Correctness checks", self.checks_text()]
        for title, body in self.notes:
            parts += ["", title, body]
        return "\n".join(parts)

    def markdown(self, *, command: str, elapsed: float) -> str:
        cells = self._cells()
        table = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        table += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        parts = [
            "# Herald benchmark results",
            "",
            f"Command: `{command}` ({elapsed:.0f} s). Machine: {machine()}.",
            "",
            "Each figure is next to a baseline measured in the same run; only the ratios compare",
            "across runs. Generated by `bench/__main__.py`; do not edit by hand.",
            "",
            *table,
            "",
            "## Correctness checks",
            "",
            "```",
            self.checks_text(),
            "```",
        ]
        for title, body in self.notes:
            parts += ["", f"## {title}", "", "```", body, "```"]
        return "\n".join(parts) + "\n"


def machine() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return (
        f"nproc {len(os.sched_getaffinity(0))} ({cpu}), Python {platform.python_version()}, {system}, {now}"
    )
