"""The kopf shell of deployment sources: watch Deployments, Argo CD Applications and Flux objects,
find the Environments that name them, and write those Environments' ``status.deployment``.

kopf indices hold a compact copy of every watched object and, per object (or per namespace for a
label selection), the Environments that reference it; kopf runs no handler before every index has
its initial listing, so a restart never judges an Environment from half its Deployments. Each
Environment is decided by the pure ``herald.sources.decide`` under its own lock and patched only
when the result changes. Herald's own Environment handler then notifies from the new status, as
for any other deployment controller.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from herald.kube import API_GROUP, API_VERSION, ApiError, ApiNotFound, ApiUnreachable, KubeClient
from herald.matching import selector_matches
from herald.models import EnvironmentSource, LabelSelector
from herald.settings import SourceName
from herald.sources import (
    SOURCE_NAMES,
    SOURCES,
    Verdict,
    decide,
    disabled,
    invalid,
    status_patch,
    without_condition,
)

__all__ = ["EnvironmentView", "SourceWriter", "read_source", "register_sources", "usable_sources"]

logger = logging.getLogger("herald.sources")

ENVIRONMENTS_INDEX = "herald_source_environments"
_TIMES = ("startedAt", "finishedAt", "lastTransitionTime")

Target = tuple[str, ...]


def _index_id(field: str) -> str:
    return f"herald_source_{field}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EnvironmentView:
    """An Environment with a source, as the index keeps it: where it points and its status."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    field: str
    target: Target
    source_namespace: str
    source_name: str | None  # None: a label selection
    selector: LabelSelector | None
    status: Mapping[str, Any]


def read_source(body: Mapping[str, Any]) -> EnvironmentView | str | None:
    """The Environment's source; a message when it is invalid; None when it has none."""
    meta = body.get("metadata") or {}
    raw = (body.get("spec") or {}).get("source")
    if raw is None:
        return None
    try:
        source = EnvironmentSource.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in err["loc"])
        return f"spec.source{'.' + where if where else ''}: {str(err['msg']).removeprefix('Value error, ')}"
    chosen = source.chosen()
    if chosen is None:
        return None
    field, ref = chosen
    namespace = str(meta.get("namespace"))
    if field == "deployments":
        selector = getattr(ref, "selector", None)
        target_ns, target_name = namespace, None
        target: Target = (field, namespace)
    else:
        selector = None
        target_ns = getattr(ref, "namespace", None) or namespace
        target_name = str(getattr(ref, "name", ""))
        target = (field, target_ns, target_name)
    return EnvironmentView(
        namespace=namespace,
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        generation=meta.get("generation"),
        field=field,
        target=target,
        source_namespace=target_ns,
        source_name=target_name,
        selector=selector,
        status=dict(body.get("status") or {}),
    )


def _target(field: str, body: Mapping[str, Any]) -> Target:
    meta = body.get("metadata") or {}
    if field == "deployments":
        return (field, str(meta.get("namespace")))
    return (field, str(meta.get("namespace")), str(meta.get("name")))


def _essence(patch: Mapping[str, Any]) -> Any:
    """A patch without its timestamps: recomputing the same decision twice is no reason to write."""
    deployment = {k: v for k, v in (patch.get("deployment") or {}).items() if k not in _TIMES}
    conditions = [{k: v for k, v in c.items() if k not in _TIMES} for c in patch.get("conditions") or ()]
    return (deployment, conditions)


class SourceWriter:
    """Serialises the decisions of one Environment and writes only what changed."""

    def __init__(self, kube: Callable[[], KubeClient]) -> None:
        self._kube = kube
        self._locks: dict[str, asyncio.Lock] = {}
        self._written: dict[str, Any] = {}

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._written.pop(uid, None)

    async def apply(self, view: EnvironmentView, decision: Callable[[], Verdict]) -> None:
        """Decide inside the Environment's lock, from the indices as they are then, and write."""
        async with self._locks.setdefault(view.uid, asyncio.Lock()):
            now = _now()
            patch = status_patch(decision(), view.status, now, generation=view.generation)
            await self._write(view.namespace, view.name, view.uid, patch)

    async def clear(self, namespace: str, name: str, uid: str, status: Mapping[str, Any]) -> None:
        async with self._locks.setdefault(uid, asyncio.Lock()):
            await self._write(namespace, name, uid, without_condition(status))
        self.forget(uid)

    async def _write(self, namespace: str, name: str, uid: str, patch: Mapping[str, Any] | None) -> None:
        if patch is None or self._written.get(uid) == _essence(patch):
            return
        try:  # the client retries what a later try may cure (429, 5xx, timeouts) until stored
            await self._kube().patch_status(
                plural="environments", namespace=namespace, name=name, status=lambda: patch
            )
        except ApiNotFound:
            self._written.pop(uid, None)
            return  # the Environment is gone: nothing to write
        except ApiError as exc:
            self._written.pop(uid, None)
            logger.warning("cannot write the status of Environment %s/%s: %s", namespace, name, exc)
            return
        self._written[uid] = _essence(patch)
        deployment = patch.get("deployment") or {}
        if deployment:
            logger.info(
                "Environment %s/%s: deployment %s %s (from %s)",
                namespace,
                name,
                deployment.get("id"),
                deployment.get("currentStatus"),
                deployment.get("triggeredBy"),
            )


