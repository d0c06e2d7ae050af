"""A message moved between local folders is moved on the server (UID MOVE), not uploaded
again: it keeps what only the server knows (keywords, its date), and nothing travels.
Anything less than a sure match is uploaded and expunged as before."""

from __future__ import annotations

import shutil
import time
from collections import Counter

import pytest

from mailsync.drivers.maildir import FINE_SETTLE
from mailsync.imapsync.moves import Arrival, Gone, match_moves
from tests.corpus import make_corpus, make_message
from tests.imaphelp import flags_of

MAIL = make_corpus(6)


def keywords(s, folder: str, body: bytes) -> set[bytes]:
    uid = s.remote.uid_of(folder, body)
    s.remote.c.select_folder(folder, readonly=True)
    return set(s.remote.c.get_flags([uid])[uid])


def synced(imap_account):
    s = imap_account()
    s.acct.server.seed(s.acct.user, MAIL[:4])
    s.acct.server.seed(s.acct.user, MAIL[4:], folder="Archive")
    assert s.sync().code == 0
    # A keyword only the server holds: an upload could not bring it along.
    uid = s.remote.uid_of("INBOX", MAIL[0])
    s.remote.c.select_folder("INBOX")
    s.remote.c.add_flags([uid], [b"$Project"])
    assert s.sync().code == 0
    return s


def summary(result) -> dict:
    assert result.code == 0, result.err
    return result.json["accounts"][0]


def test_message_moved_locally_is_moved_on_the_server_not_uploaded(imap_account):
    s = synced(imap_account)
    s.local.move("INBOX", MAIL[0], "Archive")
    got = summary(s.sync())
    assert got["uploaded"] == 0 and got["deleted_remote"] == 0, got
    assert sorted(s.remote.bodies("Archive")) == sorted([MAIL[0], *MAIL[4:]])
    assert MAIL[0] not in s.remote.bodies("INBOX")
    assert b"$Project" in keywords(s, "Archive", MAIL[0])
    again = summary(s.sync())
    assert again["uploaded"] == again["downloaded"] == again["deleted_local"] == 0, again


def test_message_copied_under_a_new_name_then_deleted_is_a_move(imap_account):
    s = synced(imap_account)
    # mutt's save: a new file in the other folder, then the original deleted.
    s.local.deliver("Archive", MAIL[0], "S")
    s.local.delete("INBOX", MAIL[0])
    got = summary(s.sync())
    assert got["uploaded"] == 0 and got["deleted_remote"] == 0, got
    assert b"$Project" in keywords(s, "Archive", MAIL[0])
    # The flag set while saving reached the server.
    assert s.remote.flags_by_body("Archive")[MAIL[0]] == "S"
    assert s.local.bodies("Archive") == s.remote.bodies("Archive")


def test_two_arrivals_of_one_message_are_uploaded_not_moved(imap_account):
    s = synced(imap_account)
    s.local.deliver("Archive", MAIL[1])
    s.local.deliver("Archive", MAIL[1], "S")
    s.local.delete("INBOX", MAIL[1])
    got = summary(s.sync())
    assert got["uploaded"] == 2 and got["deleted_remote"] == 1, got
    assert s.remote.bodies("Archive").count(MAIL[1]) == 2
    assert MAIL[1] not in s.remote.bodies("INBOX")


def test_a_different_message_of_the_same_size_is_not_taken_for_a_move(imap_account):
    s = synced(imap_account)
    original = MAIL[2]
    # Same Message-ID, same size, one header changed: not the message that left INBOX.
    impostor = original.replace(b"Subject: ", b"Subject:_", 1)
    assert impostor != original and len(impostor) == len(original)
    s.local.deliver("Archive", impostor)
    s.local.delete("INBOX", original)
    got = summary(s.sync())
    assert got["uploaded"] == 1 and got["deleted_remote"] == 1, got
    assert impostor in s.remote.bodies("Archive") and original not in s.remote.bodies("INBOX")


# The matching rule on its own -----------------------------------------------------------

def gone(folder="INBOX", uid=1, key="k1", size=100, mid="<a@x>", header="h"):
    return Gone(folder, uid, key, frozenset("S"), size, mid, header)


def arrived(folder="Archive", key="k1", size=100, mid="<a@x>", header="h"):
    return Arrival(folder, key, size, mid, header)


def test_match_by_key_or_message_id_with_equal_size():
    assert [(m.gone.uid, m.arrival.key) for m in match_moves([gone()], [arrived()])] == \
        [(1, "k1")]
    by_id = match_moves([gone(key="k1")], [arrived(key="other")])
    assert [(m.gone.uid, m.arrival.key) for m in by_id] == [(1, "other")]


