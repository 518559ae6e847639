"""Tests of the shared helpers of the stateful tailed sources (bridge/sources/_stateful.py)."""

from __future__ import annotations

import random

from bridge.sources._stateful import candidate_lines, candidate_lines_while

NEEDLES = (b'"a"', b'"b"')
EARLY = (b'"h"', b'"x"')


def _buf(rng: random.Random) -> bytes:
    words = [b'"a"', b'"b"', b'"h"', b'"x"', b"zz", b"yy yy", b'"q"']
    lines = [b"{" + b",".join(rng.choices(words, k=rng.randint(0, 4))) + b"}" for _ in range(rng.randint(0, 30))]
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")


def test_while_wanted_it_gives_the_same_lines_as_searching_every_needle() -> None:
    rng = random.Random(7)
    for _ in range(300):
        buf = _buf(rng)
        assert list(candidate_lines_while(buf, NEEDLES, EARLY, lambda: True)) == candidate_lines(buf, NEEDLES + EARLY)


def test_once_not_wanted_early_only_lines_are_no_longer_given_and_order_is_kept() -> None:
    rng = random.Random(8)
    for _ in range(300):
        buf = _buf(rng)
        every = candidate_lines(buf, NEEDLES + EARLY)
        main = set(candidate_lines(buf, NEEDLES))
        seen: list[tuple[int, int]] = []
        state = {"want": True}
        for span in candidate_lines_while(buf, NEEDLES, EARLY, lambda: state["want"]):  # noqa: B023 - used within this iteration
            seen.append(span)
            if span not in main:
                state["want"] = False  # the header was read
        first_early = next((s for s in every if s not in main), None)
        want = [s for s in every if s in main or s == first_early]
        assert seen == want
