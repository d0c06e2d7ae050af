"""Which server folder goes with which local Maildir folder, and which to create.

Local folders are found under the account's maildir by layout; server folders come
from LIST. pair_folders() is pure: from both listings and the folders the state
knows, it decides each folder's fate (sync, create on one side, skip with a reason).
Every local path is produced by names.local_relpath and checked again before use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailsync import names
from mailsync.errors import LocalIOError

if TYPE_CHECKING:
    from mailsync.imap import FolderStatus

LOCAL_MODES = ("sync", "pull", "backup")   # modes that may create local folders
REMOTE_MODES = ("sync", "push")            # modes that may create server folders


@dataclass(frozen=True)
class ServerSide:
    name: str                 # UTF-8 name as the user sees it
    raw: str                  # the server's own spelling, used on the wire
    delimiter: str | None


@dataclass(frozen=True)
class FolderPairing:
    name: str                        # the state's key: the server name, UTF-8
    relpath: str                     # local folder under the account's maildir
    server: ServerSide | None        # None: to be created on the server
    local_exists: bool
    create_local: bool = False
    create_remote: bool = False
    listed_status: "FolderStatus | None" = None   # from LIST-STATUS, if the server gave it


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


class UnsafeFolderPath(LocalIOError):
    """A folder whose local path would leave the account's maildir: only it fails (exit 74
    in its entry), the account's other folders go on."""


def resolve(root: Path, relpath: str) -> Path:
    """The folder's path; refuses anything that could leave the account's root."""
    if not names.is_safe_relpath(relpath):
        raise UnsafeFolderPath(f"refusing unsafe folder path {relpath!r}",
                               "report the server folder name that produced it")
    path = root / relpath if relpath else root
    real_root = os.path.realpath(root)
    # The folder and its cur/new/tmp: a link in either would carry writes outside.
    for candidate in (path, path / "cur", path / "new", path / "tmp"):
        real = os.path.realpath(candidate)
        if real != real_root and not real.startswith(real_root + os.sep):
            raise UnsafeFolderPath(f"folder {candidate} leads outside {root} "
                                   "(a symbolic link?)",
                                   "remove the link; mailsync never writes outside the "
                                   "maildir")
    return path


def local_folders(root: Path, layout: str) -> dict[tuple[str, ...], str]:
    """Maildir folders under root: components -> relpath (only names mailsync writes)."""
    found: dict[tuple[str, ...], str] = {}
    if not root.is_dir():
        return found
    if layout == "maildir++":
        candidates = [""] + [e for e in os.listdir(root) if e.startswith(".")
                             and e not in (".", "..")]
    else:
        candidates = _walk_fs(root)
    for relpath in candidates:
        if not _is_maildir(root / relpath if relpath else root):
            continue
        try:
            found[names.parts_from_local(relpath, layout)] = relpath
        except ValueError:
            continue   # not a folder name mailsync writes: left alone
    return found


def _walk_fs(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp")
                       and not d.startswith(".")]
        if rel != ".":
            out.append(rel.replace(os.sep, "/"))
    return out


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def pair_folders(server: list[ServerSide], local: dict[tuple[str, ...], str],
                 known: set[str], layout: str, mode: str, include: tuple[str, ...],
                 exclude: tuple[str, ...], delimiter: str | None
                 ) -> tuple[list[FolderPairing], list[Skipped]]:
    """Decide every folder's fate. known: folder names the state has synced before."""
    pairings: list[FolderPairing] = []
    skipped: list[Skipped] = []
    seen_local: set[tuple[str, ...]] = set()
    for folder in server:
        canonical = _canonical(folder.name)
        try:
            parts = names.canonical_parts(names.server_to_components(folder.name,
                                                                     folder.delimiter))
            relpath = names.local_relpath(parts, layout)
        except ValueError as exc:
            skipped.append(Skipped(folder.name, f"cannot map the name to a local folder: {exc}"))
            continue
        if not names.matches("/".join(parts), include, exclude):
            continue
        seen_local.add(parts)
        exists = parts in local
        if not exists and canonical not in known and mode not in LOCAL_MODES:
            continue   # push never creates local folders
        pairings.append(FolderPairing(canonical, relpath, folder, exists,
                                      create_local=not exists and canonical not in known))
    for parts, relpath in sorted(local.items()):
        if parts in seen_local:
            continue
        try:
            name = names.components_to_server(parts, delimiter)
        except ValueError as exc:
            skipped.append(Skipped("/".join(parts), f"cannot name it on the server: {exc}"))
            continue
        if not names.matches("/".join(parts), include, exclude):
            continue
        if name in known:
            skipped.append(Skipped(name, "the folder is gone from the server; the local "
                                         "copy is kept (delete it by hand if intended)"))
        elif mode in REMOTE_MODES:
            pairings.append(FolderPairing(name, relpath, None, True, create_remote=True))
    return pairings, skipped


def _canonical(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name
