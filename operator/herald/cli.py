"""``herald run``, ``herald demo`` and ``herald render``. Flags and ``HERALD_*`` variables are read
here and only here.

Every flag has an environment equivalent (a container is configured by env); a flag wins over
its variable. A bad value stops the program with a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import ipaddress
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import kopf
import yaml
from aiohttp import web
from prometheus_client import start_http_server

from herald import USER_AGENT, __version__
from herald.events import BadEnvironment
from herald.handlers import Runtime, api_login, build_registry
from herald.heap import HeapKeeper
from herald.kube import API_GROUP, API_VERSION, KubeClient
from herald.leader import LeaseConfig, LeaseElector
from herald.metrics import Metrics
from herald.models import EventType, SecretRef, WebhookSpec
from herald.payloads import RenderError, format_for, sample
from herald.settings import DEFAULT_RETRY_SCHEDULE, Network, Settings
from herald.status import parse_webhook

__all__ = ["main", "parse_settings"]

T = TypeVar("T")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
LOG_EXTRAS = ("webhook", "environment", "event", "payload_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the delivery fields a log pipeline filters on."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_EXTRAS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _schedule(text: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if any(v < 0 for v in values):
        raise ValueError("delays must not be negative")
    return values


def _networks(text: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a port number, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


# flag, variable, converter, Settings field, help
OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    (
        "--retry-schedule",
        "HERALD_RETRY_SCHEDULE",
        _schedule,
        "retry_schedule",
        "comma-separated delays in seconds before attempts 2, 3, ... (5,300,1800,7200,18000,36000,36000)",
    ),
    (
        "--retry-jitter",
        "HERALD_RETRY_JITTER",
        _fraction,
        "retry_jitter",
        "jitter fraction per delay (default 0.2)",
    ),
    (
        "--delivery-timeout",
        "HERALD_DELIVERY_TIMEOUT",
        _positive,
        "delivery_timeout",
        "total seconds for one attempt (default 15)",
    ),
    (
        "--connect-timeout",
        "HERALD_CONNECT_TIMEOUT",
        _positive,
        "connect_timeout",
        "connect seconds (default 5)",
    ),
    (
        "--egress-allow",
        "HERALD_EGRESS_ALLOW",
        _networks,
        "egress_allow",
        "comma-separated CIDRs allowed despite the egress policy",
    ),
    (
        "--egress-deny-private",
        "HERALD_EGRESS_DENY_PRIVATE",
        _bool,
        "egress_deny_private",
        "also refuse private address ranges (true/false)",
    ),
    (
        "--require-https",
        "HERALD_REQUIRE_HTTPS",
        _bool,
        "require_https",
        "refuse http:// receivers (true/false)",
    ),
    (
        "--max-pending",
        "HERALD_MAX_PENDING",
        _count,
        "max_pending",
        "unfinished deliveries kept per webhook (100)",
    ),
    ("--max-concurrency", "HERALD_MAX_CONCURRENCY", _count, "max_concurrency", "attempts in flight (64)"),
    (
        "--status-interval",
        "HERALD_STATUS_INTERVAL",
        _positive,
        "status_interval",
        "seconds between status patches of one webhook (1)",
    ),
    (
        "--secret-cache-ttl",
        "HERALD_SECRET_CACHE_TTL",
        _positive,
        "secret_cache_ttl",
        "seconds a Secret read is reused (10)",
    ),
    ("--health-port", "HERALD_HEALTH_PORT", _port, "health_port", "port of /healthz (8080; 0 disables)"),
    ("--metrics-port", "HERALD_METRICS_PORT", _port, "metrics_port", "port of /metrics (9090; 0 disables)"),
    (
        "--leader-election",
        "HERALD_LEADER_ELECTION",
        _bool,
        "leader_election",
        "run only while holding a coordination.k8s.io Lease (true for more than one replica)",
    ),
    ("--lease-namespace", "HERALD_LEASE_NAMESPACE", str, "lease_namespace", "namespace of the Lease"),
    ("--lease-name", "HERALD_LEASE_NAME", str, "lease_name", "name of the Lease (herald)"),
    (
        "--lease-duration",
        "HERALD_LEASE_DURATION",
        _positive,
        "lease_duration",
        "seconds without renewal after which another replica takes over (15)",
    ),
    (
        "--scanning",
        "HERALD_SCANNING",
        _bool,
        "scanning",
        "kopf's cluster scanning (on/off; off where Herald may not list namespaces or CRDs)",
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald", description="Qovery-style deployment webhooks for Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator against the cluster (in-cluster or KUBECONFIG)")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch this namespace (repeatable; HERALD_NAMESPACE, comma-separated)",
    )
    run.add_argument(
        "--all-namespaces",
        "-A",
        action="store_const",
        const="true",
        default=None,
        help="watch every namespace (HERALD_ALL_NAMESPACES=true; the default)",
    )
    for flag, variable, _conv, _field, text in OPTIONS:
        run.add_argument(flag, default=None, help=f"{text} [{variable}]")
    render = commands.add_parser(
        "render",
        help="print the request a webhook would send for an event, offline (no cluster)",
        description="Print the headers and body a Webhook or ClusterWebhook manifest would send for one "
        "event of an Environment (a built-in sample by default). Secrets are not read: the headers "
        "they fill are shown as placeholders.",
    )
    render.add_argument(
        "-f", "--filename", required=True, help="the Webhook or ClusterWebhook manifest (YAML)"
    )
    render.add_argument("--environment", help="an Environment manifest (YAML); default: a built-in sample")
    render.add_argument(
        "--event",
        choices=[e.value for e in EventType],
        help="the event to render (default: the webhook's first event)",
    )
    for sub in (run, commands.add_parser("demo", help="the whole flow with no cluster, then exit")):
        sub.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR [HERALD_LOG_LEVEL]")
        sub.add_argument("--log-format", default=None, choices=("plain", "json"), help="[HERALD_LOG_FORMAT]")
    return parser


def _value(args: argparse.Namespace, env: Mapping[str, str], flag: str, variable: str) -> str | None:
    given = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return given if given is not None else env.get(variable)


def parse_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Settings from flags, then HERALD_* variables, then defaults; raises ValueError naming the culprit."""
    values: dict[str, Any] = {}
    for flag, variable, convert, field, _text in OPTIONS:
        raw = _value(args, env, flag, variable)
        if raw is None:
            continue
        try:
            values[field] = convert(raw)
        except ValueError as exc:
            raise ValueError(f"{flag} / {variable}: {exc}") from None
    namespaces: tuple[str, ...] = tuple(args.namespace or ()) or _names(env.get("HERALD_NAMESPACE", ""))
    everything = _value(args, env, "--all-namespaces", "HERALD_ALL_NAMESPACES")
    try:
        all_namespaces = _bool(everything) if everything is not None else not namespaces
    except ValueError as exc:
        raise ValueError(f"--all-namespaces / HERALD_ALL_NAMESPACES: {exc}") from None
    if all_namespaces and namespaces:
        raise ValueError("--namespace and --all-namespaces exclude each other; choose one")
    for namespace in namespaces:
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"--namespace / HERALD_NAMESPACE: {namespace!r} is not a namespace name "
                "(lowercase letters, digits and '-'; patterns are not supported)"
            )
    values["namespaces"] = None if all_namespaces else namespaces
    values.setdefault("retry_schedule", DEFAULT_RETRY_SCHEDULE)
    return Settings(**values)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log and kopf's per-request chatter are noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


