"""``herald run``, ``herald demo`` and ``herald render``. Flags and ``HERALD_*`` variables are read
here and only here.

Every flag has an environment equivalent (a container is configured by env); a flag wins over
its variable. A bad value stops the program with a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import kopf
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from pydantic import ValidationError
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from herald import USER_AGENT, __version__
from herald.events import BadEnvironment
from herald.handlers import Runtime, api_login, build_registry
from herald.heap import HeapKeeper
from herald.kube import KubeClient
from herald.leader import LeaseConfig, LeaseElector
from herald.metrics import Metrics
from herald.models import EventType, SecretRef, WebhookSpec
from herald.payloads import RenderError, format_for, sample
from herald.settings import MAX_PENDING_LIMIT, Settings
from herald.source_handlers import usable_sources
from herald.sources import SOURCE_NAMES
from herald.status import parse_webhook

__all__ = [
    "READY_WINDOW",
    "Readiness",
    "configure_logging",
    "json_formatter",
    "listen",
    "main",
    "parse_settings",
    "serve_health",
    "serve_metrics",
]

T = TypeVar("T")
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def json_formatter() -> logging.Formatter:
    """One JSON object per line (python-json-logger): the level, the logger, the message, the time,
    and every ``extra`` a log call passes (webhook, environment, event, payload_id, and kopf's
    object reference as ``object``); kopf's own bookkeeping attributes are left out."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger", "k8s_ref": "object"},
        reserved_attrs=[*RESERVED_ATTRS, "k8s_skip", "settings"],
        timestamp="time",
    )


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# flag, variable, Settings field, help. Values are validated by Settings itself; the help gives
# each default from there.
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "--retry-schedule",
        "HERALD_RETRY_SCHEDULE",
        "retry_schedule",
        "comma-separated delays in seconds before attempts 2, 3, ...",
    ),
    ("--retry-jitter", "HERALD_RETRY_JITTER", "retry_jitter", "jitter fraction per delay, in [0, 1)"),
    ("--delivery-timeout", "HERALD_DELIVERY_TIMEOUT", "delivery_timeout", "total seconds for one attempt"),
    ("--connect-timeout", "HERALD_CONNECT_TIMEOUT", "connect_timeout", "connect seconds"),
    (
        "--egress-allow",
        "HERALD_EGRESS_ALLOW",
        "egress_allow",
        "comma-separated CIDRs allowed despite the egress policy",
    ),
    (
        "--egress-deny-private",
        "HERALD_EGRESS_DENY_PRIVATE",
        "egress_deny_private",
        "also refuse private address ranges (true/false)",
    ),
    ("--require-https", "HERALD_REQUIRE_HTTPS", "require_https", "refuse http:// receivers (true/false)"),
    (
        "--max-pending",
        "HERALD_MAX_PENDING",
        "max_pending",
        f"unfinished deliveries per webhook (at most {MAX_PENDING_LIMIT}); at the bound new events "
        "wait (back-pressure)",
    ),
    ("--retain", "HERALD_RETAIN", "retain", "finished Delivery objects kept per webhook"),
    ("--retain-for", "HERALD_RETAIN_FOR", "retain_for", "seconds a finished Delivery object is kept"),
    (
        "--delivery-namespace",
        "HERALD_DELIVERY_NAMESPACE",
        "delivery_namespace",
        "namespace of ClusterWebhooks' Delivery objects (Herald's own)",
    ),
    ("--max-concurrency", "HERALD_MAX_CONCURRENCY", "max_concurrency", "attempts in flight"),
    (
        "--status-interval",
        "HERALD_STATUS_INTERVAL",
        "status_interval",
        "seconds between status patches of one webhook",
    ),
    ("--secret-cache-ttl", "HERALD_SECRET_CACHE_TTL", "secret_cache_ttl", "seconds a Secret read is reused"),
    ("--health-port", "HERALD_HEALTH_PORT", "health_port", "port of /healthz and /readyz (0 disables)"),
    ("--metrics-port", "HERALD_METRICS_PORT", "metrics_port", "port of /metrics (0 disables)"),
    (
        "--leader-election",
        "HERALD_LEADER_ELECTION",
        "leader_election",
        "run only while holding a coordination.k8s.io Lease (true for more than one replica)",
    ),
    ("--lease-namespace", "HERALD_LEASE_NAMESPACE", "lease_namespace", "namespace of the Lease"),
    ("--lease-name", "HERALD_LEASE_NAME", "lease_name", "name of the Lease"),
    (
        "--lease-duration",
        "HERALD_LEASE_DURATION",
        "lease_duration",
        "seconds without renewal after which another replica takes over",
    ),
    (
        "--scanning",
        "HERALD_SCANNING",
        "scanning",
        "kopf's cluster scanning (on/off; off where Herald may not list namespaces or CRDs)",
    ),
    (
        "--sources",
        "HERALD_SOURCES",
        "sources",
        f"deployment sources to run: {','.join(SOURCE_NAMES)} or none (default: each whose API is served)",
    ),
)
FIELDS = {field: (flag, variable) for flag, variable, field, _help in OPTIONS}
FIELDS["namespaces"] = ("--namespace", "HERALD_NAMESPACE")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return "each source whose API is served" if value is None else str(value).lower()


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
    for flag, variable, field, text in OPTIONS:
        default = f"; default {_shown(DEFAULTS[field])}" if field != "sources" else ""
        run.add_argument(flag, default=None, help=f"{text} [{variable}{default}]")
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
    """Settings from flags, then HERALD_* variables, then defaults; raises ValueError naming the
    flag and the variable of the first value Settings refuses."""
    values: dict[str, Any] = {}
    for flag, variable, field, _text in OPTIONS:
        raw = _value(args, env, flag, variable)
        if raw is not None:
            values[field] = raw
    namespaces: tuple[str, ...] = tuple(args.namespace or ()) or _names(env.get("HERALD_NAMESPACE", ""))
    everything = _value(args, env, "--all-namespaces", "HERALD_ALL_NAMESPACES")
    try:
        all_namespaces = _bool(everything) if everything is not None else not namespaces
    except ValueError as exc:
        raise ValueError(f"--all-namespaces / HERALD_ALL_NAMESPACES: {exc}") from None
    if all_namespaces and namespaces:
        raise ValueError("--namespace and --all-namespaces exclude each other; choose one")
    values["namespaces"] = None if all_namespaces else namespaces
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        flag, variable = FIELDS[str(first["loc"][0])]
        raise ValueError(f"{flag} / {variable}: {first['msg']} (got {first['input']!r})") from None


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The health server's access log is noise at INFO; so is kopf's "Handler ... succeeded." for
    # every watch event of every Environment and webhook (Herald logs what a handling did, and
    # formatting kopf's line cost 2% of the CPU). --log-level debug keeps them.
    quiet = logging.DEBUG if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level))
    for noisy in ("aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(quiet)


READY_WINDOW = 10.0  # seconds an answer from the API server counts for /readyz
PROBE_EVERY = 2.0


@dataclasses.dataclass
class Readiness:
    """``/readyz``: the API server answered a list of Webhooks lately and, unless this replica is a
    standby waiting for the Lease, kopf has opened its watches, every webhook that existed at start
    has arrived and every Environment has been listed (deployment events are being handled). A
    standby is ready too: otherwise a rolling update of two replicas could never replace the
    leader."""

    kopf_ready: asyncio.Event
    standby: bool = False
    api_ok_at: float = float("-inf")
    handling: Callable[[], bool] = lambda: False

    def ready(self) -> bool:
        fresh = time.monotonic() - self.api_ok_at < READY_WINDOW
        return fresh and (self.standby or (self.kopf_ready.is_set() and self.handling()))

    async def probe(self, kube: KubeClient, settings: Settings) -> None:
        while True:
            try:
                await kube.probe(settings.namespaces[0] if settings.namespaces else None)
            except Exception as exc:  # not ready; the reason is worth a line at DEBUG only
                logging.getLogger("herald.health").debug("readiness probe failed: %s", exc)
            else:
                self.api_ok_at = time.monotonic()
            await asyncio.sleep(PROBE_EVERY)


# The host has no IPv6 (the kernel was built or booted without it): serve IPv4 alone.
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL}


