"""Experiments: splitting recipients between variants by weight, with a holdout.

A block's `split` names some of its variants with weights, e.g.
`{"weights": {"coupon-a": 50, "coupon-b": 50}, "holdout": 10}`. Each recipient lands in
one arm, decided by a hash of the block id and the recipient id: the same recipient
gets the same arm at every open and in every process, with nothing stored. A recipient
in the holdout (the given percentage) always gets the default; otherwise the variants of
the other arms are out of reach for them, and the rest of the block's rules apply as
usual (the arm's own `when` still has to hold).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

# Buckets a recipient is hashed into: fine enough for weights and a percentage holdout.
_BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Split:
    weights: Mapping[str, int]
    holdout_percent: float = 0.0

    def arm(self, block_id: str, recipient: str) -> str | None:
        """The variant this recipient is assigned, or None for the holdout."""
        digest = hashlib.sha256(f"{block_id}\x00{recipient}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") % _BUCKETS
        if bucket < self.holdout_percent / 100 * _BUCKETS:
            return None
        # Rescale the rest of the buckets over the arms, in their declared order.
        held = int(self.holdout_percent / 100 * _BUCKETS)
        position = (bucket - held) / max(1, _BUCKETS - held) * sum(self.weights.values())
        for name, weight in self.weights.items():
            if position < weight:
                return name
            position -= weight
        return list(self.weights)[-1]


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one recipient may see of a block with a split."""

    holdout: bool = False
    excluded: frozenset[str] = frozenset()


# What every recipient may see of a block without a split (made once: one per open).
EVERYTHING = Assignment()


def assign(split: Split | None, block_id: str, recipient: str | None) -> Assignment:
    if split is None:
        return EVERYTHING
    arms = frozenset(split.weights)
    if recipient is None:
        return Assignment(excluded=arms)  # an arm belongs to a recipient
    chosen = split.arm(block_id, recipient)
    if chosen is None:
        return Assignment(holdout=True)
    return Assignment(excluded=arms - {chosen})


def parse_split(
    raw: object, variant_names: frozenset[str]
) -> tuple[Split | None, list[tuple[str, str]]]:
    """A block's `split` field, or the problems with it as (field, message) pairs."""
    if raw is None:
        return None, []
    if not isinstance(raw, dict) or set(raw) - {"weights", "holdout"}:
        return None, [("split", 'must be {"weights": {VARIANT: WEIGHT, ...}, "holdout": PERCENT}')]
    problems: list[tuple[str, str]] = []
    weights = raw.get("weights")
    if not isinstance(weights, dict) or len(weights) < 1:
        problems.append(("split.weights", "required: variant names with whole-number weights"))
        weights = {}
    whole: dict[str, int] = {}
    for name, weight in weights.items():
        if name not in variant_names:
            problems.append((f"split.weights.{name}", "not a variant of this block"))
        # JSON has one number type: 50.0 is as good as 50; true is not a number here.
        number = weight if isinstance(weight, int | float) and not isinstance(weight, bool) else 0
        if not (1 <= number <= 10_000 and float(number).is_integer()):
            problems.append((f"split.weights.{name}", "must be a whole number from 1 to 10000"))
        else:
            whole[name] = int(number)
    holdout = raw.get("holdout", 0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 100:
        problems.append(("split.holdout", "must be a percentage from 0 up to (not including) 100"))
    if problems:
        return None, problems
    return Split(whole, float(holdout)), []
