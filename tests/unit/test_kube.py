"""kube.py: the error tree, the one retry policy, re-login, Secrets, the calls on Herald's own kinds
(pages, watch streams), and TLS from kopf's login."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import trustme

from herald.handlers import _api_connection
from herald.kube import (
    DEFAULT_BACKOFF,
    NO_RETRY,
    TRANSIENT,
    UNTIL_STORED,
    ApiClientError,
    ApiConflict,
    ApiConnection,
    ApiError,
    ApiForbidden,
    ApiGone,
    ApiInvalid,
    ApiNotFound,
    ApiServerError,
    ApiTooManyRequests,
    ApiUnauthorized,
    ApiUnreachable,
    Backoff,
    KubeClient,
    Page,
    error_for,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
Answer = httpx.Response | Exception


def status_body(code: int, reason: str, **details: Any) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    return {**body, "message": f"the {reason.lower()} message", **({"details": details} if details else {})}


def answer(code: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(code, json=body if body is not None else {}, headers=headers)


# ---------------------------------------------------------------- the error tree


@pytest.mark.parametrize(
    ("response", "cls", "reason", "retry_after"),
    [
        (answer(401, status_body(401, "Unauthorized")), ApiUnauthorized, "Unauthorized", None),
        (answer(403, status_body(403, "Forbidden")), ApiForbidden, "Forbidden", None),
        (answer(404, status_body(404, "NotFound")), ApiNotFound, "NotFound", None),
        (answer(409, status_body(409, "Conflict")), ApiConflict, "Conflict", None),
        (answer(410, status_body(410, "Expired")), ApiGone, "Expired", None),
        (answer(413, {"not": "a Status"}), ApiClientError, "", None),
        (answer(422, status_body(422, "Invalid")), ApiInvalid, "Invalid", None),
        (
            answer(429, status_body(429, "TooManyRequests"), **{"Retry-After": "3"}),
            ApiTooManyRequests,
            "TooManyRequests",
            3.0,
        ),
        (
            answer(429, status_body(429, "TooManyRequests", retryAfterSeconds=7)),
            ApiTooManyRequests,
            "TooManyRequests",
            7.0,
        ),
        (answer(429, {}, **{"Retry-After": "Thu, 01 Jan 2026 12:00:09 GMT"}), ApiTooManyRequests, "", 9.0),
        (answer(500, status_body(500, "InternalError")), ApiServerError, "InternalError", None),
        (httpx.Response(503, text="upstream connect error"), ApiServerError, "", None),
        (answer(504, status_body(504, "Timeout"), **{"Retry-After": "2"}), ApiServerError, "Timeout", 2.0),
    ],
    ids=lambda v: str(v.status_code) if isinstance(v, httpx.Response) else None,
)
def test_each_answer_becomes_its_typed_error(
    response: httpx.Response, cls: type[ApiError], reason: str, retry_after: float | None
) -> None:
    error = error_for(response, now=NOW)
    assert type(error) is cls
    assert (error.status, error.reason, error.retry_after) == (response.status_code, reason, retry_after)
    assert str(response.status_code) in str(error)


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (ApiUnreachable, True),
        (ApiTooManyRequests, True),
        (ApiServerError, True),
        (ApiUnauthorized, False),
        (ApiForbidden, False),
        (ApiNotFound, False),
        (ApiConflict, False),
        (ApiGone, False),
        (ApiInvalid, False),
        (ApiClientError, False),
    ],
)
def test_only_what_a_later_try_may_cure_is_transient(cls: type[ApiError], transient: bool) -> None:
    assert issubclass(cls, TRANSIENT) is transient


# ---------------------------------------------------------------- the retry policy


@pytest.mark.parametrize(
    ("backoff", "retry", "retry_after", "expected"),
    [
        (DEFAULT_BACKOFF, 1, None, 0.5),
        (DEFAULT_BACKOFF, 5, None, 10.0),
        (DEFAULT_BACKOFF, 6, None, None),  # gives up
        (DEFAULT_BACKOFF, 1, 4.0, 4.0),  # Retry-After longer than the schedule wins
        (DEFAULT_BACKOFF, 5, 4.0, 10.0),  # ... and a shorter one does not shorten it
        (DEFAULT_BACKOFF, 1, 3600.0, 60.0),  # capped
        (DEFAULT_BACKOFF, 6, 1.0, None),  # Retry-After does not extend the policy
        (NO_RETRY, 1, None, None),
        (NO_RETRY, 1, 2.0, None),
        (UNTIL_STORED, 6, None, 30.0),
        (UNTIL_STORED, 1000, None, 30.0),  # forever, at the last delay
        (Backoff((), forever=True), 1, None, None),  # nothing to repeat
    ],
)
def test_backoff_schedule(
    backoff: Backoff, retry: int, retry_after: float | None, expected: float | None
) -> None:
    assert backoff.delay(retry, retry_after) == expected


class Api:
    """A MockTransport API server answering from a script; records requests, sleeps and logins."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.logins = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.answers.pop(0) if self.answers else answer(200, {})
        if isinstance(reply, Exception):
            raise reply
        return reply

    def client(self) -> KubeClient:
        async def login() -> ApiConnection:
            self.logins += 1
            return ApiConnection(
                server="https://api.example", headers={"Authorization": f"Bearer t{self.logins}"}
            )

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return KubeClient(login, transport=httpx.MockTransport(self.handle), sleep=sleep)


