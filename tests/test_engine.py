"""The engine end to end against both sandboxes: creates both ways, then zero writes."""

from __future__ import annotations

from pathlib import Path

from sync_env import SyncEnv, sync_env


async def everything(env: SyncEnv) -> dict[str, object]:
    hs = [o async for o in env.hubspot.iter_objects("contacts", env.engine.hs_props)]
    br = [c async for c in env.brevo.iter_contacts()]
    return {"hubspot": hs, "brevo": br}


async def test_first_sync_creates_both_ways_then_nothing(tmp_path: Path) -> None:
    async with sync_env(tmp_path) as env:
        env.hs_state.seed_contacts(20)
        env.br_state.seed_contacts(10, seed=7)
        out = await env.engine.sync(**await everything(env))  # type: ignore[arg-type]
        assert out.counts["failed"] == 0, out.failures
        assert out.counts["brevo_created"] == 20
        assert out.counts["hubspot_created"] == 10
        hs_total = len(env.hs_state.stores["contacts"].live)
        assert hs_total == 30
        before = env.writes()
        out2 = await env.engine.sync(**await everything(env))  # type: ignore[arg-type]
        assert env.writes() == before, out2.summary.as_dict()
        assert out2.counts["failed"] == 0
