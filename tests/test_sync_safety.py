"""Safety promises of IMAP sync against the real Dovecot: a UIDVALIDITY reset re-pairs
instead of re-downloading, the mass-delete guard, --dry-run changes nothing, and
headers-first placeholders (never uploaded, upgraded on request)."""

from __future__ import annotations

import re

import mailbox
import os
from pathlib import Path

import pytest

from tests.corpus import make_corpus, make_message

WORK = make_corpus(4, seed=2)              # Work: 4 messages, flags set per message below
WORK_FLAGS = ["S", "", "FS", "RS"]
INBOX = make_corpus(6)
BIG = [make_message(900, attachment=300_000), make_message(901, attachment=200_000)]


def agree(s, folder="INBOX"):
    """Both sides hold the same messages with the same flags."""
    assert s.local.bodies(folder) == s.remote.bodies(folder), folder
    assert s.local.flags_by_body(folder) == s.remote.flags_by_body(folder), folder


def seeded(imap_account, **keys):
    s = imap_account(**keys)
    server, user = s.acct.server, s.acct.user
    server.seed(user, INBOX)
    for body, flags in zip(WORK, WORK_FLAGS):
        server.seed(user, [body], folder="Work", flags=flags)
    return s


def summary(result) -> dict:
    return result.json["accounts"][0]


def folder_summary(result, name: str) -> dict:
    return next(f for f in summary(result)["folders"] if f["name"] == name)


def recreate(s, folder: str, skip: tuple[bytes, ...] = (), extra: tuple[bytes, ...] = ()
             ) -> None:
    """Another client deletes the folder and creates it again with the same messages
    (and flags), in their old order, leaving out `skip` and adding `extra`."""
    old = s.remote.uidvalidity(folder)
    messages = s.remote.messages(folder)
    s.remote.c.unselect_folder()
    s.remote.delete_folder(folder)
    s.remote.create(folder)
    for uid in sorted(messages):
        body, flags = messages[uid]
        if body not in skip:
            s.remote.append(folder, body, flags)
    for body in extra:
        s.remote.append(folder, body)
    assert s.remote.uidvalidity(folder) != old, "Dovecot kept the UIDVALIDITY"


# 5. UIDVALIDITY -----------------------------------------------------------------------

def test_uidvalidity_reset_re_pairs_without_downloading_or_duplicating(imap_account):
    s = seeded(imap_account)
    assert s.sync().code == 0
    s.local.set_flags("Work", WORK[1], "F")       # a local change made before the reset
    recreate(s, "Work")
    result = s.sync()
    assert result.code == 0, result.err
    work = folder_summary(result, "Work")
    assert work["downloaded"] == 0 and work["bytes_downloaded"] == 0
    assert work["uploaded"] == 0 and work["deleted_local"] == work["deleted_remote"] == 0
    assert "UIDVALIDITY changed" in result.err
    assert s.local.bodies("Work") == sorted(WORK) == s.remote.bodies("Work")  # no duplicates
    assert s.local.flags_by_body("Work")[WORK[1]] == "F"      # the local change survived
    assert s.remote.flags_by_body("Work")[WORK[1]] == "F"     # and reached the new folder
    agree(s, "Work")
    again = summary(s.sync())
    assert again["downloaded"] == again["uploaded"] == again["flags_changed"] == 0


def test_uidvalidity_reset_keeps_what_cannot_be_paired_and_downloads_what_is_new(
        imap_account):
    """Decision: a local message the re-created folder lacks cannot be paired; nothing local
    is lost, so it stays and (sync mode) is uploaded again, like any message only the
    Maildir has. A server message with no local match is downloaded."""
    s = seeded(imap_account)
    assert s.sync().code == 0
    lost, new = WORK[2], make_message(700, seed=9)
    recreate(s, "Work", skip=(lost,), extra=(new,))
    result = s.sync()
    assert result.code == 0, result.err
    work = folder_summary(result, "Work")
    assert work["downloaded"] == 1 and work["bytes_downloaded"] == len(new)
    assert work["uploaded"] == 1 and work["deleted_local"] == 0
    assert s.local.bodies("Work") == sorted(WORK + [new]) == s.remote.bodies("Work")
    assert s.local.flags_by_body("Work")[lost] == "FS"
    agree(s, "Work")


