"""herald.delivery: one attempt over real loopback sockets, against receivers the tests start."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from herald import delivery
from herald.delivery import (
    DeliveryClient,
    EgressDenied,
    OutgoingRequest,
    PolicedResolver,
    Unresolvable,
)
from herald.retry import AttemptResult, Verdict
from herald.settings import Settings

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SETTINGS = Settings(egress_allow=LOOPBACK, delivery_timeout=0.5, connect_timeout=0.5, max_response_bytes=1024)
USER_AGENT = "herald/test"
BODY = b'{"event_type": "DEPLOYMENT_SUCCESSFUL", "payload_id": "p-1"}'
SECRET = "qovery-secret-value-42"
CURRENT_KEY = "whsec_" + base64.b64encode(b"c" * 32).decode()
PREVIOUS_KEY = "whsec_" + base64.b64encode(b"p" * 32).decode()
SLACK_PATH = "/services/T0000/B0000/XXXXSLACKTOKENXXXX"

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------- receivers and resolvers


@dataclasses.dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]


class Receiver:
    """A real HTTP(S) server on a loopback address, answering as the test says."""

    def __init__(
        self, answer: Answer, *, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ):
        self.answer = answer
        self.seen: list[Seen] = []
        self.release = asyncio.Event()  # set to end hanging answers
        self._host, self._port, self._tls = host, port, tls
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("not started")
        return int(self._runner.addresses[0][1])

    def url(self, path: str = "/hook", *, host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self._host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else ("?", 0)
        self.seen.append(
            Seen(path=request.path_qs, headers=dict(request.headers), body=await request.read(), peer=peer)
        )
        return await self.answer(request)


def status(code: int, **headers: str) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers=headers, text="ok")

    return answer


class FakeResolver:
    """Answers from a table; a list of lists gives successive answers (DNS rebinding)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(answer: Answer, **kwargs: Any) -> Receiver:
        receiver = Receiver(answer, **kwargs)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., DeliveryClient]]:
    made: list[DeliveryClient] = []

    def make(settings: Settings = SETTINGS, resolver: Any = None) -> DeliveryClient:
        client = DeliveryClient(settings, resolver=resolver, user_agent=USER_AGENT)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def request(url: str, **changes: Any) -> OutgoingRequest:
    fields: dict[str, Any] = {
        "url": url,
        "body": BODY,
        "content_type": "application/json",
        "payload_id": "p-1",
    }
    return OutgoingRequest(**(fields | changes))


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, deterministically."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *hostnames: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hostnames).configure_cert(context)
    return context


# ---------------------------------------------------------------- outcomes by status


