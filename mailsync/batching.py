"""Work cut into batches: a number of items and of bytes per batch, the one rule every
transfer uses. The limits are the caller's, for what a batch costs there:

- an IMAP body FETCH (imap/session.py, 200 / 16 MiB): one command's answer, streamed;
  smaller keeps a dropped link's loss and the first byte's wait short;
- the sync's durable download batch (imapsync/folder.py, 200 / 32 MiB): journalled, made
  durable with one syncfs and recorded together, so it spans about two FETCHes;
- a POP3 download batch (fetch.py, 100 / 64 MiB): one RETR per message anyway; the
  batch is what one syncfs and one state transaction cover before the DELEs."""

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
