"""The retry policy: how many attempts, and how long to wait before each next one."""

from __future__ import annotations

import math

import msgspec

from .errors import ConfigurationError
from .validation import MAX_DELAY_SECONDS


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Delay before attempt n+1 is `min(base_delay * 2 ** (n - 1), max_delay)` seconds.

    The defaults are the reference system's: 3 attempts, 1 s base, 60 s cap."""

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 100:
            raise ConfigurationError("max_attempts must be between 1 and 100")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry delays must not be negative")
        # NaN or infinity would fail the retry's write (no number of milliseconds) and leave
        # the attempt to end as cut off; a run waits at most what a create may delay it.
        if not math.isfinite(self.base_delay) or not 0 <= self.max_delay <= MAX_DELAY_SECONDS:
            raise ConfigurationError(
                f"retry delays must be finite, and max_delay at most {MAX_DELAY_SECONDS} s"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt `attempt` (1-based) failed."""
        return float(min(self.base_delay * 2 ** (attempt - 1), self.max_delay))
