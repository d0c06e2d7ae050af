"""The user's promises as a hypothesis state machine over in-memory server and Maildir sides.

Each message carries a content id (cid) the test tracks. After every completed sync in mode
sync: both sides hold the same messages with the same flags, nothing the user did not delete
is lost, nothing is duplicated, every flag the user changed on either side since the last
sync arrives on both (modification beats deletion, unless the change is the deletion mark T),
and planning again plans nothing. Interrupted syncs run only a prefix of a plan (recording
only what was done, sometimes doing one more flag or delete action whose record is lost, or
only the STORE \\Deleted half of an expunge); one rule crashes after every step in
turn and checks that resuming gives what a clean sync gives. Pull, push and backup machines
check their one-way promises, idempotence, and that nothing is lost or duplicated.
"""

import copy

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mailsync.syncplan import (
    DeleteLocal, Download, ExpungeRemote, LocalMsg, Policy, RemoteMsg, SetLocalFlags,
    SetRemoteFlags, UpgradePlaceholder, Upload, plan_folder,
)

LETTERS = st.sampled_from("DFPRST")
FLAGS = st.frozensets(LETTERS, max_size=3)
SIZES = st.integers(min_value=1, max_value=200)
MAX_SIZE = 100
TRANSFERS = (Download, Upload)


