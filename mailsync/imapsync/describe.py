"""A folder's plan in words, one line per action, for --dry-run."""

from __future__ import annotations

from typing import Iterable, Mapping

from mailsync.contracts import MANAGED, Entry
from mailsync.imapsync.plan import (DeleteLocal, Download, ExpungeRemote, FolderPlan,
                               SetLocalFlags, SetRemoteFlags, Upload, UpgradePlaceholder)


def describe(plan: FolderPlan, entries: Mapping[str, Entry] | None = None) -> list[str]:
    """Flag changes on either side in one notation: the letters added and removed
    (+S -F); entries, the local messages as planned from, give the local side's letters
    before. Record and Forget only touch the state: nothing to show."""
    lines = []
    for a in plan.actions:
        if isinstance(a, Download):
            lines.append(f"download UID {a.uid}" + (" (headers first)" if a.headers_only
                                                      else ""))
        elif isinstance(a, Upload):
            lines.append(f"upload local message {a.key}")
        elif isinstance(a, UpgradePlaceholder):
            lines.append(f"download the whole of UID {a.uid} for placeholder {a.key}")
        elif isinstance(a, SetRemoteFlags):
            lines.append(f"flags on the server, UID {a.uid}: {_flag_change(a.add, a.remove)}")
        elif isinstance(a, SetLocalFlags):
            entry = (entries or {}).get(a.key)
            before = frozenset(c for c in entry.flags if c in MANAGED) if entry else None
            change = (_flag_change(a.flags - before, before - a.flags) if before is not None
                      else _flag_change(a.flags, frozenset(MANAGED) - a.flags))
            lines.append(f"flags locally, {a.key}: {change}")
        elif isinstance(a, ExpungeRemote):
            lines.append(f"expunge UID {a.uid} on the server (deleted locally)")
        elif isinstance(a, DeleteLocal):
            lines.append(f"delete local {a.key} (expunged on the server)")
    return lines


def _flag_change(add: Iterable[str], remove: Iterable[str]) -> str:
    """Maildir flag letters added and removed: "+FS -T" (a side left out when empty)."""
    parts = [f"{sign}{''.join(sorted(letters))}" for sign, letters in (("+", add), ("-", remove))
             if letters]
    return " ".join(parts) or "unchanged"
