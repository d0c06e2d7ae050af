"""The local Maildir: scan, durable delivery, flag renames, removal.

A message's key is its unique name without the ":2,FLAGS" info; mail clients may
rename a file (flags) or move it between new/ and cur/ without changing the key.
Delivery is write to tmp/, fsync, rename into new/ or cur/, fsync the folder.
Files are 0600 and folders 0700.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Mapping

from mailsync import traces
from mailsync.contracts import MANAGED, Entry, Receiving
from mailsync.errors import LocalIOError, local_io_error
from mailsync.privatefiles import fsync_dir, make_private_dirs  # noqa: F401

SUBDIRS = ("cur", "new", "tmp")
INFO_SEP = ":2,"
_counter = itertools.count(1)


def _hostname() -> str:
    # The Maildir spec reserves '/' and ':' in names; encode them as it says.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


_HOST = _hostname()


def _find_syncfs():
    """Linux's syncfs(2) (reports writeback errors since Linux 5.8), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    syncfs.restype = ctypes.c_int
    return syncfs


_syncfs = _find_syncfs()


def unique_name() -> str:
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    rand = os.urandom(4).hex()
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{rand}.{_HOST}"


def split_name(filename: str) -> tuple[str, str]:
    """(key, flags) of a Maildir file name."""
    key, sep, flags = filename.partition(INFO_SEP)
    return key, flags if sep else ""


def file_name(key: str, flags: Iterable[str]) -> str:
    return f"{key}{INFO_SEP}{''.join(sorted(set(flags)))}"


_CLOCK_REALTIME_COARSE = 5   # Linux: the clock file times are taken from (one per tick)


def _fine_settle() -> float:
    """Seconds after which a later change is sure to get a later sub-second file time:
    two ticks of the kernel's coarse clock, which Linux stamps file times with (4 ms at
    HZ=250), and a millisecond to spare; 25 ms where that clock cannot be asked."""
    try:
        tick = time.clock_getres(_CLOCK_REALTIME_COARSE) if sys.platform == "linux" else 0
    except OSError:
        tick = 0
    return 2 * tick + 0.001 if 0 < tick <= 0.010 else 0.025


FINE_SETTLE = _fine_settle()
COARSE_SETTLE = 2.0      # seconds: file systems with 1 s (or FAT's 2 s) times


def _fine(stats: list[os.stat_result]) -> bool:
    """Directory times with sub-second precision (a whole second in both: not sure)."""
    return all(st.st_mtime_ns % 1_000_000_000 for st in stats)


def wait_until_settled(maildirs: Iterable["Maildir"]) -> None:
    """Wait (at most FINE_SETTLE, once) until every folder's last change is old enough
    for stamp() to take it, where directory times are fine; coarse ones are not waited
    for (COARSE_SETTLE is too long to wait)."""
    latest = 0.0
    for maildir in maildirs:
        stats = maildir.dir_stats()
        if stats is not None and _fine(stats):
            latest = max([latest] + [st.st_mtime for st in stats])
    wait = latest + FINE_SETTLE - time.time()
    if wait > 0:
        time.sleep(min(wait, FINE_SETTLE))



