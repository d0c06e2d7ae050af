"""Random interleavings of server changes, local changes, syncs and killed syncs, against the
real Dovecot: a hypothesis state machine over one fresh account per example.

The server is changed over IMAP by a second client (tests/imaphelp.Remote: a phone), the
Maildir by file operations (tests/imaphelp.Local: mutt); every sync is a subprocess of
`python -m mailsync sync` in mode sync, a crashed one killed by SIGKILL at a random step
(MAILSYNC_CRASH_AT). After each completed sync: both folders hold the same messages with the
same flags on both sides, every message that should exist exists, none is there twice, no
temporary file is left, and a further sync has nothing to do.

The model stays exact by avoiding what the contract leaves to chance (see Msg and
candidates()): a message is deleted or moved only while its flags are unchanged since the
last completed sync, and its flags are changed only while nobody has deleted it, so
modification-beats-deletion never arises; messages new since the last completed sync are
only watched (a killed sync may or may not have transferred them). After a killed sync, a
message whose flags the user had changed on one side may change again on that side only
(the other side may or may not show the first change yet); changed on both sides, it is
left alone. So a change that a killed sync applied but did not record must not be taken
for the user's on the next run: the engine journals flag changes for that.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, rule,
                                 run_state_machine_as_test)

from tests.corpus import make_message

FOLDERS = ("INBOX", "Work")
FLAGS = st.frozensets(st.sampled_from("DFPRST"), max_size=3).map(lambda s: "".join(sorted(s)))
ACTIONS = ("server append", "server flags", "server expunge", "local deliver",
           "local flags", "local delete", "local move", "sync", "killed sync", "killed sync")
ZERO = ("downloaded", "uploaded", "flags_changed", "deleted_local", "deleted_remote",
        "bytes_downloaded")
TRACE = os.environ.get("MAILSYNC_TEST_MACHINE_TRACE")   # a file: each example's actions
_INDEX = re.compile(rb"^X-Corpus-Index: (\d+)$", re.M)


def merge(base: str, local: str, remote: str) -> str:
    """Per-flag merge of both sides' changes against the last-synced flags."""
    b, lo, r = set(base), set(local), set(remote)
    return "".join(sorted((b | (lo - b) | (r - b)) - (b - lo) - (b - r)))


FIRST = 1000      # message n of an example is make_message(FIRST + n), named m001, m002...


def name_of(body: bytes) -> str:
    m = _INDEX.search(body)
    return f"m{int(m.group(1)) - FIRST:03d}" if m else repr(body[:30])


@dataclass
class Msg:
    """One message the user keeps (deleted ones leave the model)."""

    name: str
    body: bytes
    folder: str
    base: str                  # flags at the last completed sync, or when it was created
    local: str | None = None   # flags the user gave it locally since (None: unchanged)
    remote: str | None = None  # flags the user gave it on the server since
    synced: bool = False       # on both sides at the last completed sync
    locked: frozenset = frozenset()   # sides not to change until the next completed sync

    @property
    def dirty(self) -> bool:
        return self.local is not None or self.remote is not None

    def expected(self) -> str:
        return merge(self.base, self.local if self.local is not None else self.base,
                     self.remote if self.remote is not None else self.base)


