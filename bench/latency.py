"""Change latency: 50 changes per second made in each sandbox; time until the other side has it.

A real ``connector run`` syncs C HubSpot contacts (the initial sync is waited for, not timed),
then for ``seconds`` a driver makes 50 UI edits per second in HubSpot and 50 in Brevo, each
setting the last name of a different contact to a unique marked value. The sandbox process
stamps each marked value when it is edited and when the connector writes it to the other side
(:mod:`connector.sandbox.probes`: one clock, outside the process measured); latency is the
difference. Run twice: with webhooks (HubSpot's signed deliveries and a Brevo marketing
webhook, registered by ``connector webhooks register``) and pull-only (the config's default
``poll_interval``; the figure is bounded below by it). Target: p99 < 5 s with webhooks.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.harness import Proc, Sandboxes, config_text, free_port
from bench.intake import percentile

RATE = 50
"""Changes per second on each side."""
TARGET_P99_S = 5.0
POLL_INTERVAL = 30.0
"""The config default of ``sync.poll_interval``: the pull-only run uses it."""


def _initial_pulls_done(db: Path) -> bool:
    """Whether the daemon's first pull of each side has finished (steady state from then)."""
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            done = conn.execute(
                sa.text(
                    "SELECT count(DISTINCT system) FROM runs "
                    "WHERE kind = 'pull' AND status != 'running'"
                )
            ).scalar_one()
    except sa.exc.OperationalError:  # not migrated yet
        return False
    finally:
        engine.dispose()
    return int(done) >= 2


async def _wait_synced(sb: Sandboxes, contacts: int, daemon: Proc, within: float, db: Path) -> None:
    """Until Brevo holds every contact and both sides' initial pulls are over: the changes
    are timed in steady state, not queued behind the first full sync."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise RuntimeError(f"connector run exited:\n{daemon.tail()}")
        data = await sb.contacts("brevo")
        if len(data["contacts"]) >= contacts and await asyncio.to_thread(_initial_pulls_done, db):
            return
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the initial sync of {contacts} contacts took over {within} s")


async def _drive(sb: Sandboxes, seconds: float) -> int:
    """50 edits per second per side for ``seconds``, each on a different contact."""
    hs = (await sb.contacts("hubspot"))["contacts"]
    hs.sort(key=lambda c: int(c["id"]))
    half = len(hs) // 2
    hs_side = [c["id"] for c in hs[:half]]
    br_side = [c["email"].lower() for c in hs[half:] if c.get("email")]
    tick = 0.1
    per_tick = max(1, round(RATE * tick))
    made = 0
    started = time.monotonic()
    step = 0
    while time.monotonic() - started < seconds and made + per_tick <= min(
        len(hs_side), len(br_side)
    ):
        batch = range(made, made + per_tick)
        await asyncio.gather(
            sb.edit(
                "hubspot",
                [{"id": hs_side[i], "properties": {"lastname": f"mk-h-{i}"}} for i in batch],
            ),
            sb.edit(
                "brevo",
                [{"email": br_side[i], "attributes": {"LASTNAME": f"mk-b-{i}"}} for i in batch],
            ),
        )
        made += per_tick
        step += 1
        await asyncio.sleep(max(0.0, started + step * tick - time.monotonic()))
    return made


async def one_mode(webhooks: bool, contacts: int, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-latency-{'wh' if webhooks else 'pull'}-"))
    async with Sandboxes(hubspot=contacts) as sb:
        port = free_port() if webhooks else None
        config = tmp / "config.yaml"
        config.write_text(
            config_text(
                sb, f"sqlite:///{tmp / 'state.db'}", webhook_port=port, poll_interval=POLL_INTERVAL
            ),
            encoding="utf-8",
        )
        if await Proc(config, ["db", "upgrade"], tmp / "upgrade.log").start().wait(120) != 0:
            raise RuntimeError("connector db upgrade failed")
        if webhooks:
            reg = Proc(config, ["webhooks", "register"], tmp / "register.log").start()
            if await reg.wait(120) != 0:
                raise RuntimeError(f"connector webhooks register failed:\n{reg.tail()}")
            await sb.webhooks("hubspot", target_url=f"http://127.0.0.1:{port}/webhooks/hubspot")
        daemon = Proc(config, ["run"], tmp / "daemon.log").start()
        try:
            await _wait_synced(sb, contacts, daemon, within=900, db=tmp / "state.db")
            await asyncio.sleep(2.0)
            await sb.marks(clear=True)
            made = await _drive(sb, seconds)
            grace = 3 * POLL_INTERVAL + 60
            deadline = time.monotonic() + grace
            while True:
                snap = await sb.marks()
                marks = snap["marks"]
                if all(m["seen"] is not None for m in marks.values()):
                    break
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
        finally:
            await daemon.stop()
    lat = [m["seen"] - m["made"] for m in marks.values() if m["seen"] is not None]
    by_side = {
        side: [
            m["seen"] - m["made"]
            for m in marks.values()
            if m["seen"] is not None and m["side"] == side
        ]
        for side in ("hubspot", "brevo")
    }
    p99 = percentile(lat, 99)
    return {
        "changes": len(marks),
        "changes_per_side": made,
        "arrived": len(lat),
        "not_arrived": len(marks) - len(lat),
        "p50_s": round(percentile(lat, 50), 2),
        "p99_s": round(p99, 2),
        "max_s": round(max(lat), 2) if lat else None,
        "p99_s_from_hubspot": round(percentile(by_side["hubspot"], 99), 2),
        "p99_s_from_brevo": round(percentile(by_side["brevo"], 99), 2),
        "poll_interval_s": POLL_INTERVAL,
        "daemon_peak_rss_mb": daemon.peak_rss_mb,
    }


async def latency(quick: bool) -> dict[str, Any]:
    seconds = 20.0 if quick else 60.0
    contacts = int(2 * RATE * seconds) + 200
    with_hooks = await one_mode(True, contacts, seconds)
    with_hooks["targets"] = {"p99_s": f"< {TARGET_P99_S}"}
    with_hooks["met"] = {
        "p99_s": with_hooks["p99_s"] < TARGET_P99_S,
        "all_arrived": with_hooks["not_arrived"] == 0,
    }
    pull = await one_mode(False, contacts, seconds)
    pull["targets"] = {"p99_s": "(reported; bounded below by poll_interval)"}
    return {
        "rate_per_side": RATE,
        "seconds": seconds,
        "contacts": contacts,
        "webhooks": with_hooks,
        "pull_only": pull,
        "p50_s": with_hooks["p50_s"],
        "p99_s": with_hooks["p99_s"],
    }
