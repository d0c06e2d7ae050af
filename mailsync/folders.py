"""Which server folder goes with which local Maildir folder, and which to create.

Local folders are found under the account's maildir by layout; server folders come
from LIST. pair_folders() is pure: from both listings and the folders the state
knows, it decides each folder's fate (sync, create on one side, skip with a reason).
Every local path is produced by names.local_relpath, or is one of the names
names.peer_relpaths says mbsync or offlineimap would have used for a server folder
(so a Maildir they filled is adopted, not doubled), and is checked again before use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailsync import names
from mailsync.errors import LocalIOError
from mailsync.modes import CHANGE_SERVER, FILL_MAILDIR

if TYPE_CHECKING:
    from mailsync.contracts import FolderStatus

LOCAL_MODES = FILL_MAILDIR     # modes that may create local folders
REMOTE_MODES = CHANGE_SERVER   # modes that may create server folders


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
    fails: bool = True    # a server folder left unsynced (the run exits 1); False: a note


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


def local_maildirs(root: Path, layout: str) -> dict[str, tuple[str, ...] | None]:
    """Every Maildir folder under root: relpath -> the folder mailsync's naming gives it,
    or None for a name mailsync does not write (another tool's, perhaps: pair_folders
    may still adopt it for a server folder)."""
    found: dict[str, tuple[str, ...] | None] = {}
    if not root.is_dir():
        return found
    if layout in names.MAILDIRPP:
        candidates = [""] + [e for e in os.listdir(root) if e.startswith(".")
                             and e not in (".", "..")]
    else:
        candidates = _walk_fs(root)
    for relpath in candidates:
        if not _is_maildir(root / relpath if relpath else root):
            continue
        found[relpath] = _parts(relpath, layout)
    return found


def _parts(relpath: str, layout: str) -> tuple[str, ...] | None:
    """The folder a local path names: in mailsync's naming for the layout, else (in
    maildir++) in its UTF-8 spelling, which mailsync wrote before modified UTF-7 became
    the default there and which a user may still make by hand (`.Entwürfe`)."""
    for spelling in (layout, "maildir++-utf8") if layout == "maildir++" else (layout,):
        try:
            return names.parts_from_local(relpath, spelling)
        except ValueError:
            continue
    return None


def local_folders(root: Path, layout: str) -> dict[tuple[str, ...], str]:
    """Maildir folders under root: components -> relpath (only names mailsync writes)."""
    return {parts: relpath for relpath, parts in local_maildirs(root, layout).items()
            if parts is not None}


def _walk_fs(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        # Hidden directories below the top are mbsync's "SubFolders Legacy" children
        # (Top/.Sub); hidden ones at the top are other programs' (.notmuch, ...).
        dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp")
                       and not (d.startswith(".") and rel == ".")]
        if rel != ".":
            out.append(rel.replace(os.sep, "/"))
    return out


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


@dataclass(frozen=True)
class Namespace:
    """The server's personal namespace prefix (decoded, e.g. "INBOX.", or "") and the
    prefixes of its other users' and shared namespaces (see imap.Namespaces)."""

    prefix: str = ""
    others: tuple[str, ...] = ()

    def shown(self, name: str) -> str:
        """A personal folder's name as the user sees it: without the personal prefix
        (`INBOX.Sent` -> `Sent`); INBOX and names outside the prefix stay as they are."""
        if (self.prefix and name.startswith(self.prefix) and len(name) > len(self.prefix)
                and name.upper() != "INBOX"):
            return name[len(self.prefix):]
        return name

    def outside(self, name: str) -> bool:
        """Whether a server folder lies outside the personal namespace (another user's
        or a shared folder): under another namespace's prefix, or, when the personal
        namespace has a prefix, not under it (and not INBOX)."""
        if names.canonical_parts((name,)) == (names.INBOX,):
            return False
        if self.prefix:
            return not (name.startswith(self.prefix) and len(name) > len(self.prefix))
        return any(o and name.startswith(o) for o in self.others)

    def server_name(self, name: str) -> str:
        """A new folder's server name: under the personal prefix."""
        return name if name.upper() == "INBOX" else self.prefix + name


def namespace_of(session: object) -> Namespace:
    """An IMAP session's namespaces (imap.Namespaces) as pair_folders takes them."""
    ns = getattr(session, "namespaces", None)
    if ns is None:
        return Namespace()
    return Namespace(ns.personal, tuple(prefix for prefix, _ in ns.others))


