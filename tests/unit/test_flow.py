"""flow.py: which webhooks an event goes to, what is kept between watch events, what is retried,
and what is written, decided without kopf, a network or an API server."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest

from herald.dispatcher import Submission
from herald.events import LEDGER_ANNOTATION, build_event, parse_environment
from herald.flow import (
    Flow,
    GoneWebhooks,
    NamespaceLabels,
    NamespaceUnreadable,
    Retries,
    choose,
)
from herald.index import WebhookIndex
from herald.kube import ApiError, ApiNotFound, ApiServerError
from herald.ledger import Ledgers
from herald.metrics import Metrics
from herald.models import DeploymentEvent, EventType, NotifiedLedger, ObjectRef
from herald.settings import Settings
from herald.status import WebhookView, parse_webhook

NS = "shop"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
ALL_EVENTS = ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL", "DEPLOYMENT_CANCELLED", "DEPLOYMENT_FAILURE"]


def hook(name: str, *, cluster: bool = False, uid: str | None = None, **spec: Any) -> WebhookView:
    meta = {"name": name, "uid": uid or f"uid-{name}", "generation": 1}
    if not cluster:
        meta["namespace"] = NS
    body = {"url": "https://example.com/hook", "kind": "STANDARD", "events": ALL_EVENTS, **spec}
    view = parse_webhook(
        {"apiVersion": "herald.dev/v1alpha1", "metadata": meta, "spec": body}, cluster=cluster
    )
    assert view.spec is not None, view.spec_error
    return view


def env_body(
    state: str = "DEPLOYED", *, deployment_id: str = "d-1", ledger: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": "env-uid", "name": "web", "namespace": NS}
    if ledger is not None:
        meta["annotations"] = {LEDGER_ANNOTATION: ledger}
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": meta,
        "spec": {"organization": {"name": "Acme"}, "project": {"name": "shop"}, "type": "PRODUCTION"},
        "status": {"deployment": {"id": deployment_id, "currentStatus": state}},
    }


def event(event_type: str = "DEPLOYMENT_SUCCESSFUL") -> DeploymentEvent:
    environment, spec, deployment = parse_environment(env_body())
    assert deployment is not None
    return build_event(
        event_type=EventType(event_type),
        environment=environment,
        spec=spec,
        deployment=deployment,
        created_at=NOW,
    )


# ---------------------------------------------------------------- choose: a table

NOT_PROD = {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}
NO_ENV = {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}
TEAM_A = {"matchLabels": {"team": "a"}}

# case: (webhooks, labels, readable, chosen, undecided)
CHOICES: dict[str, tuple[list[WebhookView], dict[str, str] | None, bool, set[str], set[str]]] = {
    "own namespace's webhook": ([hook("local")], {}, True, {"local"}, set()),
    "disabled webhook": ([hook("off", enabled=False)], {}, True, set(), set()),
    "another event type": ([hook("starts", events=["DEPLOYMENT_STARTED"])], {}, True, set(), set()),
    "cluster webhook, no selector": ([hook("all", cluster=True)], None, False, {"all"}, set()),
    "empty selector selects all": (
        [hook("all", cluster=True, namespaceSelector={})],
        None,
        False,
        {"all"},
        set(),
    ),
    "matchLabels match": (
        [hook("a", cluster=True, namespaceSelector=TEAM_A)],
        {"team": "a"},
        True,
        {"a"},
        set(),
    ),
    "matchLabels miss": (
        [hook("a", cluster=True, namespaceSelector=TEAM_A)],
        {"team": "b"},
        True,
        set(),
        set(),
    ),
    "NotIn excludes": (
        [hook("np", cluster=True, namespaceSelector=NOT_PROD)],
        {"env": "prod"},
        True,
        set(),
        set(),
    ),
    "NotIn takes others": ([hook("np", cluster=True, namespaceSelector=NOT_PROD)], {}, True, {"np"}, set()),
    # The bug: an unreadable namespace matched as {} made NotIn and DoesNotExist take it.
    "NotIn, unreadable": ([hook("np", cluster=True, namespaceSelector=NOT_PROD)], None, False, set(), {"np"}),
    "DoesNotExist, unreadable": (
        [hook("ne", cluster=True, namespaceSelector=NO_ENV)],
        None,
        False,
        set(),
        {"ne"},
    ),
    "NotIn, namespace gone": (
        [hook("np", cluster=True, namespaceSelector=NOT_PROD)],
        None,
        True,
        set(),
        set(),
    ),
    "unreadable, filtered out anyway": (
        [hook("np", cluster=True, namespaceSelector=NOT_PROD, events=["DEPLOYMENT_STARTED"])],
        None,
        False,
        set(),
        set(),
    ),
    "unreadable leaves the others decided": (
        [hook("local"), hook("all", cluster=True), hook("np", cluster=True, namespaceSelector=NOT_PROD)],
        None,
        False,
        {"local", "all"},
        {"np"},
    ),
}


@pytest.mark.parametrize("case", list(CHOICES))
def test_choose(case: str) -> None:
    views, labels, readable, chosen, undecided = CHOICES[case]
    choice = choose(
        [v for v in views if not v.cluster],
        [v for v in views if v.cluster],
        event(),
        labels=labels,
        readable=readable,
    )
    assert {v.ref.name for v in choice.chosen} == chosen
    assert {v.ref.name for v in choice.undecided} == undecided


# ---------------------------------------------------------------- namespace labels


class Reads:
    """A namespace reader answering from a script: labels, None (404) or an exception."""

    def __init__(self, *answers: dict[str, str] | Exception | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, _namespace: str) -> dict[str, str] | None:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_failed_namespace_read_is_never_kept() -> None:
    reads, clock = Reads(PermissionError("403 Forbidden"), TimeoutError(), {"env": "prod"}), Clock()
    labels = NamespaceLabels(reads, ttl=30, clock=clock)
    with pytest.raises(NamespaceUnreadable, match="namespace shop: 403 Forbidden"):
        await labels.get(NS)
    with pytest.raises(NamespaceUnreadable, match="namespace shop: TimeoutError"):
        await labels.get(NS)  # read again at once, not answered from a kept failure
    assert await labels.get(NS) == {"env": "prod"}
    assert reads.calls == 3


async def test_labels_are_kept_for_the_ttl_and_an_absent_namespace_is_not() -> None:
    reads, clock = Reads(None, {"env": "dev"}, {"env": "prod"}), Clock()
    labels = NamespaceLabels(reads, ttl=30, clock=clock)
    assert await labels.get(NS) is None
    assert await labels.get(NS) == {"env": "dev"}  # an absent namespace is asked again
    clock.now = 30
    assert await labels.get(NS) == {"env": "dev"}
    clock.now = 31
    assert await labels.get(NS) == {"env": "prod"}
    assert reads.calls == 3


async def test_labels_kept_are_bounded() -> None:
    reads = Reads({"n": "1"}, {"n": "2"}, {"n": "3"})
    labels = NamespaceLabels(reads, ttl=30, clock=Clock(), limit=2)
    for name in ("a", "b", "c"):
        await labels.get(name)
    assert await labels.get("c") == {"n": "3"}
    assert reads.calls == 3
    reads.answers.append({"n": "again"})
    assert await labels.get("a") == {"n": "again"}  # the oldest was let go


# ---------------------------------------------------------------- ledgers and retries


def test_ledgers_merge_what_the_object_says_with_what_was_remembered() -> None:
    ledgers = Ledgers(limit=2)
    persisted = NotifiedLedger(deployments={"d-1": (EventType.DEPLOYMENT_STARTED,)})
    assert ledgers.merged("u1", persisted) == persisted
    ledgers.remember("u1", NotifiedLedger(deployments={"d-2": (EventType.DEPLOYMENT_STARTED,)}))
    assert list(ledgers.merged("u1", persisted).deployments) == ["d-1", "d-2"]
    ledgers.remember("u2", NotifiedLedger())
    ledgers.remember("u3", NotifiedLedger())
    assert ledgers.get("u1") is None  # bounded: the oldest goes


async def test_retries_back_off_keep_the_newest_version_and_stop_when_done() -> None:
    handled: list[Mapping[str, Any]] = []
    done = asyncio.Event()

    async def handle(body: Mapping[str, Any]) -> None:
        handled.append(body)
        done.set()

    retries = Retries(handle, delays=(0.01, 0.02, 5.0))
    assert retries.schedule("u1", {"v": 1}) == 0.01
    assert retries.schedule("u1", {"v": 2}) == 0.02  # a second failure waits longer, newest body
    await asyncio.wait_for(done.wait(), timeout=5)
    assert handled == [{"v": 2}]
    assert "u1" in retries  # the handling itself ends it with done() or schedule()
    assert retries.schedule("u1", {"v": 3}) == 5.0
    assert retries.schedule("u1", {"v": 4}) == 5.0  # the last delay repeats
    retries.done("u1")
    assert "u1" not in retries
    assert len(retries) == 0
    await retries.close()


# ---------------------------------------------------------------- the flow with fakes


class FakeCluster:
    def __init__(self) -> None:
        self.uids: set[str] = set()
        self.labels: dict[str, str] | Exception | None = {}
        self.reading: asyncio.Event | None = None  # set: a read waits for it

    async def list_uids(self, plural: str, namespace: str | None) -> set[str]:
        return set(self.uids) if plural == "webhooks" else set()

    async def read_namespace_labels(self, name: str) -> dict[str, str] | None:
        if self.reading is not None:
            await self.reading.wait()
        if isinstance(self.labels, Exception):
            raise self.labels
        return self.labels


class FakeDispatcher:
    def __init__(self) -> None:
        self.queued: list[tuple[str, str]] = []  # (webhook, event type)
        self.posted: list[tuple[str, str, str, str]] = []
        self.forgotten: list[ObjectRef] = []
        self.fail_submits = 0
        self.holds: list[asyncio.Event] = []  # per submit, in order: stored once set
        self.tasks: set[asyncio.Task[None]] = set()
        self.full: set[str] = set()  # webhooks at their backlog bound
        self.verified: list[bool] = []  # each submit's verify flag

    def now(self) -> datetime.datetime:
        return NOW

    def observe(self, view: WebhookView, *, status: Any = None) -> None:
        pass

    async def forget(self, *, cluster: bool, ref: ObjectRef) -> None:
        self.forgotten.append(ref)

    def submit(
        self, deliveries: Iterable[tuple[WebhookView, DeploymentEvent]], *, verify: bool = False
    ) -> Submission:
        if self.fail_submits:
            self.fail_submits -= 1
            raise RuntimeError("dictionary changed size during iteration")
        self.verified.append(verify)
        deferred: dict[str, WebhookView] = {}
        for view, notification in deliveries:
            if view.ref.name in self.full:
                deferred[view.ref.name] = view
            else:
                self.queued.append((view.ref.name, notification.event_type.value))
        stored: Awaitable[None] = self.holds.pop(0).wait() if self.holds else asyncio.sleep(0)
        return Submission(deferred=tuple(deferred.values()), stored=stored)

    def spawn(self, coro: Awaitable[None], *, name: str) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def post(self, view: WebhookView, type_: str, reason: str, message: str) -> None:
        self.posted.append((view.ref.name, type_, reason, message))


class FakeLedgerQueue:
    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.stored: list[NotifiedLedger] = []

    def enqueue(self, uid: str, namespace: str, name: str, stored: NotifiedLedger) -> None:
        self.enqueued.append(f"{namespace}/{name}")
        self.stored.append(stored)


class Harness:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.dispatcher = FakeDispatcher()
        self.ledger = FakeLedgerQueue()
        self.announced: list[str] = []
        self.flow = Flow(
            settings=Settings(),
            index=WebhookIndex(),
            cluster=self.cluster,
            dispatcher=self.dispatcher,
            ledger_writer=self.ledger,
            ledgers=Ledgers(),
            metrics=Metrics(),
            announce=lambda _body, reason, _message: self.announced.append(reason),
            clock=Clock(),
            retry_delays=(0.01,),
        )
        self.flow.index.expect(set())  # no webhooks existed at startup: the gate is open

    def add(self, view: WebhookView) -> None:
        self.flow.webhook_seen(view, status=None)

    async def settle(self) -> None:
        """Until no retry is due and the spawned ledger writes ran."""
        for _ in range(500):
            if not len(self.flow.retries) and not self.dispatcher.tasks:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the flow did not settle")


async def test_an_event_nobody_takes_writes_nothing_and_is_not_derived_again() -> None:
    h = Harness()
    h.add(hook("starts-only", events=["DEPLOYMENT_STARTED"]))
    await h.flow.environment(env_body("QUEUED"))
    await h.settle()
    assert h.dispatcher.queued == [("starts-only", "DEPLOYMENT_STARTED")]
    assert h.ledger.enqueued == [f"{NS}/web"]
    assert h.announced == ["DeploymentStarted"]
    # The outcome goes to no webhook: no ledger write, no Event on the Environment...
    await h.flow.environment(env_body("DEPLOYED"))
    await h.settle()
    assert h.ledger.enqueued == [f"{NS}/web"]
    assert h.announced == ["DeploymentStarted"]
    # ...and the process remembers it, so the next watch event derives nothing.
    ledger = h.flow.ledgers.get("env-uid")
    assert ledger is not None
    assert ledger.deployments["d-1"] == (EventType.DEPLOYMENT_STARTED, EventType.DEPLOYMENT_SUCCESSFUL)
    await h.flow.environment(env_body("DEPLOYED"))
    assert h.dispatcher.queued == [("starts-only", "DEPLOYMENT_STARTED")]


async def test_the_echo_of_a_handled_version_is_not_read_again(caplog: pytest.LogCaptureFixture) -> None:
    """Herald's ledger write comes back as a watch event with the same deployment: it is known
    handled from the deployment alone (here the spec is unreadable and goes unread)."""
    h = Harness()
    h.add(hook("local"))
    await h.flow.environment(env_body("DEPLOYED"))
    await h.settle()
    queued = list(h.dispatcher.queued)
    echo = {**env_body("DEPLOYED", ledger='{"deployments":{"d-1":["DEPLOYMENT_STARTED"]}}'), "spec": "x"}
    with caplog.at_level(logging.WARNING, logger="herald"):
        await h.flow.environment(echo)
        assert h.dispatcher.queued == queued
        assert "skipped" not in caplog.text
        await h.flow.environment({**echo, "status": {"deployment": {"id": "d-2", "currentStatus": "QUEUED"}}})
    assert "Environment shop/web skipped: spec" in caplog.text  # a new deployment is read whole
    assert h.dispatcher.queued == queued


async def test_watched_versions_are_handled_in_order_each_in_its_own_task_echoes_in_none() -> None:
    """What Herald's watch hands on: a version in a task (one waiting holds up no other), the
    versions of one Environment in the order they came, the ledger's echo in no task at all."""
    h = Harness()
    h.add(hook("local"))
    h.flow.environment_seen("ADDED", env_body("QUEUED"))
    h.flow.environment_seen("MODIFIED", env_body("DEPLOYED"))  # seen before the first is handled
    assert h.dispatcher.queued == []  # nothing handled inside the watch's loop
    for _ in range(100):
        if len(h.dispatcher.queued) == 2:
            break
        await asyncio.sleep(0.01)
    assert h.dispatcher.queued == [("local", "DEPLOYMENT_STARTED"), ("local", "DEPLOYMENT_SUCCESSFUL")]
    assert len(h.dispatcher.verified) == 2  # each version its own handling, the first first
    await h.settle()
    echo = env_body(
        "DEPLOYED", ledger='{"deployments":{"d-1":["DEPLOYMENT_STARTED","DEPLOYMENT_SUCCESSFUL"]}}'
    )
    before = set(asyncio.all_tasks())
    h.flow.environment_seen("MODIFIED", echo)
    assert set(asyncio.all_tasks()) == before  # settled already: no task
    await h.flow.close()


