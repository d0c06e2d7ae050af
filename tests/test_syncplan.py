"""Table tests for the pure per-folder sync decision (mailsync.imapsync.plan). Where a test
also checks what a plan leaves, the real engine carries it out (tests/engine_harness.py:
the in-memory server, a real Maildir and state) and a second plan must be empty."""

import ast
import inspect

import pytest

from mailsync.imapsync import plan as syncplan
from mailsync.imapsync.plan import (
    DeleteLocal, Download, ExpungeRemote, FolderPlan, Forget, LocalMsg, Pair, Policy, Record,
    RemoteMsg, SetLocalFlags, SetRemoteFlags, UpgradePlaceholder, Upload, plan_folder,
)
from tests.engine_harness import settle

F = frozenset


def R(uid, flags="", size=100):
    return RemoteMsg(uid, F(flags), size)


def L(key, flags="", placeholder=False):
    return LocalMsg(key, F(flags), placeholder)


def P(uid, key, flags="", placeholder=False):
    return Pair(uid, key, F(flags), placeholder)


def plan(remote=(), local=(), last=(), **policy):
    return plan_folder({m.uid: m for m in remote}, {m.key: m for m in local}, list(last),
                       Policy(**policy))


# --- sync mode: new messages --------------------------------------------------------------

def test_new_message_on_server_is_downloaded():
    assert plan([R(1, "S")]).actions == (Download(1, F("S"), False),)


def test_new_local_message_is_uploaded():
    assert plan(local=[L("k", "FS")]).actions == (Upload("k", F("FS")),)


def test_nothing_changed_plans_nothing():
    p = plan([R(1, "S")], [L("k", "S")], [P(1, "k", "S")])
    assert p == FolderPlan((), None, syncplan.PlanCounts())


# --- sync mode: flags --------------------------------------------------------------------

@pytest.mark.parametrize("last, remote, local, want_remote, want_local, record", [
    # flag set on the server reaches local
    ("", "S", "", None, "S", None),
    # flag set locally reaches the server
    ("", "", "F", ("F", ""), None, None),
    # flag removed on the server is removed locally
    ("FS", "S", "FS", None, "S", None),
    # flag removed locally is removed on the server
    ("FS", "FS", "S", ("", "F"), None, None),
    # both sides change different flags: merged per flag
    ("S", "SR", "", ("", "S"), "R", None),
    # both sides make the same change: only the record moves
    ("", "S", "S", None, None, "S"),
    # a Maildir T is just \Deleted, a flag
    ("S", "S", "ST", ("T", ""), None, None),
])
def test_flag_changes_merge_per_flag(last, remote, local, want_remote, want_local, record):
    p = plan([R(1, remote)], [L("k", local)], [P(1, "k", last)])
    got_remote = [(a.add, a.remove) for a in p.actions if isinstance(a, SetRemoteFlags)]
    got_local = [a.flags for a in p.actions if isinstance(a, SetLocalFlags)]
    got_record = [a.pair.flags for a in p.actions if isinstance(a, Record)]
    assert got_remote == ([(F(want_remote[0]), F(want_remote[1]))] if want_remote else [])
    assert got_local == ([F(want_local)] if want_local is not None else [])
    assert got_record == ([F(record)] if record is not None else [])
    assert not any(isinstance(a, (ExpungeRemote, DeleteLocal)) for a in p.actions)
    settle([R(1, remote)], [L("k", local)], [P(1, "k", last)])


def test_flag_set_on_server_reaches_local():
    p = plan([R(1, "S")], [L("k")], [P(1, "k")])
    assert p.actions == (SetLocalFlags("k", F("S"), P(1, "k", "S")),)


def test_both_sides_change_different_flags_merge():
    _, remote, local, last = settle([R(1, "SF")], [L("k", "R")], [P(1, "k", "S")])
    assert remote[0].flags == local[0].flags == F("FR")
    assert last == [P(1, "k", "FR")]


def test_first_of_two_flag_actions_records_the_old_flags():
    p = plan([R(1, "S")], [L("k", "F")], [P(1, "k")])
    assert p.actions == (SetRemoteFlags(1, F("F"), F(), P(1, "k", "")),
                         SetLocalFlags("k", F("FS"), P(1, "k", "FS")))