def test_uidvalidity_reset_in_pull_mode_keeps_the_unpaired_local_message(imap_account):
    s = seeded(imap_account, mode="pull")
    assert s.sync().code == 0
    recreate(s, "Work", skip=(WORK[0],))
    result = s.sync()
    assert result.code == 0, result.err
    assert folder_summary(result, "Work")["downloaded"] == 0
    assert s.local.bodies("Work") == sorted(WORK)             # nothing local is lost
    assert s.remote.bodies("Work") == sorted(WORK[1:])        # and nothing uploaded


def test_a_re_pairing_killed_while_it_is_recorded_keeps_the_old_record(tmp_path):
    """The re-paired record replaces the old one in one transaction: killed half way,
    the old record stands (the next run re-pairs again), never no record at all (every
    message would then be new on both sides, copied both ways)."""
    from mailsync.state import State
    from mailsync.imapsync.plan import Pair
    state = State(tmp_path)
    state.put_pairs("Work", [Pair(1, "a", frozenset("S")), Pair(2, "b", frozenset())])

    def re_paired_then_killed():
        yield Pair(11, "a", frozenset("S"))
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        state.replace_folder_pairs("Work", re_paired_then_killed())
    state.close()
    state = State(tmp_path)
    assert sorted((p.uid, p.key) for p in state.pairs("Work")) == [(1, "a"), (2, "b")]
    state.close()


# 6. Mass-delete guard -----------------------------------------------------------------

def _empty_local(s, folder):
    for f in s.local.files(folder):
        f.unlink()


def test_emptied_local_folder_is_refused_others_go_on_then_allowed(imap_account):
    s = seeded(imap_account)
    assert s.sync().code == 0
    _empty_local(s, "Work")
    s.remote.append("INBOX", make_message(600))          # the other folder has news
    result = s.sync()
    assert result.code == 1
    assert "--allow-mass-delete" in result.err and "Work" in result.err
    work = folder_summary(result, "Work")
    assert not work["ok"] and "--allow-mass-delete" in work["error"]
    assert work["deleted_remote"] == 0
    assert folder_summary(result, "INBOX")["ok"]
    assert make_message(600) in s.local.bodies()          # INBOX still synced
    assert s.remote.bodies("Work") == sorted(WORK)        # the server keeps everything
    assert s.sync().code == 1                             # refused again, still intact
    assert s.remote.bodies("Work") == sorted(WORK)

    allowed = s.sync("--allow-mass-delete")
    assert allowed.code == 0, allowed.err
    assert folder_summary(allowed, "Work")["deleted_remote"] == len(WORK)
    assert s.remote.bodies("Work") == [] == s.local.bodies("Work")


def test_emptied_server_folder_is_refused_and_local_files_kept(imap_account):
    s = seeded(imap_account)
    assert s.sync().code == 0
    for uid in list(s.remote.messages("Work")):
        s.remote.expunge("Work", uid)
    result = s.sync()
    assert result.code == 1
    assert "--allow-mass-delete" in result.err
    assert not folder_summary(result, "Work")["ok"]
    assert folder_summary(result, "INBOX")["ok"]
    assert s.local.bodies("Work") == sorted(WORK)         # local files kept

    allowed = s.sync("--allow-mass-delete")
    assert allowed.code == 0, allowed.err
    assert folder_summary(allowed, "Work")["deleted_local"] == len(WORK)
    assert s.local.bodies("Work") == []


def test_deleting_more_than_max_delete_is_refused(imap_account):
    s = imap_account(max_delete=0.5)
    ten = make_corpus(10, seed=5)
    s.acct.server.seed(s.acct.user, ten)
    assert s.sync().code == 0
    for body in ten[:6]:
        s.local.delete("INBOX", body)
    result = s.sync()
    assert result.code == 1
    error = folder_summary(result, "INBOX")["error"]
    assert "6 of 10" in error and "--allow-mass-delete" in error
    assert s.remote.bodies() == sorted(ten)
    allowed = s.sync("--allow-mass-delete")
    assert allowed.code == 0 and summary(allowed)["deleted_remote"] == 6
    assert s.remote.bodies() == sorted(ten[6:]) == s.local.bodies()