def listen(port: int) -> socket.socket:
    """A TCP socket bound to ``port`` on every address of both families: ``::`` with IPV6_V6ONLY
    off (IPv4 arrives as ``::ffff:a.b.c.d``), whatever the host's ``net.ipv6.bindv6only``; on a
    host without IPv6, ``0.0.0.0``. The kubelet probes the pod's IP, IPv6 on an IPv6-only or
    IPv6-first cluster, and Prometheus scrapes it."""
    try:
        return _bound(socket.AF_INET6, "::", port)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise  # a port in use is an error, not a reason to listen on one family only
    return _bound(socket.AF_INET, "0.0.0.0", port)  # noqa: S104 - probes and scrapes come from outside


def _bound(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(port: int, routes: Mapping[str, Handler]) -> web.AppRunner:
    """An HTTP server for ``routes`` (GET) on ``port``, dual-stack (see ``listen``)."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, listen(port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve_health(port: int, readiness: Readiness) -> web.AppRunner:
    """``/healthz`` answers from the event loop itself, so a blocked loop fails liveness."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(text="ready") if readiness.ready() else web.Response(status=503, text="not ready")

    return await serve(port, {"/healthz": healthz, "/readyz": readyz})


async def serve_metrics(port: int, registry: CollectorRegistry) -> web.AppRunner:
    """``/metrics`` in the format the scraper asks for (Prometheus text or OpenMetrics). Served here
    rather than by prometheus_client's ``start_http_server``, which leaves IPV6_V6ONLY to the host's
    default and fails on a host without IPv6."""

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    return await serve(port, {"/metrics": metrics})


def _identity() -> str:
    """Unique per process: a restarted pod is a new candidate, never mistaken for the old holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def run_operator(settings: Settings) -> int:
    metrics = Metrics()
    ready, stop = asyncio.Event(), asyncio.Event()
    readiness = Readiness(kopf_ready=ready, standby=settings.leader_election)
    kube = KubeClient(api_login)
    prober = asyncio.create_task(readiness.probe(kube, settings))
    heap = asyncio.create_task(HeapKeeper().run(), name="herald-heap")
    servers: list[web.AppRunner] = []
    elector: LeaseElector | None = None
    campaign: asyncio.Task[None] | None = None
    operator: asyncio.Task[None] | None = None
    try:
        if settings.metrics_port:
            servers.append(await serve_metrics(settings.metrics_port, metrics.registry))
        if settings.health_port:
            servers.append(await serve_health(settings.health_port, readiness))
        if settings.leader_election:
            config = LeaseConfig.scaled(
                namespace=settings.lease_namespace,
                name=settings.lease_name,
                identity=_identity(),
                duration=settings.lease_duration,
            )
            elector = LeaseElector(kube, config)
            campaign = asyncio.create_task(elector.run())
            logging.getLogger("herald").info("waiting to lead (Lease %s/%s)", config.namespace, config.name)
            await elector.leading.wait()
            readiness.standby = False
        if settings.sources != ():
            usable = await usable_sources(kube, settings.namespaces, settings.sources)
            settings = dataclasses.replace(settings, sources=usable)
        runtimes: list[Runtime] = []
        registry = build_registry(settings, metrics=metrics, runtimes=runtimes)
        readiness.handling = lambda: bool(runtimes) and runtimes[-1].handling()

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
            # The renew deadline passed: stop delivering before the Lease can expire at a standby,
            # gracefully if that fits in half the time left, else by cancelling the operator.
            stop.set()
            await asyncio.wait({operator}, timeout=(config.duration - config.renew_deadline) / 2)
            if not operator.done():
                logging.getLogger("herald").error("the operator did not stop in time; cancelling it")
                operator.cancel()
                await asyncio.gather(operator, return_exceptions=True)
            return 1
        lost.cancel()
        return 0
    finally:
        prober.cancel()
        heap.cancel()
        if campaign is not None:
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        if elector is not None and (operator is None or operator.done()):
            await elector.release()  # delivery has stopped: the standby may take over now
        await kube.aclose()
        for server in servers:
            await server.cleanup()


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
        try:
            from herald.demo import run_demo
        except ModuleNotFoundError as exc:
            if exc.name != "kmock":
                raise
            parser.error("herald demo needs the demo extra (its API emulator): pip install 'herald[demo]'")
        return asyncio.run(run_demo())
    try:
        settings = parse_settings(args, env)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_operator(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
