"""Sortable ids: a prefix, then a ULID (48-bit millisecond time, 80 random bits, in Crockford
base32). Ids made in the same millisecond by one process increase monotonically, so sorting
ids sorts runs by creation."""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_BITS = 130  # 26 digits of 5 bits
_MASK = (1 << _BITS) - 1
# Every pair of digits, by the 10 bits they spell: an id is 13 lookups and a join.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
_SHIFTS = tuple(range(_BITS - 10, -1, -10))


def _encode(value: int) -> str:
    """The low 130 bits of `value` as 26 Crockford base32 digits, most significant first,
    two digits at a time (a create makes one id: this is about 3x cheaper than base64's
    base32 and a translation)."""
    value &= _MASK
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def run_ids_before(ms: int) -> str:
    """A bound below every run id made at or after `ms` and above every one made before it
    (the alphabet is in ASCII order, so text order is time order). A time before 1970 is
    below every id (a negative one would wrap around to above them all)."""
    return "run_" + _encode(max(ms, 0) << _RANDOM_BITS)


class IdFactory:
    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def ulid(self, now_ms: int) -> str:
        if now_ms <= self._last_ms:
            # Same (or an earlier) millisecond: keep the time, step the random part.
            now_ms = self._last_ms
            random = self._last_random + 1
        else:
            random = int.from_bytes(os.urandom(10), "big")
        self._last_ms, self._last_random = now_ms, random
        return _encode((now_ms << _RANDOM_BITS) | (random & ((1 << _RANDOM_BITS) - 1)))

    def run_id(self, now_ms: int) -> str:
        return "run_" + self.ulid(now_ms)

    def schedule_id(self, now_ms: int) -> str:
        return "sch_" + self.ulid(now_ms)