def test_deleting_up_to_max_delete_is_not_refused(imap_account):
    s = imap_account(max_delete=0.5)
    ten = make_corpus(10, seed=5)
    s.acct.server.seed(s.acct.user, ten)
    assert s.sync().code == 0
    for body in ten[:5]:
        s.local.delete("INBOX", body)
    result = s.sync()
    assert result.code == 0, result.err
    assert summary(result)["deleted_remote"] == 5
    assert s.remote.bodies() == sorted(ten[5:])


# 8. --dry-run -------------------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root: file bytes, None for a folder; symlinks by target."""
    out: dict[str, bytes | None] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = Path(dirpath, f)
            out[os.path.relpath(p, root)] = (os.readlink(p).encode() if p.is_symlink()
                                             else p.read_bytes())
    return out


def _server_view(s) -> dict:
    """Every server folder with its messages: uid -> (body, flags), and UIDVALIDITY."""
    view = {}
    for folder in s.remote.folders():
        view[folder] = (s.remote.uidvalidity(folder), s.remote.messages(folder))
    return view


def test_dry_run_prints_the_plan_and_changes_nothing_anywhere(imap_account):
    s = seeded(imap_account, max_size="100K")
    s.acct.server.seed(s.acct.user, BIG[:1], folder="Work")
    assert s.sync().code == 0
    # Changes on both sides.
    s.remote.append("INBOX", make_message(610))                            # download
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", INBOX[0]), add="F")  # local flags
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", INBOX[1]))          # delete local
    s.remote.create("Neu")                                                # new server folder
    s.remote.append("Neu", make_message(611))
    s.local.deliver("INBOX", make_message(612), "S")                      # upload
    s.local.set_flags("INBOX", INBOX[2], "RS")                            # server flags
    s.local.delete("INBOX", INBOX[3])                                     # expunge
    s.local.make_folder("Lokal")                                          # new local folder
    s.local.deliver("Lokal", make_message(613))
    stub, = _placeholder_files(s, "Work")
    s.local.set_flags("Work", stub.read_bytes(), "F")                     # upgrade
    server_before = _server_view(s)
    local_before = _tree(s.acct.maildir)
    state_before = _tree(s.acct.state_dir)

    result = s.acct.run("sync", "--dry-run")
    assert result.code == 0, result.err
    out = result.out
    assert "dry run, nothing changed" in out
    for expected in ("download UID", "upload local message", "flags on the server, UID",
                     "flags locally, ", "expunge UID", "delete local", "create local folder",
                     "create server folder Lokal", "Neu: download UID",
                     "download the whole of UID"):
        assert expected in out, (expected, out)
    # One notation for flag changes on either side (+added -removed), and totals.
    flags = [line for line in out.splitlines() if ": flags " in line or "flags locally" in line]
    assert flags and all(re.search(r": [+-][A-Z]+( -[A-Z]+)?$", line) for line in flags), flags
    assert "flags become" not in out
    totals = out.splitlines()[-1]
    assert totals == ("test: would download 3, upload 1, change flags of 2 on the server, "
                      "change flags of 1 locally, expunge 1 on the server, delete 1 locally, "
                      "create 1 local folder, create 1 server folder"), totals
    as_json = s.acct.run("--json", "sync", "--dry-run")
    assert as_json.code == 0 and as_json.json["accounts"][0]["plan"]

    assert _server_view(s) == server_before
    assert _tree(s.acct.maildir) == local_before
    assert _tree(s.acct.state_dir) == state_before

    # The plan was real: a sync does it.
    done = s.sync()
    assert done.code == 0, done.err
    assert "Lokal" in s.remote.folders() and s.local.bodies("Neu") == [make_message(611)]
    for folder in ("INBOX", "Work", "Neu", "Lokal"):
        agree(s, folder)


def test_dry_run_on_a_new_account_writes_no_state_and_no_maildir(imap_account):
    s = seeded(imap_account)
    server_before = _server_view(s)
    result = s.acct.run("sync", "--dry-run")
    assert result.code == 0, result.err
    assert "download UID" in result.out and "create local folder" in result.out
    assert not s.acct.maildir.exists() and not s.acct.state_dir.exists()
    assert _server_view(s) == server_before