def test_trashed_flag_does_not_expunge():
    p = plan([R(1)], [L("k", "T")], [P(1, "k")])
    assert p.actions == (SetRemoteFlags(1, F("T"), F(), P(1, "k", "T")),)


# --- sync mode: deletions ---------------------------------------------------------------

def test_deleted_locally_is_expunged_on_server():
    assert plan([R(1, "S")], [], [P(1, "k", "S")]).actions == (ExpungeRemote(1, "k"),)


def test_expunged_on_server_is_deleted_locally():
    assert plan([], [L("k", "S")], [P(1, "k", "S")]).actions == (DeleteLocal("k", 1),)


def test_deleted_on_both_sides_is_forgotten():
    assert plan([], [], [P(1, "k")]).actions == (Forget(1, "k"),)


def test_deleted_on_server_but_flagged_locally_is_kept():
    p = plan([], [L("k", "SF")], [P(1, "k", "S")])
    assert p.actions == (Upload("k", F("SF")),)
    settle([], [L("k", "SF")], [P(1, "k", "S")])


def test_deleted_locally_but_flagged_on_server_is_kept():
    p = plan([R(1, "SF")], [], [P(1, "k", "S")])
    assert p.actions == (Download(1, F("SF"), False),)
    _, remote, local, last = settle([R(1, "SF")], [], [P(1, "k", "S")])
    assert [m.uid for m in remote] == [1] and len(local) == 1
    assert last == [P(1, local[0].key, "SF")]


def test_deleted_locally_and_marked_deleted_on_server_is_expunged():
    """The server's change is the deletion mark (another client's, or our own expunge
    killed between its STORE \\Deleted and its UID EXPUNGE): both sides agree."""
    assert plan([R(1, "ST")], [], [P(1, "k", "S")]).actions == (ExpungeRemote(1, "k"),)
    assert plan([R(1, "FST")], [], [P(1, "k", "S")]).actions == (ExpungeRemote(1, "k"),)


def test_expunged_on_server_and_marked_trashed_locally_is_deleted():
    assert plan([], [L("k", "ST")], [P(1, "k", "S")]).actions == (DeleteLocal("k", 1),)


def test_a_deletion_mark_already_synced_does_not_stop_modification_beating_deletion():
    p = plan([R(1, "FT")], [], [P(1, "k", "T")])
    assert p.actions == (Download(1, F("FT"), False),)


def test_copies_come_before_flags_before_deletions():
    p = plan([R(1), R(2), R(5)], [L("a"), L("new", "S")], [P(1, "a"), P(2, "b", ""), P(3, "c")])
    phases = [a.phase for a in p.actions]
    assert phases == sorted(phases)
    assert [type(a) for a in p.actions] == [Download, Upload, ExpungeRemote, Forget]


# --- one-sided records (tombstones) ------------------------------------------------------

def test_tombstones_stop_retransfer_in_every_mode():
    for mode in syncplan.MODES:
        assert plan([R(1, "F")], [L("k", "S")], [P(1, None), P(None, "k")], mode=mode).actions == ()


def test_tombstone_is_forgotten_when_its_side_goes_too():
    assert plan([], [], [P(1, None), P(None, "k")]).actions == (Forget(1, None), Forget(None, "k"))


# --- pull ---------------------------------------------------------------------------------

def test_pull_brings_server_changes_only():
    p = plan([R(1, "S"), R(2)], [L("a", "F"), L("new")], [P(1, "a")], mode="pull")
    assert p.actions == (Download(2, F(), False), SetLocalFlags("a", F("FS"), P(1, "a", "S")))


def test_pull_local_flag_change_stays_local():
    assert plan([R(1)], [L("k", "F")], [P(1, "k")], mode="pull").actions == ()


def test_pull_deleted_locally_is_not_downloaded_again():
    p = plan([R(1, "S")], [], [P(1, "k", "S")], mode="pull")
    assert p.actions == (Record(P(1, None, "S")),)
    settle([R(1, "S")], [], [P(1, "k", "S")], mode="pull")


def test_pull_expunged_on_server_is_deleted_locally():
    assert plan([], [L("k", "F")], [P(1, "k")], mode="pull").actions == (DeleteLocal("k", 1),)


# --- push ---------------------------------------------------------------------------------