async def test_a_deleted_environment_is_not_retried_and_close_ends_the_handling() -> None:
    h = Harness()
    h.add(hook("all", cluster=True, namespaceSelector=TEAM_A))
    h.cluster.labels = PermissionError("403 Forbidden")  # undecided: retried
    h.flow.environment_seen("ADDED", env_body("QUEUED"))
    for _ in range(100):
        if "env-uid" in h.flow.retries:
            break
        await asyncio.sleep(0.01)
    assert "env-uid" in h.flow.retries
    h.flow.environment_seen("DELETED", env_body("QUEUED"))
    assert "env-uid" not in h.flow.retries
    h.cluster.reading = asyncio.Event()  # the next handling waits on the namespace's labels
    h.flow.environment_seen("ADDED", env_body("QUEUED", deployment_id="d-2"))
    await asyncio.wait_for(h.flow.close(), timeout=5)  # cancelled, not waited for
    assert h.dispatcher.queued == []


async def test_a_ledger_write_names_only_events_whose_deliveries_are_stored() -> None:
    """STARTED is queued but not stored when SUCCESSFUL is stored: the write for SUCCESSFUL must
    not name STARTED, or a crash then would lose it (neither pending nor derived again)."""
    h = Harness()
    h.add(hook("local"))
    started_stored = asyncio.Event()
    h.dispatcher.holds = [started_stored]
    await h.flow.environment(env_body("QUEUED"))
    await h.flow.environment(env_body("DEPLOYED"))
    for _ in range(100):
        if h.ledger.stored:
            break
        await asyncio.sleep(0.01)
    assert [ledger.deployments for ledger in h.ledger.stored] == [{"d-1": (EventType.DEPLOYMENT_SUCCESSFUL,)}]
    started_stored.set()
    await h.settle()
    assert h.ledger.stored[-1].deployments == {"d-1": (EventType.DEPLOYMENT_STARTED,)}


