"""An imported contact the read-back listings never show is read by e-mail before it counts
as lost (a listing can miss one: a page shifted under it, a time at a read-back's boundary)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sync_env import sync_env

from connector.brevo.models import BrevoContact


async def test_a_contact_the_listing_misses_is_confirmed_by_email(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sync_env(tmp_path, import_threshold=5) as env:
        env.engine.import_poll_every = 0.01
        for i in range(6):
            env.hs_create(email=f"p{i}@example.com", firstname=f"P{i}")
        real = env.brevo.iter_contacts
        hidden = "p3@example.com"

        def listing(*args: Any, **kw: Any) -> AsyncIterator[BrevoContact]:
            async def gen() -> AsyncIterator[BrevoContact]:
                async for c in real(*args, **kw):
                    if kw.get("overlap") is False and c.email == hidden:
                        continue  # the read-back listing misses it
                    yield c

            return gen()

        monkeypatch.setattr(env.brevo, "iter_contacts", listing)
        out = await env.cycle()
        assert out.counts["brevo_imported"] == 6
        assert out.counts["import_confirmed_by_email"] == 1
        assert await env.dead_letters() == []
        assert len(await env.links()) == 6
