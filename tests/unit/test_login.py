"""Where Herald finds the API server in a pod: the kubelet's service variables, as client-go does."""

from __future__ import annotations

import pytest

from herald.handlers import in_cluster_server


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, "https://[fd00::1]:443"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
        ({}, None),
    ],
)
def test_the_service_variables_name_the_server(env: dict[str, str], server: str | None) -> None:
    assert in_cluster_server(env) == server