async def test_success_sends_the_expected_headers(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    now = datetime.datetime.now(datetime.UTC)
    result = await clients().send(
        request(receiver.url(), secret=SECRET, signing_keys=(CURRENT_KEY, PREVIOUS_KEY)), now=now
    )
    assert result.verdict is Verdict.SUCCESS
    assert (result.http_status, result.error, result.reason) == (200, None, None)
    assert result.response_excerpt == b"ok"
    [seen] = receiver.seen
    assert seen.body == BODY
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Accept-Encoding"] == "identity"  # the excerpt is raw bytes, never a zip bomb
    assert seen.headers["Qovery-Secret"] == SECRET
    assert seen.headers["Qovery-Signature"] == SECRET
    assert seen.headers["webhook-id"] == "p-1"
    assert seen.headers["webhook-timestamp"] == str(int(now.timestamp()))
    for key in (CURRENT_KEY, PREVIOUS_KEY):
        Webhook(key).verify(seen.body, seen.headers)


async def test_optional_headers_are_absent_without_secrets(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(204))
    result = await clients().send(request(receiver.url()))
    assert result.verdict is Verdict.SUCCESS
    headers = {name.lower() for name in receiver.seen[0].headers}
    assert not headers & {"qovery-secret", "qovery-signature", "webhook-id", "webhook-signature"}


async def test_each_attempt_is_signed_with_its_own_timestamp(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(503))
    client = clients()
    first = datetime.datetime.now(datetime.UTC)
    for now in (first, first + datetime.timedelta(seconds=7)):
        await client.send(request(receiver.url(), signing_keys=(CURRENT_KEY,)), now=now)
    stamps = [seen.headers["webhook-timestamp"] for seen in receiver.seen]
    assert stamps == [str(int(first.timestamp())), str(int(first.timestamp()) + 7)]
    assert {seen.headers["webhook-id"] for seen in receiver.seen} == {"p-1"}
    for seen in receiver.seen:
        Webhook(CURRENT_KEY).verify(seen.body, seen.headers)


@pytest.mark.parametrize(
    ("answer", "verdict", "reason", "error", "retry_after"),
    [
        pytest.param(status(503), Verdict.RETRY, "HTTPError", "HTTP 503", None, id="503"),
        pytest.param(status(500), Verdict.RETRY, "HTTPError", "HTTP 500", None, id="500"),
        pytest.param(status(408), Verdict.RETRY, "HTTPError", "HTTP 408", None, id="408"),
        pytest.param(
            status(429, **{"Retry-After": "2"}), Verdict.RETRY, "HTTPError", "HTTP 429", 2.0, id="429"
        ),
        pytest.param(
            status(429, **{"Retry-After": "soon"}), Verdict.RETRY, "HTTPError", "HTTP 429", None, id="garbage"
        ),
        pytest.param(
            status(404, **{"Retry-After": "2"}), Verdict.PERMANENT, "HTTPError", "HTTP 404", None, id="404"
        ),
        pytest.param(status(400), Verdict.PERMANENT, "HTTPError", "HTTP 400", None, id="400"),
        pytest.param(status(410), Verdict.GONE, "Gone", "HTTP 410", None, id="410"),
        pytest.param(
            status(301, Location="http://127.0.0.1:1/elsewhere"),
            Verdict.PERMANENT,
            "Redirect",
            "Redirect not followed: HTTP 301",
            None,
            id="301",
        ),
        pytest.param(
            status(307, Location="/other"),
            Verdict.PERMANENT,
            "Redirect",
            "Redirect not followed: HTTP 307",
            None,
            id="307",
        ),
    ],
)
async def test_status_outcomes(
    receivers: Any,
    clients: Any,
    answer: Answer,
    verdict: Verdict,
    reason: str,
    error: str,
    retry_after: float | None,
) -> None:
    receiver = await receivers(answer)
    result = await clients().send(request(receiver.url()))
    assert (result.verdict, result.reason, result.error) == (verdict, reason, error)
    assert result.retry_after == retry_after
    assert len(receiver.seen) == 1  # a redirect is not followed


async def test_retry_after_as_an_http_date(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(503, **{"Retry-After": "Thu, 01 Jan 2026 12:01:30 GMT"}))
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    result = await clients().send(request(receiver.url()), now=now)
    assert (result.verdict, result.retry_after) == (Verdict.RETRY, 90.0)


# ---------------------------------------------------------------- network failures


async def test_hanging_receiver_times_out_within_the_deadline(receivers: Any, clients: Any) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await receiver.release.wait()
        return web.Response(status=200)

    receiver = await receivers(hang)
    result = await clients().send(request(receiver.url()))
    assert (result.verdict, result.reason, result.http_status) == (Verdict.RETRY, "Timeout", None)
    assert result.error is not None
    assert result.error.startswith(("ReadTimeout", "Timeout"))
    assert 400 <= result.duration_ms < 2000


async def test_slow_drip_body_is_cut_at_the_deadline_and_the_status_stands(
    receivers: Any, clients: Any
) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        while not receiver.release.is_set():  # one byte every 0.1 s: each read is quick, the whole is not
            await response.write(b".")
            await asyncio.sleep(0.1)
        return response

    receiver = await receivers(drip)
    result = await clients().send(request(receiver.url()))
    assert (result.verdict, result.http_status, result.error) == (Verdict.SUCCESS, 200, None)
    assert result.duration_ms < 2000
    assert set(result.response_excerpt) <= {ord(".")}


async def test_refused_connection_is_retried(clients: Any, refused_port: int) -> None:
    result = await clients().send(request(f"http://127.0.0.1:{refused_port}/hook"))
    assert (result.verdict, result.reason, result.http_status) == (Verdict.RETRY, "ConnectError", None)
    assert result.error == "ConnectError: Connection refused"


async def test_unresolvable_host_is_a_connect_error(clients: Any) -> None:
    class Failing:
        async def resolve(self, host: str, port: int) -> list[str]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    result = await clients(resolver=Failing()).send(request("http://nowhere.test/hook"))
    assert (result.verdict, result.reason) == (Verdict.RETRY, "ConnectError")
    assert result.error == "ConnectError: cannot resolve nowhere.test: Name or service not known"


async def test_empty_answer_from_the_resolver_is_a_connect_error(clients: Any) -> None:
    result = await clients(resolver=FakeResolver({"void.test": [[]]})).send(request("http://void.test/hook"))
    assert (result.verdict, result.error) == (
        Verdict.RETRY,
        "ConnectError: cannot resolve void.test: no address",
    )


async def test_huge_response_is_read_only_up_to_the_bound(receivers: Any, clients: Any) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=b"x" * 5_000_000)

    receiver = await receivers(huge)
    client = clients()
    result = await client.send(request(receiver.url()))
    assert result.verdict is Verdict.SUCCESS
    assert result.response_excerpt == b"x" * SETTINGS.max_response_bytes
    # The half-read connection was dropped, not pooled: the next attempt works on a new one.
    again = await client.send(request(receiver.url()))
    assert again.verdict is Verdict.SUCCESS
    assert receiver.seen[0].peer != receiver.seen[1].peer


