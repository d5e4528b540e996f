"""Log lines never carry a secret, and carry e-mails only when the config allows it."""

from __future__ import annotations

import io
import json

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
