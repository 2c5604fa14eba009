"""``herald demo`` is what a newcomer runs first: it must pass on its own, and tell the truth."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def done() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", "demo"], capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_runs_the_whole_flow_and_exits_zero(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    arrivals = [line for line in out.splitlines() if line.strip().startswith("->")]
    assert len(arrivals) == 26
    assert all("HTTP 200" in line for line in arrivals)
    assert sum("DEPLOYMENT_STARTED" in line for line in arrivals) == 8
    assert sum("signature verified" in line for line in arrivals) == 8  # the signed STANDARD webhook
    assert "SIGNATURE INVALID" not in out
    # The CLOUDEVENTS webhook takes outcomes, the CUSTOM one production failures: of both the
    # Environments and the Deployment source's rollouts.
    assert sum("dev.herald.deployment." in line for line in arrivals) == 4
    assert sum("custom: Deployment failed: shop-frontend" in line for line in arrivals) == 2
    assert "26 deliveries received." in out
    table = out[out.index("$ kubectl get webhooks") :].split("\n\n")[0].splitlines()[1:]
    rows = {row.split()[2]: row.split() for row in table[1:] if row.strip()}
    assert set(rows) == {
        "shop-deployments",
        "slack-deployments",
        "deployment-events",
        "incident-on-failure",
        "deployment-audit",
    }
    for row in rows.values():
        assert row[5] == "True"  # READY
        assert row[6] == "Succeeded"
        assert row[-1] == "0"  # nothing pending
    assert rows["slack-deployments"][7] == "4"  # SUCCESSFUL and FAILURE only
    assert rows["deployment-events"][7] == "4"
    assert rows["incident-on-failure"][7] == "2"  # the production failures only
    log = out[out.index("$ kubectl get deliveries") :].splitlines()[2:]
    deliveries = [line.split() for line in log if line.startswith("shop-deployments-")]
    assert len(deliveries) == 8  # one Delivery object per event the webhook took
    assert {d[4] for d in deliveries} == {"Succeeded"}
    assert sum(d[2] == "DEPLOYMENT_STARTED" for d in deliveries) == 4
    assert not re.search(r"not-a-real-token", out + done.stderr)  # the Slack URL is a credential


def test_demo_shows_a_deployment_source_rollout_succeed_then_fail(
    done: subprocess.CompletedProcess[str],
) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    section = done.stdout[
        done.stdout.index("spec.source.deployments") : done.stdout.index("deliveries received")
    ]
    assert "the demo\n  writes the controller's status updates itself" in section  # it says what is simulated
    heralds = [line.split()[-1] for line in section.splitlines() if line.strip().startswith("Herald:")]
    assert heralds == ["DEPLOYING", "DEPLOYED", "DEPLOYING", "DEPLOYMENT_ERROR"]
    standard = [line.split()[2] for line in section.splitlines() if "/webhook/shop-deployments" in line]
    assert standard == [
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_FAILURE",
    ]
