"""What the daemon, the webhook worker and the CLI need from an object type's sync.

Contacts keep their :class:`~connector.engine.SyncEngine` (with :class:`~connector.pull.Puller`
and :func:`~connector.resync.resync` around it). Every other object type is one
:class:`ObjectSync`, registered in ``Runtime.objects`` under its object type name; the daemon
schedules its pulls (one per side in :attr:`ObjectSync.pull_systems`) and its reconciliation,
the worker hands it the ids named by webhooks, and ``connector resync`` runs its
:meth:`ObjectSync.resync`. All share the store (links, ledger, cursors, dead letters, runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connector.engine import Mode, Outcome

System = Literal["hubspot", "brevo"]
ObjectResyncMode = Literal["resync", "reconcile", "initial"]
StopCheck = Callable[[], bool]


class ObjectSync(Protocol):
    """One object type's sync, as the daemon, the worker and the CLI drive it."""

    object_type: str
    sessions: async_sessionmaker[AsyncSession]
    #: ``(object_type, counts)`` after each pass that wrote (the records-synced metric)
    on_pass_counts: Callable[[str, dict[str, int]], None] | None
    #: the sides this object type pulls incrementally (``("hubspot",)`` for one-way ones)
    pull_systems: tuple[System, ...]

    async def pull(self, system: System, *, stop: StopCheck | None = None) -> Outcome:
        """One incremental pull of ``system`` (cursor, lookback, batches; a first pull is a
        full resync). ``stop()`` true ends it after the current batch."""
        ...

    async def resync(self, *, mode: ObjectResyncMode = "resync", dry_run: bool = False) -> Outcome:
        """Read everything on both sides and bring them in step (``dry_run``: plan only)."""
        ...

    async def sync_ids(
        self,
        *,
        hubspot_ids: Sequence[str] = (),
        brevo_ids: Sequence[str] = (),
        mode: Mode = "incremental",
        out: Outcome | None = None,
    ) -> Outcome:
        """Sync the records named by id (webhook events, dead-letter retries)."""
        ...

    async def settle_gone(self, out: Outcome, *, dry_run: bool = False) -> None:
        """Carry the vanished linked records collected in ``out.gone`` to the other side."""
        ...