class Maildir:
    """One Maildir folder (cur/, new/, tmp/) under path: the local store of the sync
    engine (mailsync.contracts.LocalFolder) and of the POP3 fetch."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._root = str(self.path)   # hot paths join strings: a Path costs ~6 us each

    def create(self) -> None:
        """Make the folder and its three subfolders, private to the user."""
        try:
            make_private_dirs(self.path)
            for sub in SUBDIRS:
                target = self.path / sub
                target.mkdir(mode=0o700, exist_ok=True)
                if target.is_symlink():
                    raise LocalIOError(f"{target} is a symbolic link",
                                       "mailsync refuses to write through links")
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    def exists(self) -> bool:
        return all((self.path / sub).is_dir() for sub in SUBDIRS)

    def scan(self) -> dict[str, Entry]:
        """Every message in new/ and cur/, by key."""
        entries: dict[str, Entry] = {}
        for sub, filename in self._listing():
            key, flags = split_name(filename)
            entries[key] = Entry(key, sub, filename, flags)
        return entries

    def relpaths(self) -> set[str]:
        """The relpath of every message file in new/ and cur/: a listing without parsing
        the names, to compare with what a scan() found."""
        return {f"{sub}/{filename}" for sub, filename in self._listing()}

    def _listing(self) -> Iterator[tuple[str, str]]:
        """(subdir, file name) of every message file, new/ listed before cur/: a file a
        client moves from new/ to cur/ meanwhile is then seen at least once."""
        for sub in ("new", "cur"):
            try:
                names = os.listdir(f"{self._root}/{sub}")
            except FileNotFoundError:
                continue
            yield from ((sub, name) for name in names if not name.startswith("."))

    def stamp(self) -> str | None:
        """What new/ and cur/ look like now, to tell next time that nothing changed.

        None when either was modified too recently for a later change to be sure to
        show: within FINE_SETTLE where directory times have sub-second precision (a
        later change then gets a later time: more than a kernel clock tick has passed),
        else within COARSE_SETTLE (mbsync sleeps in this case; mailsync just looks
        again next time)."""
        stats = self.dir_stats()
        if stats is None:
            return None
        settle = FINE_SETTLE if _fine(stats) else COARSE_SETTLE
        if any(st.st_mtime > time.time() - settle for st in stats):
            return None
        return ":".join(f"{st.st_ino}.{st.st_mtime_ns}" for st in stats)

    def dir_stats(self) -> list[os.stat_result] | None:
        try:
            return [os.stat(self.path / sub) for sub in ("new", "cur")]
        except OSError:
            return None

    def find(self, key: str) -> Entry | None:
        """Look for one key without listing the folders when the plain name is there."""
        for sub in ("new", "cur"):
            if (self.path / sub / key).exists():
                return Entry(key, sub, key, "")
        return self.scan().get(key)

    def open_tmp(self, name: str) -> "TmpFile":
        return TmpFile(f"{self._root}/tmp/{name}")

    def publish(self, names: Iterable[str], subdir: str = "new") -> None:
        """Rename fsynced tmp/ files into place, then fsync the folder once."""
        try:
            for name in names:
                os.rename(self.path / "tmp" / name, self.path / subdir / name)
            fsync_dir(self.path / subdir)
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    def make_durable(self) -> None:
        """Make every file closed with durable=False durable: one syncfs of the file
        system instead of one fsync per message (the same promise, a fraction of the
        cost). Must run before those files are renamed into place."""
        if _syncfs is None:
            return   # TmpFile.close fsynced each file already
        try:
            fd = os.open(self.path / "tmp", os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), str(self.path / "tmp"))
            finally:
                os.close(fd)
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    def tmp_exists(self, name: str) -> bool:
        return (self.path / "tmp" / name).exists()

    def read_tmp(self, name: str) -> bytes:
        """A file written to tmp/ and not yet published."""
        return (self.path / "tmp" / name).read_bytes()

    def discard_tmp(self, name: str) -> None:
        try:
            (self.path / "tmp" / name).unlink()
        except FileNotFoundError:
            pass

    def read(self, entry: Entry) -> bytes:
        return (self.path / entry.relpath).read_bytes()

    def read_head(self, entry: Entry, limit: int = 65536) -> bytes:
        """The start of a message: enough for its header."""
        with open(self.path / entry.relpath, "rb") as f:
            return f.read(limit)

    def publish_as(self, name: str, key: str, flags: str) -> Entry:
        """Rename tmp/name into place as key with flags: new/ without flags, else cur/."""
        entry = _placed(key, flags)
        try:
            os.rename(f"{self._root}/tmp/{name}", f"{self._root}/{entry.relpath}")
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None
        return entry

    def set_flags(self, entry: Entry, letters: Iterable[str], managed: str = MANAGED
                  ) -> Entry:
        """Give the message exactly the managed letters given; other letters a mail
        client put there (keywords) stay."""
        kept = {c for c in entry.flags if c not in managed}
        flags = "".join(sorted(kept | set(letters)))
        target = _placed(entry.key, flags, entry.subdir)
        if target.relpath == entry.relpath:
            return entry
        try:
            os.rename(self.path / entry.relpath, self.path / target.relpath)
        except OSError as exc:
            raise local_io_error(exc, str(self.path / entry.relpath)) from None
        return target

    def replace(self, entry: Entry, name: str) -> Entry:
        """Put tmp/name in the place of entry, under its very name: one atomic rename,
        so there is never a second file for the key (a reader would show both, a scan
        only one). Flags are set after, with set_flags."""
        try:
            os.rename(self.path / "tmp" / name, self.path / entry.relpath)
        except OSError as exc:
            raise local_io_error(exc, str(self.path / entry.relpath)) from None
        return entry

    def remove(self, entry: Entry) -> None:
        try:
            os.unlink(self.path / entry.relpath)
        except FileNotFoundError:
            pass   # the user removed it meanwhile: the outcome wanted
        except OSError as exc:
            raise local_io_error(exc, str(self.path / entry.relpath)) from None

    def sync_dirs(self) -> None:
        """fsync new/ and cur/ so renames and removals are durable."""
        try:
            for sub in ("new", "cur"):
                fsync_dir(self.path / sub)
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    # The sync engine's contract (mailsync.contracts.LocalFolder) ---------------------------
    def locate(self, key: str, seen: Entry | None = None) -> Entry | None:
        if seen is not None and os.path.exists(f"{self._root}/{seen.relpath}"):
            return seen
        return self.find(key)

    def received(self, entry: Entry) -> datetime | None:
        try:
            return datetime.fromtimestamp(os.stat(f"{self._root}/{entry.relpath}").st_mtime,
                                          timezone.utc)
        except OSError:
            return None

    def new_key(self) -> str:
        return unique_name()

    def deliver(self, flags: Mapping[str, str],
                write: Callable[[Receiving], None]) -> dict[str, Entry]:
        complete = _Receiving(self).run(write)
        if not complete:
            return {}
        self.make_durable()   # before any of them is renamed into place
        entries = {key: self.publish_as(key, key, "".join(sorted(flags[key])))
                   for key in complete}
        self.sync_dirs()
        return entries

    def replace_content(self, key: str, write: Callable[[Receiving], None]) -> Entry | None:
        name = unique_name()
        if key not in _Receiving(self, durable=True, rename={key: name}).run(write):
            return None
        # Where the message is now: a mail client may have renamed or deleted it while
        # the new content came (replacing a stale name would make a second file).
        entry = self.find(key)
        if entry is None:
            self.discard_tmp(name)
            return None
        entry = self.replace(entry, name)
        self.sync_dirs()
        return entry

    def discard_unfinished(self, key: str) -> None:
        self.discard_tmp(key)

    def settle(self) -> None:
        self.sync_dirs()

    def peer_uids(self, keys: Collection[str], uidvalidity: int) -> dict[str, int]:
        return traces.server_uid_hints(self.path, list(keys), uidvalidity)


class _Receiving:
    """The writer's side of Maildir.deliver: a tmp/ file per key, closed when complete
    (its fsync left to the batch's one make_durable, unless durable)."""

    def __init__(self, maildir: Maildir, durable: bool = False,
                 rename: Mapping[str, str] | None = None) -> None:
        self.maildir, self.durable, self.rename = maildir, durable, rename or {}
        self.files: dict[str, TmpFile] = {}
        self.complete: list[str] = []

    def open(self, key: str) -> "TmpFile":
        self.files[key] = self.maildir.open_tmp(self.rename.get(key, key))
        return self.files[key]

    def completed(self, key: str) -> None:
        self.files[key].close(durable=self.durable)
        self.complete.append(key)

    def run(self, write: Callable[[Receiving], None]) -> list[str]:
        """write(self), then the keys it completed; every other file it began is removed
        (all of them when write raises)."""
        try:
            write(self)
        except BaseException:
            for f in self.files.values():
                f.abort()
            raise
        done = set(self.complete)
        for key, f in self.files.items():
            if key not in done:
                f.abort()
        return self.complete


def _placed(key: str, flags: str, subdir: str | None = None) -> Entry:
    """Where a message with these flags lives: a file without flags may stay in new/."""
    if not flags and subdir in (None, "new"):
        return Entry(key, "new", key, "")
    return Entry(key, "cur", file_name(key, flags), flags)


class TmpFile:
    """A message being written into tmp/: exclusive create, 0600, fsync on close."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.size = 0
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise local_io_error(exc, str(path)) from None
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise local_io_error(exc, str(self.path)) from None
        self.size += len(data)

    def close(self, durable: bool = True) -> None:
        """Flush and fsync; the data is durable when this returns. durable=False leaves
        the fsync to Maildir.make_durable, once for a whole batch."""
        try:
            self._file.flush()
            if durable or _syncfs is None:
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise local_io_error(exc, str(self.path)) from None

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass
