"""Server UIDs that other tools recorded for the files of a Maildir folder.

Only hints for the first sync's content pairing (mailsync.adoption), which takes one
only when the Message-ID and size of that UID's server message agree with the file:
a stale state file or a renamed file can never pair two different messages.

- offlineimap names its files ``…,U=<server uid>,FMD5=<md5 of the folder name>:2,…``.
- mbsync names them ``…,U=<its own Maildir uid>:2,…`` and keeps, in ``.mbsyncstate``
  in the folder (its default ``SyncState *``), the server's UIDVALIDITY and a line
  ``<server uid> <Maildir uid> <flags>`` per message.
- Dovecot keeps ``dovecot-uidlist``: its UIDVALIDITY (``V``) on the first line, then
  ``<uid> [fields] :<file name>`` per message; those are the server's UIDs when the
  Maildir is a copy of the server's own store (a restored server backup).
A trace whose UIDVALIDITY differs from the server's is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

__all__ = ["server_uid_hints"]

_OFFLINEIMAP = re.compile(r",U=(\d+),FMD5=[0-9a-fA-F]{32}")
_MBSYNC = re.compile(r",U=(\d+)(?:,|$)")
_MBSYNC_VALIDITY = re.compile(r"^(?:Far|Master)UidValidity (\d+)$")
_MAX_TRACE_BYTES = 64 << 20   # a state file larger than this is not one of theirs


def server_uid_hints(folder: Path, keys: Iterable[str], uidvalidity: int) -> dict[str, int]:
    """key -> server UID, from whichever of the traces above the folder holds."""
    keys = list(keys)
    hints = _dovecot_uidlist(folder, keys, uidvalidity)
    hints.update(_mbsync(folder, keys, uidvalidity))
    hints.update((key, int(m.group(1))) for key in keys
                 if (m := _OFFLINEIMAP.search(key)))
    return hints


def _read_lines(path: Path) -> list[str] | None:
    try:
        if path.stat().st_size > _MAX_TRACE_BYTES:
            return None
        return path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return None


def _mbsync(folder: Path, keys: list[str], uidvalidity: int) -> dict[str, int]:
    lines = _read_lines(folder / ".mbsyncstate")
    if not lines:
        return {}
    far_of_near: dict[int, int] = {}
    valid = False
    for line in lines:
        if m := _MBSYNC_VALIDITY.match(line):
            valid = int(m.group(1)) == uidvalidity
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            far_of_near[int(fields[1])] = int(fields[0])
    if not valid:
        return {}
    hints = {}
    for key in keys:
        m = _MBSYNC.search(key)
        if m and not _OFFLINEIMAP.search(key) and int(m.group(1)) in far_of_near:
            hints[key] = far_of_near[int(m.group(1))]
    return {k: uid for k, uid in hints.items() if uid > 0}


def _dovecot_uidlist(folder: Path, keys: list[str], uidvalidity: int) -> dict[str, int]:
    lines = _read_lines(folder / "dovecot-uidlist")
    if not lines or not _uidlist_valid(lines[0], uidvalidity):
        return {}
    wanted = set(keys)
    hints = {}
    for line in lines[1:]:
        uid, _, rest = line.partition(" ")
        # version 3: "<uid> [W<size> ...] :<name>"; version 1: "<uid> <name>"
        name = rest[1:] if rest.startswith(":") else rest.partition(" :")[2] or rest
        key = name.split(":2,", 1)[0].strip()
        if uid.isdigit() and key in wanted:
            hints[key] = int(uid)
    return hints


def _uidlist_valid(first: str, uidvalidity: int) -> bool:
    fields = first.split()
    if fields[:1] == ["3"]:
        return any(f == f"V{uidvalidity}" for f in fields[1:])
    return fields[:2] == ["1", str(uidvalidity)]
