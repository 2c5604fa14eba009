"""``herald run`` as a real subprocess against the emulator: the closest to production, CLI included."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import yaml

from herald.testing import Emulator, herald_watches, wait_for


class OperatorProcess:
    def __init__(
        self, emu: Emulator, env: dict[str, str] | None = None, *, args: tuple[str, ...] = ()
    ) -> None:
        self.emu = emu
        self.env = env or {}
        self.args = args
        # The emulator serves every source's kind: sources run unless turned off.
        self.watches = herald_watches(sources=self.env.get("HERALD_SOURCES") != "none")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="herald-", suffix=".log", delete=False)  # noqa: SIM115
        folder = pathlib.Path(tempfile.mkdtemp(prefix="herald-kube-"))
        self.kubeconfig = folder / "config"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
                    "users": [{"name": "emu", "user": {}}],
                    "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
                    "current-context": "emu",
                }
            )
        )

    async def start(self, *, wait: bool = True) -> None:
        before = self.emu.watches()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("HERALD_") and k != "KUBERNETES_SERVICE_HOST"
            },
            "KUBECONFIG": str(self.kubeconfig),
            "HERALD_SCANNING": "off",
            "HERALD_ALL_NAMESPACES": "true",
            "HERALD_EGRESS_ALLOW": "127.0.0.0/8",
            "HERALD_RETRY_SCHEDULE": "0.2,0.4,0.8",
            "HERALD_RETRY_JITTER": "0",
            "HERALD_DELIVERY_TIMEOUT": "2",
            "HERALD_STATUS_INTERVAL": "0.2",
            "HERALD_HEALTH_PORT": "0",
            "HERALD_METRICS_PORT": "0",
            "HERALD_LOG_LEVEL": "DEBUG",
            **self.env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "run", *self.args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            await wait_for(
                lambda: self._failed() or self.emu.watches() - before >= self.watches,
                timeout=30,
                what=f"herald run to open its watches (log: {self.log.name})",
            )
            if self._failed():
                raise RuntimeError(f"herald run exited early:\n{self.output()}")

    def _failed(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def output(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    async def stop(self) -> int:
        """SIGTERM, as Kubernetes does, and the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for _ in range(300):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
        return self.proc.wait()
