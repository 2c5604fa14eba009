"""``python -m bench``: Herald's benchmarks (issue 6), each against a baseline measured in the same run.

Prints one table (Herald's figure, the baseline's, their ratio, the target and whether it is met),
the correctness checks behind the figures, and the evidence for what bounds them: the hot path
split into stages, the API requests by kind, and profiles. Writes the same to ``bench/RESULTS.md``
(full runs; ``--output`` for others). Timings are never asserted: the exit status is non-zero only
when a correctness check fails (a delivery missing, duplicated or out of order).

``--quick`` is a tiny run of seconds (the smoke test runs it); flags size every scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import pathlib
import sys
import time
from collections.abc import Sequence

from bench.e2e import StormRun, status_patch_load, steady, storm, storm_process
from bench.harness import BENCH_SETTINGS, percentile
from bench.latency import back_to_back, baseline_latency, herald_latency
from bench.profiling import summarise
from bench.report import Judge, Report, at_least, at_most
from bench.scale import ProcessRun, process_isolation, process_latency, startup_profile
from bench.throughput import ThroughputRun, Workload, herald_throughput, httpx_throughput
from herald.delivery_store import sweep_slack

__all__ = ["QUICK", "SECTIONS", "Bench", "Sizes", "main", "run"]

SECTIONS = ("latency", "throughput", "storm", "burst", "steady", "scale", "isolation", "profile")
RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"


@dataclasses.dataclass(frozen=True)
class Sizes:
    latency: int = 200  # sequential transitions, one Environment each
    warmup: int = 5
    back_to_back: int = 30  # transitions of one Environment
    processes: int = 500  # transitions for the separate-process runs (scale included)
    one_receiver: int = 1000  # queued deliveries to one webhook
    rounds: int = 3  # throughput: alternating baseline/Herald rounds; each side's median counts
    fanout_webhooks: int = 500
    fanout_each: int = 4
    storm_envs: int = 100
    storm_namespaces: int = 10
    storm_deployments: int = 5  # each: DEPLOYING then DEPLOYED, so 2 events
    webhooks: int = 5000
    environments: int = 5000
    namespaces: int = 500
    small_crowd: int = 500  # a second, smaller crowd first, to see how startup grows (0: none)
    retained_crowd: int = 5000  # then webhooks with finished Delivery objects in the cluster (0: none)
    retained: int = 100  # finished Delivery objects per webhook of that crowd (Settings.retain)
    scale_timeout: float = 90.0  # seconds a crowded operator gets to settle
    retained_timeout: float = 300.0  # the same with retained deliveries: its startup scan lists them all
    burst: int = 1000  # events to one webhook at once, through the whole operator
    burst_retain: int = 10  # HERALD_RETAIN during the burst, so that retention prunes within it
    steady_rate: float = 50.0  # events/s to one webhook: the happy path's API writes
    steady_seconds: float = 20.0
    steady_envs: int = 50  # Environments taking turns (each one event a second at 50/s)
    steady_retain: int = 10  # HERALD_RETAIN during the stream, so that retention prunes within it
    startup_profile: float = 12.0  # seconds of a crowded startup profiled in process
    isolation: int = 100
    isolation_webhooks: int = 10
    profile: int = 100


QUICK = Sizes(
    latency=15,
    warmup=2,
    back_to_back=4,
    processes=8,
    one_receiver=40,
    rounds=1,
    fanout_webhooks=10,
    fanout_each=2,
    storm_envs=6,
    storm_namespaces=2,
    storm_deployments=2,
    webhooks=40,
    environments=40,
    namespaces=4,
    small_crowd=0,
    retained_crowd=40,
    retained=20,
    scale_timeout=30.0,
    retained_timeout=60.0,
    burst=40,
    burst_retain=5,
    steady_rate=20.0,
    steady_seconds=2.0,
    steady_envs=5,
    steady_retain=5,
    startup_profile=1.0,
    isolation=8,
    isolation_webhooks=3,
    profile=10,
)


@dataclasses.dataclass
class Bench:
    """One run: its sizes, the report it fills, and what one section measures for another."""

    sizes: Sizes
    report: Report = dataclasses.field(default_factory=Report)
    empty: ProcessRun | None = None  # herald run on an empty cluster: scale's reference


def _ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1000


def _percentiles(
    report: Report,
    section: str,
    samples: Sequence[float],
    baseline: Sequence[float],
    *,
    name: str = "p{q}",
    target: tuple[str, Judge] | None = None,
) -> None:
    """The p50 and p99 rows of latency samples (seconds), next to the baseline's."""
    for q in (50, 99):
        report.add(
            section, name.format(q=q), _ms(samples, q), baseline=_ms(baseline, q), unit="ms", target=target
        )


