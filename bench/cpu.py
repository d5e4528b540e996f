"""CPU per record: map + plan + ledger for N in-memory records, in this process.

N HubSpot contacts and N Brevo contacts with the same values (built through the mapping, so
each pair agrees) go through :meth:`SyncEngine.sync` in resync mode, 1,000 pairs per pass, on a
fresh SQLite store: the first run pairs by email, maps both sides, plans every field and writes
the ledger (links and field hashes); the second run is the in-step case (the ledger read, every
plan a no-op). No API call is made (the clients point at a closed port: a call would fail the
run). CPU time is the process's (threads included), divided by N. The first run is profiled
with pyinstrument; the functions with the most self time are returned and the profile saved.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyinstrument import Profiler

from connector.brevo.client import BrevoClient
from connector.brevo.models import BrevoContact
from connector.config import BrevoSettings, HubSpotSettings
from connector.engine import Outcome, SyncEngine
from connector.hubspot.client import HubSpotClient
from connector.hubspot.models import HubSpotObject
from connector.mapping import load_mapping
from connector.store import db

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1_000
PROFILED = 20_000
"""Records in the profiled run (the profile's shape does not change with N)."""
FIRST = ["Anna", "Bruno", "Chloé", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Inès", "José"]
LAST = ["Martin", "Dubois", "Garcia", "Nguyen", "Müller", "Rossi", "Silva", "Kowalski"]


def records(n: int) -> tuple[list[HubSpotObject], list[BrevoContact]]:
    """N agreeing pairs: HubSpot properties, and Brevo attributes mapped from them."""
    mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
    rng = random.Random(7)
    now = datetime.now(UTC) - timedelta(days=1)
    hs: list[HubSpotObject] = []
    br: list[BrevoContact] = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        props: dict[str, str | None] = {
            "email": f"person{i}@example.org",
            "firstname": first,
            "lastname": last,
            "phone": f"+1 415 555 {i % 10_000:04d}",
            "company": f"Company {i % 97}",
            "city": "Lyon",
            "lastmodifieddate": now.isoformat(),
        }
        hs.append(HubSpotObject(str(100_000 + i), props, now, now))
        mapped = mapping.to_brevo(props)
        attrs = {mapped.targets[k]: v for k, v in mapped.native.items() if k in mapped.targets}
        email = attrs.pop("email", props["email"])
        br.append(
            BrevoContact(i + 1, str(email), str(100_000 + i), attrs, [10], False, False, now, now)
        )
    return hs, br


async def _passes(engine: SyncEngine, hs: list[HubSpotObject], br: list[BrevoContact]) -> Outcome:
    out = Outcome()
    for start in range(0, len(hs), BATCH):
        await engine.sync(
            hubspot=hs[start : start + BATCH],
            brevo=br[start : start + BATCH],
            mode="resync",
            out=out,
        )
    return out


def _top_functions(profiler: Profiler, limit: int = 15) -> list[dict[str, Any]]:
    """Functions by self time across the profile's call tree."""
    session = profiler.last_session
    root = session.root_frame() if session is not None else None
    totals: dict[str, float] = defaultdict(float)
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        named = frame
        while named.function.startswith("[") and named.parent is not None:
            named = named.parent  # "[self]"/"[await]": the time of the function above
        if named.file_path_short and frame.total_self_time:
            totals[f"{named.function} ({named.file_path_short}:{named.line_no})"] += (
                frame.total_self_time
            )
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return [{"function": name, "self_s": round(t, 3)} for name, t in ranked]


async def _profiled(
    hs: list[HubSpotObject],
    br: list[BrevoContact],
    mapping: Any,
    hubspot: HubSpotClient,
    brevo: BrevoClient,
) -> Profiler:
    """The first (linking) run again on a fresh store, under pyinstrument (which slows it:
    the timed runs are not profiled)."""
    with tempfile.TemporaryDirectory(prefix="bench-cpu-prof-") as tmp:
        url = f"sqlite:///{tmp}/state.db"
        await asyncio.to_thread(db.upgrade, url, "head")
        db_engine = db.create_engine(url)
        engine = SyncEngine(
            mapping=mapping, hubspot=hubspot, brevo=brevo, sessions=db.session_factory(db_engine)
        )
        profiler = Profiler(async_mode="enabled")
        try:
            profiler.start()
            await _passes(engine, hs, br)
        finally:
            profiler.stop()
            await db_engine.dispose()
    return profiler


def _save_profile(profiler: Profiler, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=True, color=False)
    (folder / "cpu_profile.txt").write_text(text, encoding="utf-8")


async def cpu_per_record(n: int, profile_dir: Path | None) -> dict[str, Any]:
    hs, br = records(n)
    closed = "http://127.0.0.1:9"
    hubspot = HubSpotClient(HubSpotSettings(base_url=closed, access_token="unused"))
    brevo = BrevoClient(BrevoSettings(base_url=f"{closed}/v3", api_key="unused"))
    mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        url = f"sqlite:///{tmp}/state.db"
        await asyncio.to_thread(db.upgrade, url, "head")
        db_engine = db.create_engine(url)
        engine = SyncEngine(
            mapping=mapping, hubspot=hubspot, brevo=brevo, sessions=db.session_factory(db_engine)
        )
        try:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            first = await _passes(engine, hs, br)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            second = await _passes(engine, hs, br)
            cpu2 = time.process_time()
            profiler = await _profiled(hs[:PROFILED], br[:PROFILED], mapping, hubspot, brevo)
        finally:
            await hubspot.aclose()
            await brevo.aclose()
            await db_engine.dispose()
    failed = first.counts.get("failed", 0) + second.counts.get("failed", 0)
    if failed:
        raise RuntimeError(f"cpu_per_record: {failed} records failed: {first.failures[:3]}")
    top = _top_functions(profiler)
    if profile_dir is not None:
        _save_profile(profiler, profile_dir)
    us_first = (cpu1 - cpu0) / n * 1e6
    return {
        "records": n,
        "us_per_record": round(us_first, 1),
        "us_per_record_instep": round((cpu2 - cpu1) / n * 1e6, 1),
        "wall_s": round(wall1 - wall0, 2),
        "linked": first.counts.get("linked", 0) or dict(first.counts),
        "top_functions": top,
        "profile": "bench/results/cpu_profile.txt" if profile_dir is not None else None,
    }