async def test_connections_are_pooled(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    client = clients()
    for _ in range(3):
        assert (await client.send(request(receiver.url()))).verdict is Verdict.SUCCESS
    assert len({seen.peer for seen in receiver.seen}) == 1


# ---------------------------------------------------------------- egress


async def test_loopback_is_denied_without_the_allow_list(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    result = await clients(Settings()).send(request(receiver.url()))
    assert (result.verdict, result.reason, result.http_status) == (Verdict.PERMANENT, "EgressDenied", None)
    assert result.error == "EgressDenied: 127.0.0.1 is a loopback address"
    assert receiver.seen == []


async def test_hostname_resolving_to_loopback_is_denied(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"]]})
    result = await clients(Settings(), resolver).send(request(receiver.url(host="rebind.test")))
    assert (result.verdict, result.reason) == (Verdict.PERMANENT, "EgressDenied")
    assert result.error == "EgressDenied: 127.0.0.1 is a loopback address"
    assert receiver.seen == []
    assert resolver.calls == ["rebind.test"]  # resolved once, inside the connection, and that answer judged


async def test_dns_rebinding_cannot_swap_the_address(receivers: Any, clients: Any) -> None:
    """127.0.0.2 stands in for a public address (allowed); the next answer is loopback (denied)."""
    public = await receivers(status(200), host="127.0.0.2")
    internal = await receivers(status(200), host="127.0.0.1", port=public.port)
    resolver = FakeResolver({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    settings = dataclasses.replace(SETTINGS, egress_allow=(ipaddress.ip_network("127.0.0.2/32"),))
    url = public.url(host="rebind.test")
    first = await clients(settings, resolver).send(request(url))
    second = await clients(settings, resolver).send(request(url))  # a new connection, a new answer
    assert first.verdict is Verdict.SUCCESS
    assert (second.verdict, second.reason) == (Verdict.PERMANENT, "EgressDenied")
    assert len(public.seen) == 1
    assert internal.seen == []


async def test_denied_candidates_are_skipped_for_an_allowed_one(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    resolver = FakeResolver({"multi.test": [["169.254.169.254", "127.0.0.1"]]})
    result = await clients(SETTINGS, resolver).send(request(receiver.url(host="multi.test")))
    assert result.verdict is Verdict.SUCCESS
    assert len(receiver.seen) == 1


async def test_an_unreachable_address_falls_through_to_the_next(receivers: Any, clients: Any) -> None:
    receiver = await receivers(status(200))
    resolver = FakeResolver({"two.test": [["127.0.0.2", "127.0.0.1"]]})  # nothing listens on 127.0.0.2
    result = await clients(SETTINGS, resolver).send(request(receiver.url(host="two.test")))
    assert result.verdict is Verdict.SUCCESS


async def test_every_candidate_denied_names_the_first_reason(clients: Any) -> None:
    resolver = FakeResolver({"meta.test": [["169.254.169.254", "::1"]]})
    result = await clients(Settings(), resolver).send(request("http://meta.test/latest/meta-data"))
    assert result.error == "EgressDenied: 169.254.169.254 is a cloud metadata address"


async def test_the_resolver_hands_over_exactly_the_addresses_it_judged() -> None:
    resolver = FakeResolver({"rebind.test": [["93.184.216.34", "127.0.0.1"], ["127.0.0.1"]]})
    policed = PolicedResolver(Settings(), resolver=resolver)
    first = await policed.resolve("rebind.test", 443)
    assert [(r["host"], r["hostname"], r["port"]) for r in first] == [("93.184.216.34", "rebind.test", 443)]
    with pytest.raises(EgressDenied, match=r"127\.0\.0\.1 is a loopback address"):
        await policed.resolve("rebind.test", 443)  # the second answer (a rebinding) is judged too
    assert resolver.calls == ["rebind.test", "rebind.test"]


async def test_a_name_without_an_address_is_unresolvable() -> None:
    policed = PolicedResolver(Settings(), resolver=FakeResolver({"none.test": [["not-an-address"]]}))
    with pytest.raises(Unresolvable, match=r"cannot resolve none\.test: no address"):
        await policed.resolve("none.test", 443)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("[::ffff:169.254.169.254]", "cloud metadata"),
    ],
)
async def test_ip_literals_are_judged_without_resolving(clients: Any, host: str, reason: str) -> None:
    resolver = FakeResolver({})
    result = await clients(Settings(), resolver).send(request(f"http://{host}:80/hook"))
    assert result.verdict is Verdict.PERMANENT
    assert reason in (result.error or "")
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "settings"),
    [
        pytest.param(
            "http://127.0.0.1:1/hook", dataclasses.replace(SETTINGS, require_https=True), id="https-required"
        ),
        pytest.param("ftp://127.0.0.1:1/hook", SETTINGS, id="ftp"),
        pytest.param("http://[::ffff:127.0.0.1]:1/hook", Settings(), id="mapped-literal"),
    ],
)
async def test_refused_before_any_connection(clients: Any, url: str, settings: Settings) -> None:
    result = await clients(settings).send(request(url))
    assert (result.verdict, result.reason) == (Verdict.PERMANENT, "EgressDenied")


async def test_environment_proxies_are_ignored(
    receivers: Any, clients: Any, refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = await receivers(status(200))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{refused_port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{refused_port}")
    result = await clients().send(request(receiver.url()))
    assert result.verdict is Verdict.SUCCESS


# ---------------------------------------------------------------- TLS


async def test_tls_needs_the_private_ca(receivers: Any, clients: Any, ca: trustme.CA) -> None:
    receiver = await receivers(status(200), tls=server_tls(ca, "localhost"))
    resolver = FakeResolver({"localhost": [["127.0.0.1"]]})
    client = clients(SETTINGS, resolver)
    url = receiver.url(host="localhost", scheme="https")
    without = await client.send(request(url))
    assert (without.verdict, without.reason) == (Verdict.RETRY, "TLSError")
    assert without.error is not None
    assert without.error.startswith("TLSError: certificate verify failed")
    with_ca = await client.send(request(url, ca_pem=ca.cert_pem.bytes().decode()))
    assert (with_ca.verdict, with_ca.http_status) == (Verdict.SUCCESS, 200)
    assert len(receiver.seen) == 1


async def test_tls_verifies_the_url_hostname_not_the_address(
    receivers: Any, clients: Any, ca: trustme.CA
) -> None:
    receiver = await receivers(status(200), tls=server_tls(ca, "localhost"))
    resolver = FakeResolver({"other.test": [["127.0.0.1"]]})
    result = await clients(SETTINGS, resolver).send(
        request(receiver.url(host="other.test", scheme="https"), ca_pem=ca.cert_pem.bytes().decode())
    )
    assert (result.verdict, result.reason) == (Verdict.RETRY, "TLSError")
    assert result.error is not None
    assert "other.test" in result.error  # Hostname mismatch, as the certificate check reports it
    assert receiver.seen == []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (f"http://127.0.0.1:notaport{SLACK_PATH}", "InvalidURL: Invalid port: 'notaport'"),
        ("http:///hook", "InvalidURL: the URL has no host"),
    ],
)
async def test_invalid_url_is_permanent(clients: Any, url: str, error: str) -> None:
    result = await clients().send(request(url))
    assert (result.verdict, result.reason, result.error) == (Verdict.PERMANENT, "InvalidURL", error)


async def test_invalid_ca_bundle(clients: Any) -> None:
    result = await clients().send(request("https://127.0.0.1:1/hook", ca_pem="not a certificate"))
    assert (result.verdict, result.reason) == (Verdict.RETRY, "InvalidCA")


async def test_a_retired_ca_client_finishes_its_attempt(
    receivers: Any, clients: Any, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one CA client, a second CA evicts the first while it is mid-attempt."""
    monkeypatch.setattr(delivery, "CA_CLIENT_CACHE_SIZE", 1)

    async def slow(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await receiver.release.wait()
        return web.Response(status=200)

    receiver = await receivers(slow, tls=server_tls(ca, "localhost"))
    client = clients(SETTINGS, FakeResolver({"localhost": [["127.0.0.1"]]}))
    pem = ca.cert_pem.bytes().decode()
    pending = asyncio.create_task(
        client.send(request(receiver.url("/slow", host="localhost", scheme="https"), ca_pem=pem))
    )
    deadline = asyncio.get_running_loop().time() + 5
    while not receiver.seen and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert receiver.seen, "the slow attempt never arrived"
    other = await client.send(
        request(receiver.url("/fast", host="localhost", scheme="https"), ca_pem=pem + "\n")
    )
    receiver.release.set()
    assert other.verdict is Verdict.SUCCESS
    assert (await pending).verdict is Verdict.SUCCESS


# ---------------------------------------------------------------- secrets stay secret


def assert_clean(result: AttemptResult, *secrets: str) -> None:
    for text in (result.error or "", result.reason or "", repr(result)):
        for secret in secrets:
            assert secret not in text


async def test_secrets_and_url_path_never_appear(clients: Any, refused_port: int, receivers: Any) -> None:
    url = f"http://127.0.0.1:{refused_port}{SLACK_PATH}"
    outgoing = request(url, secret=SECRET, signing_keys=(CURRENT_KEY,))
    for text in (repr(outgoing), str(outgoing)):
        for secret in (SECRET, CURRENT_KEY, SLACK_PATH, "XXXXSLACKTOKENXXXX"):
            assert secret not in text
    assert f"127.0.0.1:{refused_port}" in repr(outgoing)

    refused = await clients().send(outgoing)
    denied = await clients(Settings()).send(outgoing)
    bad_url = await clients().send(request(f"http://127.0.0.1:notaport{SLACK_PATH}", secret=SECRET))
    for result in (refused, denied, bad_url):
        assert result.error is not None
        assert_clean(result, SECRET, CURRENT_KEY, SLACK_PATH, "XXXXSLACKTOKENXXXX")


async def test_no_log_line_names_the_url_path_or_a_secret(
    receivers: Any, clients: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No library under the client logs a request: a Slack URL's path is a credential."""
    receiver = await receivers(status(200))
    with caplog.at_level(logging.DEBUG):
        result = await clients().send(request(receiver.url(SLACK_PATH), secret=SECRET))
    assert result.verdict is Verdict.SUCCESS
    assert "XXXXSLACKTOKENXXXX" not in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("secret", ["line\nbreak-" + SECRET, "caf\u00e9-" + SECRET, SECRET + "\r"])
async def test_secret_unfit_for_a_header_is_refused_unsent(receivers: Any, clients: Any, secret: str) -> None:
    receiver = await receivers(status(200))
    result = await clients().send(request(receiver.url(), secret=secret))
    assert (result.verdict, result.reason) == (Verdict.RETRY, "InvalidSecret")
    assert_clean(result, SECRET)
    assert receiver.seen == []


async def test_naive_now_is_a_programming_error(clients: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await clients().send(request("http://127.0.0.1:1/"), now=datetime.datetime(2026, 1, 1))