def test_no_match_on_size_folder_message_id_or_ambiguity():
    assert match_moves([gone()], [arrived(size=101)]) == []
    assert match_moves([gone()], [arrived(folder="INBOX")]) == []
    assert match_moves([gone()], [arrived(mid=None)]) == []           # cannot be settled
    assert match_moves([gone()], [arrived(key="k2", mid="<b@x>")]) == []
    assert match_moves([gone(mid="<b@x>")], [arrived()]) == []        # same key, other id
    assert match_moves([gone()], [arrived(header="other")]) == []
    assert match_moves([gone(header=None)], [arrived(header=None)]) == []
    two = [arrived(key="k2"), arrived(folder="Keep", key="k3")]
    assert match_moves([gone(key="k9")], two) == []
    assert match_moves([gone(uid=1, key="k8"), gone(uid=2, key="k9")],
                       [arrived(key="k2")]) == []


def test_make_message_has_message_id():
    assert b"Message-ID:" in make_message(1)


@pytest.mark.parametrize("step", ["move-journalled", "moved"])
def test_a_move_killed_at_each_step_is_settled_by_the_next_run(imap_account, tmp_path,
                                                                step):
    s = synced(imap_account)
    s.local.move("INBOX", MAIL[0], "Archive")
    at = {"move-journalled": 1, "moved": 2}[step]     # the move comes before any folder
    log = tmp_path / "steps"
    proc = s.acct.popen("--no-progress", "sync",
                        env={"MAILSYNC_CRASH_AT": str(at), "MAILSYNC_CRASH_COUNT": str(log)})
    proc.communicate(timeout=120)
    assert proc.returncode == -9
    assert log.read_text().split()[-1] == step
    got = summary(s.sync())
    # Killed before the MOVE: uploaded and expunged instead; after it: found again by
    # its Message-ID in the folder it was moved to, and paired, not uploaded.
    assert got["uploaded"] == (1 if step == "move-journalled" else 0), got
    assert sorted(s.remote.bodies("Archive")) == sorted([MAIL[0], *MAIL[4:]])
    assert MAIL[0] not in s.remote.bodies("INBOX")
    assert s.local.bodies("Archive") == s.remote.bodies("Archive")
    assert s.local.bodies("INBOX") == s.remote.bodies("INBOX")
    if step == "moved":
        assert b"$Project" in keywords(s, "Archive", MAIL[0])
    again = summary(s.sync())
    assert again["uploaded"] == again["downloaded"] == again["deleted_remote"] == 0, again


def test_mail_arriving_after_the_move_check_is_still_synced(imap_account, monkeypatch):
    from mailsync.imapsync import localmoves as sync
    s = synced(imap_account)
    new, late = make_corpus(8)[6:]
    s.local.deliver("INBOX", new)          # two folders changed: the move check lists both
    s.local.deliver("Archive", new)
    time.sleep(2 * FINE_SETTLE)            # settled stamps, as for a user's changes
    check = sync.LocalMoves.run

    def check_then_deliver(self):
        check(self)
        s.local.deliver("Archive", late)   # after that listing, before Archive's sync
    monkeypatch.setattr(sync.LocalMoves, "run", check_then_deliver)
    assert s.sync_in_process(monkeypatch) == 0
    assert late in s.remote.bodies("Archive") and new in s.remote.bodies("INBOX")


def test_a_folder_listed_by_the_move_check_is_not_listed_again_for_its_sync(
        imap_account, monkeypatch, mocker):
    from mailsync.drivers.maildir import Maildir
    s = synced(imap_account)
    new = make_corpus(7)[6]
    s.local.deliver("INBOX", new)
    s.local.deliver("Archive", new)
    time.sleep(2 * FINE_SETTLE)
    scans = mocker.spy(Maildir, "scan")
    assert s.sync_in_process(monkeypatch) == 0
    listed = Counter(str(call.args[0].path) for call in scans.call_args_list)
    # The move check's listing serves each folder's sync too (the uploads leave the
    # folders as they were, so there is no listing after the run either).
    assert listed == {str(s.local.path("INBOX")): 1, str(s.local.path("Archive")): 1}, listed
    assert s.remote.bodies("INBOX").count(new) == s.remote.bodies("Archive").count(new) == 1


