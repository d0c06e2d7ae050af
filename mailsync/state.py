"""Per-account SQLite state and the account lock.

What is recorded here is what the next run trusts: seen POP3 messages, pending
deliveries (intents recorded before a file is renamed into place), IMAP pairs and
the history of runs. Every commit is durable (WAL, synchronous=FULL).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from mailsync.errors import LocalIOError, LockedError, local_io_error
from mailsync.privatefiles import make_private_dirs
from mailsync.imapsync.plan import Pair

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS pop_seen (
    uid TEXT PRIMARY KEY,          -- the server's UIDL, or 'sha256:<hex>' without UIDL
    key TEXT NOT NULL,             -- Maildir unique name the message was stored under
    downloaded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pop_pending (
    uid TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS imap_folders (
    name TEXT PRIMARY KEY,         -- server folder name, UTF-8, '/'-separated
    relpath TEXT NOT NULL,         -- local folder under the account's maildir
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL,
    highestmodseq INTEGER,         -- NULL without CONDSTORE
    local_stamp TEXT               -- new/ and cur/ as last seen unchanged, or NULL
);
CREATE TABLE IF NOT EXISTS pairs (
    folder TEXT NOT NULL,
    uid INTEGER,                   -- NULL: deliberately absent on the server
    key TEXT,                      -- NULL: deliberately absent locally
    flags TEXT NOT NULL,           -- last-synced Maildir flag letters
    placeholder INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS pairs_uid ON pairs (folder, uid) WHERE uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS pairs_key ON pairs (folder, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    kind TEXT NOT NULL,            -- download | upload | upgrade
    uid INTEGER,
    key TEXT,
    flags TEXT NOT NULL,
    placeholder INTEGER NOT NULL DEFAULT 0,
    token TEXT                     -- upload: Message-ID, or size, to find the message again
);
CREATE TABLE IF NOT EXISTS gmail_copies (
    gm_msgid INTEGER PRIMARY KEY,  -- Gmail's X-GM-MSGID: one message in every label
    folder TEXT NOT NULL,          -- a folder where it was downloaded
    key TEXT NOT NULL              -- its Maildir key there
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    exit_code INTEGER NOT NULL,
    error TEXT,
    summary TEXT NOT NULL,
    failing_since REAL             -- a failed run: when the failures since the last success began
);
"""

# Version -> statements that bring a database of the version before it up to it.
MIGRATIONS = {
    2: ["ALTER TABLE runs ADD COLUMN failing_since REAL",
        # The last run, if it failed: its streak began with the first run after the last
        # success (a run history from before this column is read once).
        "UPDATE runs SET failing_since = (SELECT min(started) FROM runs WHERE id > "
        "coalesce((SELECT max(id) FROM runs WHERE exit_code = 0), 0)) "
        "WHERE id = (SELECT max(id) FROM runs) AND exit_code != 0"],
    3: ["CREATE TABLE IF NOT EXISTS gmail_copies (gm_msgid INTEGER PRIMARY KEY, "
        "folder TEXT NOT NULL, key TEXT NOT NULL)"],
}


@dataclass(frozen=True)
class Seen:
    uid: str
    key: str
    downloaded_at: float


def private_dir(path: Path) -> Path:
    """Create a folder readable by the user only (0700)."""
    try:
        make_private_dirs(path)
    except OSError as exc:
        raise local_io_error(exc, str(path)) from None
    return path


@dataclass(frozen=True)
class FolderRecord:
    name: str
    relpath: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int | None
    local_stamp: str | None = None


@dataclass(frozen=True)
class Intent:
    """A transfer journalled before its IO, so a crash can be settled, not repeated."""

    folder: str
    kind: str
    uid: int | None
    key: str | None
    flags: frozenset[str]
    placeholder: bool = False
    token: str | None = None
    id: int | None = None