async def read_labels(kube: KubeClient) -> Any:
    """A Secret's labels: a read with the default retries."""
    secret = await kube.read_secret("team-a", "hook-secret")
    return None if secret is None else secret.labels


async def read_namespace_labels(kube: KubeClient) -> Any:
    return await kube.read_namespace_labels("team-a")


async def patch_status(kube: KubeClient) -> Any:
    return await kube.patch_status(plural="webhooks", namespace="ns", name="hook", status=lambda: {"a": 1})


async def read_lease(kube: KubeClient) -> Any:
    return await kube.read_lease("herald-system", "herald")


async def create_lease(kube: KubeClient) -> Any:
    return await kube.write_lease("herald-system", "herald", {"spec": {}}, create=True)


async def create_delivery(kube: KubeClient) -> Any:
    return await kube.create("deliveries", "ns", {"metadata": {"name": "d"}})


async def get_delivery(kube: KubeClient) -> Any:
    return await kube.get("deliveries", "ns", "d")


async def patch_delivery(kube: KubeClient) -> Any:
    return await kube.patch("deliveries", "ns", "d", {"status": {"outcome": "Failed"}})


async def delete_delivery(kube: KubeClient) -> Any:
    return await kube.delete("deliveries", "ns", "d")


async def first_page(kube: KubeClient) -> Any:
    async for page in kube.pages("deliveries", "ns"):
        return list(page)
    return None


OK = answer(200, {"metadata": {"labels": {"team": "a"}}})
Call = Callable[[KubeClient], Any]


