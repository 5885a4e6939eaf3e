"""Deterministic, participant-level train/validation/test splits.

Why a hash and not a shuffle: a shuffled split depends on who else is in the cohort, so adding or
dropping one participant (a withdrawal, a QC change) reshuffles everyone and leaks test participants into
training across versions. Hashing ``(seed, eid)`` to a uniform number gives every participant a fixed
split for a given seed, whatever the cohort, and all blows of a participant follow their eid.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence

import numpy as np


class Split(str, enum.Enum):
    """Split names as stored in ``participants.split``."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


SPLITS: tuple[str, ...] = tuple(s.value for s in Split)
"""The split names in order (train, val, test): the one tuple every module iterates over."""

_NAMES = np.array(SPLITS)
_SCALE = float(2**64)


def hash_uniform(eid: object, seed: int) -> float:
    """A uniform number in [0, 1) fixed by ``(seed, eid)`` (blake2b, 8-byte digest).

    ``eid`` is formatted with ``str(int(eid))`` when it is integral so ``123``, ``np.int64(123)`` and
    ``"123"`` land in the same split.
    """
    key = _eid_key(eid)
    digest = hashlib.blake2b(f"{int(seed)}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign_split(
    eids: Iterable[object], seed: int = 0, fractions: Sequence[float] = (0.70, 0.15, 0.15)
) -> np.ndarray:
    """Assign each participant to ``train`` / ``val`` / ``test``.

    Args:
        eids: participant ids.
        seed: split seed; a different seed gives an independent split.
        fractions: expected (train, val, test) fractions; must be non-negative and sum to 1.

    Returns:
        ``np.ndarray[str]`` of split names, aligned with ``eids``.

    Raises:
        ValueError: fractions of the wrong length, negative, or not summing to 1 (a programming error,
            not user data).
    """
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    u = np.fromiter((hash_uniform(e, seed) for e in eids), dtype=float)
    edges = np.cumsum(frac)[:2]
    return _NAMES[np.searchsorted(edges, u, side="right")]


def _eid_key(eid: object) -> str:
    if isinstance(eid, (int, np.integer)):
        return str(int(eid))
    text = str(eid).strip()
    try:
        as_float = float(text)
    except ValueError:
        return text
    return str(int(as_float)) if as_float.is_integer() else text
