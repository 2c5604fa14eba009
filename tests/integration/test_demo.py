"""``herald demo`` is what a newcomer runs first: it must pass on its own, and tell the truth."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_the_whole_flow_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "herald.cli", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    arrivals = [line for line in out.splitlines() if line.strip().startswith("->")]
    assert len(arrivals) == 13
    assert all("HTTP 200" in line for line in arrivals)
    assert sum("DEPLOYMENT_STARTED" in line for line in arrivals) == 4
    assert sum("signature verified" in line for line in arrivals) == 4  # the signed STANDARD webhook
    assert "SIGNATURE INVALID" not in out
    assert sum("dev.herald.deployment." in line for line in arrivals) == 2  # the CLOUDEVENTS webhook
    assert sum("custom: Deployment failed: shop-frontend" in line for line in arrivals) == 1  # CUSTOM
    assert "13 deliveries received." in out
    table = out[out.index("$ kubectl get") :].splitlines()[1:]
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
    assert rows["slack-deployments"][7] == "2"  # SUCCESSFUL and FAILURE only
    assert rows["deployment-events"][7] == "2"
    assert rows["incident-on-failure"][7] == "1"  # the production failure only
    assert not re.search(r"not-a-real-token", out + done.stderr)  # the Slack URL is a credential
