"""A lease held by a process that was killed on this host is taken over at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from connector.daemon import acquire_lease, holder_is_dead
from connector.store import db, leases
from connector.store.models import utcnow


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_holder_is_dead() -> None:
    host = socket.gethostname()
    assert holder_is_dead(f"{host}:{dead_pid()}:abc123")
    assert not holder_is_dead(f"{host}:{os.getpid()}:abc123")  # ourselves
    assert not holder_is_dead(f"{host}:1:abc123")  # alive (init), maybe another user's
    assert not holder_is_dead(f"some-other-host:{dead_pid()}:abc123")  # cannot know: wait
    assert not holder_is_dead("garbage")


async def test_dead_holder_lease_is_taken_over_alive_one_is_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    db.upgrade(url)
    engine = db.create_engine(url)
    sessions = db.session_factory(engine)
    host = socket.gethostname()
    ttl = timedelta(minutes=5)
    try:
        async with sessions() as s, s.begin():
            assert await leases.acquire(s, "sync:contacts", f"{host}:{dead_pid()}:x", ttl, utcnow())
        async with sessions() as s, s.begin():
            assert await acquire_lease(
                s, "sync:contacts", f"{host}:{os.getpid()}:me", ttl, utcnow()
            )
        async with sessions() as s, s.begin():
            assert not await acquire_lease(s, "sync:contacts", "other-host:42:x", ttl, utcnow())
    finally:
        await engine.dispose()