@pytest.mark.parametrize(
    ("call", "answers", "result", "error", "sleeps"),
    [
        pytest.param(read_labels, [OK], {"team": "a"}, None, [], id="ok"),
        # Namespace labels: one try, the flow handles the Environment again on its own schedule.
        pytest.param(read_namespace_labels, [answer(503), OK], None, ApiServerError, [], id="labels-once"),
        pytest.param(read_labels, [answer(503), OK], {"team": "a"}, None, [0.5], id="503-then-ok"),
        pytest.param(
            read_labels,
            [answer(429, {}, **{"Retry-After": "7"}), OK],
            {"team": "a"},
            None,
            [7.0],
            id="429-waits",
        ),
        pytest.param(
            read_labels, [httpx.ConnectError("refused"), OK], {"team": "a"}, None, [0.5], id="refused"
        ),
        pytest.param(read_labels, [httpx.ReadTimeout("slow"), OK], {"team": "a"}, None, [0.5], id="timeout"),
        pytest.param(read_labels, [httpx.PoolTimeout("full"), OK], {"team": "a"}, None, [0.5], id="pool"),
        pytest.param(
            read_labels, [answer(500)] * 6, None, ApiServerError, [0.5, 1.0, 2.0, 5.0, 10.0], id="gives-up"
        ),
        pytest.param(read_labels, [answer(404)], None, None, [], id="404-is-none"),
        pytest.param(read_labels, [answer(403)], None, ApiForbidden, [], id="403-not-retried"),
        pytest.param(read_labels, [answer(400)], None, ApiClientError, [], id="400-not-retried"),
        pytest.param(patch_status, [answer(404)], None, ApiNotFound, [], id="patch-404"),
        pytest.param(patch_status, [answer(422)], None, ApiInvalid, [], id="patch-422"),
        pytest.param(
            patch_status,
            [answer(503)] * 8 + [answer(200)],
            None,
            None,
            [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 30.0, 30.0],
            id="status-until-stored",
        ),
        pytest.param(read_lease, [answer(503)], None, ApiServerError, [], id="lease-no-retry"),
        pytest.param(read_lease, [answer(404)], None, None, [], id="lease-absent"),
        pytest.param(create_lease, [answer(409)], False, None, [], id="lease-lost-race"),
        pytest.param(create_lease, [answer(201, {})], True, None, [], id="lease-created"),
        pytest.param(create_delivery, [answer(201, {"a": 1})], None, None, [], id="create"),
        pytest.param(
            create_delivery,
            [answer(409, status_body(409, "AlreadyExists"))],
            None,
            ApiConflict,
            [],
            id="exists",
        ),
        pytest.param(create_delivery, [answer(503), answer(201, {})], None, None, [0.5], id="create-retried"),
        pytest.param(get_delivery, [answer(200, {"a": 1})], {"a": 1}, None, [], id="get"),
        pytest.param(get_delivery, [answer(404)], None, None, [], id="get-absent"),
        pytest.param(patch_delivery, [answer(200, {"a": 1})], None, None, [], id="patch"),
        pytest.param(patch_delivery, [answer(404)], None, ApiNotFound, [], id="patch-gone"),
        pytest.param(delete_delivery, [answer(200, {})], True, None, [], id="delete"),
        pytest.param(delete_delivery, [answer(404)], False, None, [], id="delete-gone"),
        pytest.param(first_page, [answer(503), answer(200, {"items": [{}]})], [{}], None, [0.5], id="page"),
        pytest.param(
            first_page, [answer(410, status_body(410, "Expired"))], None, ApiGone, [], id="page-410"
        ),
    ],
)
async def test_retry_decisions(
    call: Call, answers: list[Answer], result: Any, error: type[ApiError] | None, sleeps: list[float]
) -> None:
    api = Api(*answers)
    kube = api.client()
    try:
        if error is None:
            assert await call(kube) == result
        else:
            with pytest.raises(error) as raised:
                await call(kube)
            assert isinstance(raised.value.__cause__, httpx.HTTPError)  # raised from httpx's error
    finally:
        await kube.aclose()
    assert api.sleeps == sleeps
    assert len(api.requests) == len(sleeps) + 1


async def test_each_try_of_a_status_write_sends_the_newest_status() -> None:
    api = Api(answer(503), answer(503), answer(200))
    kube = api.client()
    versions = iter(range(1, 10))
    await kube.patch_status(plural="webhooks", namespace="ns", name="h", status=lambda: {"v": next(versions)})
    await kube.aclose()
    assert [json.loads(r.content) for r in api.requests] == [{"status": {"v": n}} for n in (1, 2, 3)]


async def test_unreachable_is_raised_from_the_transport_error() -> None:
    api = Api(*[httpx.ConnectError("refused")] * 6)
    kube = api.client()
    with pytest.raises(ApiUnreachable) as raised:
        await read_labels(kube)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert raised.value.status is None


async def test_a_401_logs_in_again_once() -> None:
    api = Api(answer(401), OK)
    kube = api.client()
    assert await read_labels(kube) == {"team": "a"}
    assert api.logins == 2
    assert [r.headers["Authorization"] for r in api.requests] == ["Bearer t1", "Bearer t2"]
    api.answers = [answer(401), answer(401)]
    with pytest.raises(ApiUnauthorized):
        await read_labels(kube)
    await kube.aclose()


async def test_concurrent_first_calls_log_in_once() -> None:
    logins = 0

    async def login() -> ApiConnection:
        nonlocal logins
        logins += 1
        await asyncio.sleep(0)  # a login that waits (a token file, an exec plugin) lets others in
        return ApiConnection(server="https://api.example")

    kube = KubeClient(login, transport=httpx.MockTransport(lambda _: OK))
    labels = await asyncio.gather(*(read_labels(kube) for _ in range(5)))
    await kube.aclose()
    assert labels == [{"team": "a"}] * 5
    assert logins == 1