def test_push_brings_local_changes_only():
    p = plan([R(1, "S"), R(2)], [L("a", "F"), L("new")], [P(1, "a")], mode="push")
    assert p.actions == (Upload("new", F()), SetRemoteFlags(1, F("F"), F(), P(1, "a", "F")))


def test_push_deleted_locally_is_expunged_on_server():
    assert plan([R(1, "F")], [], [P(1, "k")], mode="push").actions == (ExpungeRemote(1, "k"),)


def test_push_expunged_on_server_stays_local_and_is_not_uploaded_again():
    p = plan([], [L("k", "S")], [P(1, "k", "S")], mode="push")
    assert p.actions == (Record(P(None, "k", "S")),)
    settle([], [L("k", "S")], [P(1, "k", "S")], mode="push")


@pytest.mark.parametrize("mode", ["push"])
def test_push_never_touches_local(mode):
    p = plan([R(1, "S"), R(2, "S")], [], [P(1, "k")], mode=mode)
    assert not any(isinstance(a, (Download, SetLocalFlags, DeleteLocal)) for a in p.actions)


@pytest.mark.parametrize("mode", ["pull", "backup"])
def test_pull_and_backup_never_touch_server(mode):
    p = plan([R(1)], [L("k", "S"), L("n")], [P(1, "k"), P(2, "j")], mode=mode)
    assert not any(isinstance(a, (Upload, SetRemoteFlags, ExpungeRemote)) for a in p.actions)


# --- backup -------------------------------------------------------------------------------

def test_backup_keeps_mail_expunged_on_server():
    p = plan([], [L("k", "S")], [P(1, "k", "S")], mode="backup")
    assert p.actions == (Record(P(None, "k", "S")),)
    settle([], [L("k", "S")], [P(1, "k", "S")], mode="backup")


def test_backup_downloads_new_mail_and_server_flags():
    p = plan([R(1, "S"), R(2)], [L("k")], [P(1, "k")], mode="backup")
    assert p.actions == (Download(2, F(), False), SetLocalFlags("k", F("S"), P(1, "k", "S")))


# --- mass-delete guard --------------------------------------------------------------------

def test_guard_refuses_deleting_most_of_the_server_folder():
    last = [P(i, f"k{i}") for i in range(1, 5)]
    p = plan([R(i) for i in range(1, 5)], [L("k4")], last)
    assert p.actions == () and p.counts.expunge_remote == 0
    assert "3 of 4" in p.refused and "server" in p.refused
    assert "rerun with --allow-mass-delete if this is intended" in p.refused


def test_guard_refuses_deleting_most_of_the_local_folder():
    last = [P(i, f"k{i}") for i in range(1, 5)]
    p = plan([R(4)], [L(f"k{i}") for i in range(1, 5)], last)
    assert p.actions == () and "local" in p.refused and "3 of 4" in p.refused


def test_guard_refuses_a_suddenly_empty_local_folder():
    p = plan([R(1), R(2)], [], [P(1, "a"), P(2, "b")])
    assert p.actions == () and "local folder is empty" in p.refused


def test_guard_refuses_a_suddenly_empty_server_folder_even_in_backup():
    p = plan([], [L("a"), L("b")], [P(1, "a"), P(2, "b")], mode="backup")
    assert p.actions == () and "server folder is empty" in p.refused


def test_guard_allows_small_deletions():
    last = [P(i, f"k{i}") for i in range(1, 11)]
    p = plan([R(i) for i in range(1, 11)], [L(f"k{i}") for i in range(4, 11)], last)
    assert p.refused is None and p.counts.expunge_remote == 3


def test_allow_mass_delete_lets_it_through():
    last = [P(i, f"k{i}") for i in range(1, 5)]
    p = plan([R(i) for i in range(1, 5)], [], last, allow_mass_delete=True)
    assert p.refused is None and p.counts.expunge_remote == 4


def test_guard_lets_two_deletions_through_even_if_that_is_most():
    p = plan([R(1), R(2), R(3)], [L("c")], [P(1, "a"), P(2, "b"), P(3, "c")])
    assert p.refused is None and p.counts.expunge_remote == 2


# --- headers-first ------------------------------------------------------------------------

