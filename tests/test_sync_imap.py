"""Two-way IMAP sync against the real Dovecot: what a user with a laptop, a phone and
webmail sees."""

from __future__ import annotations

import mailbox


from tests.corpus import make_corpus, make_message


def seeded(imap_account, **keys):
    s = imap_account(**keys)
    server, user = s.acct.server, s.acct.user
    server.seed(user, make_corpus(8))
    server.seed(user, make_corpus(3, seed=2), folder="Work", flags="S")
    server.seed(user, [make_message(900, attachment=600_000)], folder="Work", flags="FS")
    server.seed(user, make_corpus(2, seed=3), folder="Entwürfe", flags="D")
    server.seed(user, make_corpus(2, seed=4), folder="Projects/2026", flags="R")
    return s


def agree(s, folder="INBOX"):
    """Both sides hold the same messages with the same flags."""
    assert s.local.bodies(folder) == s.remote.bodies(folder), folder
    assert s.local.flags_by_body(folder) == s.remote.flags_by_body(folder), folder


FOLDERS = ["INBOX", "Work", "Entwürfe", "Projects/2026"]


def test_initial_sync_copies_every_folder_byte_identical_with_flags(imap_account):
    s = seeded(imap_account)
    result = s.sync()
    assert result.code == 0, result.err
    for folder in FOLDERS:
        agree(s, folder)
    assert len(s.local.bodies("Work")) == 4
    # on disk in modified UTF-7, as Dovecot and Courier keep Maildir++ folder names
    assert (s.acct.maildir / ".Entw&APw-rfe").is_dir()
    assert (s.acct.maildir / ".Projects.2026").is_dir()
    box = mailbox.Maildir(s.acct.maildir, create=False)
    assert len(box) == 8 and set(box.list_folders()) >= {"Work", "Entw&APw-rfe", "Projects.2026"}
    assert len(box.get_folder("Work")) == 4


def test_second_sync_changes_nothing_and_transfers_no_body(imap_account):
    s = seeded(imap_account)
    s.sync()
    before = {f: s.local.flags_by_body(f) for f in FOLDERS}
    result = s.sync()
    summary = result.json["accounts"][0]
    assert summary["downloaded"] == summary["uploaded"] == summary["flags_changed"] == 0
    assert summary["bytes_downloaded"] == 0
    assert {f: s.local.flags_by_body(f) for f in FOLDERS} == before
    trace = s.acct.run("-vv", "--no-progress", "sync").err
    commands = [line for line in trace.splitlines() if line.startswith(">")]
    assert commands and not [c for c in commands if "BODY.PEEK[]" in c or " APPEND " in c]