def read_only_copy(path: Path) -> sqlite3.Connection:
    """An in-memory copy of the database at path, writing nothing beside it.

    mode=ro alone creates the -wal and -shm files of a WAL database. Without a -wal file
    everything is in the main file: read it immutable. With one (a crash, or a run in
    progress) a private copy in a temporary folder is recovered and read instead.
    """
    db = sqlite3.connect(":memory:", isolation_level=None)
    wal = path.with_name(path.name + "-wal")
    if not wal.exists():
        source = sqlite3.connect(path.absolute().as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            source.backup(db)
        finally:
            source.close()
        return db
    with tempfile.TemporaryDirectory(prefix="mailsync-state-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        source = sqlite3.connect(copy)
        try:
            source.backup(db)
        finally:
            source.close()
    return db


class AccountLock:
    """An exclusive flock on <state_dir>/lock; the kernel drops it when the process dies."""

    def __init__(self, state_dir: Path, account: str) -> None:
        self.path = state_dir / "lock"
        self.account = account
        self._fd: int | None = None

    def __enter__(self) -> "AccountLock":
        private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"account {self.account}: another mailsync run holds its lock "
                              f"({self.path})", "it will be retried on the next run") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class State:
    """The account's state database."""

    def __init__(self, state_dir: Path, readonly: bool = False) -> None:
        """readonly (for --dry-run): read what exists, write nothing to disk."""
        self.path = state_dir / "state.sqlite3"
        try:
            if readonly:
                self.db = self._open_readonly()
            else:
                private_dir(state_dir)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                self.db = sqlite3.connect(self.path, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LocalIOError(f"state database {self.path} is unusable: {exc}",
                               "check the disk and the file's permissions") from None
        except OSError as exc:
            raise local_io_error(exc, str(self.path)) from None

    def _open_readonly(self) -> sqlite3.Connection:
        # A copy in memory: the plan can be computed from it, nothing reaches the disk.
        if self.path.exists():
            return read_only_copy(self.path)
        return sqlite3.connect(":memory:", isolation_level=None)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LocalIOError(f"state database {self.path} was written by a newer mailsync",
                               "upgrade mailsync")
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            # executescript() would commit on its own; run the statements one by one.
            # A new database gets the whole schema; an older one its migrations.
            statements = [s for s in SCHEMA.split(";") if s.strip()] if version == 0 else \
                [s for v in range(version + 1, SCHEMA_VERSION + 1) for s in MIGRATIONS[v]]
            for statement in statements:
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    # POP3 -----------------------------------------------------------------------------
    def pop_seen(self) -> dict[str, Seen]:
        rows = self.db.execute("SELECT uid, key, downloaded_at FROM pop_seen")
        return {r[0]: Seen(*r) for r in rows}

    def pop_pending(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT uid, key FROM pop_pending"))

    def record_pending(self, items: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO pop_pending VALUES (?, ?, ?)",
                                [(uid, key, now) for uid, key in items])

    def confirm_pending(self, uids: Iterable[str], now: float | None = None) -> None:
        """Move pending deliveries to seen in one transaction."""
        now = time.time() if now is None else now
        uids = list(uids)
        with self.transaction():
            for uid in uids:
                self.db.execute("INSERT OR REPLACE INTO pop_seen SELECT uid, key, ? "
                                "FROM pop_pending WHERE uid = ?", (now, uid))
                self.db.execute("DELETE FROM pop_pending WHERE uid = ?", (uid,))

    def drop_pending(self, uids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM pop_pending WHERE uid = ?", [(u,) for u in uids])

    def forget_seen(self, uids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM pop_seen WHERE uid = ?", [(u,) for u in uids])

    # IMAP -----------------------------------------------------------------------------
    def folder_record(self, name: str) -> FolderRecord | None:
        row = self.db.execute("SELECT name, relpath, uidvalidity, uidnext, highestmodseq, "
                              "local_stamp "
                              "FROM imap_folders WHERE name = ?", (name,)).fetchone()
        return FolderRecord(*row) if row else None

    def folder_records(self) -> list[FolderRecord]:
        rows = self.db.execute("SELECT name, relpath, uidvalidity, uidnext, highestmodseq, "
                               "local_stamp "
                               "FROM imap_folders ORDER BY name")
        return [FolderRecord(*r) for r in rows]

    def save_folder_record(self, record: FolderRecord) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO imap_folders VALUES (?, ?, ?, ?, ?, ?)",
                            (record.name, record.relpath, record.uidvalidity, record.uidnext,
                             record.highestmodseq, record.local_stamp))

    def set_local_stamps(self, stamps: dict[str, str]) -> None:
        """Folder name -> local stamp, in one transaction."""
        with self.transaction():
            self.db.executemany("UPDATE imap_folders SET local_stamp = ? WHERE name = ?",
                                [(stamp, folder) for folder, stamp in stamps.items()])

    def pairs(self, folder: str) -> list[Pair]:
        rows = self.db.execute("SELECT uid, key, flags, placeholder FROM pairs "
                               "WHERE folder = ?", (folder,))
        return [Pair(uid, key, flags, bool(ph)) for uid, key, flags, ph in rows]

    def synced_keys(self, folder: str) -> set[str]:
        """The Maildir keys of the folder's complete pairs (a UID and a file, not a
        placeholder): what the local folder should still hold. Cheaper than pairs()."""
        rows = self.db.execute("SELECT key FROM pairs WHERE folder = ? AND uid IS NOT NULL "
                               "AND key IS NOT NULL AND placeholder = 0", (folder,))
        return {key for key, in rows}

    def interrupted_moves(self) -> list[tuple[Intent, str, int]]:
        """Upload intents whose file key is paired in exactly one other folder, with that
        folder and UID: a move (see sync.LocalMoves) journalled but not recorded. A new
        file's upload has a key no pair knows. One query; none at all is the usual."""
        rows = self.db.execute(
            "SELECT i.folder, i.kind, i.uid, i.key, i.flags, i.placeholder, i.token, i.id, "
            "min(p.folder), min(p.uid) FROM intents i JOIN pairs p ON p.key = i.key "
            "AND p.folder != i.folder AND p.uid IS NOT NULL "
            "WHERE i.kind = 'upload' AND i.token IS NOT NULL "
            "GROUP BY i.id HAVING count(*) = 1 ORDER BY i.id")
        return [(Intent(f, k, u, key, frozenset(fl), bool(ph), t, i), source, uid)
                for f, k, u, key, fl, ph, t, i, source, uid in rows]

    def put_pairs(self, folder: str, pairs: Iterable[Pair]) -> None:
        """Store pairs, each replacing any pair that shares its uid or its key."""
        with self.transaction():
            self._put(folder, pairs)

    def _put(self, folder: str, pairs: Iterable[Pair]) -> None:
        for pair in pairs:
            self._forget(folder, pair.uid, pair.key)
            self.db.execute("INSERT INTO pairs VALUES (?, ?, ?, ?, ?)",
                            (folder, pair.uid, pair.key, "".join(sorted(pair.flags)),
                             int(pair.placeholder)))

    def forget_pairs(self, folder: str, ids: Iterable[tuple[int | None, str | None]]) -> None:
        with self.transaction():
            for uid, key in ids:
                self._forget(folder, uid, key)

    def _forget(self, folder: str, uid: int | None, key: str | None) -> None:
        if uid is not None:
            self.db.execute("DELETE FROM pairs WHERE folder = ? AND uid = ?", (folder, uid))
        if key is not None:
            self.db.execute("DELETE FROM pairs WHERE folder = ? AND key = ?", (folder, key))

    def gmail_copy(self, gm_msgid: int) -> tuple[str, str] | None:
        """(folder, key) where Gmail's message gm_msgid was downloaded, if it was."""
        row = self.db.execute("SELECT folder, key FROM gmail_copies WHERE gm_msgid = ?",
                              (gm_msgid,)).fetchone()
        return (row[0], row[1]) if row else None

    def note_gmail_copies(self, folder: str, copies: Iterable[tuple[int, str]]) -> None:
        """Gmail: these messages (X-GM-MSGID, key) are now stored in folder."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO gmail_copies VALUES (?, ?, ?)",
                                [(gm, folder, key) for gm, key in copies])

    def replace_folder_pairs(self, folder: str, pairs: list[Pair]) -> None:
        """After a UIDVALIDITY change: the re-paired record replaces the old one, in one
        transaction. A crash between forgetting the old record and writing the new one
        would leave the folder with no pairs: the next run would take every message on
        both sides for new and copy each to the other side."""
        with self.transaction():
            self.db.execute("DELETE FROM pairs WHERE folder = ?", (folder,))
            self._put(folder, pairs)

    def add_intents(self, intents: Iterable[Intent]) -> list[Intent]:
        """Journal transfers before their IO; returns them with their ids."""
        out = []
        with self.transaction():
            for i in intents:
                cur = self.db.execute(
                    "INSERT INTO intents (folder, kind, uid, key, flags, placeholder, token) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (i.folder, i.kind, i.uid, i.key, "".join(sorted(i.flags)),
                     int(i.placeholder), i.token))
                out.append(Intent(i.folder, i.kind, i.uid, i.key, i.flags, i.placeholder,
                                  i.token, cur.lastrowid))
        return out

    def intents(self, folder: str) -> list[Intent]:
        rows = self.db.execute("SELECT folder, kind, uid, key, flags, placeholder, token, id "
                               "FROM intents WHERE folder = ? ORDER BY id", (folder,))
        return [Intent(f, k, u, key, frozenset(fl), bool(ph), t, i)
                for f, k, u, key, fl, ph, t, i in rows]

    def complete(self, folder: str, done: Iterable[Intent], pairs: Iterable[Pair]) -> None:
        """In one transaction: drop the intents and record the pairs their IO produced."""
        with self.transaction():
            self._complete(folder, done, pairs)

    def _complete(self, folder: str, done: Iterable[Intent], pairs: Iterable[Pair]) -> None:
        for intent in done:
            self.db.execute("DELETE FROM intents WHERE id = ?", (intent.id,))
        self._put(folder, pairs)

    def complete_move(self, source: str, uid: int, key: str | None, intent: Intent,
                      pair: Pair | None) -> None:
        """In one transaction: a message left folder `source` (its pair there is
        forgotten) for the intent's folder, where it is paired when its new UID is known
        (pair), else the intent stays for that folder's sync to settle."""
        with self.transaction():
            self._forget(source, uid, key)
            if pair is not None:
                self._complete(intent.folder, [intent], [pair])

    def count_pairs(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT folder, count(*) FROM pairs GROUP BY folder"))

    # Runs -----------------------------------------------------------------------------
    def record_run(self, command: str, started: float, summary: dict) -> None:
        """Record a run; a failed one carries on (or begins) the account's failing streak,
        which a successful one ends."""
        code = summary.get("exit_code", 0)
        with self.transaction():
            since = None
            if code != 0:
                last = self.db.execute("SELECT exit_code, started, failing_since FROM runs "
                                       "ORDER BY id DESC LIMIT 1").fetchone()
                since = started if last is None or last[0] == 0 else \
                    (last[2] if last[2] is not None else last[1])
            self.db.execute(
                "INSERT INTO runs (command, started, finished, exit_code, error, summary, "
                "failing_since) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (command, started, time.time(), code, summary.get("error"),
                 json.dumps(summary), since))

    def failing_since(self) -> float | None:
        """When the account's failures began, if its last recorded run failed."""
        row = self.db.execute("SELECT exit_code, failing_since, started FROM runs "
                              "ORDER BY id DESC LIMIT 1").fetchone()
        if row is None or row[0] == 0:
            return None
        return row[1] if row[1] is not None else row[2]

    def completed_a_fetch(self) -> bool:
        """An earlier POP3 run of the account ended well with nothing left for later: every
        message the server had then was stored or recorded."""
        row = self.db.execute(
            "SELECT 1 FROM runs WHERE exit_code = 0 "
            "AND json_extract(summary, '$.protocol') = 'pop3' "
            "AND coalesce(json_extract(summary, '$.left_for_later'), 0) = 0 LIMIT 1").fetchone()
        return row is not None

    def last_run(self) -> dict | None:
        row = self.db.execute("SELECT command, started, finished, exit_code, error, summary "
                              "FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        keys = ("command", "started", "finished", "exit_code", "error")
        return {**dict(zip(keys, row[:5])), "summary": json.loads(row[5])}


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")