async def test_a_restart_derives_once_what_no_webhook_took() -> None:
    """The ledger written names only what was queued; a new process derives the rest once."""
    h = Harness()
    written = json.dumps({"deployments": {"d-1": ["DEPLOYMENT_STARTED"]}})
    await h.flow.environment(env_body("DEPLOYED", ledger=written))
    await h.flow.environment(env_body("DEPLOYED", ledger=written))
    assert h.dispatcher.queued == []
    assert h.ledger.enqueued == []
    ledger = h.flow.ledgers.get("env-uid")
    assert ledger is not None
    assert EventType.DEPLOYMENT_SUCCESSFUL in ledger.deployments["d-1"]


async def test_any_error_leaves_the_environment_to_be_handled_again() -> None:
    h = Harness()
    h.add(hook("local"))
    h.dispatcher.fail_submits = 2
    await h.flow.environment(env_body("DEPLOYED"))
    assert "env-uid" in h.flow.retries
    await h.settle()
    assert h.dispatcher.queued == [("local", "DEPLOYMENT_STARTED"), ("local", "DEPLOYMENT_SUCCESSFUL")]
    assert h.ledger.enqueued == [f"{NS}/web"]


async def test_a_webhook_at_its_backlog_bound_holds_the_event_until_it_takes_it() -> None:
    """Back-pressure, not a drop: nothing is recorded while one webhook refuses, the Environment is
    handled again, and the retry (looked up first: the other webhook has it) completes it."""
    h = Harness()
    h.add(hook("calm"))
    h.add(hook("busy"))
    h.dispatcher.full = {"busy"}
    await h.flow.environment(env_body("QUEUED"))
    assert h.dispatcher.queued == [("calm", "DEPLOYMENT_STARTED")]
    assert "env-uid" in h.flow.retries
    assert h.ledger.enqueued == []
    h.dispatcher.full = set()
    await h.settle()
    assert ("busy", "DEPLOYMENT_STARTED") in h.dispatcher.queued
    assert h.ledger.enqueued == [f"{NS}/web"]
    assert h.dispatcher.verified[-1] is True