async def test_a_login_failure_is_an_api_error() -> None:
    async def login() -> ApiConnection:
        raise kopf.LoginError("no credentials")

    kube = KubeClient(login, transport=httpx.MockTransport(lambda _: answer(200)))
    with pytest.raises(ApiUnauthorized, match="no credentials"):
        await read_labels(kube)


async def test_requests_carry_the_right_path_method_and_patch_type() -> None:
    api = Api()
    kube = api.client()
    await patch_status(kube)
    await kube.patch_annotations(plural="environments", namespace="ns", name="web", annotations={"k": "v"})
    await kube.probe(None)
    await kube.aclose()
    patch, annotate, probe = api.requests
    assert (patch.method, patch.url.path) == (
        "PATCH",
        "/apis/herald.dev/v1alpha1/namespaces/ns/webhooks/hook/status",
    )
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch.content) == {"status": {"a": 1}}
    assert json.loads(annotate.content) == {"metadata": {"annotations": {"k": "v"}}}
    assert (probe.method, probe.url.path, probe.url.params["limit"]) == (
        "GET",
        "/apis/herald.dev/v1alpha1/webhooks",
        "1",
    )


async def test_read_secret_decodes_the_data_and_keeps_the_labels() -> None:
    data = {"ok": base64.b64encode(b"value\n").decode(), "binary": base64.b64encode(b"\xff\xfe").decode()}
    body = {"metadata": {"labels": {"herald.dev/webhook-secret": "true"}}, "data": {**data, "garbled": "%%"}}
    api = Api(answer(200, body), answer(404))
    kube = api.client()
    secret = await kube.read_secret("ns", "creds")
    assert secret is not None
    assert dict(secret.data) == {"ok": "value\n"}  # what cannot be read is left out
    assert dict(secret.labels) == {"herald.dev/webhook-secret": "true"}
    assert await kube.read_secret("ns", "absent") is None
    assert api.requests[0].url.path == "/api/v1/namespaces/ns/secrets/creds"
    await kube.aclose()


async def test_list_uids_follows_continue_tokens() -> None:
    pages = [
        answer(200, {"metadata": {"continue": "c1"}, "items": [{"metadata": {"uid": "a"}}]}),
        answer(200, {"metadata": {}, "items": [{"metadata": {"uid": "b"}}, {"metadata": {}}]}),
    ]
    api = Api(*pages)
    kube = api.client()
    assert await kube.list_uids("clusterwebhooks", None) == {"a", "b"}
    assert api.requests[1].url.params["continue"] == "c1"
    assert "as=PartialObjectMetadataList" in api.requests[0].headers["Accept"]  # uids need no spec
    await kube.aclose()


async def test_calls_on_herald_kinds_carry_the_right_path_method_and_body() -> None:
    api = Api()
    kube = api.client()
    await kube.create("deliveries", "ns", {"metadata": {"name": "d"}})
    await kube.get("deliveries", "ns", "d")
    await kube.patch("deliveries", "ns", "d", {"metadata": {"annotations": {"k": "v"}}})
    await kube.delete("deliveries", "ns", "d")
    await kube.aclose()
    create, get, patch, delete = api.requests
    one = "/apis/herald.dev/v1alpha1/namespaces/ns/deliveries/d"
    assert (create.method, create.url.path) == ("POST", "/apis/herald.dev/v1alpha1/namespaces/ns/deliveries")
    assert json.loads(create.content) == {"metadata": {"name": "d"}}
    assert [(r.method, r.url.path) for r in (get, patch, delete)] == [
        ("GET", one),
        ("PATCH", one),  # the object itself, not /status
        ("DELETE", one),
    ]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch.content) == {"metadata": {"annotations": {"k": "v"}}}


def listing(*names: str, token: str = "", version: str = "7") -> httpx.Response:
    meta = {"resourceVersion": version, **({"continue": token} if token else {})}
    return answer(200, {"metadata": meta, "items": [{"metadata": {"name": n}} for n in names]})


