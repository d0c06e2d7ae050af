"""`mailsync check`, `mailsync folders ACCOUNT` and `mailsync status` on an IMAP account,
against the real Dovecot: they report, and change nothing anywhere."""

from __future__ import annotations

import os
from pathlib import Path

from tests.corpus import make_corpus, make_message

INBOX, WORK = make_corpus(5), make_corpus(3, seed=2)


def seeded(imap_account, **keys):
    s = imap_account(**keys)
    server, user = s.acct.server, s.acct.user
    server.seed(user, INBOX)
    server.seed(user, WORK, folder="Work", flags="S")
    server.seed(user, make_corpus(2, seed=3), folder="Entwürfe")
    server.seed(user, make_corpus(1, seed=4), folder="Projects/2026")
    return s


def tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = Path(dirpath, f).read_bytes()
    return out


def server_view(s) -> dict:
    return {f: (s.remote.uidvalidity(f), s.remote.messages(f)) for f in s.remote.folders()}


def table(out: str) -> list[list[str]]:
    """The tab-separated table printed when stdout is not a terminal."""
    return [line.split("\t") for line in out.splitlines() if "\t" in line]


# check ---------------------------------------------------------------------------------

def test_check_connects_verifies_tls_lists_folders_and_changes_nothing(imap_account):
    s = seeded(imap_account)
    before = server_view(s)
    result = s.acct.run_here("check")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("test: ok")
    assert "certificate verified" in out and "TLSv1." in out
    assert "IMAP4REV1" in out and "UIDPLUS" in out
    assert "folders: 4 (INBOX, " in out
    for folder in ("INBOX", "Work", "Entwürfe", "Projects/2026"):
        assert folder in out
    assert "5 in INBOX" in out
    assert server_view(s) == before
    assert not s.acct.maildir.exists() and not s.acct.state_dir.exists()


def test_check_sends_no_command_that_selects_or_changes_a_mailbox(imap_account):
    s = seeded(imap_account)
    trace = s.acct.run_here("-vv", "check")
    assert trace.code == 0, trace.err
    commands = [line.split()[2].upper() for line in trace.err.splitlines()
                if line.startswith("> ") and len(line.split()) > 2]    # "> TAG COMMAND"
    assert "LIST" in commands and "STATUS" in commands
    assert not {"SELECT", "EXAMINE", "APPEND", "STORE", "EXPUNGE", "CREATE", "DELETE",
                "RENAME", "UID", "COPY", "MOVE"} & set(commands), commands


def test_check_as_json(imap_account):
    s = seeded(imap_account)
    result = s.acct.run_here("--json", "check")
    assert result.code == 0
    account, = result.json["accounts"]
    assert account["ok"] and len(account["folders"]) == 4 and "Work" in account["folders"]
    assert account["certificate_verified"] is True and account["tls"] == "implicit"
    assert account["tls_version"].startswith("TLS") and account["port"] == s.acct.server.imaps_port
    assert account["inbox_messages"] == 5 and "IMAP4REV1" in account["capabilities"]


def test_check_reports_a_wrong_password(imap_account):
    s = imap_account(password="wrong")
    result = s.acct.run_here("check")
    assert result.code == 77 and "login" in result.err and "test" in result.err


def test_check_names_only_the_first_folders_of_many(imap_account):
    s = imap_account()
    for i in range(12):
        s.remote.create(f"F{i:02d}")
    out = s.acct.run_here("check").out
    assert "folders: 13 (" in out and "+5 more)" in out


# folders -------------------------------------------------------------------------------

def test_folders_lists_counts_and_local_paths(imap_account):
    s = seeded(imap_account)
    before = server_view(s)
    result = s.acct.run_here("folders", "test")
    assert result.code == 0, result.err
    rows = {row[0]: row for row in table(result.out)}
    assert rows["server folder"][:3] == ["server folder", "messages", "local folder"]
    root = s.acct.maildir
    assert rows["INBOX"][1:3] == ["5", str(root)]
    assert rows["Work"][1:3] == ["3", str(root / ".Work")]
    assert rows["Entwürfe"][1:3] == ["2", str(root / ".Entw&APw-rfe")]   # as Dovecot
    assert rows["Projects/2026"][1:3] == ["1", str(root / ".Projects.2026")]
    assert "creates the local folder" in rows["Work"][3]      # never synced yet
    assert server_view(s) == before
    assert not root.exists() and not s.acct.state_dir.exists()


