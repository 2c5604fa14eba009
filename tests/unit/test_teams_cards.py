"""TEAMS cards read by Microsoft's own Adaptive Cards library (npm ``adaptivecards``, fetched once
from the npm registry into ``~/.cache/herald``): no warning, no validation failure, for every
event type and for hostile and huge events; and a broken card is reported, so the check can fail."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
from typing import Any

import pytest

from herald.models import DeploymentEvent, EventType
from herald.payloads import sample, teams
from tests.unit.test_payloads import failure

VERSION = "3.0.6"
CHECK = pathlib.Path(__file__).parent / "adaptive_cards" / "check.js"
CACHE = pathlib.Path(os.environ.get("HERALD_CACHE", pathlib.Path.home() / ".cache" / "herald"))


@pytest.fixture(scope="module")
def library() -> pathlib.Path:
    bundle = CACHE / f"adaptivecards-{VERSION}" / "package" / "dist" / "adaptivecards.js"
    if not bundle.is_file():
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise AssertionError("the TEAMS card check needs node and npm (Debian: nodejs, npm)")
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run(
                ["npm", "pack", f"adaptivecards@{VERSION}", "--pack-destination", folder, "--silent"],
                check=True,
                capture_output=True,
                timeout=300,
            )
            [archive] = pathlib.Path(folder).glob("adaptivecards-*.tgz")
            target = bundle.parents[2]
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
    return bundle


def problems(library: pathlib.Path, cards: list[Any]) -> list[list[str]]:
    done = subprocess.run(
        ["node", str(CHECK), str(library)],
        input=json.dumps(cards),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: list[list[str]] = json.loads(done.stdout)
    return report


def card(event: DeploymentEvent) -> Any:
    return json.loads(teams.render(event))["attachments"][0]["content"]


def hostile() -> DeploymentEvent:
    event = failure()
    text = "[click](https://evil.example) **bold** <at>all</at> " + "é" * 50_000
    services = tuple(
        s.model_copy(update={"name": f"svc-{i}"}) for i in range(300) for s in event.applications[:1]
    )
    return event.model_copy(
        update={
            "applications": services,
            "project": event.project.model_copy(update={"name": text[:200]}),
            "deployment": event.deployment.model_copy(update={"message": text, "logs": (text,) * 20}),
        }
    )


def test_every_card_reads_cleanly_in_microsofts_library(library: pathlib.Path) -> None:
    events = [sample.sample_event(t) for t in EventType] + [hostile()]
    assert problems(library, [card(e) for e in events]) == [[] for _ in events]


def test_a_broken_card_is_reported(library: pathlib.Path) -> None:
    broken = card(failure())
    broken["body"][0]["style"] = "purple"
    broken["body"].append({"type": "Marquee", "text": "x"})
    [found] = problems(library, [broken])
    assert len(found) == 2
