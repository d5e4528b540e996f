"""The one table of what a status means, the backoff, and the retry loop."""

from __future__ import annotations

import random

import httpx
import pytest

from connector.errors import (
    AuthError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
)
from connector.retry import Action, backoff_seconds, classify, classify_exception, retrying


def test_table() -> None:
    assert classify(200) is Action.OK
    assert classify(207) is Action.OK
    assert classify(429) is Action.RATE_LIMITED
    assert classify(503) is Action.RETRY
    assert classify(599) is Action.RETRY
    assert classify(401) is Action.FAIL  # never refresh on a bare 401
    assert classify(400) is Action.FAIL
    assert classify(425) is Action.RETRY
    assert classify_exception(httpx.ReadTimeout("t")) is Action.RETRY
    assert classify_exception(ValueError()) is Action.FAIL


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    waits = [backoff_seconds(n, rng=rng, jitter=0) for n in range(1, 12)]
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(waits) == 60.0
    assert backoff_seconds(3, retry_after=7.5) == 7.5
    spread = {round(backoff_seconds(4, rng=rng), 3) for _ in range(20)}
    assert len(spread) > 1 and all(3.0 <= w <= 5.0 for w in spread)


def err(cls: type, **kw: object) -> Exception:
    return cls("boom", system="hubspot", endpoint="GET /x", **kw)  # type: ignore[no-any-return]


async def test_retries_then_succeeds_and_reraises_last() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    outcomes: list[Exception | str] = [
        err(ServerError, status=502),
        err(RateLimitedError, retry_after=2.0),
        "ok",
    ]

    async def call() -> str:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    assert await retrying(call, max_retries=5, sleep=sleep) == "ok"
    assert slept[1] == 2.0

    async def always_500() -> str:
        raise err(ServerError, status=500)

    with pytest.raises(ServerError):
        await retrying(always_500, max_retries=2, sleep=sleep)


async def test_what_is_not_retried() -> None:
    calls = 0

    async def sleep(s: float) -> None:
        pass

    async def fails(exc: Exception) -> None:
        nonlocal calls
        calls += 1
        raise exc

    for exc in (err(AuthError, status=401), err(ValidationError, status=400)):
        calls = 0
        with pytest.raises(type(exc)):
            await retrying(lambda e=exc: fails(e), max_retries=5, sleep=sleep)
        assert calls == 1
    # a non-idempotent call is not retried after a 5xx or a read timeout ...
    calls = 0
    with pytest.raises(ServerError):
        await retrying(
            lambda: fails(err(ServerError, status=500)),
            max_retries=5,
            idempotent=False,
            sleep=sleep,
        )
    assert calls == 1
    timeout = err(TransportError)
    timeout.__cause__ = httpx.ReadTimeout("slow")
    calls = 0
    with pytest.raises(TransportError):
        await retrying(lambda: fails(timeout), max_retries=5, idempotent=False, sleep=sleep)
    assert calls == 1
    # ... but is after a connection that never opened
    refused = err(TransportError)
    refused.__cause__ = httpx.ConnectError("refused")
    calls = 0
    with pytest.raises(TransportError):
        await retrying(lambda: fails(refused), max_retries=3, idempotent=False, sleep=sleep)
    assert calls == 4
