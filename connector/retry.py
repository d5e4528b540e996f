"""What an HTTP outcome means, and how long to wait before trying again.

One table (:data:`STATUS_ACTIONS`) decides, for both APIs, what each status or transport error
means: retry, rate-limited (wait as told, then retry), refresh-the-token-then-retry, or fail.
"Why did it retry?" has this one place to look. :func:`backoff_seconds` is the wait, a pure
function of the attempt and what the server said; :func:`retrying` runs an async call under
that policy with tenacity.

Non-idempotent calls (a create without an idempotency key) are not retried after a timeout or
a 5xx — the request may have been applied — only after a 429 or a connection that never opened.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from connector.errors import ApiError, RateLimitedError, ServerError, TransportError

T = TypeVar("T")


class Action(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    REFRESH_TOKEN = "refresh_token_then_retry"
    FAIL = "fail"


STATUS_ACTIONS: dict[int, Action] = {
    408: Action.RETRY,
    423: Action.RETRY,  # HubSpot: locked by a concurrent write
    425: Action.RETRY,  # Brevo: contact still being processed
    429: Action.RATE_LIMITED,
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    504: Action.RETRY,
}
"""Statuses that are not plain success or plain failure. 401 is FAIL: HubSpot says a 401 is no
sign that a new token is needed (tokens are refreshed ahead of ``expires_in``), so a 401 means
a revoked or wrong credential."""

TRANSPORT_ACTIONS: dict[type[BaseException], Action] = {
    httpx.ConnectError: Action.RETRY,
    httpx.ConnectTimeout: Action.RETRY,
    httpx.ReadTimeout: Action.RETRY,
    httpx.WriteTimeout: Action.RETRY,
    httpx.PoolTimeout: Action.RETRY,
    httpx.RemoteProtocolError: Action.RETRY,
    httpx.ReadError: Action.RETRY,
}


def classify(status: int) -> Action:
    if 200 <= status < 400:
        return Action.OK
    return STATUS_ACTIONS.get(status, Action.RETRY if status >= 500 else Action.FAIL)


def classify_exception(exc: BaseException) -> Action:
    for kind, action in TRANSPORT_ACTIONS.items():
        if isinstance(exc, kind):
            return action
    return Action.FAIL


def never_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached the server (safe to retry any method)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def backoff_seconds(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 0.5,
    cap: float = 60.0,
    jitter: float = 0.25,
    rng: random.Random | None = None,
) -> float:
    """Wait before retry number ``attempt`` (1-based).

    A server's ``Retry-After`` (or rate-limit reset) wins; otherwise exponential
    ``base · 2^(attempt-1)`` capped at ``cap``, with ±``jitter`` spread so that many clients do
    not retry in step.
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, 3_600.0)
    r = rng or random
    raw: float = min(cap, base * 2.0 ** (attempt - 1))
    return max(0.0, raw * (1 + r.uniform(-jitter, jitter)))


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    if isinstance(exc, RateLimitedError):
        return True
    if isinstance(exc, TransportError):
        cause = exc.__cause__
        return idempotent or (cause is not None and never_sent(cause))
    if isinstance(exc, ServerError):
        return idempotent
    return False


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after: float | None = exc.retry_after if isinstance(exc, RateLimitedError) else None
    return backoff_seconds(state.attempt_number, retry_after=retry_after)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    idempotent: bool = True,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    wait: Callable[[RetryCallState], float] = _wait,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or ``max_retries`` retries are spent.

    ``call`` raises the typed :class:`~connector.errors.ApiError` subclasses; which of them are
    retried is :func:`is_retryable`. The last error is re-raised as it is.
    """
    kwargs = {"sleep": sleep} if sleep is not None else {}
    retryer = AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1),
        retry=retry_if_exception(
            lambda e: isinstance(e, ApiError) and is_retryable(e, idempotent=idempotent)
        ),
        wait=wait,
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )
    async for attempt in retryer:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
