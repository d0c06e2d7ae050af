"""`--shard K/N`: a stable share of the accounts, for spreading them over machines.

An account belongs to share K (0 to N-1) of N when a hash of its name, the same on
every machine and in every Python (SHA-256, not hash()), is K modulo N. So N
processes given 0/N ... N-1/N (a Kubernetes Indexed Job's JOB_COMPLETION_INDEX, a
Slurm array's task ID, GNU parallel's sequence) together take every account exactly
once, with no coordinator. Changing N moves accounts between shares; two shares
that then overlap for a moment are kept apart by each account's lock.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence, TypeVar

from mailsync.errors import UsageError

T = TypeVar("T")
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N), with 0 <= K < N."""
    m = _SHARD.fullmatch(text or "")
    if m is None:
        raise UsageError(f"--shard {text!r} is not K/N",
                         "write it as K/N, e.g. --shard 0/4 (K counts from 0 to N-1)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or k >= n:
        raise UsageError(f"--shard {text}: K must be 0 to N-1 and N at least 1",
                         f"use 0/{max(n, 1)} to {max(n, 1) - 1}/{max(n, 1)}")
    return k, n


def shard_of(name: str, count: int) -> int:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(items: Sequence[T], shard: tuple[int, int], name=lambda a: a.name) -> list[T]:
    k, n = shard
    return [a for a in items if shard_of(name(a), n) == k]