def created_at(body: dict[str, Any], when: datetime.datetime) -> dict[str, Any]:
    body["metadata"]["creationTimestamp"] = when.isoformat().replace("+00:00", "Z")
    return body


@pytest.mark.parametrize(
    ("age", "verify"),
    [(datetime.timedelta(hours=-1), True), (datetime.timedelta(hours=1), False)],
    ids=["predates-herald", "created-since"],
)
async def test_deliveries_are_looked_up_only_where_an_earlier_herald_may_have_stored_them(
    age: datetime.timedelta, verify: bool
) -> None:
    h = Harness()
    h.add(hook("local"))
    when = datetime.datetime.now(datetime.UTC) + age
    await h.flow.environment(created_at(env_body("QUEUED"), when))
    await h.settle()
    await h.flow.environment(created_at(env_body("DEPLOYED"), when))
    # The first sight of an Environment older than this process is looked up; a later event of
    # it, remembered by this process, never is.
    assert h.dispatcher.verified == [verify, False]


async def test_a_newer_version_handled_ends_the_retry() -> None:
    h = Harness()
    h.add(hook("local"))
    h.dispatcher.fail_submits = 1
    h.flow.retries = Retries(h.flow.environment, delays=(60.0,))
    await h.flow.environment(env_body("QUEUED"))
    assert "env-uid" in h.flow.retries
    await h.flow.environment(env_body("DEPLOYED"))
    assert "env-uid" not in h.flow.retries
    assert h.dispatcher.queued == [("local", "DEPLOYMENT_STARTED"), ("local", "DEPLOYMENT_SUCCESSFUL")]


