"""cli.py: flags, their HERALD_* equivalents, and clear errors for bad values."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import typing
from pathlib import Path

import pydantic
import pytest
import yaml

from herald.cli import (
    READY_WINDOW,
    Readiness,
    _parser,
    configure_logging,
    json_formatter,
    main,
    parse_settings,
)
from herald.settings import DEFAULT_RETRY_SCHEDULE, MAX_PENDING_LIMIT, Settings, SourceName
from herald.sources import SOURCE_NAMES


def settings_for(argv: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    return parse_settings(_parser().parse_args(["run", *argv]), env)


def test_defaults() -> None:
    s = settings_for([], {})
    assert s.namespaces is None
    assert s.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert s.scanning is True
    assert s.sources is None  # each source whose API the cluster serves, found at startup


@pytest.mark.parametrize(
    ("argv", "env", "sources"),
    [
        ([], {"HERALD_SOURCES": "deployments, flux"}, ("deployments", "flux")),
        (["--sources", "argocd,flux"], {"HERALD_SOURCES": "flux"}, ("argocd", "flux")),
        ([], {"HERALD_SOURCES": "none"}, ()),
    ],
)
def test_sources(argv: list[str], env: dict[str, str], sources: tuple[str, ...]) -> None:
    assert settings_for(argv, env).sources == sources


def test_env_equivalents() -> None:
    s = settings_for(
        [],
        {
            "HERALD_NAMESPACE": "a, b",
            "HERALD_SCANNING": "off",
            "HERALD_RETRY_SCHEDULE": "1,2.5",
            "HERALD_RETRY_JITTER": "0.1",
            "HERALD_DELIVERY_TIMEOUT": "3",
            "HERALD_EGRESS_ALLOW": "127.0.0.0/8,::1/128",
            "HERALD_EGRESS_DENY_PRIVATE": "true",
            "HERALD_REQUIRE_HTTPS": "yes",
        },
    )
    assert s.namespaces == ("a", "b")
    assert s.scanning is False
    assert s.retry_schedule == (1.0, 2.5)
    assert s.retry_jitter == 0.1
    assert s.delivery_timeout == 3
    assert s.egress_allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.egress_deny_private is True
    assert s.require_https is True


def test_flags_win_over_env() -> None:
    s = settings_for(["--namespace", "x", "-n", "y", "--retry-jitter", "0.3"], {"HERALD_RETRY_JITTER": "0.1"})
    assert s.namespaces == ("x", "y")
    assert s.retry_jitter == 0.3
    assert settings_for(["--all-namespaces"], {}).namespaces is None


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {"HERALD_RETRY_JITTER": "2"}, "HERALD_RETRY_JITTER"),
        ([], {"HERALD_EGRESS_ALLOW": "not-a-cidr"}, "--egress-allow"),
        ([], {"HERALD_SCANNING": "maybe"}, "HERALD_SCANNING"),
        (["--delivery-timeout", "-1"], {}, "--delivery-timeout"),
        (["--namespace", "a", "--all-namespaces"], {}, "exclude each other"),
        (["--namespace", "team-*"], {}, "patterns are not supported"),
        ([], {"HERALD_NAMESPACE": "ok,Not_A_Name"}, "'Not_A_Name' is not a namespace name"),
        (
            [],
            {"HERALD_SOURCES": "deployments,jenkins"},
            "HERALD_SOURCES: Input should be 'deployments', 'argocd' or 'flux'",
        ),
        (["--sources", ","], {}, "--sources"),
        (
            [],
            {"HERALD_MAX_PENDING": "1000001"},
            "HERALD_MAX_PENDING: Input should be less than or equal to 1000000",
        ),
        (
            ["--max-pending", "2000000"],
            {},
            "--max-pending / HERALD_MAX_PENDING: Input should be less than or equal to 1000000",
        ),
        ([], {"HERALD_RETAIN": "0"}, "HERALD_RETAIN: Input should be greater than or equal to 1"),
        (["--retain-for", "-1"], {}, "--retain-for / HERALD_RETAIN_FOR: Input should be greater than 0"),
        ([], {"HERALD_DELIVERY_NAMESPACE": "Herald"}, "'Herald' is not a namespace name"),
        (["--max-pending", "0"], {}, "--max-pending"),
    ],
)
def test_bad_values_name_the_culprit(argv: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        settings_for(argv, env)


def test_max_pending_takes_up_to_its_bound() -> None:
    assert settings_for(["--max-pending", str(MAX_PENDING_LIMIT)], {}).max_pending == MAX_PENDING_LIMIT


def test_main_reports_bad_values_as_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--log-level", "LOUD"])
    assert exc.value.code == 2
    assert "HERALD_LOG_LEVEL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("level", "kopf_info", "kopf_warning"),
    [("INFO", False, True), ("DEBUG", True, True), ("WARNING", False, True), ("ERROR", False, False)],
)
def test_kopf_says_each_handler_succeeded_only_when_debugging(
    level: str, kopf_info: bool, kopf_warning: bool
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging(level, "plain")
        objects = logging.getLogger("kopf.objects")
        assert objects.isEnabledFor(logging.INFO) is kopf_info
        assert objects.isEnabledFor(logging.WARNING) is kopf_warning  # as the level asks
        assert objects.isEnabledFor(logging.ERROR)
        assert logging.getLogger("herald").isEnabledFor(logging.INFO) is (level in ("DEBUG", "INFO"))
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name in ("aiohttp.access", "kopf.objects"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_json_log_lines_carry_delivery_fields() -> None:
    record = logging.LogRecord("herald", logging.INFO, __file__, 1, "delivered %s", ("x",), None)
    record.webhook = "ns/w"
    record.payload_id = "p-1"
    record.settings = object()  # kopf's bookkeeping, not a field
    line = json.loads(json_formatter().format(record))
    assert line["message"] == "delivered x"
    assert line["level"] == "INFO"
    assert line["logger"] == "herald"
    assert line["webhook"] == "ns/w"
    assert line["payload_id"] == "p-1"
    assert "time" in line
    assert "settings" not in line


async def test_ready_once_the_api_answers_kopf_watches_and_every_webhook_is_known() -> None:
    known = {"webhooks": False}
    readiness = Readiness(kopf_ready=asyncio.Event(), handling=lambda: known["webhooks"])
    assert not readiness.ready()  # the API server never answered
    readiness.api_ok_at = time.monotonic()
    readiness.kopf_ready.set()
    assert not readiness.ready()  # deployment events still wait for the webhooks to arrive
    known["webhooks"] = True
    assert readiness.ready()
    readiness.api_ok_at = time.monotonic() - READY_WINDOW - 1
    assert not readiness.ready()  # the API server stopped answering
    standby = Readiness(kopf_ready=asyncio.Event(), standby=True, api_ok_at=time.monotonic())
    assert standby.ready()  # waiting for the Lease, nothing of its own to wait for


@pytest.mark.parametrize(
    "values",
    [
        {"retry_jitter": 5},
        {"retry_schedule": (1.0, -2.0)},
        {"max_pending": 0},
        {"health_port": 70000},
        {"watch_timeout": 0},
        {"namespaces": ("Team_A",)},
        {"sources": ("jenkins",)},
        {"no_such_setting": 1},
    ],
)
def test_settings_refuse_bad_values_however_they_are_made(values: dict[str, object]) -> None:
    """Not only from flags: a test, the demo or a bench building Settings gets the same checks."""
    with pytest.raises(pydantic.ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_the_source_names_are_the_sources_table() -> None:
    assert set(typing.get_args(SourceName)) == set(SOURCE_NAMES)


def test_help_gives_each_default_from_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "HERALD_RETRY_JITTER; default 0.2" in text
    assert f"HERALD_MAX_PENDING; default {Settings().max_pending}" in text
    assert f"HERALD_RETAIN; default {Settings().retain}" in text


# ---------------------------------------------------------------- herald render

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def render(argv: list[str], capsys: pytest.CaptureFixture[bytes]) -> tuple[int, list[str], bytes, str]:
    """``herald render``'s exit code, header lines, body and stderr."""
    code = main(["render", *argv])
    out = capsys.readouterr()
    head, _, body = out.out.partition(b"\n\n")
    return code, head.decode().splitlines(), body.removesuffix(b"\n"), out.err.decode()


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def webhook(**spec: object) -> dict[str, object]:
    base = {"url": "https://receiver.example/hooks", "events": ["DEPLOYMENT_FAILURE"]}
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "w"},
        "spec": base | spec,
    }


