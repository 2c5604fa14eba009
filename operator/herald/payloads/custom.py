"""The CUSTOM body: the webhook's own Jinja2 template, rendered in Jinja2's sandbox.

The template sees the STANDARD envelope (``standard.document``): its top-level keys as variables
(``created_at``, ``event_type``, ``payload_type``, ``payload_id``, ``payload``) and the whole
envelope as ``standard``, so ``{{ standard | tojson }}`` sends the STANDARD body. Undefined names
are errors (``StrictUndefined``), never silently empty; the optional keys of ``payload``
(``message``, ``triggered_by``, ``started_at``, ``finished_at``) are absent when unset, so read
them as ``payload.message | default("")``. Nothing is escaped for you: embed text in JSON with
``tojson``.

``template_error`` is what the operator runs when the webhook is applied: it compiles the
template and renders it on the built-in samples (``payloads.sample``, full and bare) for every
event the webhook takes, so a mistake shows on ``Ready`` with its line, not at send time. A body
is bounded (``MAX_BODY_BYTES``: rendering stops past it), and one whose content type is JSON must
parse as JSON. Compiled templates and verdicts are cached by source, bounded.
"""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from herald.models import DeploymentEvent, EventType, Template, WebhookSpec
from herald.payloads import sample, standard
from herald.payloads.base import Rendered, RenderError

__all__ = ["MAX_BODY_BYTES", "check_response", "render", "template_error"]

MAX_BODY_BYTES = standard.MAX_BODY_BYTES
_TEMPLATE_NAME = "<template>"
_JSON_TYPE = re.compile(r"^application/([A-Za-z0-9.-]+\+)?json\b", re.IGNORECASE)
_MAX_REASON_CHARS = 300


_ENVIRONMENT = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    auto_reload=False,
    cache_size=0,  # compiled templates are cached below, by source
)


def _dumps(value: Any, **options: Any) -> str:
    """``tojson``'s encoder: an undefined value fails with its own message (which name is missing),
    not as an object JSON cannot encode."""

    def default(obj: Any) -> Any:
        if isinstance(obj, jinja2.Undefined):
            obj._fail_with_undefined_error()
        raise TypeError(f"{type(obj).__name__} values cannot be written as JSON")

    return json.dumps(value, default=default, **options)


_ENVIRONMENT.policies["json.dumps_function"] = _dumps


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(source)


def _line(exc: BaseException) -> int | None:
    """The template line an error arose on: Jinja rewrites tracebacks to point into the template."""
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    lines = [
        line
        for frame, line in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == _TEMPLATE_NAME
    ]
    return lines[-1] if lines else None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    where = _line(exc)
    prefix = f"line {where}: " if where is not None else ""
    return f"{prefix}{text}"[:_MAX_REASON_CHARS]


def _context(event: DeploymentEvent) -> dict[str, Any]:
    envelope = standard.document(event)
    return {**envelope, "standard": envelope}


def _bounded(pieces: Iterator[str]) -> Iterator[bytes]:
    """The rendered pieces as UTF-8, stopping the template once the body outgrows the bound."""
    size = 0
    for piece in pieces:
        part = piece.encode("utf-8", "replace")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise RenderError(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        yield part


def _render(template: Template, event: DeploymentEvent) -> bytes:
    try:
        compiled = _compiled(template.body)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(_reason(exc)) from None
    try:
        pieces = list(_bounded(compiled.generate(_context(event))))
    except RenderError:
        raise
    except Exception as exc:  # any error the template's own code raises: undefined, type, security
        raise RenderError(_reason(exc)) from None
    body = b"".join(pieces)
    if _JSON_TYPE.match(template.content_type):
        try:
            json.loads(body)
        except ValueError as exc:
            raise RenderError(
                f"the body is not JSON, as contentType says: {exc}"[:_MAX_REASON_CHARS]
            ) from None
    return body


def render(event: DeploymentEvent, spec: WebhookSpec) -> Rendered:
    """Body, content type and extra headers; ``RenderError`` when the template fails on ``event``."""
    if spec.template is None:
        raise RenderError("the webhook has no template")
    template = spec.template
    return Rendered(
        body=_render(template, event),
        content_type=template.content_type,
        headers=tuple(template.headers.items()),
    )


@functools.lru_cache(maxsize=256)
def _verdict(body: str, content_type: str, events: tuple[EventType, ...]) -> str | None:
    template = Template(body=body, content_type=content_type)
    try:
        _compiled(body)
    except jinja2.TemplateSyntaxError as exc:
        return f"spec.template.body: {_reason(exc)}"
    for event_type in (*events, EventType.WEBHOOK_TEST):
        for name, environment in (("full", sample.FULL), ("bare", sample.BARE)):
            try:
                _render(template, sample.sample_event(event_type, environment))
            except RenderError as exc:
                return f"spec.template.body: {exc} (on the {name} sample {event_type.value} event)"
    return None


def template_error(spec: WebhookSpec) -> str | None:
    """Why a CUSTOM webhook's template cannot be used, for ``Ready``; None when it can (or no template)."""
    if spec.template is None:
        return None
    return _verdict(spec.template.body, spec.template.content_type, spec.events)


def check_response(status: int, body: bytes) -> str | None:
    """A CUSTOM receiver's 2xx is a success: Herald cannot know its dialect."""
    return None
