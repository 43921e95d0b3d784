"""Retry what fails for a moment (refused connections, 5xx, rejected associations) with backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("xaimed")

T = TypeVar("T")


class TransientError(Exception):
    """A failure that may go away when tried again: the server is down, busy or restarting."""


class PermanentError(Exception):
    """A failure that retrying cannot mend: refused credentials, a missing study, bad data."""


def with_retries(
    action: Callable[[], T], *, what: str, retries: int, backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:  # fmt: skip
    """``action()``, tried again after a ``TransientError`` up to ``retries`` times.

    The waits are ``backoff_s``, twice that, four times, ... so a server that restarts has time to
    come back; the last TransientError propagates with the number of tries in its message.
    """
    wait, attempt = backoff_s, 0
    while True:
        try:
            return action()
        except TransientError as exc:
            if attempt == retries:
                raise TransientError(f"{exc} (tried {retries + 1} times)") from None
            log.info("%s failed (%s); retrying in %.1f s", what, exc, wait)
            sleep(wait)
            wait, attempt = wait * 2, attempt + 1
