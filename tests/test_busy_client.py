"""A busy mail client: while a (slow) sync runs, a second thread plays mutt on the same
Maildir -- renames files to change flags, moves files between folders, deletes files,
delivers new ones. After a final sync both sides agree, every message the client did
not delete is on both sides exactly once (where the client last put it, with the flags
it last gave), and what it deleted is gone from both sides."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter


from tests.corpus import make_corpus
from tests.imaphelp import flags_of
from tests.proxy import CutProxy
from tests.test_links import seed_server, via

FOLDERS = ["INBOX", "Work", "Lists"]
SEED = {"INBOX": (make_corpus(60), ""), "Work": (make_corpus(40, seed=2), "S"),
        "Lists": (make_corpus(40, seed=3), "")}
FLAG_CHOICES = ["", "S", "F", "FS", "RS", "DS"]


class BusyClient(threading.Thread):
    """Random file operations on the Maildir until stopped; records what it did."""

    def __init__(self, local, seed: int, fresh: list[bytes], pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.local, self.rng, self.fresh, self.pause = local, random.Random(seed), fresh, pause
        self.stop = threading.Event()
        self.ops: Counter = Counter()
        self.deleted: set[bytes] = set()
        self.folder: dict[bytes, str] = {}     # where the client last put a message
        self.flags: dict[bytes, str] = {}      # the flags the client last gave it
        self.error: BaseException | None = None
        # Moves out and deletions per folder stay under the max_delete guard (0.5 of a
        # folder), which would rightly refuse a folder the client half emptied.
        self.removed: Counter = Counter()
        self.max_removed = 10

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
                self.stop.wait(self.pause)
        except BaseException as exc:   # reported by the test
            self.error = exc

    def step(self) -> None:
        op = self.rng.choices(["flag", "move", "delete", "deliver"], [5, 2, 1, 2])[0]
        folder = self.rng.choice(FOLDERS)
        if op == "deliver":
            if self.fresh:
                body, flags = self.fresh.pop(), self.rng.choice(FLAG_CHOICES)
                self.local.deliver(folder, body, flags)
                self.folder[body], self.flags[body] = folder, flags
                self.ops[op] += 1
            return
        files = self.local.files(folder)
        if not files:
            return
        if op in ("move", "delete") and self.removed[folder] >= self.max_removed:
            op = "flag"
        path = self.rng.choice(files)
        try:
            body = path.read_bytes()
            if op == "flag":
                flags = self.rng.choice(FLAG_CHOICES)
                key = path.name.split(":2,")[0]
                os.rename(path, path.parent.parent / "cur" / f"{key}:2,{flags}")
                self.flags[body] = flags
            elif op == "move":
                dest = self.rng.choice([f for f in FOLDERS if f != folder])
                target = self.local.path(dest)
                if not (target / path.parent.name).is_dir():
                    return
                os.rename(path, target / path.parent.name / path.name)
                self.removed[folder] += 1
                self.folder[body] = dest
                self.flags.setdefault(body, flags_of(path))
            else:
                os.unlink(path)
                self.removed[folder] += 1
                self.deleted.add(body)
        except FileNotFoundError:
            return   # the sync renamed it meanwhile: a real client would just retry
        self.ops[op] += 1


def everywhere(side, folders) -> dict[bytes, list[tuple[str, str]]]:
    """body -> [(folder, flags)] for every copy on one side."""
    found: dict[bytes, list[tuple[str, str]]] = {}
    for folder in folders:
        for body, flags in side.flags_by_body(folder).items():
            found.setdefault(body, []).append((folder, flags))
        assert len(side.bodies(folder)) == len(side.flags_by_body(folder)), \
            f"a message is twice in {folder}"
    return found


def check_outcome(s, client: BusyClient, original: dict[bytes, tuple[str, str]],
                  contested: set[bytes] = frozenset()) -> None:
    """original: body -> (folder, flags) before the client; contested: bodies the server
    changed too (only agreement and 'at most once' hold for them)."""
    server_folders = s.remote.folders()
    assert set(server_folders) == set(FOLDERS), server_folders
    local, remote = everywhere(s.local, FOLDERS), everywhere(s.remote, FOLDERS)
    assert local == remote, "the two sides disagree"
    universe = set(original) | set(client.folder) | client.deleted | set(contested)
    assert set(local) <= universe, "a message nobody made appeared"
    for body in universe:
        copies = local.get(body, [])
        assert len(copies) <= 1, ("duplicated", copies)
        if body in contested:
            continue
        if body in client.deleted:
            assert copies == [], ("deleted by the client but still there", copies)
            continue
        folder, flags = original.get(body, (None, ""))
        folder = client.folder.get(body, folder)
        flags = client.flags.get(body, flags)
        assert copies == [(folder, "".join(sorted(flags)))], (copies, folder, flags)


def busy_run(s, make_account, dovecot, client: BusyClient, trickle=(4096, 0.01)):
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=trickle) as proxy:
        started = time.monotonic()
        client.start()
        try:
            result = via(make_account, s, proxy).run("--json", "sync", timeout=120)
        finally:
            client.stop.set()
            client.join(10)
        elapsed = time.monotonic() - started
    assert client.error is None, repr(client.error)
    return result, elapsed


def final_sync(s) -> None:
    result = s.sync()
    assert result.code == 0, result.err
    again = s.sync().json["accounts"][0]
    assert again["ok"] and again["downloaded"] == again["uploaded"] == 0, again
    assert again["flags_changed"] == again["deleted_local"] == again["deleted_remote"] == 0


def original_of(seed) -> dict[bytes, tuple[str, str]]:
    return {body: (folder, flags) for folder, (bodies, flags) in seed.items()
            for body in bodies}


def test_busy_client_during_the_first_sync(imap_account, make_account, dovecot):
    s = imap_account()
    seed_server(s, SEED)
    for folder in FOLDERS:          # the client's folders exist from the start
        s.local.make_folder(folder)
    client = BusyClient(s.local, seed=1, fresh=make_corpus(60, seed=40))
    result, elapsed = busy_run(s, make_account, dovecot, client)
    assert result.code == 0, result.err
    assert sum(client.ops.values()) >= 40, client.ops
    assert client.ops["move"] and client.ops["delete"] and client.ops["flag"], client.ops
    final_sync(s)
    check_outcome(s, client, original_of(SEED))


def test_busy_client_during_an_incremental_sync_with_server_changes(
        imap_account, make_account, dovecot):
    s = imap_account()
    seed_server(s, SEED)
    assert s.sync().code == 0
    original = original_of(SEED)
    # The server gets enough new mail to keep the next sync busy, and a few changes.
    arriving = make_corpus(100, seed=50)
    s.acct.server.seed(s.acct.user, arriving[:70])
    s.acct.server.seed(s.acct.user, arriving[70:], folder="Lists", flags="S")
    original.update({b: ("INBOX", "") for b in arriving[:70]})
    original.update({b: ("Lists", "S") for b in arriving[70:]})
    contested = set()
    inbox = SEED["INBOX"][0]
    for body in inbox[:4]:
        s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="F")
        original[body] = ("INBOX", "F")
        contested.add(body)
    for body in inbox[4:7]:
        s.remote.expunge("INBOX", s.remote.uid_of("INBOX", body))
        original.pop(body)
        contested.add(body)
    client = BusyClient(s.local, seed=2, fresh=make_corpus(60, seed=41))
    result, elapsed = busy_run(s, make_account, dovecot, client)
    assert result.code == 0, result.err
    assert sum(client.ops.values()) >= 30, client.ops
    final_sync(s)
    check_outcome(s, client, original, contested)
    # The server's own changes arrived where the client left the messages alone.
    local = everywhere(s.local, FOLDERS)
    for body in inbox[:4]:
        if body not in client.flags and body not in client.deleted:
            assert "F" in local[body][0][1]
    for body in inbox[4:7]:
        if body not in client.flags and body not in client.folder:
            assert body not in local