def test_a_message_moved_back_while_its_move_is_synced_is_not_lost(imap_account,
                                                                     monkeypatch):
    # The user moves a message, mailsync moves it on the server, and before the old
    # folder's own sync the user moves it back: the old folder's record of it must not
    # make that sync take it for deleted on the server (and delete the file).
    from mailsync.imapsync import localmoves as sync
    s = synced(imap_account)
    s.local.move("INBOX", MAIL[0], "Archive")
    time.sleep(2 * FINE_SETTLE)
    check = sync.LocalMoves.run

    def check_then_move_back(self):
        check(self)
        s.local.move("Archive", MAIL[0], "INBOX")
    monkeypatch.setattr(sync.LocalMoves, "run", check_then_move_back)
    assert s.sync_in_process(monkeypatch) == 0
    assert s.sync().code == 0
    for side in (s.local, s.remote):
        assert side.bodies("INBOX").count(MAIL[0]) == 1, side
        assert MAIL[0] not in side.bodies("Archive"), side


def _killed_just_after_the_server_move(s, tmp_path) -> None:
    """A sync SIGKILLed between its UID MOVE and the record of it."""
    log = tmp_path / "steps"
    proc = s.acct.popen("--no-progress", "sync",
                        env={"MAILSYNC_CRASH_AT": "2", "MAILSYNC_CRASH_COUNT": str(log)})
    proc.communicate(timeout=120)
    assert proc.returncode == -9 and log.read_text().split()[-1] == "moved"


def test_a_move_killed_after_the_server_moved_then_moved_back_is_not_lost(
        imap_account, tmp_path):
    # Killed between the UID MOVE and its record; before the next run the user moves
    # the message back. The old folder's record of it must not make that run delete it.
    s = synced(imap_account)
    s.local.move("INBOX", MAIL[0], "Archive")
    _killed_just_after_the_server_move(s, tmp_path)
    s.local.move("Archive", MAIL[0], "INBOX")
    assert s.sync().code == 0
    assert s.sync().code == 0
    for side in (s.local, s.remote):
        assert side.bodies("INBOX").count(MAIL[0]) == 1, side
        assert MAIL[0] not in side.bodies("Archive"), side


def test_an_interrupted_move_from_a_folder_deleted_since_does_not_stop_the_sync(
        imap_account, tmp_path):
    s = synced(imap_account)
    s.local.move("Archive", MAIL[4], "INBOX")
    _killed_just_after_the_server_move(s, tmp_path)
    s.remote.delete_folder("Archive")
    news = make_corpus(9)[8]
    s.remote.append("INBOX", news)
    first = s.sync()
    assert "Traceback" not in first.err, first.err
    # Archive is reported gone (exit 1); INBOX syncs all the same.
    assert news in s.local.bodies("INBOX")
    for side in (s.local, s.remote):
        assert side.bodies("INBOX").count(MAIL[4]) == 1, side


def test_a_move_killed_after_the_server_moved_into_a_folder_holding_a_copy_is_not_doubled(
        imap_account, tmp_path):
    """The folder moved to already holds a copy with the same Message-ID (a message kept
    in two folders). Killed between the UID MOVE and its record, the next run must pair
    the moved message by its Message-ID with the copy not yet paired, not give up and
    download it while uploading the local file."""
    s = imap_account()
    s.acct.server.seed(s.acct.user, MAIL[:4])
    s.acct.server.seed(s.acct.user, [MAIL[0], *MAIL[4:]], folder="Archive")
    assert s.sync().code == 0
    s.local.move("INBOX", MAIL[0], "Archive")
    _killed_just_after_the_server_move(s, tmp_path)
    got = summary(s.sync())
    assert got["uploaded"] == got["downloaded"] == 0, got
    for side in (s.local, s.remote):
        assert side.bodies("Archive").count(MAIL[0]) == 2, side
        assert MAIL[0] not in side.bodies("INBOX"), side
    again = summary(s.sync())
    assert again["uploaded"] == again["downloaded"] == again["deleted_remote"] == 0, again


@pytest.mark.parametrize("next_run", [("--folder", "INBOX"), ("--mode", "pull")])
def test_a_move_killed_after_the_server_moved_then_moved_back_survives_any_next_run(
        imap_account, tmp_path, next_run):
    """Killed between the UID MOVE and its record, then moved back by the user; the next
    run syncs only the folder it was moved from, or runs in pull mode. That run must
    still settle the move: else the source takes its server UID for expunged and
    deletes the file, and a later sync of the destination expunges the moved copy."""
    s = synced(imap_account)
    s.local.move("INBOX", MAIL[0], "Archive")
    _killed_just_after_the_server_move(s, tmp_path)
    s.local.move("Archive", MAIL[0], "INBOX")
    assert s.sync(*next_run).code == 0
    assert MAIL[0] in s.local.bodies("INBOX"), f"{next_run}: the file was deleted"
    assert s.sync().code == 0
    assert s.sync().code == 0
    assert s.local.bodies("INBOX").count(MAIL[0]) == 1
    assert MAIL[0] not in s.local.bodies("Archive")
    assert MAIL[0] in [b for f in ("INBOX", "Archive") for b in s.remote.bodies(f)]
    if next_run[0] == "--folder":        # sync mode all along: both sides agree
        assert s.remote.bodies("INBOX").count(MAIL[0]) == 1
        assert MAIL[0] not in s.remote.bodies("Archive")