def test_dry_run_state_copy_reads_a_leftover_wal_and_writes_nothing(tmp_path):
    """A run killed mid-way leaves state.sqlite3-wal holding committed pairs: the dry run's
    read-only copy must see them, and still create or change no file in the state dir."""
    from mailsync.state import State
    from mailsync.imapsync.plan import Pair
    writer = State(tmp_path)                    # stays open: the WAL is not checkpointed
    writer.put_pairs("INBOX", [Pair(7, "key7", frozenset("S"))])
    assert (tmp_path / "state.sqlite3-wal").stat().st_size > 0
    before = _tree(tmp_path)
    reader = State(tmp_path, readonly=True)
    assert reader.pairs("INBOX") == [Pair(7, "key7", frozenset("S"))]
    reader.close()
    assert _tree(tmp_path) == before
    writer.close()
    clean = _tree(tmp_path)
    assert "state.sqlite3-wal" not in clean
    reader = State(tmp_path, readonly=True)
    assert reader.pairs("INBOX") == [Pair(7, "key7", frozenset("S"))]
    reader.close()
    assert _tree(tmp_path) == clean


# 10. Headers-first --------------------------------------------------------------------

def _placeholder_files(s, folder="INBOX") -> list[Path]:
    return [f for f in s.local.files(folder) if b"X-Mailsync-Placeholder:" in f.read_bytes()]


def headers_first(imap_account, **keys):
    s = imap_account(max_size="100K", **keys)
    server, user = s.acct.server, s.acct.user
    server.seed(user, make_corpus(3, seed=6))
    server.seed(user, BIG)
    return s


def test_big_message_arrives_as_a_readable_placeholder_and_is_never_uploaded(imap_account):
    s = headers_first(imap_account)
    result = s.sync()
    assert result.code == 0, result.err
    assert summary(result)["uploaded"] == 0
    assert summary(result)["bytes_downloaded"] < sum(len(b) for b in BIG)
    stubs = _placeholder_files(s)
    assert len(stubs) == 2 and len(s.local.files()) == 5
    box = mailbox.Maildir(s.acct.maildir, create=False)
    originals = {mailbox.Message(b)["Message-ID"]: b for b in BIG}
    for key in box.keys():
        msg = box.get_message(key)
        if msg["Message-ID"] not in originals:
            continue
        original = mailbox.Message(originals[msg["Message-ID"]])
        assert msg["Subject"] == original["Subject"] and msg["From"] == original["From"]
        text = msg.get_payload(decode=True).decode()
        assert "headers-first" in text and "mailsync sync --full" in text
    before = s.remote.bodies()
    s.local.set_flags("INBOX", stubs[0].read_bytes(), "S")   # a flag change: no upload
    again = s.sync()
    assert summary(again)["uploaded"] == 0
    assert s.remote.bodies() == before and len(before) == 5
    assert "S" in s.remote.flags_by_body()[BIG[0]] or "S" in s.remote.flags_by_body()[BIG[1]]


