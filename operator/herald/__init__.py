"""Herald: Qovery-style deployment webhooks for any Kubernetes cluster.

Layers, top to bottom, as ``pyproject.toml`` declares them and import-linter checks them (a module
imports only from layers below its own; modules of one layer do not import each other):

1. ``cli`` (flags and variables, ``herald run``/``demo``/``render``, probes and metrics server)
2. ``demo``, then ``testing`` (the kmock harness the tests, the bench and the demo share)
3. ``handlers`` (kopf's callbacks translated into the flow)
4. ``source_handlers`` (kopf side of the Environment sources) | ``flow`` (a deployment event's way)
5. ``dispatcher`` (per-webhook workers) | ``ledger`` (the notified annotation)
6. ``delivery_store`` (Delivery objects: writes, retention, the redeliver watch) |
   ``credentials`` (a webhook's Secrets, opted in and cached) | ``status_writer`` (the summary)
7. ``delivery`` (receivers' HTTP) | ``kube`` (the API client) | ``leader`` | ``metrics`` |
   ``index`` | ``heap`` | ``kube_events``
8. the pure core: ``decision`` (what an attempt means) | ``delivery_object`` (a delivery as its
   object) | ``due`` (a webhook's queue in due order), then ``signing`` | ``egress`` | ``retry`` |
   ``status`` | ``sources`` | ``rbac`` | ``health`` | ``ratelimit``, then ``payloads``,
   ``matching``, ``events``, and at the bottom ``models`` | ``settings`` | ``redact``.

Only ``cli``, ``testing``, ``handlers`` and ``source_handlers`` import kopf; the pure
core does no I/O and is tested without a network, an event loop or kopf.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("herald")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

USER_AGENT = f"herald/{__version__}"