READY_WINDOW = 10.0  # seconds an answer from the API server counts for /readyz
PROBE_EVERY = 2.0


@dataclasses.dataclass
class Readiness:
    """``/readyz``: the API server answered a list of Webhooks lately and, unless this replica is a
    standby waiting for the Lease, kopf has opened its watches and every webhook that existed at
    start has arrived (deployment events are being handled). A standby is ready too: otherwise a
    rolling update of two replicas could never replace the leader."""

    kopf_ready: asyncio.Event
    standby: bool = False
    api_ok_at: float = float("-inf")
    webhooks_known: Callable[[], bool] = lambda: False

    def ready(self) -> bool:
        fresh = time.monotonic() - self.api_ok_at < READY_WINDOW
        return fresh and (self.standby or (self.kopf_ready.is_set() and self.webhooks_known()))

    async def probe(self, kube: KubeClient, settings: Settings) -> None:
        scope = f"/namespaces/{settings.namespaces[0]}" if settings.namespaces else ""
        path = f"/apis/{API_GROUP}/{API_VERSION}{scope}/webhooks?limit=1"
        while True:
            try:
                await kube.probe(path)
            except Exception as exc:  # not ready; the reason is worth a line at DEBUG only
                logging.getLogger("herald.health").debug("readiness probe failed: %s", exc)
            else:
                self.api_ok_at = time.monotonic()
            await asyncio.sleep(PROBE_EVERY)


