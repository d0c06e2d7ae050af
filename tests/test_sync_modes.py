"""The one-way modes against the real Dovecot (man page, SYNC SEMANTICS, "Modes"): pull, push
and backup, each chosen by `sync --mode X` and by the account key `mode`, and `fetch` on
an IMAP account, which is a pull.

Every test syncs once in sync mode, then changes both sides the same way:
server: a new message, a flag set, an expunge; local: a new message, a flag set, a delete.
"""

from __future__ import annotations

import pytest

from tests.corpus import make_corpus, make_message

MAIL = make_corpus(6)
SERVER_NEW, LOCAL_NEW = make_message(800), make_message(801)
FLAGGED_ON_SERVER, EXPUNGED_ON_SERVER = MAIL[0], MAIL[1]
FLAGGED_LOCALLY, DELETED_LOCALLY = MAIL[2], MAIL[3]


def prepared(imap_account, mode: str, how: str):
    """An account in step with the server, then changed on both sides. how: "option"
    (the run passes --mode), "config" (the account's mode key) or "fetch"."""
    s = imap_account(**({"mode": mode} if how == "config" else {}))
    s.acct.server.seed(s.acct.user, MAIL)
    first = s.sync("--mode", "sync")
    assert first.code == 0, first.err
    s.remote.append("INBOX", SERVER_NEW)
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", FLAGGED_ON_SERVER), add="F")
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", EXPUNGED_ON_SERVER))
    s.local.deliver("INBOX", LOCAL_NEW, "S")
    s.local.set_flags("INBOX", FLAGGED_LOCALLY, "R")
    s.local.delete("INBOX", DELETED_LOCALLY)
    return s


def run(s, mode: str, how: str):
    if how == "fetch":
        result = s.acct.run("--json", "fetch")
    elif how == "option":
        result = s.sync("--mode", mode)
    else:
        result = s.sync()
    assert result.code == 0, result.err
    return result.json["accounts"][0]


def assert_settled(s, mode: str, how: str) -> None:
    """A further run in the same mode changes nothing on either side."""
    local, remote = s.local.flags_by_body(), s.remote.flags_by_body()
    again = run(s, mode, how)
    for count in ("downloaded", "uploaded", "deleted_local", "deleted_remote",
                  "flags_changed"):
        assert again[count] == 0, (count, again)
    assert s.local.flags_by_body() == local and s.remote.flags_by_body() == remote


@pytest.mark.parametrize("how", ["option", "config", "fetch"])
def test_pull_brings_server_changes_and_keeps_local_changes_local(imap_account, how):
    s = prepared(imap_account, "pull", how)
    summary = run(s, "pull", how)
    local, remote = s.local.flags_by_body(), s.remote.flags_by_body()
    # server changes reached the Maildir
    assert local[SERVER_NEW] == "" and summary["downloaded"] == 1
    assert local[FLAGGED_ON_SERVER] == "F"
    assert EXPUNGED_ON_SERVER not in local and summary["deleted_local"] == 1
    # local changes stayed local
    assert LOCAL_NEW not in remote and local[LOCAL_NEW] == "S"
    assert remote[FLAGGED_LOCALLY] == "" and local[FLAGGED_LOCALLY] == "R"
    assert DELETED_LOCALLY in remote and DELETED_LOCALLY not in local
    assert summary["uploaded"] == summary["deleted_remote"] == 0
    assert_settled(s, "pull", how)
    assert DELETED_LOCALLY not in s.local.flags_by_body()     # not downloaded again


@pytest.mark.parametrize("how", ["option", "config"])
def test_push_sends_local_changes_and_applies_no_server_change(imap_account, how):
    s = prepared(imap_account, "push", how)
    summary = run(s, "push", how)
    local, remote = s.local.flags_by_body(), s.remote.flags_by_body()
    # local changes reached the server
    assert remote[LOCAL_NEW] == "S" and summary["uploaded"] == 1
    assert remote[FLAGGED_LOCALLY] == "R"
    assert DELETED_LOCALLY not in remote and summary["deleted_remote"] == 1
    # server changes were not applied locally
    assert SERVER_NEW not in local and summary["downloaded"] == 0
    assert local[FLAGGED_ON_SERVER] == "" and remote[FLAGGED_ON_SERVER] == "F"
    assert EXPUNGED_ON_SERVER in local and summary["deleted_local"] == 0
    assert_settled(s, "push", how)
    assert EXPUNGED_ON_SERVER not in s.remote.flags_by_body()  # not uploaded again


@pytest.mark.parametrize("how", ["option", "config"])
def test_backup_is_a_pull_that_never_deletes_locally(imap_account, how):
    s = prepared(imap_account, "backup", how)
    summary = run(s, "backup", how)
    local, remote = s.local.flags_by_body(), s.remote.flags_by_body()
    assert local[SERVER_NEW] == "" and local[FLAGGED_ON_SERVER] == "F"
    assert EXPUNGED_ON_SERVER in local and summary["deleted_local"] == 0   # kept
    assert LOCAL_NEW not in remote and remote[FLAGGED_LOCALLY] == ""
    assert DELETED_LOCALLY in remote and summary["deleted_remote"] == 0
    assert summary["uploaded"] == 0
    assert_settled(s, "backup", how)
    assert EXPUNGED_ON_SERVER in s.local.flags_by_body()


def test_backup_keeps_mail_of_a_folder_emptied_on_the_server_with_allow(imap_account):
    """Even --allow-mass-delete deletes nothing locally in backup mode."""
    s = imap_account(mode="backup")
    s.acct.server.seed(s.acct.user, MAIL[:3])
    assert s.sync().code == 0
    for uid in list(s.remote.messages()):
        s.remote.expunge("INBOX", uid)
    result = s.sync("--allow-mass-delete")
    assert result.code == 0, result.err
    assert s.local.bodies() == sorted(MAIL[:3])


def test_push_creates_no_local_folder_and_pull_no_server_folder(imap_account):
    s = imap_account()
    s.acct.server.seed(s.acct.user, MAIL[:2])
    assert s.sync().code == 0
    s.remote.create("OnlyServer")
    s.remote.append("OnlyServer", SERVER_NEW)
    s.local.make_folder("OnlyLocal")
    s.local.deliver("OnlyLocal", LOCAL_NEW)
    assert s.sync("--mode", "pull").code == 0
    assert "OnlyLocal" not in s.remote.folders()
    assert s.local.bodies("OnlyServer") == [SERVER_NEW]
    s.remote.create("OnlyServer2")
    assert s.sync("--mode", "push").code == 0
    assert "OnlyLocal" in s.remote.folders()
    assert not s.local.path("OnlyServer2").exists()