async def test_pages_follow_continue_tokens_with_the_selector_and_the_metadata_accept_header() -> None:
    api = Api(listing("a", "b", token="t1"), listing("c", token="t2"), listing())
    kube = api.client()
    pages = [page async for page in kube.pages("deliveries", "ns", label_selector="x=1", metadata_only=True)]
    await kube.aclose()
    assert [[item["metadata"]["name"] for item in page] for page in pages] == [["a", "b"], ["c"], []]
    assert all(isinstance(page, Page) and page.resource_version == "7" for page in pages)
    assert [dict(r.url.params) for r in api.requests] == [
        {"limit": "500", "labelSelector": "x=1"},
        {"limit": "500", "labelSelector": "x=1", "continue": "t1"},
        {"limit": "500", "labelSelector": "x=1", "continue": "t2"},
    ]
    assert {r.headers["Accept"] for r in api.requests} == {
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
    }


async def test_cached_pages_ask_the_watch_cache_first_and_continue_without_a_version() -> None:
    """The API server refuses a resourceVersion beside a continue token."""
    api = Api(listing("a", token="t1"), listing("b"))
    kube = api.client()
    pages = [page async for page in kube.pages("deliveries", "ns", label_selector="x=1", cached=True)]
    await kube.aclose()
    assert [[item["metadata"]["name"] for item in page] for page in pages] == [["a"], ["b"]]
    assert [dict(r.url.params) for r in api.requests] == [
        {"limit": "500", "labelSelector": "x=1", "resourceVersion": "0"},
        {"limit": "500", "labelSelector": "x=1", "continue": "t1"},
    ]


async def test_pages_without_options_ask_for_whole_objects_cluster_wide() -> None:
    api = Api(listing("a", version=""))
    kube = api.client()
    pages = [page async for page in kube.pages("deliveries", None)]
    await kube.aclose()
    assert [page.resource_version for page in pages] == [None]
    (request,) = api.requests
    assert (request.url.path, dict(request.url.params)) == (
        "/apis/herald.dev/v1alpha1/deliveries",
        {"limit": "500"},
    )
    assert "PartialObjectMetadata" not in request.headers.get("Accept", "")


def event(type_: str, name: str = "", **obj: Any) -> bytes:
    body = {"metadata": {"name": name, "resourceVersion": "9"}, **obj} if name else obj
    return json.dumps({"type": type_, "object": body}).encode() + b"\n"


def stream(*chunks: bytes | Exception) -> httpx.Response:
    """A 200 whose body arrives chunk by chunk; an exception breaks the connection there."""

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for chunk in chunks:
                if isinstance(chunk, Exception):
                    raise chunk
                yield chunk

    return httpx.Response(200, stream=Body())


async def watched(kube: KubeClient, **options: Any) -> list[tuple[str, str]]:
    """(type, name) of each event a watch of deliveries in "ns" yields until its stream ends."""
    options.setdefault("resource_version", "5")
    return [(t, o["metadata"].get("name", "")) async for t, o in kube.watch("deliveries", "ns", **options)]


async def test_a_watch_yields_each_event_until_the_server_ends_the_stream() -> None:
    bookmark = event("BOOKMARK", metadata={"resourceVersion": "12"})
    api = Api(
        stream(
            event("ADDED", "a") + event("MODIFIED", "a")[:20], event("MODIFIED", "a")[20:] + b"\n", bookmark
        ),
        stream(event("DELETED", "a")),
    )
    kube = api.client()
    assert await watched(kube, label_selector="x!=1", timeout_seconds=60) == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),  # split across two chunks, and followed by a blank line
        ("BOOKMARK", ""),
    ]
    assert await watched(kube, resource_version=None, metadata_only=True) == [("DELETED", "a")]
    await kube.aclose()
    first, second = api.requests
    assert (first.method, first.url.path) == ("GET", "/apis/herald.dev/v1alpha1/namespaces/ns/deliveries")
    assert dict(first.url.params) == {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "60",
        "resourceVersion": "5",
        "labelSelector": "x!=1",
    }
    assert first.extensions["timeout"]["read"] > 60  # the server ends it first
    assert "PartialObjectMetadata" not in first.headers.get("Accept", "")
    assert "resourceVersion" not in second.url.params
    assert (
        second.headers["Accept"]
        == "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
    )


