"""Logging: structlog, JSON in the daemon, readable in the CLI; secrets never, emails by choice.

Every event passes through two processors before it is rendered: :func:`scrub_secrets`
removes every registered secret (see :func:`connector.errors.register_secret`) from every
string value, and :class:`EmailRedactor` masks e-mail addresses (``a***@example.com``) unless
the config's ``logging.log_emails`` allows them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog
from structlog.typing import Processor

from connector.errors import scrub

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")

EventDict = MutableMapping[str, Any]


def _walk(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_walk(v, fn) for v in value)
    return value


def scrub_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    for key, value in list(event_dict.items()):
        event_dict[key] = _walk(value, scrub)
    return event_dict


def mask_email(text: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


class EmailRedactor:
    def __init__(self, allow: bool) -> None:
        self.allow = allow

    def __call__(self, _: Any, __: str, event_dict: EventDict) -> EventDict:
        if self.allow:
            return event_dict
        for key, value in list(event_dict.items()):
            event_dict[key] = _walk(value, mask_email)
        return event_dict


def configure(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    log_emails: bool = False,
    stream: Any = None,
) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=getattr(out, "isatty", lambda: False)())
    )
    numeric = getattr(logging, level.upper(), logging.INFO)
    # ours and the libraries' records end the same way: traceback, redaction, rendering
    finish: list[Processor] = [
        structlog.processors.format_exc_info,
        scrub_secrets,
        EmailRedactor(log_emails),
        renderer,
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *finish,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib (apscheduler, uvicorn, alembic, …): their records go
    # through the same chain — secrets scrubbed, e-mails masked, JSON in the daemon — not raw.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    # httpx logs every request URL at INFO; URLs can carry emails (GET /contacts/{email})
    logging.getLogger("httpx").setLevel(logging.WARNING)
