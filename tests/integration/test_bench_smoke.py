"""The benchmark suite cannot rot: ``python -m bench --quick`` runs end to end in seconds, prints
every row of its table, and every correctness check behind the figures holds. Timings are never
asserted here: only that each figure was measured and each expected delivery arrived."""

from __future__ import annotations

import copy
import math
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
from bench.harness import cluster, load_objects, max_in_window, percentile
from bench.report import Report, at_least, at_most

from herald.kube import ApiConnection, KubeClient
from herald.testing import Emulator, emulator

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
    ("2 throughput, 40 to 1 webhook", "Delivery writes per delivery"),
    ("2 throughput, fan-out", "deliveries/s"),
    ("2 throughput, fan-out", "status patches per delivery"),
    ("2 throughput, fan-out", "Delivery writes per delivery"),
    ("3 storm", "events/s"),
    ("3 storm", "wall time"),
    ("3 storm", "latency p50"),
    ("3 storm", "latency p99"),
    ("3 burst, 40 events to 1 webhook", "deliveries received"),
    ("3 burst, 40 events to 1 webhook", "deferred"),
    ("3 burst, 40 events to 1 webhook", "events/s"),
    ("4 scale, 40 Webhooks +", "operator RSS"),
    ("4 scale, 40 Webhooks x 20 retained Deliveries", "operator RSS"),
    ("4 scale", "startup until settled"),
    ("4 scale", "latency p50"),
    ("4 scale", "latency p99"),
    ("5 API load, during the storm", "status patches per delivery"),
    ("5 API load, during the storm", "most status patches"),
    ("5 API load, during the storm", "list calls on the hot path"),
    ("5 API load, during the storm", "retention sweeps"),
    ("5 API load, during the storm", "API requests per event"),
    ("5 API load, burst to 1 webhook", "Delivery writes per delivery"),
    ("5 API load, burst to 1 webhook", "status patches per delivery"),
    ("5 API load, steady 20 events/s to 1 webhook", "Delivery writes per delivery"),
    ("5 API load, steady 20 events/s to 1 webhook", "events/s written"),
    ("5 API load, steady 20 events/s to 1 webhook", "CPU per event, herald run"),
    ("5 API load, steady 20 events/s to 1 webhook", "latency p50"),
    ("6 isolation", "p50, others"),
    ("6 isolation", "p99, others"),
]
NOTES = [
    "1 latency: where Herald's time goes",
    "5 API load: Herald's requests during the storm",
    "5 API load: Delivery writes in the burst",
    "5 API load: Delivery writes in the steady stream",
    "4 scale (40 webhooks x 20 retained Deliveries): startup, until settled",
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


# ---------------------------------------------------------------- the bench's emulator


def _delivery(i: int) -> dict[str, Any]:
    labels = {"herald.dev/webhook": f"hook-{i % 3}", "herald.dev/outcome": "Failed" if i % 7 else "Pending"}
    meta = {"namespace": f"team-{i % 4}", "name": f"d-{(i * 7919) % 1200:04d}", "labels": labels}
    return {"apiVersion": "herald.dev/v1alpha1", "kind": "Delivery", "metadata": meta, "spec": {"n": i}}


async def _listed(emu: Emulator, namespace: str | None, selector: str | None, metadata: bool) -> list[Any]:
    async def login() -> ApiConnection:
        return ApiConnection(server=emu.url)

    kube = KubeClient(login)
    try:
        pages = kube.pages("deliveries", namespace, label_selector=selector, metadata_only=metadata)
        return [[item for item in page] async for page in pages]
    finally:
        await kube.aclose()


@pytest.mark.parametrize("namespace", [None, "team-1"])
@pytest.mark.parametrize(
    "selector", [None, "herald.dev/outcome in (Pending,Retrying)", "herald.dev/webhook=hook-2"]
)
async def test_the_bench_emulator_pages_and_selects_as_the_test_emulator(
    namespace: str | None, selector: str | None
) -> None:
    """Its sorted index serves what ``herald.testing``'s emulator serves, page for page; asked for
    metadata only, the same objects' metadata."""
    objects = [_delivery(i) for i in range(1200)]
    async with emulator() as reference:
        load_objects(reference, copy.deepcopy(objects))
        want = await _listed(reference, namespace, selector, metadata=False)
    async with cluster() as c:
        load_objects(c.emu, copy.deepcopy(objects))
        got = await _listed(c.emu, namespace, selector, metadata=False)
        metadata = await _listed(c.emu, namespace, selector, metadata=True)
    assert got == want
    assert [[item["metadata"] for item in page] for page in metadata] == [
        [item["metadata"] for item in page] for page in want
    ]
    assert all(item["kind"] == "PartialObjectMetadata" for page in metadata for item in page)


def _names(pages: list[Any]) -> list[str]:
    return [item["metadata"]["name"] for page in pages for item in page]


async def test_the_bench_emulator_lists_what_changed_since_its_index_was_built() -> None:
    async with cluster() as c:
        load_objects(c.emu, [_delivery(i) for i in range(10)])
        before = [
            item["metadata"]["name"] for page in await _listed(c.emu, "team-0", None, False) for item in page
        ]
        created = _delivery(4)
        created["metadata"]["name"] = "d-0000a"
        await c.emu.create(created)
        await c.emu.delete("Delivery", "team-0", before[0])
        after = [
            item["metadata"]["name"] for page in await _listed(c.emu, "team-0", None, False) for item in page
        ]
    assert after == sorted([*before[1:], "d-0000a"])