async def test_a_bad_environment_is_skipped_not_retried() -> None:
    h = Harness()
    body = env_body()
    body["spec"]["type"] = "QA"
    await h.flow.environment(body)
    assert "env-uid" not in h.flow.retries


async def test_an_unreadable_namespace_holds_only_what_needs_it_and_warns_once() -> None:
    h = Harness()
    h.add(hook("local"))
    h.add(hook("not-prod", cluster=True, namespaceSelector=NOT_PROD))
    h.cluster.labels = ConnectionError("503 Service Unavailable")
    h.flow.retries = Retries(h.flow.environment, delays=(0.05,))
    await h.flow.environment(env_body("DEPLOYED"))
    assert set(h.dispatcher.queued) == {("local", "DEPLOYMENT_STARTED"), ("local", "DEPLOYMENT_SUCCESSFUL")}
    assert h.ledger.enqueued == []  # nothing recorded while a webhook is undecided
    assert [(w, t, r) for w, t, r, _ in h.dispatcher.posted] == [
        ("not-prod", "Warning", "NamespaceUnreadable")
    ]
    assert f"namespace {NS}" in h.dispatcher.posted[0][3]
    for _ in range(3):  # retried, still failing: no more Events
        retried = len(h.dispatcher.queued)
        await asyncio.wait_for(_until(lambda: len(h.dispatcher.queued) > retried), timeout=5)
    assert len(h.dispatcher.posted) == 1
    h.cluster.labels = {"env": "staging"}
    await h.settle()
    assert ("not-prod", "DEPLOYMENT_SUCCESSFUL") in h.dispatcher.queued
    assert h.ledger.enqueued == [f"{NS}/web"]


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