def test_render_prints_the_request_of_an_example(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    code, head, body, err = render(
        [
            "-f",
            str(EXAMPLES / "20-webhook-standard.yaml"),
            "--environment",
            str(EXAMPLES / "40-environment.yaml"),
            "--event",
            "DEPLOYMENT_SUCCESSFUL",
        ],
        capsysbinary,
    )
    assert (code, err) == (0, "")
    assert head[0] == "POST http://receiver.demo.svc:8080/hooks"
    assert "Content-Type: application/json" in head
    assert "Qovery-Secret: <the value of Secret herald-demo key secret>" in head
    assert any(
        line.startswith("webhook-signature: <signed with Secret herald-demo key signingKey>") for line in head
    )
    document = json.loads(body)
    assert document["event_type"] == "DEPLOYMENT_SUCCESSFUL"
    assert document["payload"]["project"]["name"] == "shop-frontend"  # the given Environment, not the sample
    assert document["payload"]["current_status"] == "DEPLOYED"


def test_render_defaults_to_the_sample_and_the_first_event(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = write(tmp_path, "w.yaml", webhook(kind="CLOUDEVENTS", cloudEvents={"mode": "binary"}))
    code, head, body, _ = render(["-f", path], capsysbinary)
    assert code == 0
    assert "ce-type: dev.herald.deployment.failed" in head
    assert json.loads(body)["payload"]["project"]["name"] == "sample-shop"


def test_render_shows_a_custom_template_and_its_headers(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    template = {"body": "{{ event_type }} in {{ payload.environment.name }}", "contentType": "text/plain"}
    path = write(
        tmp_path, "w.yaml", webhook(kind="CUSTOM", template={**template, "headers": {"X-Team": "a"}})
    )
    code, head, body, _ = render(["-f", path, "--event", "DEPLOYMENT_STARTED"], capsysbinary)
    assert code == 0
    assert "Content-Type: text/plain" in head
    assert "X-Team: a" in head
    assert body == b"DEPLOYMENT_STARTED in sample-production"


@pytest.mark.parametrize(
    ("files", "argv", "needle"),
    [
        ({}, ["-f", "{tmp}/missing.yaml"], "missing.yaml: No such file"),
        ({"w.yaml": "a: [b"}, ["-f", "{tmp}/w.yaml"], "not YAML"),
        (
            {"w.yaml": {"kind": "Secret"}},
            ["-f", "{tmp}/w.yaml"],
            "expected one Webhook or ClusterWebhook, found 0",
        ),
        ({"w.yaml": webhook(kind="TELEGRAM")}, ["-f", "{tmp}/w.yaml"], "spec.kind"),
        (
            {"w.yaml": webhook(kind="CUSTOM", template={"body": "{{ nope }}"})},
            ["-f", "{tmp}/w.yaml"],
            "spec.template.body: line 1: 'nope' is undefined",
        ),
        (
            {
                "w.yaml": webhook(kind="STANDARD"),
                "e.yaml": {"kind": "Environment", "metadata": {"name": "e"}},
            },
            ["-f", "{tmp}/w.yaml", "--environment", "{tmp}/e.yaml"],
            "spec: must be an object",
        ),
        (
            {
                "w.yaml": webhook(
                    kind="CUSTOM", template={"body": '{"m": {{ payload.message | default("") | tojson }}}'}
                ),
                "e.yaml": {
                    "kind": "Environment",
                    "metadata": {"name": "e"},
                    "spec": {"organization": {"name": "o"}, "project": {"name": "p"}, "type": "QA"},
                },
            },
            ["-f", "{tmp}/w.yaml", "--environment", "{tmp}/e.yaml"],
            "spec.type",
        ),
    ],
)
def test_render_errors_exit_2_with_a_message(
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    files: dict[str, object],
    argv: list[str],
    needle: str,
) -> None:
    for name, doc in files.items():
        write(tmp_path, name, doc)
    code, _, body, err = render([a.format(tmp=tmp_path) for a in argv], capsysbinary)
    assert code == 2
    assert body == b""
    assert err.startswith("herald render: ")
    assert needle in err


def test_render_refuses_an_unknown_event(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["render", "-f", str(EXAMPLES / "20-webhook-standard.yaml"), "--event", "DEPLOYMENT_EXPLODED"])
    assert exc.value.code == 2
    assert b"DEPLOYMENT_EXPLODED" in capsysbinary.readouterr().err