async def serve_health(port: int, readiness: Readiness) -> web.AppRunner:
    """``/healthz`` answers from the event loop itself, so a blocked loop fails liveness."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready") if readiness.ready() else web.Response(status=503, text="not ready")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probes come from the kubelet
    return runner


async def run_operator(settings: Settings) -> int:
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    ready, stop = asyncio.Event(), asyncio.Event()
    readiness = Readiness(kopf_ready=ready, standby=settings.leader_election)
    kube = KubeClient(api_login)
    prober = asyncio.create_task(readiness.probe(kube, settings))
    heap = asyncio.create_task(HeapKeeper().run(), name="herald-heap")
    health = await serve_health(settings.health_port, readiness) if settings.health_port else None
    elector: LeaseElector | None = None
    campaign: asyncio.Task[None] | None = None
    try:
        if settings.leader_election:
            identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            config = LeaseConfig(
                namespace=settings.lease_namespace,
                name=settings.lease_name,
                identity=identity,
                duration=settings.lease_duration,
                renew_every=settings.lease_duration / 3,
                retry_every=min(2.0, settings.lease_duration / 5),
            )
            elector = LeaseElector(kube, config)
            campaign = asyncio.create_task(elector.run())
            logging.getLogger("herald").info("waiting to lead (Lease %s/%s)", config.namespace, config.name)
            await elector.leading.wait()
            readiness.standby = False
        runtimes: list[Runtime] = []
        registry = build_registry(settings, metrics=metrics, runtimes=runtimes)
        readiness.webhooks_known = lambda: bool(runtimes) and runtimes[-1].index.ready

        @kopf.on.cleanup(registry=registry)
        async def release_stop_flag(**_: Any) -> None:
            stop.set()  # kopf stopped by a signal: let its stop-flag waiter end, not hang 5 s

        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=settings.namespaces is None,
                namespaces=list(settings.namespaces or ()),
                ready_flag=ready,
                stop_flag=stop,
            )
        )
        if elector is None:
            await operator
            return 0
        lost = asyncio.create_task(elector.lost.wait())
        await asyncio.wait({operator, lost}, return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            stop.set()  # stepping down: stop delivering before another replica takes over
            await operator
            return 1
        lost.cancel()
        return 0
    finally:
        prober.cancel()
        heap.cancel()
        if campaign is not None:
            campaign.cancel()
        await kube.aclose()
        if health is not None:
            await health.cleanup()


def _manifest(path: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The one document of ``kinds`` in a YAML file; ValueError with a message otherwise."""
    try:
        with open(path, encoding="utf-8") as file:
            docs = [d for d in yaml.safe_load_all(file) if d is not None]
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") in kinds]
    if len(found) != 1:
        raise ValueError(f"{path}: expected one {' or '.join(kinds)}, found {len(found)}")
    return found[0]


def _ref(ref: SecretRef) -> str:
    return f"Secret {ref.namespace + '/' if ref.namespace else ''}{ref.name} key {ref.key}"


def _webhook_spec(path: str) -> WebhookSpec:
    doc = _manifest(path, ("Webhook", "ClusterWebhook"))
    view = parse_webhook(doc, cluster=doc["kind"] == "ClusterWebhook")
    if view.spec is None:
        raise ValueError(f"{path}: {view.spec_error}")
    return view.spec


def render_webhook(path: str, *, environment: str | None, event: str | None) -> int:
    """``herald render``: the request line, headers and body, as the operator would send them."""
    try:
        spec = _webhook_spec(path)
        env_doc = _manifest(environment, ("Environment",)) if environment else sample.FULL
        event_type = EventType(event) if event else spec.events[0]
        notification = sample.sample_event(event_type, env_doc)
        rendered = format_for(spec.kind).render(notification, spec)
    except (ValueError, BadEnvironment, RenderError) as exc:
        print(f"herald render: {exc}", file=sys.stderr)
        return 2
    if event_type not in (*spec.events, EventType.WEBHOOK_TEST):
        print(f"herald render: note: this webhook is not sent {event_type.value} events", file=sys.stderr)
    url = f"<the URL in {_ref(spec.url_secret_ref)}>" if spec.url_secret_ref is not None else spec.url
    lines = [f"POST {url}", f"Content-Type: {rendered.content_type}", f"User-Agent: {USER_AGENT}"]
    lines += [f"{name}: {value}" for name, value in rendered.headers]
    if spec.secret_ref is not None:
        value = f"<the value of {_ref(spec.secret_ref)}>"
        lines += [f"Qovery-Secret: {value}", f"Qovery-Signature: {value}"]
    if spec.signing_secret_ref is not None:
        lines += [
            f"webhook-id: {notification.payload_id}",
            "webhook-timestamp: <the time of each attempt>",
            f"webhook-signature: <signed with {_ref(spec.signing_secret_ref)}>",
        ]
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(rendered.body + b"\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "render":  # offline and quiet: no logging set up, nothing but the request
        return render_webhook(args.filename, environment=args.environment, event=args.event)
    env = os.environ
    quiet = "WARNING" if args.command == "demo" else "INFO"  # the demo's own output is the story
    level = (_value(args, env, "--log-level", "HERALD_LOG_LEVEL") or quiet).upper()
    fmt = _value(args, env, "--log-format", "HERALD_LOG_FORMAT") or "plain"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        parser.error(f"--log-level / HERALD_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    if fmt not in ("plain", "json"):
        parser.error(f"--log-format / HERALD_LOG_FORMAT: expected plain or json, got {fmt!r}")
    configure_logging(level, fmt)
    if args.command == "demo":
        from herald.demo import run_demo

        return asyncio.run(run_demo())
    try:
        settings = parse_settings(args, env)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_operator(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