def test_flagging_a_placeholder_upgrades_it_to_the_whole_message(imap_account):
    s = headers_first(imap_account)
    assert s.sync().code == 0
    stub = next(f for f in _placeholder_files(s) if b"X-Corpus-Index: 900" in f.read_bytes())
    s.local.set_flags("INBOX", stub.read_bytes(), "F")
    result = s.sync()
    assert result.code == 0, result.err
    assert summary(result)["uploaded"] == 0
    assert summary(result)["bytes_downloaded"] == len(BIG[0])
    assert s.local.flags_by_body()[BIG[0]] == "F"              # byte-identical, flagged
    assert s.remote.flags_by_body()[BIG[0]] == "F"
    assert len(_placeholder_files(s)) == 1                     # the other one stays a stub
    assert s.remote.bodies() == sorted(make_corpus(3, seed=6) + BIG)
    assert summary(s.sync())["downloaded"] == 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_placeholder_re_flagged_while_its_body_comes_stays_one_message(imap_account,
                                                                         monkeypatch, when):
    """Flagged on the phone, a placeholder is upgraded; after the run's scan, before or
    while its body downloads, the mail client marks the placeholder read (renames it). The whole message takes the
    placeholder's place under its new name: one file, the phone's flag and the
    client's both kept, and the next run carries the read flag to the server."""
    from mailsync.drivers import imap
    from mailsync.drivers.maildir import Maildir
    s = headers_first(imap_account)
    assert s.sync().code == 0
    stub = next(f for f in _placeholder_files(s) if b"X-Corpus-Index: 900" in f.read_bytes())
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", BIG[0]), add="F")
    fetch = imap.ImapSession.fetch_bodies

    replace_content = Maildir.replace_content

    acted = []

    def read_then_replace(self, key, write):      # after the scan, before the body comes
        s.local.set_flags("INBOX", stub.read_bytes(), "S")   # mutt opens the note
        acted.append(key)
        return replace_content(self, key, write)

    def fetch_then_read(self, uids, *args, **kwargs):
        got = fetch(self, uids, *args, **kwargs)
        if not kwargs.get("headers_only") and stub.exists():
            s.local.set_flags("INBOX", stub.read_bytes(), "S")
        return got
    if when == "before":
        monkeypatch.setattr(Maildir, "replace_content", read_then_replace)
    else:
        monkeypatch.setattr(imap.ImapSession, "fetch_bodies", fetch_then_read)
    assert s.sync_in_process(monkeypatch) == 0
    monkeypatch.undo()
    assert acted or when == "after"
    mine = [f for f in s.local.files("INBOX") if b"X-Corpus-Index: 900" in f.read_bytes()]
    assert len(mine) == 1, mine
    assert mine[0].read_bytes() == BIG[0]
    assert s.local.flags_by_body()[BIG[0]] == "FS"
    assert s.sync().code == 0
    assert s.remote.flags_by_body()[BIG[0]] == "FS" == s.local.flags_by_body()[BIG[0]]


def test_sync_full_upgrades_every_placeholder(imap_account):
    s = headers_first(imap_account)
    assert s.sync().code == 0
    result = s.sync("--full")
    assert result.code == 0, result.err
    assert summary(result)["downloaded"] == 2 and summary(result)["uploaded"] == 0
    assert _placeholder_files(s) == []
    agree(s)


def test_flagged_big_message_on_the_server_arrives_whole(imap_account):
    s = imap_account(max_size="100K")
    s.acct.server.seed(s.acct.user, BIG[:1], flags="F")
    assert s.sync().code == 0
    assert _placeholder_files(s) == [] and s.local.bodies() == BIG[:1]


def test_changed_placeholder_expunged_on_the_server_stays_local_and_is_not_uploaded(
        imap_account):
    """Modification beats deletion, but a stub can't be uploaded: it stays local only."""
    s = headers_first(imap_account)
    assert s.sync().code == 0
    stub = next(f for f in _placeholder_files(s) if b"X-Corpus-Index: 900" in f.read_bytes())
    s.local.set_flags("INBOX", stub.read_bytes(), "S")
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", BIG[0]))
    for _ in range(2):
        result = s.sync()
        assert result.code == 0, result.err
        assert summary(result)["uploaded"] == 0
        assert BIG[0] not in s.remote.bodies() and len(s.remote.bodies()) == 4
        assert len(_placeholder_files(s)) == 2


def test_placeholder_survives_a_uidvalidity_change_without_upload(imap_account):
    s = imap_account(max_size="100K")
    s.acct.server.seed(s.acct.user, make_corpus(2, seed=7) + BIG, folder="Work")
    assert s.sync().code == 0
    assert len(_placeholder_files(s, "Work")) == 2
    recreate(s, "Work", skip=(BIG[1],))      # one big message is gone for good
    result = s.sync()
    assert result.code == 0, result.err
    work = folder_summary(result, "Work")
    assert work["uploaded"] == 0 and work["downloaded"] == 0
    assert s.remote.bodies("Work") == sorted(make_corpus(2, seed=7) + BIG[:1])
    assert len(_placeholder_files(s, "Work")) == 2         # both stubs kept locally
    # The re-paired stub still upgrades on request; the orphan is still never uploaded.
    stub = next(f for f in _placeholder_files(s, "Work")
                if b"X-Corpus-Index: 900" in f.read_bytes())
    s.local.set_flags("Work", stub.read_bytes(), "F")
    upgraded = s.sync()
    assert folder_summary(upgraded, "Work")["uploaded"] == 0
    assert BIG[0] in s.local.bodies("Work")
    assert s.remote.bodies("Work") == sorted(make_corpus(2, seed=7) + BIG[:1])
