"""Log lines never carry a secret, and carry e-mails only when the config allows it."""

from __future__ import annotations

import io
import json
import logging

import structlog

from connector.errors import register_secret
from connector.log import configure, mask_email


def test_json_log_scrubs_secrets_and_masks_emails() -> None:
    register_secret("xkeysib-very-secret-key")
    out = io.StringIO()
    configure(fmt="json", stream=out)
    structlog.get_logger("t").info(
        "call failed", detail="api-key: xkeysib-very-secret-key", who="ada@example.com", n=3
    )
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "xkeysib-very-secret-key" not in out.getvalue()
    assert line["detail"] == "api-key: ***"
    assert line["who"] == "a***@example.com"
    assert line["n"] == 3


def test_emails_allowed_by_config() -> None:
    out = io.StringIO()
    configure(fmt="json", stream=out, log_emails=True)
    structlog.get_logger("t").info("synced", who="ada@example.com")
    assert "ada@example.com" in out.getvalue()


def test_mask_email() -> None:
    assert mask_email("to bob.smith+x@mail.example.org now") == "to b***@mail.example.org now"


def test_library_records_go_through_the_same_chain() -> None:
    """A stdlib record (apscheduler, uvicorn, …) is JSON too, scrubbed and masked."""
    register_secret("pat-na1-library-secret")
    out = io.StringIO()
    configure(fmt="json", stream=out)
    logging.getLogger("apscheduler.scheduler").warning(
        "job for %s skipped (token pat-na1-library-secret)", "ada@example.com"
    )
    logging.getLogger("some.lib").info("below the stdlib floor of WARNING: not shown")
    lines = [json.loads(x) for x in out.getvalue().strip().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "warning"
    assert line["logger"] == "apscheduler.scheduler"
    assert line["event"] == "job for a***@example.com skipped (token ***)"
    assert "timestamp" in line
    assert "pat-na1-library-secret" not in out.getvalue()
    assert "ada@example.com" not in out.getvalue()


def test_library_exception_is_rendered_and_scrubbed() -> None:
    register_secret("xkeysib-in-a-traceback")
    out = io.StringIO()
    configure(fmt="json", stream=out)
    try:
        raise RuntimeError("bad key xkeysib-in-a-traceback")
    except RuntimeError:
        logging.getLogger("lib").exception("failed")
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "failed"
    assert "RuntimeError: bad key ***" in line["exception"]
    assert "xkeysib-in-a-traceback" not in out.getvalue()
