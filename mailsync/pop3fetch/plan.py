"""PURE: what a POP3 fetch should download and delete.

plan_fetch(listing, seen, policy, now) decides everything a run does before any of
it happens, so --dry-run prints exactly what a real run would do. Imports no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True)
class ServerMessage:
    number: int          # message number in this session (1-based)
    uid: str | None      # UIDL; None when the server has no UIDL command
    size: int


@dataclass(frozen=True)
class FetchPolicy:
    keep: bool = False
    keep_days: int = 0
    max_size: int = 0    # 0: no limit
    limit: int = 0       # 0: no limit


@dataclass(frozen=True)
class FetchPlan:
    downloads: tuple[ServerMessage, ...]   # in server order
    delete_after_download: bool            # DELE each download once it is stored and recorded
    deletes: tuple[ServerMessage, ...]     # stored by an earlier run: DELE now
    too_large: tuple[ServerMessage, ...]   # left on the server by max_size
    deferred: int                          # left for a later run by limit
    forget: tuple[str, ...]                # seen UIDLs the server no longer lists

    @property
    def download_bytes(self) -> int:
        return sum(m.size for m in self.downloads)

    @property
    def is_empty(self) -> bool:
        return not (self.downloads or self.deletes)


def plan_fetch(listing: list[ServerMessage], seen: dict[str, float], policy: FetchPolicy,
               now: float) -> FetchPlan:
    """Decide a run. seen maps a stored message's UIDL to when it was downloaded."""
    new, too_large, deletes = [], [], []
    for msg in listing:
        if msg.uid is not None and msg.uid in seen:
            # Stored by an earlier run: delete unless the account keeps mail (for now).
            if _due_for_deletion(seen[msg.uid], policy, now):
                deletes.append(msg)
        elif policy.max_size and msg.size > policy.max_size:
            too_large.append(msg)
        else:
            # No UIDL: it must be downloaded to be recognised by its content hash.
            new.append(msg)
    downloads = new[:policy.limit] if policy.limit else new
    listed = {m.uid for m in listing if m.uid is not None}
    forget = tuple(sorted(uid for uid in seen if not uid.startswith("sha256:")
                          and uid not in listed))
    return FetchPlan(
        downloads=tuple(downloads),
        delete_after_download=not policy.keep,
        deletes=tuple(deletes),
        too_large=tuple(too_large),
        deferred=len(new) - len(downloads),
        forget=forget,
    )


def _due_for_deletion(downloaded_at: float, policy: FetchPolicy, now: float) -> bool:
    if not policy.keep:
        return True
    return policy.keep_days > 0 and now - downloaded_at >= policy.keep_days * DAY