class SyncModel(RuleBasedStateMachine):
    mode = "sync"

    def __init__(self):
        super().__init__()
        self.remote = {}        # uid -> {"cid", "flags", "size"}
        self.local = {}         # key -> {"cid", "flags", "placeholder"}
        self.last = []          # list[Pair]
        self.size_of = {}       # cid -> size
        self.alive = set()      # cids created and never deleted by the user
        self.counter = 0        # cids, uids and key numbers: the server's uids only grow
        self.policy = Policy(mode=self.mode, allow_mass_delete=True, max_size=MAX_SIZE)
        self.synced = False
        self.base = {}          # cid -> flags both sides agreed on at the last complete sync
        self.interrupted = False

    def next_id(self):
        self.counter += 1
        return self.counter

    # --- the user and the mail server act on either side --------------------------------

    @rule(flags=FLAGS, size=SIZES)
    def new_remote_message(self, flags, size):
        cid = self.next_id()
        self.size_of[cid] = size
        self.remote[self.next_id()] = {"cid": cid, "flags": flags, "size": size}
        self.alive.add(cid)
        self.synced = False

    @rule(flags=FLAGS, size=SIZES)
    def new_local_message(self, flags, size):
        cid = self.next_id()
        self.size_of[cid] = size
        self.local[f"k{self.next_id()}"] = {"cid": cid, "flags": flags, "placeholder": False}
        self.alive.add(cid)
        self.synced = False

    @precondition(lambda self: self.remote)
    @rule(data=st.data(), letter=LETTERS)
    def toggle_flag_on_server(self, data, letter):
        uid = data.draw(st.sampled_from(sorted(self.remote)))
        self.remote[uid]["flags"] ^= {letter}
        self.synced = False

    @precondition(lambda self: self.local)
    @rule(data=st.data(), letter=LETTERS)
    def toggle_flag_locally(self, data, letter):
        key = data.draw(st.sampled_from(sorted(self.local)))
        self.local[key]["flags"] ^= {letter}
        self.synced = False

    @precondition(lambda self: any(p.uid in self.remote and p.key in self.local for p in self.last))
    @rule(data=st.data(), remote_letter=LETTERS, local_letter=LETTERS)
    def toggle_flags_on_both_sides(self, data, remote_letter, local_letter):
        """The user reads a message on the phone and flags it on the laptop, say."""
        both = [p for p in self.last if p.uid in self.remote and p.key in self.local]
        pair = data.draw(st.sampled_from(both))
        self.remote[pair.uid]["flags"] ^= {remote_letter}
        self.local[pair.key]["flags"] ^= {local_letter}
        self.synced = False

    @precondition(lambda self: self.remote)
    @rule(data=st.data())
    def expunge_on_server(self, data):
        uid = data.draw(st.sampled_from(sorted(self.remote)))
        self.alive.discard(self.remote.pop(uid)["cid"])
        self.synced = False

    @precondition(lambda self: self.local)
    @rule(data=st.data())
    def delete_locally(self, data):
        key = data.draw(st.sampled_from(sorted(self.local)))
        self.alive.discard(self.local.pop(key)["cid"])
        self.synced = False

    # --- sync ---------------------------------------------------------------------------------

    def plan(self):
        remote = {u: RemoteMsg(u, m["flags"], m["size"]) for u, m in self.remote.items()}
        local = {k: LocalMsg(k, m["flags"], m["placeholder"]) for k, m in self.local.items()}
        result = plan_folder(remote, local, self.last, self.policy)
        assert result.refused is None
        return result.actions

    def do_io(self, a):
        """Run one action's IO; returns the arguments pair_after needs."""
        if isinstance(a, Download):
            key = f"k{self.next_id()}"
            self.local[key] = {"cid": self.remote[a.uid]["cid"], "flags": a.flags,
                               "placeholder": a.headers_only}
            return {"key": key}
        if isinstance(a, Upload):
            uid, cid = self.next_id(), self.local[a.key]["cid"]
            assert not self.local[a.key]["placeholder"], "a placeholder was uploaded"
            self.remote[uid] = {"cid": cid, "flags": a.flags, "size": self.size_of[cid]}
            return {"uid": uid}
        if isinstance(a, UpgradePlaceholder):
            self.local[a.key].update(flags=a.flags, placeholder=False)
        elif isinstance(a, SetRemoteFlags):
            m = self.remote[a.uid]
            m["flags"] = (m["flags"] | a.add) - a.remove
        elif isinstance(a, SetLocalFlags):
            self.local[a.key]["flags"] = a.flags
        elif isinstance(a, ExpungeRemote):
            del self.remote[a.uid]
        elif isinstance(a, DeleteLocal):
            del self.local[a.key]
        return {}

    def record(self, a, ids):
        new = a.pair_after(**ids)
        uid, key = (new.uid, new.key) if new else (a.uid, a.key)
        self.last = [p for p in self.last
                     if not ((uid is not None and p.uid == uid) or (key is not None and p.key == key))]
        if new is not None:
            self.last.append(new)

    def run(self, actions):
        phases = [a.phase for a in actions]
        assert phases == sorted(phases), "actions are not in phase order"
        for a in actions:
            self.record(a, self.do_io(a))

    @rule()
    def sync(self):
        expected = self.expected() if self.mode == "sync" and not self.interrupted else None
        self.run(self.plan())
        self.synced, self.interrupted = True, False
        assert self.plan() == (), "a second sync still plans work"
        if expected is not None:
            self.check(expected)
        # after a sync the server holds everything both sides share (a stub kept only
        # locally has no shared history)
        self.base = {m["cid"]: m["flags"] for m in self.remote.values()}

    def expected(self):
        """The user's view of a sync: each flag either side changed since the sides last
        agreed ends up changed on both; a message deleted on one side and changed on the
        other is kept, unless the change marked it deleted (T); one deleted and unchanged
        is gone (None)."""
        remote = {m["cid"]: m["flags"] for m in self.remote.values()}
        local = {m["cid"]: m["flags"] for m in self.local.values()}
        want = {}
        for cid in remote.keys() | local.keys():
            base = self.base.get(cid)
            if base is None:
                if cid in remote and cid in local:
                    continue                # e.g. a stub kept locally: no shared history
                want[cid] = remote.get(cid, local.get(cid))
            elif cid in remote and cid in local:
                r, l = remote[cid], local[cid]
                want[cid] = (base | (r - base) | (l - base)) - ((base - r) | (base - l))
            else:
                flags = remote.get(cid, local.get(cid))
                kept = flags != base and "T" not in flags - base
                want[cid] = flags if kept else None
        return want

    def check(self, want):
        remote = {m["cid"]: m["flags"] for m in self.remote.values()}
        local = {m["cid"]: m["flags"] for m in self.local.values()}
        for cid, flags in want.items():
            if flags is None:
                assert cid not in remote and cid not in local, f"message {cid} was not deleted"
                continue
            assert local.get(cid) == flags, f"message {cid}: local {local.get(cid)} != {flags}"
            if cid in remote or not self.is_stub(cid):
                assert remote.get(cid) == flags, f"message {cid}: server {remote.get(cid)} != {flags}"

    def is_stub(self, cid):
        return any(m["cid"] == cid and m["placeholder"] for m in self.local.values())

    def crash(self, actions, done, lost_record):
        """Run the first ``done`` actions with their records; if ``lost_record``, also run the
        next action's IO but lose its record (only for non-transfers: a transfer's intent is
        journalled by the engine with the key / upload token chosen in advance); "half" runs
        only the first command of an expunge (STORE +FLAGS \\Deleted, no UID EXPUNGE)."""
        self.run(actions[:done])
        if lost_record == "half":
            self.remote[actions[done].uid]["flags"] |= {"T"}
        elif lost_record:
            self.do_io(actions[done])
        self.synced, self.interrupted = False, True

    @staticmethod
    def ways_to_lose_record(actions, done):
        """What a crash may leave of the action after the ``done`` first: nothing, its IO
        without its record, or (an expunge) its first half."""
        if done >= len(actions) or isinstance(actions[done], TRANSFERS):
            return (False,)
        if isinstance(actions[done], ExpungeRemote):
            return (False, True, "half")
        return (False, True)

    @rule(data=st.data())
    def interrupted_sync(self, data):
        """A sync dies part way; the user goes on working before the next one."""
        actions = self.plan()
        done = data.draw(st.integers(min_value=0, max_value=len(actions)))
        lost = data.draw(st.sampled_from(self.ways_to_lose_record(actions, done)))
        self.crash(actions, done, lost)

    @rule()
    def crash_at_every_step_then_resume(self):
        """Kill the sync after every action (isync-style), resume, compare with a clean run."""
        clean = self.fork()
        clean.sync()
        actions = self.plan()
        for done in range(len(actions) + 1):
            for lost in self.ways_to_lose_record(actions, done):
                twin = self.fork()
                twin.crash(actions, done, lost)
                twin.sync()
                assert twin.outcome() == clean.outcome(), \
                    f"resuming after a crash at step {done} (record lost: {lost}) differs"
        self.sync()

    def fork(self):
        twin = copy.copy(self)
        for name in ("remote", "local", "last", "size_of", "alive", "base"):
            setattr(twin, name, copy.deepcopy(getattr(self, name)))
        return twin

    def outcome(self):
        """What the user sees, independent of the uids and keys that were chosen."""
        remote = sorted((m["cid"], sorted(m["flags"])) for m in self.remote.values())
        local = sorted((m["cid"], sorted(m["flags"]), m["placeholder"])
                       for m in self.local.values())
        return remote, local

    # --- the promises -------------------------------------------------------------------------

    def cids_of(self, side):
        return [m["cid"] for m in side.values()]

    @invariant()
    def nothing_duplicated(self):
        for side in (self.remote, self.local):
            cids = self.cids_of(side)
            assert len(cids) == len(set(cids)), "a message is duplicated"

    @invariant()
    def nothing_lost(self):
        present = set(self.cids_of(self.remote)) | set(self.cids_of(self.local))
        assert self.alive <= present, f"lost {self.alive - present}"

    @invariant()
    def sides_agree_after_sync(self):
        if not self.synced or self.mode != "sync":
            return
        # the one legitimate difference: a stub kept locally after the server expunged it
        stubs_kept = {p.key for p in self.last if p.uid is None}
        assert all(self.local[k]["placeholder"] for k in stubs_kept if k in self.local)
        remote = {m["cid"]: m["flags"] for m in self.remote.values()}
        local = {m["cid"]: m["flags"] for k, m in self.local.items() if k not in stubs_kept}
        assert remote == local
        assert self.alive <= set(remote) | {self.local[k]["cid"] for k in stubs_kept}
        assert self.alive <= set(local) | {self.local[k]["cid"] for k in stubs_kept}

    @invariant()
    def one_way_modes_keep_their_promises(self):
        if not self.synced or self.mode == "sync":
            return
        tomb_uids = {p.uid for p in self.last if p.key is None}
        tomb_keys = {p.key for p in self.last if p.uid is None}
        remote = {m["cid"] for u, m in self.remote.items() if u not in tomb_uids}
        local = {m["cid"] for k, m in self.local.items() if k not in tomb_keys}
        if self.mode in ("pull", "backup"):     # the server's mail is all in the Maildir
            assert remote <= set(self.cids_of(self.local))
        else:                                   # push: the Maildir's mail is all on the server
            assert local <= set(self.cids_of(self.remote))


class BackupModel(SyncModel):
    mode = "backup"

    def __init__(self):
        super().__init__()
        self.backed_up = set()

    @rule()
    def sync(self):
        super().sync()
        local = set(self.cids_of(self.local))
        assert self.backed_up <= local, "backup deleted local mail"
        self.backed_up = local

    @precondition(lambda self: self.local)
    @rule(data=st.data())
    def delete_locally(self, data):   # the user's own local deletions are not a loss
        super().delete_locally(data)
        self.backed_up &= set(self.cids_of(self.local))


class PullModel(SyncModel):
    mode = "pull"


class PushModel(SyncModel):
    mode = "push"


_settings = settings(max_examples=100, stateful_step_count=30, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])

TestSyncMachine = SyncModel.TestCase
TestSyncMachine.settings = _settings
TestBackupMachine = BackupModel.TestCase
TestBackupMachine.settings = settings(_settings, max_examples=40)
TestPullMachine = PullModel.TestCase
TestPullMachine.settings = settings(_settings, max_examples=30)
TestPushMachine = PushModel.TestCase
TestPushMachine.settings = settings(_settings, max_examples=30)
