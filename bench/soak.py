"""Soak with faults: random changes on both sides, faults injected, a daemon killed every minute.

Two ``connector run`` daemons share one fresh PostgreSQL database (leases decide which works).
For ``seconds``, a driver makes random UI edits (first and last names) on both sides — each
contact is edited on one side only, so the value that must win is known — while both sandboxes
answer 5 % of calls with a 5xx, 1 % with a timeout, and every 20 s one side has a 3-second 429
storm. Every minute (at half time in a 1-minute soak) one daemon is killed with SIGKILL and
started again. Then the faults stop and the daemons get time to converge, and a full compare
follows: every contact on both sides, paired by email, with equal names (``converged``); every
edit's final value on both sides (``lost`` counts those missing); no email twice on a side and
no welcome email sent twice (``duplicates``); and each open dead letter with its error.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, ROOT, Proc, Sandboxes, config_text, env
from bench.intake import create_pg_database, drop_pg_database

HUBSPOT_CONTACTS = 600
BREVO_CONTACTS = 300
CHANGES_PER_SECOND = 10_000 / 600
FIELDS = (("firstname", "FIRSTNAME"), ("lastname", "LASTNAME"))


def _name(value: Any) -> str | None:
    return str(value).strip() or None if value not in (None, "") else None


def compare(
    hs: list[dict[str, Any]], br: list[dict[str, Any]], expected: dict[tuple[str, str], str]
) -> dict[str, Any]:
    """Both sides in full: unpaired and unequal contacts, lost edits, duplicate emails."""
    hs_by: dict[str, dict[str, Any]] = {}
    br_by: dict[str, dict[str, Any]] = {}
    dup = 0
    for c in hs:
        email = (c.get("email") or "").strip().lower()
        if email:
            dup += email in hs_by
            hs_by[email] = c
    for c in br:
        email = (c.get("email") or "").strip().lower()
        if email:
            dup += email in br_by
            br_by[email] = c
    unpaired = len(hs_by.keys() ^ br_by.keys())
    unequal = 0
    for email in hs_by.keys() & br_by.keys():
        h, b = hs_by[email], br_by[email]["attributes"]
        if any(_name(h.get(hp)) != _name(b.get(bp)) for hp, bp in FIELDS):
            unequal += 1
    lost = 0
    for (email, field), value in expected.items():
        bp = dict(FIELDS)[field]
        h, b = hs_by.get(email), br_by.get(email)
        if (
            h is None
            or b is None
            or _name(h.get(field)) != value
            or _name(b["attributes"].get(bp)) != value
        ):
            lost += 1
    return {"unpaired": unpaired, "unequal": unequal, "lost": lost, "duplicate_emails": dup}


async def _faults(sb: Sandboxes, on: bool) -> None:
    for side in ("hubspot", "brevo"):
        if on:
            await sb.faults(side, error_rate=0.05, timeout_rate=0.01, timeout_seconds=3.0, seed=7)
        else:
            await sb.faults(side, clear=True)


def _dead_letters(config: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [PYTHON, "-m", "connector", "--config", str(config), "dlq", "list", "--json"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        letters: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    except ValueError:
        return [{"error": f"dlq list failed: {out.stderr.strip()[-300:]}"}]
    return letters


async def soak(seconds: float, *, converge_timeout: float = 240.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    db_name = f"bench_soak_{os.getpid()}"
    db_url = create_pg_database(db_name)
    rng = random.Random(11)
    try:
        async with Sandboxes(hubspot=HUBSPOT_CONTACTS, brevo=BREVO_CONTACTS) as sb:
            config = tmp / "config.yaml"
            config.write_text(config_text(sb, db_url, poll_interval=5), encoding="utf-8")
            if await Proc(config, ["db", "upgrade"], tmp / "upgrade.log").start().wait(120) != 0:
                raise RuntimeError("connector db upgrade failed")
            daemons = [Proc(config, ["run"], tmp / f"daemon{i}.log").start() for i in (0, 1)]
            # the initial sync, without faults: every contact on both sides
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                hs = (await sb.contacts("hubspot"))["contacts"]
                br = (await sb.contacts("brevo"))["contacts"]
                if compare(hs, br, {})["unpaired"] == 0:
                    break
                await asyncio.sleep(2)
            emails = sorted((c["email"] or "").lower() for c in hs if c.get("email"))
            hs_id = {(c.get("email") or "").lower(): c["id"] for c in hs}
            expected: dict[tuple[str, str], str] = {}
            changes = restarts = storms = 0
            await _faults(sb, True)
            kill_every = 60.0 if seconds > 60 else seconds / 2
            started = time.monotonic()
            next_kill, next_storm = started + kill_every, started + 20
            while (now := time.monotonic()) - started < seconds:
                batch_hs, batch_br = [], []
                due = int(CHANGES_PER_SECOND * (now - started)) + 1 - changes
                for _ in range(max(0, due)):
                    i = rng.randrange(len(emails))
                    email = emails[i]
                    field, attr = rng.choice(FIELDS)
                    value = f"s{changes}"
                    changes += 1
                    expected[(email, field)] = value
                    if i % 2 == 0:
                        batch_hs.append({"id": hs_id[email], "properties": {field: value}})
                    else:
                        batch_br.append({"email": email, "attributes": {attr: value}})
                if batch_hs:
                    await sb.edit("hubspot", batch_hs)
                if batch_br:
                    await sb.edit("brevo", batch_br)
                if now >= next_kill:
                    victim = daemons[1]
                    victim.kill()
                    await victim.wait(30)
                    daemons[1] = Proc(config, ["run"], tmp / "daemon1.log").start()
                    restarts += 1
                    next_kill += kill_every
                if now >= next_storm:
                    await sb.faults(rng.choice(("hubspot", "brevo")), storm_seconds=3.0)
                    storms += 1
                    next_storm += 20
                await asyncio.sleep(0.2)
            await _faults(sb, False)
            faulted_s = time.monotonic() - started
            converge_started = time.monotonic()
            while True:
                hs = (await sb.contacts("hubspot"))["contacts"]
                brevo = await sb.contacts("brevo")
                result = compare(hs, brevo["contacts"], expected)
                done = result["unpaired"] == 0 and result["unequal"] == 0 and result["lost"] == 0
                if done or time.monotonic() - converge_started > converge_timeout:
                    break
                await asyncio.sleep(5)
            converge_s = time.monotonic() - converge_started
            for d in daemons:
                await d.stop()
            letters = _dead_letters(config)
            welcome = Counter(
                str(e.get("to")) for e in brevo.get("outbox", []) if "welcome" in json.dumps(e)
            )
    finally:
        await asyncio.to_thread(drop_pg_database, db_name)
    duplicates = result["duplicate_emails"] + sum(n - 1 for n in welcome.values() if n > 1)
    return {
        "seconds": round(faulted_s, 1),
        "changes": changes,
        "contacts": {"hubspot": HUBSPOT_CONTACTS, "brevo": BREVO_CONTACTS},
        "faults": "5 % 5xx, 1 % timeouts (3 s), a 3 s 429 storm every 20 s",
        "daemons": 2,
        "restarts": restarts,
        "storms": storms,
        "converged": result["unpaired"] == 0 and result["unequal"] == 0,
        "converge_s": round(converge_s, 1),
        "unpaired": result["unpaired"],
        "unequal": result["unequal"],
        "lost": result["lost"],
        "duplicates": duplicates,
        "dead_letters": len(letters),
        "dead_letters_unexplained": sum(1 for lt in letters if not lt.get("error")),
        "dead_letter_errors": sorted({str(lt.get("error"))[:160] for lt in letters})[:10],
        "targets": {"converged": True, "lost": 0, "duplicates": 0, "dead_letters_unexplained": 0},
        "met": {
            "converged": result["unpaired"] == 0 and result["unequal"] == 0,
            "lost": result["lost"] == 0,
            "duplicates": duplicates == 0,
            "dead_letters_explained": all(lt.get("error") for lt in letters),
        },
    }