def _stages(stages: dict[str, list[float]]) -> str:
    lines = [f"  {'p50 ms':>8}  {'p99 ms':>8}  stage"]
    for name, values in stages.items():
        lines.append(f"  {_ms(values, 50):8.2f}  {_ms(values, 99):8.2f}  {name}")
    return "\n".join(lines)


async def _latency(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    n, warmup = sizes.latency, sizes.warmup
    base = await baseline_latency(n, warmup=warmup)
    herald = await herald_latency(n, warmup=warmup, settings=BENCH_SETTINGS)
    # Diagnostic: the emulator, the receiver and the operator share one event loop here, so the
    # operator's background writes (ledger, status) queue behind the next event. The target rows
    # are the separate-process ones below, deployed as in production.
    section = "1 latency, in process"
    _percentiles(report, section, herald.samples, base.samples)
    report.add(
        section, "CPU per event (whole process)", herald.cpu * 1000, baseline=base.cpu * 1000, unit="ms"
    )
    for name, run in (("raw notifier", base), ("herald", herald)):
        report.check(
            f"1 latency: {name} delivered each of {run.expected} transitions once",
            run.received == run.expected,
            f"{run.received} received",
        )
    report.note(
        f"1 latency: where Herald's time goes ({n} events, emulator, operator and receiver in one loop)",
        _stages(herald.stages),
    )

    proc_base = await process_latency(sizes.processes, warmup=warmup, herald=False)
    proc = await process_latency(sizes.processes, warmup=warmup, herald=True, timeout=sizes.scale_timeout)
    section = "1 latency, herald run process"
    for q, limit in ((50, 2.5), (99, 4.0)):
        report.add(
            section,
            f"p{q}",
            _ms(proc.samples, q),
            baseline=_ms(proc_base.samples, q),
            unit="ms",
            target=at_most(limit),
        )
    report.add(
        section,
        "CPU per event (the sender's process, its API writes included)",
        proc.cpu * 1000,
        baseline=proc_base.cpu * 1000,
        unit="ms",
    )
    for name, process in (("raw notifier process", proc_base), ("herald run", proc)):
        report.check(
            f"1 latency: {name} delivered each of {process.expected} transitions once",
            process.received == process.expected and process.expected > 0,
            f"{process.received} received",
        )

    b2b_base = await back_to_back(sizes.back_to_back, settings=None)
    b2b = await back_to_back(sizes.back_to_back, settings=BENCH_SETTINGS)
    section = "1 one Environment, back to back"
    _percentiles(report, section, b2b.samples, b2b_base.samples)
    report.check(
        f"1 back to back: herald delivered each of {b2b.expected} deployments once",
        b2b.received == b2b.expected,
        f"{b2b.received} received",
    )
    bench.empty = proc  # also the scale scenario's empty-cluster reference


def _median(runs: Sequence[ThroughputRun]) -> ThroughputRun:
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


async def _throughput(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    for label, load, target in (
        (
            f"2 throughput, {sizes.one_receiver} to 1 webhook",
            Workload(webhooks=1, per_webhook=sizes.one_receiver, ports=1),
            0.8,
        ),
        (
            f"2 throughput, fan-out to {sizes.fanout_webhooks} webhooks x {sizes.fanout_each}",
            Workload(
                webhooks=sizes.fanout_webhooks, per_webhook=sizes.fanout_each, ports=sizes.fanout_webhooks
            ),
            0.7,
        ),
    ):
        # Alternating rounds, each side's median: one round apiece swung the ratio 0.63x-0.97x.
        bases, heralds = [], []
        for _ in range(sizes.rounds):
            bases.append(await httpx_throughput(load, settings=BENCH_SETTINGS))
            heralds.append(await herald_throughput(load, settings=BENCH_SETTINGS))
        base, herald = _median(bases), _median(heralds)
        report.add(label, "deliveries/s", herald.rate, baseline=base.rate, unit="/s", target=at_least(target))
        report.add(
            label, "status patches per delivery", herald.status_patches / max(herald.deliveries, 1), unit=""
        )
        report.add(
            label,
            "Delivery writes per delivery (no pruning)",
            herald.delivery_writes / max(herald.deliveries, 1),
        )
        for name, runs in (("httpx", bases), ("herald", heralds)):
            report.check(
                f"{label}: {name} delivered exactly the queued deliveries, in order per webhook",
                all(run.exact for run in runs),
                f"{runs[0].deliveries} expected, {len(runs)} rounds",
            )
        report.check(
            f"{label}: herald deferred none of them",
            all(run.deferred == 0 for run in heralds),
            f"{sum(run.deferred for run in heralds)} deferred",
        )
    report.note(
        "2 throughput: how the two senders are compared",
        "Both send the same STANDARD bodies with the same headers to receivers in a child process.\n"
        "Like with like: one webhook's deliveries go one at a time, in order (Herald keeps one worker\n"
        "per webhook so STARTED precedes the outcome), at most Settings.max_concurrency (64) requests\n"
        "in flight overall, and as many kept-alive connections. The baseline is a plain\n"
        "httpx.AsyncClient (httpcore underneath) sending pre-rendered bodies. Herald renders each body,\n"
        "keeps the webhook's status and patches it, writes each delivery's Delivery object (to an API\n"
        "that answers at once), and sends through httpx's client over an aiohttp transport\n"
        "(herald/http_client.py): the transport is where its lead on fan-out comes from.",
    )


def _api_text(run: StormRun) -> str:
    lines = [f"  {'requests':>8}  {'per event':>9}  kind"]
    for kind, count in run.api.most_common():
        lines.append(f"  {count:8d}  {count / run.events:9.2f}  {kind}")
    return "\n".join(lines)


def _storm_rows(
    report: Report, section: str, herald: StormRun, base: StormRun, *, target: tuple[str, Judge] | None
) -> None:
    report.add(section, "events/s", herald.rate, baseline=base.rate, unit="/s", target=target)
    report.add(section, "wall time", herald.wall, baseline=base.wall, unit="s")
    _percentiles(report, section, herald.latencies, base.latencies, name="latency p{q}")


async def _storm(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    envs, namespaces, deployments = sizes.storm_envs, sizes.storm_namespaces, sizes.storm_deployments
    base, herald = [
        await storm(envs=envs, namespaces=namespaces, deployments=deployments, settings=settings)
        for settings in (None, BENCH_SETTINGS)
    ]
    # Diagnostic, like latency's in-process rows: the emulator, the receivers and the operator
    # share one loop, so every API write Herald makes costs the emulator's CPU in Herald's time.
    # The target row is the separate-process one, deployed as in production.
    title = f"3 storm, {herald.events} events / {sizes.storm_envs} Environments"
    _storm_rows(report, f"{title}, in process", herald, base, target=None)
    proc_base, proc = [
        await storm_process(envs=envs, namespaces=namespaces, deployments=deployments, herald=is_herald)
        for is_herald in (False, True)
    ]
    _storm_rows(report, f"{title}, herald run process", proc, proc_base, target=at_least(0.5))
    for name, run in (
        ("raw notifier", base),
        ("herald", herald),
        ("raw notifier process", proc_base),
        ("herald run", proc),
    ):
        report.check(
            f"3 storm: {name} delivered each of {run.events} events once, STARTED first",
            not run.problems,
            "; ".join(run.problems[:3]),
        )
    per_delivery, most = status_patch_load(herald, deliveries=herald.events)
    section = "5 API load, during the storm"
    report.add(section, "status patches per delivery", per_delivery, target=at_most(1, of_ratio=False))
    report.add(section, "most status patches, 1 webhook, 1 s", most, target=at_most(1, of_ratio=False))
    # Retention's sweeps list a webhook's finished Deliveries every few of them (in the background,
    # off any delivery's path); any other list during the storm would be on the hot path.
    sweeps = herald.api.get("LIST deliveries", 0)
    lists = sum(count for kind, count in herald.api.items() if kind.startswith("LIST")) - sweeps
    report.add(section, "list calls on the hot path", lists, target=at_most(0, of_ratio=False))
    report.add(section, "retention sweeps (LIST deliveries) per delivery", sweeps / max(herald.events, 1))
    report.add(section, "API requests per event", sum(herald.api.values()) / max(herald.events, 1))
    report.note(
        f"5 API load: Herald's requests during the storm, by kind ({herald.events} events; "
        f"statuses and ledgers settled {herald.settled:.1f} s after the last delivery)",
        _api_text(herald),
    )


def exactly(count: int) -> tuple[str, Judge]:
    return f"= {count}", lambda value, ratio: value == count


def _writes_text(run: StormRun, *, deliveries: int) -> str:
    lines = [f"  {'count':>7}  {'per delivery':>12}  herald_* metric (the emulator's log agrees: below)"]
    for name, value in run.counters.items():
        lines.append(f"  {value:7.0f}  {value / max(deliveries, 1):12.2f}  {name}")
    lines.append("")
    lines.append(f"  {'requests':>8}  kind (the emulator's log)")
    lines += [f"  {count:8d}  {kind}" for kind, count in sorted(run.api.items()) if "deliveries" in kind]
    return "\n".join(lines)


def _write_rows(report: Report, section: str, run: StormRun) -> None:
    """API writes per delivery, pruning included (target at most 2), as Herald's /metrics count them."""
    writes = sum(v for k, v in run.counters.items() if k.startswith("delivery writes"))
    report.add(
        section,
        "Delivery writes per delivery (create+patch+delete)",
        writes / max(run.events, 1),
        target=at_most(2, of_ratio=False),
    )
    report.add(section, "status patches per delivery", run.counters["status patches"] / max(run.events, 1))


async def _burst(bench: Bench) -> None:
    """``burst`` events to one webhook at once (half as many Environments, each DEPLOYING then
    DEPLOYED), through the whole operator with ``HERALD_RETAIN`` small, so that retention prunes
    within the run: delivered in full, and the API writes each delivery costs, pruning included."""
    report, sizes = bench.report, bench.sizes
    settings = dataclasses.replace(BENCH_SETTINGS, retain=sizes.burst_retain)
    run = await storm(envs=max(1, sizes.burst // 2), namespaces=1, deployments=1, settings=settings)
    section = f"3 burst, {run.events} events to 1 webhook"
    report.add(section, "deliveries received", run.received, target=exactly(run.events))
    report.add(section, "deferred", run.counters["deferred"], target=at_most(0, of_ratio=False))
    report.add(section, "events/s", run.rate, unit="/s")
    report.check(
        f"3 burst: herald delivered each of {run.events} events once, STARTED first",
        not run.problems,
        "; ".join(run.problems[:3]),
    )
    _write_rows(report, f"5 API load, burst to 1 webhook, retain {sizes.burst_retain}", run)
    bound = sizes.burst_retain + sweep_slack(sizes.burst_retain)
    report.check(  # pruned, or outlived while the backlog drained (deleted or never created)
        f"5 burst: retention held the log within the run (retain {sizes.burst_retain}: at most {bound})",
        run.kept <= bound,
        f"{run.kept} finished Delivery objects kept, {run.counters['pruned']:.0f} pruned",
    )
    report.note(
        f"5 API load: Delivery writes in the burst ({run.events} deliveries, retain {sizes.burst_retain})",
        _writes_text(run, deliveries=run.events),
    )


async def _steady(bench: Bench) -> None:
    """The happy path's API writes: a steady stream to one healthy webhook (none waits in a
    queue), retention pruning within it. Next to the burst, where a backlog builds."""
    report, sizes = bench.report, bench.sizes
    run = await steady(
        rate=sizes.steady_rate,
        seconds=sizes.steady_seconds,
        envs=sizes.steady_envs,
        retain=sizes.steady_retain,
    )
    section = (
        f"5 API load, steady {sizes.steady_rate:g} events/s to 1 webhook for {sizes.steady_seconds:g} s, "
        f"retain {sizes.steady_retain}"
    )
    _write_rows(report, section, run)
    report.add(section, "events/s delivered", run.rate, unit="/s")
    written = (run.events - 1) / run.written if run.written > 0 else math.nan
    report.add(section, "events/s written", written, unit="/s")
    for name, seconds in run.cpu.items():
        report.add(section, f"CPU per event, {name}", seconds * 1000 / max(run.events, 1), unit="ms")
    for q in (50, 99):  # the watch event -> the receiver, with no backlog (no baseline: diagnostic)
        report.add(section, f"latency p{q}", _ms(run.latencies, q), unit="ms")
    report.check(
        f"5 steady: herald delivered each of {run.events} events once, STARTED first",
        not run.problems and run.received == run.events,
        "; ".join(run.problems[:3]) or f"{run.received} received",
    )
    report.check(
        f"5 steady: retention pruned within the run (retain {sizes.steady_retain})",
        run.counters["pruned"] > 0,
        f"{run.counters['pruned']:.0f} pruned",
    )
    report.note(
        f"5 API load: Delivery writes in the steady stream ({run.events} deliveries, "
        f"retain {sizes.steady_retain})",
        _writes_text(run, deliveries=run.events),
    )


async def _scale(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    empty = bench.empty
    if empty is None:
        empty = await process_latency(
            sizes.processes, warmup=sizes.warmup, herald=True, timeout=sizes.scale_timeout
        )
    crowds = (
        [(sizes.small_crowd, sizes.small_crowd, max(1, sizes.small_crowd // 10), 0)]
        if sizes.small_crowd
        else []
    )
    crowds.append((sizes.webhooks, sizes.environments, sizes.namespaces, 0))
    if sizes.retained_crowd:
        crowds.append(
            (sizes.retained_crowd, sizes.retained_crowd, max(1, sizes.retained_crowd // 10), sizes.retained)
        )
    for webhooks, environments, namespaces, retained in crowds:
        timeout = sizes.retained_timeout if retained else sizes.scale_timeout
        run = await process_latency(
            sizes.processes,
            warmup=sizes.warmup,
            herald=True,
            webhooks=webhooks,
            environments=environments,
            namespaces=namespaces,
            retained=retained,
            timeout=timeout,
        )
        history = f" x {retained} retained Deliveries" if retained else ""
        section = f"4 scale, {webhooks} Webhooks{history} + {environments} Environments elsewhere"
        report.add(
            section,
            "operator RSS",
            run.rss_mb,
            baseline=empty.rss_mb,
            unit="MB",
            target=at_most(300, of_ratio=False),
        )
        report.add(section, "startup until settled", run.settle, baseline=empty.settle, unit="s")
        _percentiles(report, section, run.samples, empty.samples, name="latency p{q}", target=at_most(1.5))
        if math.isnan(run.settle):
            report.note(
                f"4 scale: {webhooks} Webhooks{history} + {environments} Environments did not settle",
                f"herald run had written {run.statuses_written} of {webhooks + 1} webhook statuses after "
                f"{timeout:.0f} s (RSS {run.rss_mb:.0f} MB, peak {run.peak_mb:.0f} MB);\n"
                "no latency was measured. The startup profile below shows where the time goes.",
            )
        else:
            report.check(
                f"4 scale ({webhooks} webhooks{history}): each of {run.expected} transitions delivered once",
                run.received == run.expected,
                f"{run.received} received",
            )
            lists = {k: v for k, v in run.hot_path_requests.items() if k.startswith("LIST")}
            report.note(
                f"4 scale ({webhooks} webhooks{history}): API requests during {run.expected} events",
                "\n".join(f"  {v:6d}  {k}" for k, v in sorted(run.hot_path_requests.items()))
                + ("\n  (LIST webhooks is the readiness probe, ?limit=1, every 2 s)" if lists else ""),
            )
        if retained:
            report.note(
                f"4 scale ({webhooks} webhooks{history}): startup, until settled",
                f"Retention's scan of all {webhooks * retained:,} Delivery objects (metadata, pages of 500) "
                f"was listed to its end {run.scan:.1f} s after start;\n"
                f"RSS {run.rss_mb:.0f} MB once settled, peak {run.peak_mb:.0f} MB by the end. API requests:\n"
                + "\n".join(f"  {v:7d}  {k}" for k, v in sorted(run.startup_requests.items())),
            )


async def _isolation(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    calm, hung = [
        await process_isolation(
            sizes.isolation,
            warmup=sizes.warmup,
            webhooks=sizes.isolation_webhooks,
            hang=hang,
            timeout=sizes.scale_timeout,
        )
        for hang in (False, True)
    ]
    section = f"6 isolation, 1 of {sizes.isolation_webhooks} receivers hangs"
    _percentiles(report, section, hung.samples, calm.samples, name="p{q}, others", target=at_most(1.5))
    for name, run in (("without a hanging receiver", calm), ("with one hanging", hung)):
        report.check(
            f"6 isolation {name}: the healthy receivers got each of {run.expected} deliveries once",
            run.received == run.expected,
            f"{run.received} received",
        )


async def _profile(bench: Bench) -> None:
    report, sizes = bench.report, bench.sizes
    run = await herald_latency(sizes.profile, warmup=sizes.warmup, settings=BENCH_SETTINGS, profile=True)
    if run.profile is not None:
        report.note(
            f"7 profile: the latency scenario ({sizes.profile} events, one at a time)",
            summarise(run.profile, events=sizes.profile + sizes.warmup),
        )
    engine = await herald_throughput(
        Workload(webhooks=1, per_webhook=sizes.one_receiver, ports=1), settings=BENCH_SETTINGS, profile=True
    )
    if engine.profile is not None:
        report.note(
            f"7 profile: the delivery engine, {sizes.one_receiver} queued deliveries to one webhook",
            summarise(engine.profile, events=engine.deliveries),
        )
    envs = max(2, sizes.storm_envs // 2)
    burst = await storm(
        envs=envs,
        namespaces=max(1, sizes.storm_namespaces // 2),
        deployments=sizes.storm_deployments,
        settings=BENCH_SETTINGS,
        profile=True,
    )
    if burst.profile is not None:
        report.note(
            f"7 profile: a storm, {burst.events} events, {envs} Environments (first write to last delivery)",
            summarise(burst.profile, events=burst.events),
        )
    crowd = min(sizes.webhooks, 1000)
    stats = await startup_profile(
        webhooks=crowd, environments=crowd, namespaces=max(1, crowd // 10), seconds=sizes.startup_profile
    )
    report.note(
        f"7 profile: first {sizes.startup_profile:.0f} s of a start, {crowd} Webhooks, {crowd} Environments",
        summarise(stats, events=None, top=12),
    )


RUNNERS = {
    "latency": _latency,
    "throughput": _throughput,
    "storm": _storm,
    "burst": _burst,
    "steady": _steady,
    "scale": _scale,
    "isolation": _isolation,
    "profile": _profile,
}


async def run(sizes: Sizes, sections: Sequence[str]) -> Report:
    bench = Bench(sizes=sizes)
    for name in sections:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        await RUNNERS[name](bench)
        print(f"bench: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return bench.report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run of seconds (the smoke test's)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)", default=None
    )
    parser.add_argument(
        "--output", type=pathlib.Path, default=None, help=f"write the results here ({RESULTS} on full runs)"
    )
    for field in dataclasses.fields(Sizes):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=None, help=f"(default {field.default})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes) if getattr(args, f.name) is not None
    }
    sizes = dataclasses.replace(sizes, **overrides)
    sections = args.only or list(SECTIONS)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    report = asyncio.run(run(sizes, sections))
    elapsed = time.monotonic() - started
    print(report.text())
    output = (
        args.output
        if args.output is not None
        else (None if args.quick or args.only or overrides else RESULTS)
    )
    if output is not None:
        command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
        output.write_text(report.markdown(command=command.strip(), elapsed=elapsed), encoding="utf-8")
        print(f"\nwritten to {output}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