@dataclass(frozen=True)
class _Mapped:
    folder: ServerSide
    name: str                    # canonical: the state's key (the server's whole name)
    parts: tuple[str, ...]       # of the name as the user sees it (no personal prefix)
    own: str                     # mailsync's own relpath
    peers: tuple[str, ...]       # mbsync's and offlineimap's, in order of preference
    shown: str = ""              # the name without the personal prefix
    outside: bool = False        # outside the personal namespace


def selected(name: str, shown_parts: tuple[str, ...], shown: str, namespace: Namespace,
             include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether folders/exclude (or --folder) select a server folder.

    A pattern is matched against the name the user sees, with its components joined
    by `/` (`Projects/2026`, `Sent`) or by the server's delimiter (`Projects.2026`); a
    pattern that starts with the personal namespace's prefix (`INBOX.Sent`, `INBOX.*`),
    against the server's whole name. A folder outside the personal namespace (other
    users', shared) is selected only by a pattern that names it from its start (no
    leading wildcard: `Shared Folders/*`, `user.bob.*`): `*` means your own folders."""
    return (_hits(name, shown_parts, shown, namespace, include, True)
            and not _hits(name, shown_parts, shown, namespace, exclude, False))


def _hits(name: str, shown_parts: tuple[str, ...], shown: str, namespace: Namespace,
          patterns: tuple[str, ...], including: bool) -> bool:
    outside = namespace.outside(name)
    for pattern in patterns:
        if outside:
            if pattern[:1] in ("*", "?", ""):
                continue
            candidates = (name, "/".join(shown_parts))
        elif namespace.prefix and pattern.startswith(namespace.prefix):
            candidates = (name,)
        else:
            candidates = ("/".join(shown_parts), shown)
        if any(names.matches(c, (pattern,)) for c in candidates):
            return True
    return False


def pair_folders(server: list[ServerSide], local: Mapping[str, tuple[str, ...] | None],
                 known: Mapping[str, str], layout: str, mode: str, include: tuple[str, ...],
                 exclude: tuple[str, ...], delimiter: str | None,
                 namespace: Namespace = Namespace()
                 ) -> tuple[list[FolderPairing], list[Skipped]]:
    """Decide every folder's fate.

    local: every Maildir under the root, relpath -> components (None for a name
    mailsync does not write), as local_maildirs gives it. known: the folders the state
    has synced before, name -> the relpath recorded for them. namespace: the server's
    personal prefix, left out of local names (`INBOX.Sent` is `.Sent`) and put in front
    of new server folders; the path the whole name gives (`.INBOX.Sent`, what mailsync
    wrote before it read NAMESPACE) is kept where it exists or was recorded.
    """
    pairings: list[FolderPairing] = []
    skipped: list[Skipped] = []
    mapped: list[_Mapped] = []
    for folder in server:
        outside = namespace.outside(folder.name)
        shown = folder.name if outside else namespace.shown(folder.name)
        try:
            parts = names.canonical_parts(names.server_to_components(shown,
                                                                     folder.delimiter))
            own = names.local_relpath(parts, layout)
            whole = names.canonical_parts(names.server_to_components(folder.name,
                                                                     folder.delimiter))
            # Paths mailsync itself wrote before: with the personal prefix (before it
            # read NAMESPACE), in UTF-8 (before modified UTF-7 was maildir++'s naming).
            olds = [(parts, False), (parts, True)] + ([(whole, False), (whole, True)]
                                                      if whole != parts else [])
            legacy = tuple(dict.fromkeys(
                p for p in (names.other_spelling(ps, layout) if other
                            else names.local_relpath(ps, layout) for ps, other in olds)
                if p and p != own))
        except ValueError as exc:
            skipped.append(Skipped(folder.name, f"cannot map the name to a local folder: {exc}"))
            continue
        peers = tuple(dict.fromkeys(legacy + names.peer_relpaths(parts, layout)))
        mapped.append(_Mapped(folder, _canonical(folder.name), parts, own, peers, shown,
                              outside))
    relpaths = _choose_relpaths(mapped, local, known)
    recorded_for = {relpath: name for name, relpath in known.items()}
    listed = {m.name for m in mapped}
    # Local Maildirs that are a listed server folder's are never offered as new ones;
    # nor is a peer's copy of a listed folder that syncs with another path.
    consumed = set(relpaths.values()) | {m.own for m in mapped}
    for m in mapped:
        relpath = relpaths[m.name]
        if relpath is None:
            skipped.append(Skipped(m.name, f"its local folder {m.own} is server folder "
                                           f"{recorded_for[m.own]}'s (another tool's name "
                                           "for it); rename one of them on the server"))
            continue
        copies = [p for p in m.peers if p in local and p not in consumed
                  and p not in recorded_for]
        consumed.update(copies)
        if not selected(m.name, m.parts, m.shown, namespace, include, exclude):
            continue
        for copy in copies:
            skipped.append(Skipped(_local_label(copy, local[copy]),
                                   f"looks like mbsync's or offlineimap's copy of server "
                                   f"folder {m.name}, which syncs with "
                                   f"{relpath or 'the maildir root'}; left alone", False))
        if relpath != m.own and m.own in local and m.own not in recorded_for:
            skipped.append(Skipped(m.name, f"syncs with {relpath} (another tool's name for "
                                           f"it); the folder {m.own} is left alone", False))
        exists = relpath in local
        if not exists and m.name not in known and mode not in LOCAL_MODES:
            continue   # push never creates local folders
        pairings.append(FolderPairing(m.name, relpath, m.folder, exists,
                                      create_local=not exists and m.name not in known))
    uploading: dict[str, str] = {}   # new server folder -> the local folder it comes from
    for relpath, parts in sorted(local.items(), key=lambda item: _own_first(item, layout)):
        if relpath in consumed:
            continue
        if relpath in recorded_for and recorded_for[relpath] not in listed:
            name = recorded_for[relpath]
            shown = namespace.shown(name)
            if selected(name, names.server_to_components(shown, delimiter), shown, namespace,
                        include, exclude):
                skipped.append(Skipped(name, "the folder is gone from the server; the "
                                             "local copy is kept (delete it by hand if "
                                             "intended)", False))
            continue
        if parts is None:
            continue   # not a name mailsync writes, nor any server folder's: left alone
        try:
            shown = names.components_to_server(parts, delimiter)
            name = namespace.server_name(shown)
        except ValueError as exc:
            skipped.append(Skipped("/".join(parts), f"cannot name it on the server: {exc}"))
            continue
        if not selected(name, parts, shown, namespace, include, exclude):
            continue
        if name in known:
            skipped.append(Skipped(name, "the folder is gone from the server; the local "
                                         "copy is kept (delete it by hand if intended)", False))
        elif name in uploading:
            # the same name in both Maildir++ spellings (.Entw&APw-rfe and .Entwürfe)
            skipped.append(Skipped(relpath, f"names the same folder as "
                                            f"{uploading[name]}, which is created on the "
                                            f"server as {name}; left alone", False))
        elif mode in REMOTE_MODES:
            uploading[name] = relpath
            pairings.append(FolderPairing(name, relpath, None, True, create_remote=True))
    return pairings, skipped


def _own_first(item: tuple[str, tuple[str, ...] | None], layout: str) -> tuple[bool, str]:
    """Local folders in order, the layout's own spelling of a name before another's."""
    relpath, parts = item
    try:
        own = parts is not None and names.local_relpath(parts, layout) == relpath
    except ValueError:
        own = False
    return (not own, relpath)


def _choose_relpaths(mapped: list[_Mapped], local: Mapping[str, tuple[str, ...] | None],
                     known: Mapping[str, str]) -> dict[str, str | None]:
    """Each server folder's local path: the one the state recorded (if this layout could
    have given it: after a change of layout the folder maps afresh), else mailsync's own
    if it exists, else the first peer's name that exists as a Maildir, else mailsync's
    own (to be created).

    A peer's name never takes a path that is some folder's by right (mailsync's own name
    for a listed folder, or recorded for a known one), nor one an earlier folder took.
    None: the folder's own path is recorded for another folder that took it under a
    peer's name (a server folder literally named like mbsync's spelling of another).
    """
    chosen: dict[str, str | None] = {}
    for m in mapped:
        recorded = known.get(m.name)
        # A recorded peer's path that is gone while the own one exists: renamed to it.
        if recorded is not None and (recorded == m.own or recorded in m.peers and (
                recorded in local or m.own not in local)):
            chosen[m.name] = recorded
    taken = {m.own for m in mapped} | set(known.values()) | set(chosen.values())
    holders = {relpath: name for name, relpath in known.items()
               if chosen.get(name) == relpath or name not in {m.name for m in mapped}}
    for m in mapped:
        if m.name in chosen:
            continue
        if holders.get(m.own, m.name) != m.name:
            chosen[m.name] = None
        elif m.own in local:
            chosen[m.name] = m.own
        else:
            chosen[m.name] = next((p for p in m.peers if p in local and p not in taken),
                                  m.own)
            taken.add(chosen[m.name])
    return chosen


def _local_label(relpath: str, parts: tuple[str, ...] | None) -> str:
    return "/".join(parts) if parts is not None else relpath


def _canonical(name: str) -> str:
    return "INBOX" if name.upper() == "INBOX" else name