def test_folders_shows_fs_layout_exclusions_and_local_only_folders(imap_account):
    s = seeded(imap_account, layout="fs", exclude=["Entwürfe"])
    assert s.sync().code == 0
    s.local.make_folder("Lokal/Neu")
    s.local.deliver("Lokal/Neu", make_message(5))
    state_before, local_before = tree(s.acct.state_dir), tree(s.acct.maildir)
    result = s.acct.run_here("folders", "test")
    assert result.code == 0, result.err
    rows = {row[0]: row for row in table(result.out)}
    root = s.acct.maildir
    assert rows["INBOX"][1:] == ["5", str(root / "INBOX"), ""]
    assert rows["Projects/2026"][1:3] == ["1", str(root / "Projects" / "2026")]
    assert rows["Entwürfe"][1] == "2" and "not synced" in rows["Entwürfe"][3]
    assert rows["Lokal/Neu"][1:3] == ["-", str(root / "Lokal" / "Neu")]
    assert "local only" in rows["Lokal/Neu"][3]
    assert tree(s.acct.state_dir) == state_before and tree(root) == local_before


def test_folders_as_json(imap_account):
    s = seeded(imap_account)
    result = s.acct.run_here("--json", "folders", "test")
    assert result.code == 0, result.err
    data = result.json
    rows = {f["server_folder"]: f for f in data["folders"]}
    assert data["account"] == "test" and rows["Work"]["messages"] == 3
    assert rows["Work"]["local_folder"] == str(s.acct.maildir / ".Work")


# status --------------------------------------------------------------------------------

def test_status_shows_per_folder_known_counts_and_results(imap_account):
    s = seeded(imap_account)
    never = table(s.acct.run_here("status").out)
    assert never[0] == ["account", "folder", "protocol", "last run", "result", "downloaded",
                        "known messages"]
    assert never[1][:4] == ["test", "*", "imap", "never"]
    assert s.sync().code == 0
    # A local delete in pull mode leaves a tombstone: not a known message any more.
    s.local.delete("INBOX", INBOX[0])
    assert s.sync("--mode", "pull").code == 0
    # Work is then emptied locally: refused by the guard, shown per folder.
    for f in s.local.files("Work"):
        f.unlink()
    assert s.sync().code == 1
    state_before = tree(s.acct.state_dir)
    result = s.acct.run_here("status")
    assert result.code == 0, result.err
    rows = {(r[0], r[1]): r for r in table(result.out)[1:]}
    account = rows[("test", "*")]
    assert account[2] == "imap" and "exit 1: " in account[4] and account[6] == "10"
    assert rows[("test", "INBOX")][4:] == ["ok", "0", "4"]
    assert "exit 1: " in rows[("test", "Work")][4]
    assert "--allow-mass-delete" in rows[("test", "Work")][4]
    assert rows[("test", "Work")][6] == "3"
    assert rows[("test", "Entwürfe")][6] == "2" and rows[("test", "Projects/2026")][6] == "1"
    assert tree(s.acct.state_dir) == state_before      # status wrote nothing


def test_status_json_for_imap(imap_account):
    s = seeded(imap_account)
    assert s.sync().code == 0
    result = s.acct.run_here("--json", "status")
    account, = result.json["accounts"]
    assert account["name"] == "test" and account["known_messages"] == 11
    assert account["last_run"]["exit_code"] == 0 and account["last_run"]["downloaded"] == 11
    folders = {f["name"]: f for f in account["folders"]}
    assert set(folders) == {"INBOX", "Work", "Entwürfe", "Projects/2026"}
    assert folders["INBOX"]["known_messages"] == 5 and folders["INBOX"]["downloaded"] == 5