def _objects(view: EnvironmentView, indices: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    store: Iterable[Mapping[str, Any]] = indices[_index_id(view.field)].get(view.target, ())
    if view.source_name is not None:
        return list(store)
    return [
        d for d in store if selector_matches(view.selector, (d.get("metadata") or {}).get("labels") or {})
    ]


def register_sources(
    registry: kopf.OperatorRegistry, *, flags: Collection[str], kube: Callable[[], KubeClient]
) -> None:
    """Watch the kinds of the sources named in ``flags`` and write the Environments that use them.

    ``kube`` returns the operator's API client (raising kopf.TemporaryError while it starts).
    """
    unknown = set(flags) - set(SOURCE_NAMES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; known: {', '.join(SOURCE_NAMES)}")
    fields = [field for field, source in SOURCES.items() if source.flag in flags]
    if not fields:
        return
    writer = SourceWriter(kube)

    async def reconcile(view: EnvironmentView, indices: Mapping[str, Any]) -> None:
        def verdict() -> Verdict:
            current = view.status.get("deployment")
            return decide(
                view.field,
                _objects(view, indices),
                current if isinstance(current, Mapping) else None,
                namespace=view.source_namespace,
                name=view.source_name,
                now=_now(),
            )

        await writer.apply(view, verdict)

    @kopf.index(API_GROUP, API_VERSION, "environments", id=ENVIRONMENTS_INDEX, registry=registry)
    def environments(body: kopf.Body, **_: Any) -> dict[Target, EnvironmentView] | None:
        view = read_source(body)
        if not isinstance(view, EnvironmentView) or view.field not in fields:
            return None
        return {view.target: view}

    @kopf.on.event(API_GROUP, API_VERSION, "environments", id="herald_source_environment", registry=registry)
    async def environment(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
        meta = body.get("metadata") or {}
        uid, namespace, name = str(meta.get("uid")), str(meta.get("namespace")), str(meta.get("name"))
        if event.get("type") == "DELETED":
            writer.forget(uid)
            return
        view = read_source(body)
        status = dict(body.get("status") or {})
        if view is None:
            await writer.clear(namespace, name, uid, status)
        elif isinstance(view, str):
            logger.warning("Environment %s/%s: %s", namespace, name, view)
            await writer.apply(_bare(body), lambda: invalid(view))
        elif view.field not in fields:
            await writer.apply(view, lambda: disabled(view.field))
        else:
            await reconcile(view, kwargs)

    for field in fields:
        _watch(registry, field, reconcile)


def _bare(body: Mapping[str, Any]) -> EnvironmentView:
    """An Environment whose source cannot be read: enough of it to write a condition."""
    meta = body.get("metadata") or {}
    return EnvironmentView(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
        generation=meta.get("generation"),
        field="",
        target=(),
        source_namespace="",
        source_name=None,
        selector=None,
        status=dict(body.get("status") or {}),
    )


def _watch(
    registry: kopf.OperatorRegistry,
    field: str,
    reconcile: Callable[[EnvironmentView, Mapping[str, Any]], Any],
) -> None:
    source = SOURCES[field]

    @kopf.index(source.group, source.version, source.plural, id=_index_id(field), registry=registry)
    def objects(body: kopf.Body, **_: Any) -> dict[Target, dict[str, Any]]:
        return {_target(field, body): source.compact(body)}

    @kopf.on.event(
        source.group, source.version, source.plural, id=f"herald_source_{field}_event", registry=registry
    )
    async def changed(body: kopf.Body, **kwargs: Any) -> None:
        views: Iterable[EnvironmentView] = kwargs[ENVIRONMENTS_INDEX].get(_target(field, body), ())
        await asyncio.gather(*(reconcile(view, kwargs) for view in list(views)))


async def usable_sources(
    kube: KubeClient, namespaces: tuple[str, ...] | None, named: tuple[SourceName, ...] | None
) -> tuple[SourceName, ...]:
    """The sources to run: ``named`` ones (--sources) or, by default, each the cluster serves.

    One list request per source (Flux: its Kustomizations), in the first watched namespace or
    cluster-wide. 404: not installed; a named source runs anyway (kopf watches its kind once it is
    served). 403: Herald may not read it (deploy/components/sources is not applied); it never
    runs, named or not, because kopf holds every handler until each watched kind is listed.
    """
    found: list[SourceName] = []
    for flag in SOURCE_NAMES if named is None else named:
        source = next(s for s in SOURCES.values() if s.flag == flag)
        what = f"{source.plural}.{source.group}"
        try:
            await kube.can_list(
                f"{source.group}/{source.version}", source.plural, namespaces[0] if namespaces else None
            )
        except ApiNotFound:
            if named is not None:
                logger.warning("source %s on, though the cluster does not serve %s yet", flag, what)
                found.append(flag)
            else:
                logger.info("source %s off: the cluster does not serve %s", flag, what)
            continue
        except ApiUnreachable as exc:
            logger.warning("source %s off: cannot ask the API server (%s)", flag, exc)
            continue
        except ApiError as exc:
            log = logger.error if named is not None else logger.info
            why = "apply deploy/components/sources"
            log("source %s off: Herald may not list %s (%s); %s", flag, what, exc, why)
            continue
        found.append(flag)
    logger.info("sources on: %s", ", ".join(found) or "none")
    return tuple(found)
