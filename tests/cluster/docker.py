"""A Docker engine for the image test: the running one, or ``dockerd`` started for the session
(root on Debian with ``docker.io``), stopped again at its end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

START_TIMEOUT = 60.0


def _answers() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0
    )


@contextlib.contextmanager
def engine() -> Iterator[None]:
    if _answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise RuntimeError(
            "the image test needs a Docker engine: none answers `docker info`, and dockerd cannot be "
            "started here (install Debian's docker.io and run as root, or start dockerd yourself)"
        )
    log = tempfile.NamedTemporaryFile(prefix="herald-dockerd-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start (log: {log.name})")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
