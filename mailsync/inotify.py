"""Linux inotify through ctypes: watch directories, read which ones changed.

Small on purpose (watch needs only "something in this directory changed"): no
dependency, no thread of its own. The watcher polls the descriptor (select) with a
timeout and calls read_events() when it is readable. On a system without inotify
(not Linux) Inotify() raises OSError and watch falls back to periodic local scans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

# A message file appears (new/ delivery, cur/ rename), goes, or changes its flags (a
# rename within cur/): every change a mail client makes to a Maildir folder.
MESSAGE_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF \
    | IN_MOVE_SELF
_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    path: str          # the watched directory
    mask: int
    name: str          # the entry inside it ("" for the directory itself)

    @property
    def overflow(self) -> bool:
        return bool(self.mask & IN_Q_OVERFLOW)


class Inotify:
    """One inotify descriptor and its watches (directory path -> watch descriptor)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        self._libc = ctypes.CDLL(name, use_errno=True)
        if not hasattr(self._libc, "inotify_init1"):
            raise OSError("inotify is not available on this system")
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._paths: dict[int, str] = {}
        self._wds: dict[str, int] = {}

    def add(self, path: str | os.PathLike, mask: int = MESSAGE_EVENTS) -> bool:
        """Watch a directory; False when it does not exist (any other failure raises,
        e.g. the user's inotify watch limit: fs.inotify.max_user_watches)."""
        path = os.fspath(path)
        if path in self._wds:
            return True
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (2, 20):   # ENOENT, ENOTDIR
                return False
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd], self._wds[path] = path, wd
        return True

    def watching(self, path: str | os.PathLike) -> bool:
        return os.fspath(path) in self._wds

    def read_events(self) -> list[Event]:
        """The events queued now (none when nothing is)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset:offset + length].rstrip(b"\0")
            offset += length
            path = self._paths.get(wd, "")
            if mask & IN_IGNORED:   # the directory went away: its watch is gone
                self._paths.pop(wd, None)
                if self._wds.get(path) == wd:
                    del self._wds[path]
                continue
            events.append(Event(path, mask, os.fsdecode(raw)))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Inotify":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
