"""Herald: Qovery-style deployment webhooks for any Kubernetes cluster.

Layers, top to bottom (checked by import-linter): ``cli`` > ``demo`` > ``handlers`` (the only
kopf code) > ``flow`` (a deployment event's way, kopf-free) > ``dispatcher`` > ``delivery`` /
``kube`` (the only HTTP code) > the pure core: ``signing``, ``egress``, ``retry``, ``status`` >
``payloads`` > ``matching`` > ``events`` > ``models`` / ``settings``. The pure core does no I/O
and is tested without a network.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("herald")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

USER_AGENT = f"herald/{__version__}"
