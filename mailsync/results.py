"""Values the engines report: per-account and per-folder results for the summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

COUNTS = ("downloaded", "uploaded", "deleted_local", "deleted_remote", "flags_changed",
          "skipped", "bytes_downloaded", "paired", "left_for_later", "left_marked", "copied")


@dataclass
class Counts:
    downloaded: int = 0
    uploaded: int = 0
    deleted_local: int = 0
    deleted_remote: int = 0
    flags_changed: int = 0
    skipped: int = 0
    bytes_downloaded: int = 0
    paired: int = 0     # a first sync's messages found on both sides and recorded, not copied
    left_for_later: int = 0   # POP3 limit: new messages left on the server for a later run
    left_marked: int = 0      # IMAP without UIDPLUS: deleted locally, left marked \\Deleted
    copied: int = 0           # Gmail: stored from another label's copy, not downloaded again

    def add(self, other: "Counts") -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class FolderResult(Counts):
    name: str = ""
    ok: bool = True
    error: str | None = None
    exit_code: int = 0


@dataclass
class AccountResult(Counts):
    name: str = ""
    protocol: str = ""
    ok: bool = True
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    failing_since: float | None = None   # failed: when the account's failures began
    withheld: bool = False    # a temporary failure younger than report_after: quiet under -q
    plan: list[str] = field(default_factory=list)
    folders: list[FolderResult] | None = None
    skipped_folders: list[dict] = field(default_factory=list)   # IMAP: {"name", "reason"}

    def as_json(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        if self.folders is None:
            del data["folders"]
            del data["skipped_folders"]
        del data["withheld"]
        if not self.dry_run:
            del data["plan"]
        return data