async def test_webhooks_changing_while_labels_are_read_lose_nothing() -> None:
    h = Harness()
    h.add(hook("local"))
    h.add(hook("team-a", cluster=True, namespaceSelector=TEAM_A))
    h.add(hook("leaving", cluster=True))
    h.cluster.labels = {"team": "a"}
    h.cluster.reading = asyncio.Event()
    handling = asyncio.create_task(h.flow.environment(env_body("QUEUED")))
    await asyncio.sleep(0.01)  # the handler now waits on the namespace read
    for n in range(20):
        h.add(hook(f"late-{n}", cluster=True))
    await h.flow.webhook_deleted(
        cluster=True, ref=ObjectRef(namespace=None, name="leaving"), uid="uid-leaving"
    )
    h.cluster.reading.set()
    await handling
    assert "env-uid" not in h.flow.retries
    queued = {name for name, _ in h.dispatcher.queued}
    assert queued == {"local", "team-a"} | {f"late-{n}" for n in range(20)}  # not the deleted one


async def test_a_listing_forgets_the_webhooks_deleted_unseen_and_only_those() -> None:
    h = Harness()
    h.add(hook("kept"))
    h.add(hook("deleted-in-gap"))
    h.add(hook("renamed", uid="old-uid"))
    h.cluster.uids = {"uid-kept", "uid-arriving"}
    listing = asyncio.Event()
    original = h.cluster.list_uids

    async def slow_list(plural: str, namespace: str | None) -> set[str]:
        await listing.wait()
        return await original(plural, namespace)

    h.cluster.list_uids = slow_list  # type: ignore[method-assign]
    reconciling = asyncio.create_task(h.flow.reconcile_once())
    await asyncio.sleep(0.01)
    h.add(hook("arriving-during-the-listing", uid="uid-late"))  # not in the listing: too new to judge
    h.add(hook("renamed", uid="new-uid"))  # re-created under the same name meanwhile
    listing.set()
    await reconciling
    assert sorted(v.ref.name for v in h.flow.index.namespaced(NS)) == [
        "arriving-during-the-listing",
        "kept",
        "renamed",
    ]
    assert [r.name for r in h.dispatcher.forgotten] == ["deleted-in-gap"]


