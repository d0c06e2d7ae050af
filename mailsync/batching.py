"""Work cut into batches: a number of items and of bytes per batch, the one rule every
transfer uses (IMAP body fetches, the sync's durable download batches, POP3 downloads)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def batches(items: Iterable[T], size_of: Callable[[T], int], count: int,
            nbytes: int) -> Iterator[list[T]]:
    """items in consecutive batches of at most count items and nbytes bytes; an item
    bigger than nbytes goes alone."""
    batch: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and (len(batch) >= count or total + size > nbytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch
