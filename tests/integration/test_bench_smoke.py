"""The benchmark suite cannot rot: ``python -m bench --quick`` runs end to end in seconds, prints
every row of its table, and every correctness check behind the figures holds. Timings are never
asserted here: only that each figure was measured and each expected delivery arrived."""

from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest
from bench.harness import max_in_window, percentile
from bench.report import Report, at_least, at_most

ROOT = pathlib.Path(__file__).resolve().parents[2]

# (scenario prefix, metric prefix) of every row the table must carry.
ROWS = [
    ("1 latency, in process", "p50"),
    ("1 latency, in process", "p99"),
    ("1 latency, in process", "CPU per event"),
    ("1 latency, herald run process", "p50"),
    ("1 latency, herald run process", "p99"),
    ("1 one Environment, back to back", "p50"),
    ("1 one Environment, back to back", "p99"),
    ("2 throughput, 40 to 1 webhook", "deliveries/s"),
    ("2 throughput, 40 to 1 webhook", "status patches per delivery"),
    ("2 throughput, fan-out", "deliveries/s"),
    ("2 throughput, fan-out", "status patches per delivery"),
    ("3 storm", "events/s"),
    ("3 storm", "wall time"),
    ("3 storm", "latency p50"),
    ("3 storm", "latency p99"),
    ("4 scale", "operator RSS"),
    ("4 scale", "startup until settled"),
    ("4 scale", "latency p50"),
    ("4 scale", "latency p99"),
    ("5 API load", "status patches per delivery"),
    ("5 API load", "most status patches"),
    ("5 API load", "list calls on the hot path"),
    ("5 API load", "API requests per event"),
    ("6 isolation", "p50, others"),
    ("6 isolation", "p99, others"),
]
NOTES = [
    "1 latency: where Herald's time goes",
    "5 API load: Herald's requests during the storm",
    "7 profile: the latency scenario",
    "7 profile: the delivery engine",
    "7 profile: a storm",
    "7 profile: first",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], str]:
    output = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done, output.read_text() if output.exists() else ""


def _table(stdout: str) -> list[list[str]]:
    lines = stdout.split("\n\n", 1)[0].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]


def test_quick_run_passes_its_correctness_checks(quick: tuple[subprocess.CompletedProcess[str], str]) -> None:
    done, _ = quick
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "all correctness checks passed" in done.stdout
    assert "[FAILED]" not in done.stdout


@pytest.mark.parametrize(("scenario", "metric"), ROWS)
def test_every_row_is_measured(
    quick: tuple[subprocess.CompletedProcess[str], str], scenario: str, metric: str
) -> None:
    rows = [r for r in _table(quick[0].stdout) if r[0].startswith(scenario) and r[1].startswith(metric)]
    assert rows, f"no row {scenario!r} / {metric!r} in:\n{quick[0].stdout[:3000]}"
    for row in rows:
        assert re.match(r"^-?[\d,.]+", row[2]), f"{scenario} / {metric} was not measured: {row}"


@pytest.mark.parametrize("title", NOTES)
def test_evidence_is_printed(quick: tuple[subprocess.CompletedProcess[str], str], title: str) -> None:
    assert title in quick[0].stdout


def test_results_file_has_the_table_and_the_machine(
    quick: tuple[subprocess.CompletedProcess[str], str],
) -> None:
    results = quick[1]
    assert results.startswith("# Herald benchmark results")
    assert "Python 3." in results
    assert "nproc" in results
    assert "| scenario | metric | herald | baseline | ratio | target | met |" in results
    assert all(f"| {scenario}" in results for scenario, _ in ROWS)


# ---------------------------------------------------------------- the pieces the table is built from


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, math.nan),
        ([3.0], 99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([5.0, 1.0, 4.0, 2.0, 3.0], 99, 5.0),
        (list(range(1, 201)), 99, 198),  # nearest rank: a measured value, never interpolated
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    got = percentile(values, q)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], 0),
        ([0.0, 1.0, 2.0], 1),  # one per second exactly: never two in one window
        ([0.0, 0.2, 0.9, 1.5], 3),
        ([3.0, 0.1, 0.5], 2),
    ],
)
def test_max_in_window(times: list[float], expected: int) -> None:
    assert max_in_window(times, 1.0) == expected


@pytest.mark.parametrize(
    ("value", "baseline", "target", "met"),
    [
        (5.0, 1.0, at_most(10), True),
        (11.0, 1.0, at_most(10), False),
        (0.8, 1.0, at_least(0.7), True),
        (0.6, 1.0, at_least(0.7), False),
        (299.0, None, at_most(300, of_ratio=False), True),
        (math.nan, 1.0, at_most(1.5), False),  # a figure that could not be measured misses its target
    ],
)
def test_targets_are_judged_on_ratio_or_value(
    value: float, baseline: float | None, target: tuple[str, object], met: bool
) -> None:
    report = Report()
    row = report.add("9 example", "figure", value, baseline=baseline, target=target)  # type: ignore[arg-type]
    assert row.met is met


def test_a_failed_check_fails_the_run() -> None:
    report = Report()
    report.check("all arrived", True)
    assert report.ok
    report.check("none duplicated", False, "2 duplicated")
    assert not report.ok
    assert "[FAILED] none duplicated: 2 duplicated" in report.text()