class ImapSyncMachine(RuleBasedStateMachine):
    """One rule, `act`, draws the next action from ACTIONS (killed syncs weigh double):
    hypothesis' swarm testing switches whole rules off per example, which with one rule per
    action left most examples without syncs, crashes or changes on one side."""

    make_account = None     # set by the test: the imap_account fixture's factory

    def __init__(self) -> None:
        super().__init__()
        self.s = type(self).make_account()
        self.s.remote.create("Work")
        self.msgs: dict[str, Msg] = {}
        self.numbers = itertools.count(1)     # fresh user and Maildir: names may repeat
        self.completed_syncs = 0
        self.trace: list[str] = []
        self.failed = False    # a step raised: no final sync, its report would hide that

    def teardown(self) -> None:
        if TRACE:
            with open(TRACE, "a") as f:
                f.write(" | ".join(self.trace) + "\n")
        try:
            if not self.failed:
                self.sync()       # every example ends with a completed, checked sync
        finally:
            self.s.remote.close()

    # Checks -----------------------------------------------------------------------------
    def check(self, label: str) -> None:
        s = self.s
        for folder in FOLDERS:
            want = {m.name: m.expected() for m in self.msgs.values() if m.folder == folder}
            for side, hand in (("local", s.local), ("server", s.remote)):
                bodies = hand.bodies(folder)
                got = Counter(name_of(b) for b in bodies)
                missing, extra = Counter(list(want)) - got, got - Counter(list(want))
                assert not missing and not extra, \
                    f"{label}: {folder}: {side} lacks {sorted(missing)}, has extra " \
                    f"{sorted(extra.elements())}"
                assert all(b == self.msgs[name_of(b)].body for b in bodies), \
                    f"{label}: {folder}: {side} holds a message altered"
                flags = {name_of(b): f for b, f in hand.flags_by_body(folder).items()}
                assert flags == want, f"{label}: {folder}: {side} flags {flags} != {want}"
            tmp = s.local.path(folder) / "tmp"
            assert not tmp.is_dir() or not list(tmp.iterdir()), f"{label}: tmp/ not empty"
        assert s.remote.folders() == sorted(FOLDERS)
        again = self.run_sync()
        assert again.code == 0, f"{label}: the further sync failed: {again.err}"
        summary = again.json["accounts"][0]
        assert {k: summary[k] for k in ZERO} == dict.fromkeys(ZERO, 0), \
            f"{label}: a further sync still had work: {summary}"

    def completed(self, label: str) -> None:
        self.check(label)
        self.completed_syncs += 1
        for m in self.msgs.values():
            m.base, m.local, m.remote, m.synced = m.expected(), None, None, True
            m.locked = frozenset()

    # Helpers ----------------------------------------------------------------------------
    def new_message(self, folder: str, flags: str) -> Msg:
        n = next(self.numbers)
        m = Msg(f"m{n:03d}", make_message(FIRST + n), folder, flags)
        self.msgs[m.name] = m
        return m

    def candidates(self, side: str, for_delete: bool) -> list[str]:
        """Messages synced at the last completed sync whose side may change; to delete
        or move one, also with its flags unchanged since on both sides."""
        return sorted(m.name for m in self.msgs.values()
                      if m.synced and side not in m.locked and not (for_delete and m.dirty))

    def pick(self, data, side: str, *, for_delete: bool) -> Msg:
        return self.msgs[data.draw(st.sampled_from(self.candidates(side, for_delete)),
                                   label="message")]

    def can(self, action: str) -> bool:
        side, op = action.split()[0], action.split()[-1]
        if op == "flags":
            return bool(self.candidates(side, for_delete=False))
        if op in ("expunge", "delete", "move"):
            return bool(self.candidates(side, for_delete=True))
        return True

    def run_sync(self):
        return self.s.acct.run("--json", "--no-progress", "sync", "--allow-mass-delete")

    def server_uid(self, m: Msg) -> int:
        found = [uid for uid, (body, _) in self.s.remote.messages(m.folder).items()
                 if body == m.body]
        assert len(found) == 1, f"{m.name}: {len(found)} copies on the server"
        return found[0]

    # Rules ------------------------------------------------------------------------------
    @initialize(server=st.lists(st.tuples(st.sampled_from(FOLDERS), FLAGS), max_size=5),
                local=st.lists(st.tuples(st.sampled_from(FOLDERS), FLAGS), max_size=3))
    def seed_and_sync(self, server: list, local: list) -> None:
        """Some mail on both sides and a first clean sync, so that changes to synced mail
        are possible from the first step on."""
        for folder, flags in server:
            m = self.new_message(folder, flags)
            self.s.remote.append(folder, m.body, flags)
        for folder, flags in local:
            m = self.new_message(folder, flags)
            self.s.local.deliver(folder, m.body, flags)
        self.failed = True
        self.sync()
        self.failed = False

    @rule(data=st.data())
    def act(self, data) -> None:
        action = data.draw(st.sampled_from([a for a in ACTIONS if self.can(a)]),
                           label="action")
        self.trace.append(action)
        self.failed = True
        side, _, op = action.partition(" ")
        if side == "server":
            self.server_change(data, op)
        elif side == "local":
            self.local_change(data, op)
        elif action == "sync":
            self.sync()
        else:
            self.sync(data.draw(st.integers(min_value=1, max_value=6), label="kill at step"))
        self.failed = False

    def server_change(self, data, op: str) -> None:
        """A phone or webmail: append (with flags), change flags, expunge."""
        remote = self.s.remote
        if op == "append":
            m = self.new_message(data.draw(st.sampled_from(FOLDERS), label="folder"),
                                 data.draw(FLAGS, label="flags"))
            remote.append(m.folder, m.body, m.base)
        elif op == "flags":
            m = self.pick(data, "server", for_delete=False)
            flags = data.draw(FLAGS, label="flags")
            current = remote.flags_by_body(m.folder)[m.body]   # maybe half synced
            remote.set_flags(m.folder, self.server_uid(m),
                             add="".join(set(flags) - set(current)),
                             remove="".join(set(current) - set(flags)))
            m.remote = flags
        else:
            m = self.pick(data, "server", for_delete=True)
            remote.expunge(m.folder, self.server_uid(m))
            del self.msgs[m.name]
        self.trace[-1] += f" {m.name}"

    def local_change(self, data, op: str) -> None:
        """A mail client on the Maildir: deliver (with flags), change flags, delete, move
        to the other folder."""
        local = self.s.local
        if op == "deliver":
            m = self.new_message(data.draw(st.sampled_from(FOLDERS), label="folder"),
                                 data.draw(FLAGS, label="flags"))
            local.deliver(m.folder, m.body, m.base)
        elif op == "flags":
            m = self.pick(data, "local", for_delete=False)
            m.local = data.draw(FLAGS, label="flags")
            local.set_flags(m.folder, m.body, m.local)
        elif op == "delete":
            m = self.pick(data, "local", for_delete=True)
            local.delete(m.folder, m.body)
            del self.msgs[m.name]
        else:   # moved: deleted in one folder, a new message in the other
            m = self.pick(data, "local", for_delete=True)
            dest = FOLDERS[1 - FOLDERS.index(m.folder)]
            local.move(m.folder, m.body, dest)
            self.msgs[m.name] = Msg(m.name, m.body, dest, m.base)
        self.trace[-1] += f" {m.name}"

    def sync(self, crash_at: int | None = None) -> None:
        """A sync; with crash_at, killed by SIGKILL at that step (if it gets that far)."""
        if crash_at is None:
            result = self.run_sync()
            assert result.code == 0, result.err
            self.completed(f"sync #{self.completed_syncs + 1}")
            return
        self.trace[-1] += f" at {crash_at}"
        proc = self.s.acct.popen("--no-progress", "sync", "--allow-mass-delete",
                                 env={"MAILSYNC_CRASH_AT": str(crash_at)})
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:          # it finished before that step: a completed sync
            self.trace[-1] += " (completed)"
            self.completed(f"sync #{self.completed_syncs + 1} (not killed at {crash_at})")
            return
        assert proc.returncode == -9, err.decode()
        for m in self.msgs.values():
            if m.local is not None and m.remote is not None:
                m.locked = frozenset({"local", "server"})
            elif m.local is not None:
                m.locked |= {"server"}
            elif m.remote is not None:
                m.locked |= {"local"}


def test_random_changes_syncs_and_crashes_converge(imap_account):
    ImapSyncMachine.make_account = staticmethod(imap_account)
    run_state_machine_as_test(ImapSyncMachine, settings=settings(
        max_examples=30, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