@pytest.mark.parametrize(
    ("reply", "before", "error"),
    [
        pytest.param(
            stream(event("ADDED", "a"), event("ERROR", **status_body(410, "Expired"))),
            ["ADDED"],
            ApiGone,
            id="error-410",
        ),
        pytest.param(
            stream(event("ERROR", **status_body(500, "InternalError"))), [], ApiServerError, id="error-500"
        ),
        pytest.param(answer(410, status_body(410, "Gone")), [], ApiGone, id="answer-410"),
        pytest.param(answer(403, status_body(403, "Forbidden")), [], ApiForbidden, id="answer-403"),
        pytest.param(answer(503), [], ApiServerError, id="answer-503"),
        pytest.param(
            stream(event("ADDED", "a"), httpx.ReadError("reset")), ["ADDED"], ApiUnreachable, id="reset"
        ),
        pytest.param(stream(event("ADDED", "a")[:15]), [], ApiUnreachable, id="cut-off-mid-event"),
        pytest.param(stream(event("SURPRISE", "a")), [], ApiError, id="unknown-type"),
        pytest.param(stream(b'{"type": "ADDED", "object": null}\n'), [], ApiError, id="no-object"),
    ],
)
async def test_a_watch_raises_typed_errors(
    reply: httpx.Response, before: list[str], error: type[ApiError]
) -> None:
    api = Api(reply)
    kube = api.client()
    seen: list[str] = []

    async def watch() -> None:
        async for type_, _ in kube.watch("deliveries", "ns", resource_version="5"):
            seen.append(type_)

    with pytest.raises(error) as raised:
        await watch()
    await kube.aclose()
    assert type(raised.value) is error
    assert seen == before
    assert api.sleeps == []  # opening is tried once: the caller's loop watches again


async def test_a_watch_logs_in_again_once_on_401() -> None:
    api = Api(answer(401), stream(event("ADDED", "a")))
    kube = api.client()
    assert await watched(kube) == [("ADDED", "a")]
    await kube.aclose()
    assert api.logins == 2


# ---------------------------------------------------------------- TLS from kopf's login


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str = "api.example") -> None:
    """A TLS handshake in memory: raises ssl.SSLError when the client does not trust the server."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, end in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def server_context(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.example").configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def pem(ca: trustme.CA) -> bytes:
    return ca.cert_pem.bytes()


@pytest.mark.parametrize(
    "ca_field",
    [
        "base64 text (kubeconfig certificate-authority-data)",
        "PEM text",
        "PEM bytes",
        "file (certificate-authority)",
    ],
)
def test_the_kubeconfig_ca_is_trusted_however_kopf_hands_it_over(
    ca: trustme.CA, ca_field: str, tmp_path: Path
) -> None:
    if ca_field.startswith("base64"):
        fields: dict[str, Any] = {"ca_data": base64.b64encode(pem(ca)).decode()}
    elif ca_field == "PEM text":
        fields = {"ca_data": pem(ca).decode()}
    elif ca_field == "PEM bytes":
        fields = {"ca_data": pem(ca)}
    else:
        (tmp_path / "ca.crt").write_bytes(pem(ca))
        fields = {"ca_path": str(tmp_path / "ca.crt")}
    conn = _api_connection(kopf.ConnectionInfo(server="https://api.example:6443", token="tok", **fields))
    assert conn.tls is not None
    assert conn.headers == {"Authorization": "Bearer tok"}
    handshake(conn.tls, server_context(ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(conn.tls, server_context(trustme.CA()))  # another CA's server is refused


def test_kubeconfig_client_certificates_as_base64_are_presented(ca: trustme.CA) -> None:
    users = trustme.CA()
    user = users.issue_cert("herald")
    info = kopf.ConnectionInfo(
        server="https://api.example:6443",
        ca_data=base64.b64encode(pem(ca)).decode(),
        certificate_data=base64.b64encode(user.cert_chain_pems[0].bytes()).decode(),
        private_key_data=base64.b64encode(user.private_key_pem.bytes()).decode(),
    )
    conn = _api_connection(info)
    assert conn.tls is not None
    handshake(conn.tls, server_context(ca, client_ca=users))
    anonymous = _api_connection(kopf.ConnectionInfo(server=info.server, ca_data=info.ca_data))
    assert anonymous.tls is not None
    with pytest.raises(ssl.SSLError):
        handshake(anonymous.tls, server_context(ca, client_ca=users))