def test_large_new_message_arrives_headers_first():
    p = plan([R(1, "S", 5000), R(2, "", 50)], max_size=1000)
    assert p.actions == (Download(1, F("S"), True), Download(2, F(), False))
    assert p.actions[0].pair_after(key="x") == P(1, "x", "S", placeholder=True)


def test_full_downloads_large_messages_whole():
    assert plan([R(1, "", 5000)], max_size=1000, full=True).actions == (Download(1, F(), False),)


def test_placeholder_flagged_locally_is_upgraded():
    p = plan([R(1, "", 5000)], [L("k", "F")], [P(1, "k", "", True)], max_size=1000)
    assert p.actions == (
        UpgradePlaceholder(1, "k", F("F"), P(1, "k", "", False)),
        SetRemoteFlags(1, F("F"), F(), P(1, "k", "F", False)),
    )
    settle([R(1, "", 5000)], [L("k", "F")], [P(1, "k", "", True)], max_size=1000)


def test_placeholder_flagged_on_server_is_upgraded_in_one_run():
    p = plan([R(1, "F", 5000)], [L("k")], [P(1, "k", "", True)], max_size=1000)
    assert p.actions == (UpgradePlaceholder(1, "k", F("F"), P(1, "k", "F", False)),)


def test_full_upgrades_every_placeholder():
    p = plan([R(1, "S", 5000)], [L("k", "S")], [P(1, "k", "S", True)], full=True)
    assert p.actions == (UpgradePlaceholder(1, "k", F("S"), P(1, "k", "S")),)


def test_unflagged_placeholder_stays_a_placeholder():
    assert plan([R(1, "S", 5000)], [L("k", "S")], [P(1, "k", "S", True)], max_size=1000).actions == ()


def test_placeholder_is_never_uploaded():
    assert plan([], [L("k", "F", placeholder=True)], []).actions == ()


def test_placeholder_expunged_on_server_but_changed_locally_stays_local():
    p = plan([], [L("k", "S")], [P(1, "k", "", True)])
    assert p.actions == (Record(P(None, "k", "S", True)),)


def test_placeholder_deleted_locally_is_expunged_in_sync_mode():
    assert plan([R(1, "", 5000)], [], [P(1, "k", "", True)]).actions == (ExpungeRemote(1, "k"),)


# --- idempotence over a mixed folder, per mode ----------------------------------------------

@pytest.mark.parametrize("mode", syncplan.MODES)
def test_second_plan_after_executing_is_empty(mode):
    remote = [R(1, "S"), R(2, "F"), R(3), R(5, "", 9000), R(6, "R")]
    local = [L("a", "S"), L("b"), L("d", "D"), L("n1"), L("g", "T")]
    last = [P(1, "a", "S"), P(2, "b"), P(3, "c"), P(4, "d", "D"), P(6, "g"), P(7, "h")]
    settle(remote, local, last, mode=mode, max_size=1000, allow_mass_delete=True)


# --- values -------------------------------------------------------------------------------

def test_values_are_frozen_and_flags_validated():
    with pytest.raises(Exception):
        R(1).uid = 2
    with pytest.raises(ValueError):
        R(1, "X")
    with pytest.raises(ValueError):
        Pair(None, None)
    with pytest.raises(ValueError):
        Policy(mode="mirror")
    with pytest.raises(ValueError):
        plan([], [], [P(1, "a"), P(1, "b")])


def test_transfers_need_the_new_identifier():
    with pytest.raises(ValueError):
        Download(1, F()).pair_after()
    with pytest.raises(ValueError):
        Upload("k", F()).pair_after()
    assert Upload("k", F("S")).pair_after(uid=9) == P(9, "k", "S")
    assert ExpungeRemote(1, "k").pair_after() is None


# --- purity -------------------------------------------------------------------------------

def test_syncplan_imports_no_io_library():
    tree = ast.parse(inspect.getsource(syncplan))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    forbidden = {"os", "sqlite3", "imapclient", "click", "rich", "poplib", "imaplib",
                 "socket", "pathlib", "shutil", "io"}
    assert not imported & forbidden, imported & forbidden
    assert imported <= {"dataclasses", "typing", "enum", "__future__", "mailsync"}, imported
    ours = {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mailsync")}
    assert ours <= {"mailsync.modes"}, ours       # the mode names: constants, nothing more