async def test_a_failed_listing_forgets_nothing() -> None:
    h = Harness()
    h.add(hook("kept"))

    async def refuse(plural: str, namespace: str | None) -> set[str]:
        raise ConnectionError("API server unreachable")

    h.cluster.list_uids = refuse  # type: ignore[method-assign]
    await h.flow.reconcile_once()
    assert [v.ref.name for v in h.flow.index.namespaced(NS)] == ["kept"]


class RefusingSink:
    def __init__(self, status: int | None) -> None:
        self.status = status

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None:
        if self.status is not None:
            error = ApiNotFound if self.status == 404 else ApiServerError
            raise error(f"answered {self.status}", status=self.status)


@pytest.mark.parametrize(
    ("answer", "indexed", "told"),
    [
        (404, True, True),  # deleted: the flow hears of it at once
        (404, False, False),  # not indexed (already forgotten): nothing to tell
        (500, True, False),  # the API failed: the dispatcher retries, the webhook stays
        (None, True, False),  # written
    ],
)
async def test_a_status_patch_answering_404_reports_the_webhook_gone(
    answer: int | None, indexed: bool, told: bool
) -> None:
    index = WebhookIndex()
    if indexed:
        index.put(hook("w", uid="u-w"))
    gone: list[tuple[bool, ObjectRef, str]] = []
    sink = GoneWebhooks(RefusingSink(answer), index=index, gone=lambda *args: gone.append(args))
    if answer is None:
        await sink.patch_status(plural="webhooks", namespace=NS, name="w", status=dict)
    else:  # raised on unchanged: the dispatcher handles it as before
        with pytest.raises(ApiError, match=str(answer)):
            await sink.patch_status(plural="webhooks", namespace=NS, name="w", status=dict)
    assert gone == ([(False, ObjectRef(namespace=NS, name="w"), "u-w")] if told else [])