def test_new_server_message_arrives_locally(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.remote.append("INBOX", make_message(500), "F")
    s.sync()
    agree(s)
    assert s.local.flags_by_body()[make_message(500)] == "F"


def test_new_local_message_is_uploaded_with_its_flags(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.local.deliver("Work", make_message(501), "RS")
    assert s.sync().json["accounts"][0]["uploaded"] == 1
    agree(s, "Work")
    assert s.remote.flags_by_body("Work")[make_message(501)] == "RS"


def test_flag_set_on_the_server_reaches_local(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[2]
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="SF")
    s.sync()
    assert s.local.flags_by_body()[body] == "FS"


def test_a_flag_the_mail_client_sets_while_a_run_flags_the_file_is_kept(imap_account,
                                                                        monkeypatch):
    """The phone flags a message; while a run copies that flag to the file, the mail
    client marks the file read (renames it). Both flags stay, and the next run carries
    the read flag to the server: the folder is not taken for unchanged."""
    from mailsync.drivers.maildir import Maildir
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[2]
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="F")
    locate = Maildir.locate
    acted = []

    def read_then_locate(self, key, seen=None):   # the engine looks for the file to flag
        if not acted and self.path == s.local.path("INBOX"):
            acted.append(key)
            s.local.set_flags("INBOX", body, "S")      # after the scan, before the rename
        return locate(self, key, seen)
    monkeypatch.setattr(Maildir, "locate", read_then_locate)
    assert s.sync_in_process(monkeypatch) == 0
    monkeypatch.undo()
    assert acted                                       # the client did act in that window
    assert s.local.flags_by_body()[body] == "FS"
    s.sync()
    assert s.remote.flags_by_body()[body] == "FS" == s.local.flags_by_body()[body]


def test_flag_cleared_locally_is_cleared_on_the_server(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(3, seed=2)[0]
    s.local.set_flags("Work", body, "")
    s.sync()
    assert s.remote.flags_by_body("Work")[body] == ""
    agree(s, "Work")


def test_deleted_locally_is_expunged_on_server(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[5]
    s.local.delete("INBOX", body)
    assert s.sync().json["accounts"][0]["deleted_remote"] == 1
    assert body not in s.remote.bodies()
    agree(s)


def test_expunged_on_server_is_deleted_locally(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[1]
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", body))
    assert s.sync().json["accounts"][0]["deleted_local"] == 1
    assert body not in s.local.bodies()
    agree(s)


def test_moved_locally_between_folders_is_moved_on_the_server(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[4]
    s.local.move("INBOX", body, "Work")
    s.sync()
    assert body not in s.remote.bodies("INBOX") and body in s.remote.bodies("Work")
    agree(s)
    agree(s, "Work")


def test_moved_on_the_server_is_moved_locally(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[6]
    s.remote.move("INBOX", s.remote.uid_of("INBOX", body), "Work")
    s.sync()
    assert body not in s.local.bodies("INBOX") and body in s.local.bodies("Work")
    agree(s)
    agree(s, "Work")


def test_new_local_folder_is_created_on_the_server(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.local.make_folder("Archive/2025")
    s.local.deliver("Archive/2025", make_message(502), "S")
    s.sync()
    assert "Archive/2025" in s.remote.folders()
    agree(s, "Archive/2025")


def test_new_server_folder_is_created_locally(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.remote.create("Reisen/Österreich")
    s.remote.append("Reisen/Österreich", make_message(503), "")
    s.sync()
    agree(s, "Reisen/Österreich")


def test_both_sides_changing_different_flags_merge(imap_account):
    s = seeded(imap_account)
    s.sync()
    body = make_corpus(8)[3]
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="F")
    s.local.set_flags("INBOX", body, "S")
    s.sync()
    assert s.local.flags_by_body()[body] == "FS" == s.remote.flags_by_body()[body]


def test_deleted_on_one_side_while_flagged_on_the_other_is_kept(imap_account):
    s = seeded(imap_account)
    s.sync()
    kept_locally, kept_remotely = make_corpus(8)[0], make_corpus(8)[7]
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", kept_locally))
    s.local.set_flags("INBOX", kept_locally, "F")
    s.local.delete("INBOX", kept_remotely)
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", kept_remotely), add="F")
    s.sync()
    assert kept_locally in s.remote.bodies() and kept_locally in s.local.bodies()
    assert kept_remotely in s.remote.bodies() and kept_remotely in s.local.bodies()
    agree(s)
    again = s.sync().json["accounts"][0]
    assert again["downloaded"] == again["uploaded"] == 0


def test_deleted_on_one_side_while_marked_deleted_on_the_other_goes_from_both(imap_account):
    """Marking a message deleted (\\Deleted, Maildir T) is no change that saves it from
    the other side's deletion: both sides wanted it gone."""
    s = seeded(imap_account)
    s.sync()
    gone_locally, gone_remotely = make_corpus(8)[2], make_corpus(8)[5]
    s.local.delete("INBOX", gone_locally)
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", gone_locally), add="T")
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", gone_remotely))
    s.local.set_flags("INBOX", gone_remotely, "T")
    summary = s.sync().json["accounts"][0]
    assert summary["downloaded"] == summary["uploaded"] == 0, summary
    assert summary["deleted_remote"] == summary["deleted_local"] == 1, summary
    for body in (gone_locally, gone_remotely):
        assert body not in s.remote.bodies() and body not in s.local.bodies()
    agree(s)


def client_commands(trace: str) -> list[str]:
    return [line for line in trace.splitlines() if line.startswith(">")]


def test_unchanged_folders_fetch_nothing_on_resync(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.sync()   # the first resync still sees the first run's own changes
    trace = s.acct.run("-vv", "--no-progress", "sync").err
    assert not [c for c in client_commands(trace) if "FETCH" in c]


def test_a_flag_change_is_fetched_alone_with_changedsince(imap_account):
    s = seeded(imap_account)
    s.sync()
    s.sync()
    body = make_corpus(8)[6]
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="F")
    trace = s.acct.run("-vv", "--no-progress", "sync").err
    fetches = [c for c in client_commands(trace) if "FETCH" in c]
    assert fetches and all("CHANGEDSINCE" in c for c in fetches)
    assert s.local.flags_by_body()[body] == "F"


def test_settled_unchanged_folders_are_not_even_scanned(imap_account, mocker):
    import time as _time
    from mailsync.config import load_config
    from mailsync.accounts import RunOptions, run_account
    from mailsync.drivers.maildir import Maildir
    from mailsync.reporting import SilentReporter

    s = seeded(imap_account)
    account = load_config(s.acct.config).accounts["test"]
    opts = RunOptions(command="sync")
    assert run_account(account, opts, SilentReporter()).ok
    _time.sleep(0.05)  # let the folders' times settle (see Maildir.stamp)
    assert run_account(account, opts, SilentReporter()).ok
    scan = mocker.spy(Maildir, "scan")
    assert run_account(account, opts, SilentReporter()).ok
    assert scan.call_count == 0
    # A local change after that is still seen.
    body = make_corpus(8)[2]
    s.local.set_flags("INBOX", body, "F")
    assert run_account(account, opts, SilentReporter()).flags_changed == 1
    assert s.remote.flags_by_body()[body] == "F"


def test_unchanged_folders_cost_no_select_where_the_server_has_list_status(imap_account):
    s = seeded(imap_account)
    assert s.sync().code == 0
    again = s.acct.run("-vv", "--no-progress", "sync")
    assert again.code == 0, again.err
    sent = [line for line in again.err.splitlines() if line.startswith("> ")]
    assert any("RETURN (STATUS" in line for line in sent), sent
    assert not any(" SELECT " in line or " EXAMINE " in line for line in sent), sent
    # And a folder changed on the server is still selected and synced.
    s.remote.append("INBOX", make_corpus(1, seed=99)[0])
    third = s.acct.run("-vv", "--no-progress", "sync")
    assert third.code == 0 and ' SELECT "INBOX"' in third.err, third.err
    assert make_corpus(1, seed=99)[0] in s.local.bodies("INBOX")
