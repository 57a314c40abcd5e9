from __future__ import annotations

import random

from kumofire_jobs.core.ids import IdFactory, run_ids_before

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _digits(value: int) -> str:
    """The reference: the low 130 bits of `value` as 26 Crockford digits, one at a time."""
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def test_ids_spell_their_time_and_random_bits_in_crockford_base32() -> None:
    ids = IdFactory()
    rng = random.Random(7)
    for ms in [0, 1, 1_798_761_600_000, (1 << 48) - 1, *(rng.getrandbits(48) for _ in range(500))]:
        made = ids.ulid(ms)
        value = (ids._last_ms << 80) | (ids._last_random & ((1 << 80) - 1))
        assert made == _digits(value)
        assert len(made) == 26
    assert run_ids_before(1_798_761_600_000) == "run_" + _digits(1_798_761_600_000 << 80)
    assert run_ids_before(-5) == "run_" + "0" * 26


def test_ids_made_in_one_millisecond_sort_in_the_order_made() -> None:
    ids = IdFactory()
    made = [ids.run_id(1_798_761_600_000) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == 1000
