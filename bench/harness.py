"""What every benchmark shares: the sandbox process, connector processes and their memory.

- :class:`Sandboxes` spawns ``python -m bench.sandboxes`` (its own process), waits for its URLs,
  and reads its call logs and probes over HTTP;
- :func:`config_text` writes a connector config for it (contacts only, the repository's
  mappings, any database, optional webhook intake);
- :class:`Proc` runs ``python -m connector …`` as a real process and samples the resident
  memory of its whole process tree (psutil) until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HUBSPOT_TOKEN = "sandbox-token"
BREVO_API_KEY = "sandbox-brevo-key"
HUBSPOT_SECRET = "sandbox-client-secret"
BREVO_WEBHOOK_TOKEN = "bench-brevo-webhook-token"


def env() -> dict[str, str]:
    """The environment for child processes: this checkout first on the import path."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sandboxes:
    """The sandbox process (see :mod:`bench.sandboxes`); an async context manager."""

    def __init__(
        self,
        *,
        hubspot: int = 0,
        brevo: int = 0,
        rate_limits: bool = True,
        import_delay: float = 0.2,
    ) -> None:
        self.args = ["--hubspot", str(hubspot), "--brevo", str(brevo)]
        self.args += ["--import-delay", str(import_delay)]
        if not rate_limits:
            self.args.append("--no-rate-limits")
        self.proc: subprocess.Popen[bytes] | None = None
        self.hubspot_url = self.brevo_url = ""
        self.http = httpx.AsyncClient(timeout=120)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-sandbox-")

    def _spawn(self, info: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [PYTHON, "-m", "bench.sandboxes", "--info", str(info), *self.args],
            cwd=ROOT,
            env=env(),
        )

    async def __aenter__(self) -> Sandboxes:
        info = Path(self._tmp.name) / "info.json"
        self.proc = self._spawn(info)
        deadline = time.monotonic() + 300
        while not info.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the sandbox process exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox process did not start within 300 s")
            await asyncio.sleep(0.05)
        data = json.loads(info.read_text(encoding="utf-8"))
        self.hubspot_url, self.brevo_url = data["hubspot_url"], data["brevo_url"]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()

    @property
    def brevo_root(self) -> str:
        return self.brevo_url.removesuffix("/v3")

    async def calls(self) -> tuple[Counter[str], Counter[str]]:
        """Calls answered so far, per ``METHOD path``: (HubSpot, Brevo)."""
        hs = (await self.http.get(f"{self.hubspot_url}/_sandbox/calls")).json()
        br = (await self.http.get(f"{self.brevo_root}/_sandbox/calls")).json()
        return Counter(hs["by_endpoint"]), Counter(br["byEndpoint"])

    async def faults(self, side: str, **knobs: Any) -> None:
        base = self.hubspot_url if side == "hubspot" else self.brevo_root
        r = await self.http.post(f"{base}/_sandbox/faults", json=knobs)
        r.raise_for_status()

    async def edit(self, side: str, edits: list[dict[str, Any]]) -> dict[str, Any]:
        """UI edits on one side (see :mod:`connector.sandbox.probes`)."""
        base = self.hubspot_url if side == "hubspot" else self.brevo_root
        r = await self.http.post(f"{base}/_sandbox/probe/edit", json={"edits": edits})
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    async def marks(self, *, clear: bool = False) -> dict[str, Any]:
        method = "DELETE" if clear else "GET"
        r = await self.http.request(method, f"{self.hubspot_url}/_sandbox/probe/marks")
        result: dict[str, Any] = r.json()
        return result

    async def contacts(self, side: str) -> dict[str, Any]:
        base = self.hubspot_url if side == "hubspot" else self.brevo_root
        r = await self.http.get(f"{base}/_sandbox/probe/contacts")
        result: dict[str, Any] = r.json()
        return result

    async def webhooks(self, side: str, **knobs: Any) -> None:
        base = self.hubspot_url if side == "hubspot" else self.brevo_root
        r = await self.http.post(f"{base}/_sandbox/webhooks", json=knobs)
        r.raise_for_status()


def delta(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return +out


def config_text(
    sb: Sandboxes,
    db_url: str,
    *,
    direction: str = "bidirectional",
    poll_interval: float = 30,
    webhook_port: int | None = None,
    log_level: str | None = None,
) -> str:
    """A connector config for the sandbox process: contacts only, the repository's mappings.

    The log level is ``$BENCH_LOG_LEVEL`` (default warning: logging is not what is measured)."""
    log_level = log_level or os.environ.get("BENCH_LOG_LEVEL", "warning")
    text = f"""\
connectors:
  hubspot:
    enabled: true
    base_url: {sb.hubspot_url}
    api_version: "2026-09"
    access_token: "{HUBSPOT_TOKEN}"
    app_client_secret: "{HUBSPOT_SECRET}"
    tier: professional
    sync: {{contacts: true, companies: false, deals: false, tickets: false, engagements: false}}
    direction: {direction}
    lists: {{all_contacts: 10, qualified_leads: 11, customers: 12}}
  brevo:
    base_url: {sb.brevo_url}
    api_key: "{BREVO_API_KEY}"
    plan: general
database:
  url: {db_url}
sync:
  mappings_dir: {ROOT / "mappings"}
  poll_interval: {poll_interval}
logging:
  level: {log_level}
  format: json
"""
    if webhook_port is not None:
        text += f"""\
server:
  host: 127.0.0.1
  port: {webhook_port}
  public_url: http://127.0.0.1:{webhook_port}
webhooks:
  brevo_token: "{BREVO_WEBHOOK_TOKEN}"
  coalesce_seconds: 0.2
"""
    return text


def _profiler(log: Path) -> list[str]:
    """``-m pyinstrument -o DIR/NAME.txt`` when ``$BENCH_PROFILE`` names a directory: each
    connector process is profiled (wall clock, awaits included) into ``NAME`` = its log's
    stem. Profiling slows the process: its figures are not the benchmark's."""
    where = os.environ.get("BENCH_PROFILE")
    if not where:
        return []
    Path(where).mkdir(parents=True, exist_ok=True)
    return ["-m", "pyinstrument", "-o", str(Path(where) / f"{log.stem}.txt")]


@dataclass
class Proc:
    """``python -m connector --config CONFIG ARGS…`` with its process tree's peak RSS sampled."""

    config: Path
    args: list[str]
    log: Path
    interval: float = 0.05
    started: float = 0.0
    ended: float = 0.0
    peak_rss: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _sampler: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    *_profiler(self.log),
                    *("-m", "connector", "--config", str(self.config)),
                    *self.args,
                ],
                cwd=ROOT,
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        return self

    def _tree_rss(self) -> int:
        assert self.proc is not None
        try:
            p = psutil.Process(self.proc.pid)
            total = p.memory_info().rss
            for child in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0

    async def _sample(self) -> None:
        assert self.proc is not None
        while self.proc.poll() is None:
            self.peak_rss = max(self.peak_rss, self._tree_rss())
            await asyncio.sleep(self.interval)

    async def wait(self, within: float | None = None) -> int:
        assert self.proc is not None
        deadline = None if within is None else time.monotonic() + within
        while self.proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"connector {' '.join(self.args)} ran over {within} s")
            await asyncio.sleep(0.02)
        self.ended = time.monotonic()
        if self._sampler is not None:
            await self._sampler
        return self.proc.returncode

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    async def stop(self, within: float = 30) -> int:
        self.terminate()
        try:
            return await self.wait(within)
        except TimeoutError:
            self.kill()
            assert self.proc is not None
            return self.proc.wait()

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak_rss / 1_048_576, 1)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])