def test_a_copy_under_the_same_name_killed_after_its_upload_is_not_taken_for_a_move(
        imap_account, tmp_path):
    """The user copies a message file to another folder keeping its name (cp); the
    upload there is killed before its record; another client then expunges the
    original on the server. The next run must not take the copy for a move (the
    original's file would be uploaded again): the original goes, the copy stays."""
    s = synced(imap_account)
    original = s.local.file_of("INBOX", MAIL[1])
    shutil.copy2(original, s.local.path("Archive") / original.parent.name / original.name)
    log = tmp_path / "steps"
    proc = s.acct.popen("--no-progress", "sync",
                        env={"MAILSYNC_CRASH_AT": "2", "MAILSYNC_CRASH_COUNT": str(log)})
    proc.communicate(timeout=120)
    assert proc.returncode == -9 and log.read_text().split() == ["upload-journalled",
                                                                 "uploaded"]
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", MAIL[1]))
    got = summary(s.sync())
    assert got["uploaded"] == 0 and got["deleted_local"] == 1, got
    for side in (s.local, s.remote):
        assert MAIL[1] not in side.bodies("INBOX"), side
        assert side.bodies("Archive").count(MAIL[1]) == 1, side


def test_a_move_killed_before_the_server_moved_is_not_paired_with_a_copy_already_paired(
        imap_account, tmp_path):
    """Killed after journalling a move, before its UID MOVE; another client then
    expunges the original. The folder moved to already holds a paired copy with the
    same Message-ID: that copy's pair must stay its own (taken over, its file would be
    uploaded again, and the moved file would take its flags). The moved file is
    uploaded: both copies on both sides, once, each with its own flags."""
    s = imap_account()
    s.acct.server.seed(s.acct.user, MAIL[:4])
    s.acct.server.seed(s.acct.user, [MAIL[0]], folder="Archive", flags="F")
    s.acct.server.seed(s.acct.user, MAIL[4:], folder="Archive")
    assert s.sync().code == 0
    s.local.move("INBOX", MAIL[0], "Archive")
    log = tmp_path / "steps"
    proc = s.acct.popen("--no-progress", "sync",
                        env={"MAILSYNC_CRASH_AT": "1", "MAILSYNC_CRASH_COUNT": str(log)})
    proc.communicate(timeout=120)
    assert proc.returncode == -9 and log.read_text().split() == ["move-journalled"]
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", MAIL[0]))
    got = summary(s.sync())
    assert got["uploaded"] == 1 and got["downloaded"] == 0, got
    for side in (s.local, s.remote):
        assert side.bodies("Archive").count(MAIL[0]) == 2, side
        assert MAIL[0] not in side.bodies("INBOX"), side
    local_flags = sorted(flags_of(f) for f in s.local.files("Archive")
                         if f.read_bytes() == MAIL[0])
    remote_flags = sorted(fl for b, fl in s.remote.messages("Archive").values() if b == MAIL[0])
    assert local_flags == remote_flags == ["", "F"], (local_flags, remote_flags)
    again = summary(s.sync())
    assert again["uploaded"] == again["downloaded"] == again["deleted_remote"] == 0, again


def test_a_message_whose_message_id_cannot_be_searched_for_is_moved_by_upload(imap_account):
    """A move is settled after a crash by searching for the Message-ID; one the server
    cannot search for (not ASCII) would leave a killed move unsettled (the file uploaded
    again, the moved copy downloaded): such a message is uploaded and expunged."""
    body = ("From: a@example.org\nTo: b@example.org\nSubject: x\n"
            "Message-ID: <grüße.1@example.org>\n\nbody\n").encode()
    s = imap_account()
    s.acct.server.seed(s.acct.user, [body, *MAIL[:2]])
    s.acct.server.seed(s.acct.user, MAIL[4:], folder="Archive")
    assert s.sync().code == 0
    s.local.move("INBOX", body, "Archive")
    got = summary(s.sync())
    assert got["uploaded"] == 1 and got["deleted_remote"] == 1, got
    for side in (s.local, s.remote):
        assert body in side.bodies("Archive") and body not in side.bodies("INBOX"), side
