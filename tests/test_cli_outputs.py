"""What a user sees from the commands: global options anywhere, warnings instead of silent
no-ops, and outputs for people (tables, plans, refusals) and scripts (JSON). In-process
through mailsync.cli.app.main (tests/inprocess.py) unless a terminal is the point."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from mailsync import crashpoints, stopping
from tests.conftest import write_config
from tests.corpus import make_corpus, make_message
from tests.inprocess import run_in_process
from tests.test_progress import on_terminal


@pytest.fixture
def cli():
    """cli(*args) -> CliResult: `mailsync ARGS` in this process (tests/inprocess.py)."""
    return run_in_process


def imap_with_folders(imap_account, **keys):
    s = imap_account(**keys)
    s.remote.create("Work")
    s.acct.server.seed(s.acct.user, make_corpus(4, seed=3))
    s.acct.server.seed(s.acct.user, make_corpus(3, seed=4), folder="Work")
    return s


# Global options anywhere -----------------------------------------------------------------

def test_global_options_work_after_the_command_too(make_account, cli):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    quiet = cli("run", "-q", "-c", str(acct.config))          # all after the command
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    assert len(acct.local_messages()) == 3
    before = cli("-c", str(acct.config), "--json", "status")
    after = cli("status", "--json", "-c", str(acct.config))
    assert before.code == after.code == 0
    assert json.loads(before.out) == json.loads(after.out)
    mixed = cli("-c", str(acct.config), "fetch", "--json", "-v")
    assert mixed.code == 0 and json.loads(mixed.out)["accounts"][0]["downloaded"] == 0


def test_run_help_lists_the_global_options(cli):
    shown = cli("run", "--help")
    assert shown.code == 0
    for option in ("--config", "--quiet", "--verbose", "--json", "--no-progress",
                   "--allow-mass-delete"):
        assert option in shown.out


# Silent no-ops become warnings or errors ----------------------------------------------

def test_a_folder_glob_that_matches_nothing_is_an_error(imap_account, cli):
    s = imap_with_folders(imap_account)
    config = str(s.acct.config)
    none = cli("-c", config, "sync", "--folder", "work")       # case-sensitive: Work
    assert none.code == 64
    assert "--folder 'work' matches no folder" in none.err and "mailsync folders test" in none.err
    assert "nothing to do" not in none.out
    assert not s.local.bodies("Work")
    some = cli("-c", config, "sync", "--folder", "Work", "--folder", "Nope*")
    assert some.code == 64 and "'Nope*'" in some.err and "'Work'" not in some.err
    assert len(s.local.bodies("Work")) == 3                    # what matched was synced
    assert cli("-c", config, "sync", "--folder", "W*").code == 0


def test_keep_and_limit_on_an_imap_account_are_said_to_do_nothing(imap_account, cli):
    s = imap_with_folders(imap_account)
    result = cli("-c", str(s.acct.config), "fetch", "--keep", "--limit", "1")
    assert result.code == 0
    assert "account test is IMAP: --keep and --limit apply to POP3 accounts only" in result.err


def test_an_imap_key_on_a_pop3_account_is_warned_about(make_account, cli):
    acct = make_account(mode="pull", folders=["INBOX"])
    result = cli("-c", str(acct.config), "fetch")
    assert result.code == 0
    assert "mode applies to IMAP accounts only; account test is POP3 and ignores it" \
        in result.err
    assert "folders applies to IMAP accounts only" in result.err


def test_fetch_keep_says_the_next_run_deletes_those_messages(make_account, cli):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    kept = cli("-c", str(acct.config), "fetch", "--keep")
    assert kept.code == 0 and len(acct.server_messages()) == 3
    assert "3 message(s) stay on the server this time (--keep), but keep = false: the next " \
           "`mailsync run`" in kept.err
    assert cli("-c", str(acct.config), "run").code == 0
    assert acct.server_messages() == [] and len(acct.local_messages()) == 3


def test_limit_reports_the_rest_as_left_for_later_not_skipped(make_account, cli):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(5))
    result = cli("-c", str(acct.config), "fetch", "--limit", "2")
    assert result.code == 0
    assert "2 downloaded" in result.out
    assert "3 left on the server for a later run (limit)" in result.out
    assert "skipped" not in result.out
    acct.server.seed(acct.user, make_corpus(2, seed=9))
    data = json.loads(cli("-c", str(acct.config), "--json", "fetch", "--limit", "1").out)
    account, = data["accounts"]
    assert account["left_for_later"] == 4 and account["skipped"] == 0   # 3 + 2 new - 1


# Outputs -----------------------------------------------------------------------------------

def test_init_path_says_how_to_check_that_path(tmp_path, cli):
    path = tmp_path / "my config.toml"
    result = cli("init", str(path))
    assert result.code == 0
    assert f"run `mailsync -c '{path}' check`" in result.out
    checked = cli("-c", str(path), "check")           # reads that file: its example account
    assert checked.code == 78 and "config file not found" not in checked.err
    assert "account home: password_command failed" in checked.err


def test_folders_needs_no_account_when_there_is_one(make_account, tmp_path, cli):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(2))
    one = cli("-c", str(acct.config), "folders")
    assert one.code == 0 and one.out.splitlines()[1].split("\t")[:2] == ["INBOX", "2"]
    two = tmp_path / "two.toml"
    two.write_text(acct.config.read_text() + "\n[accounts.other]\nprotocol = \"pop3\"\n"
                   "host = \"localhost\"\nuser = \"u\"\npassword = \"p\"\n")
    two.chmod(0o600)
    both = cli("-c", str(two), "folders")
    assert both.code == 64 and "name one of: test, other" in both.err


def table_column(lines: list[str], header: str) -> list[str]:
    """The cells of one column of a rich table on the screen, top to bottom."""
    head = next(i for i, line in enumerate(lines) if header in line and "┃" in line)
    titles = lines[head].split("┃")
    index = titles.index(next(c for c in titles if header in c))
    cells = []
    for line in lines[head + 1:]:
        parts = line.split("│")
        if len(parts) > index:
            cells.append(parts[index].strip())
    return cells


def test_tables_keep_paths_whole_and_dates_on_one_line(make_account, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-for-mail/" * 3) / "Maildir-of-the-account"
    acct = make_account(maildir=str(deep))
    acct.server.seed(acct.user, make_corpus(2))
    code, lines, _ = on_terminal(["-c", str(acct.config), "folders"])
    assert code == 0, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    assert "".join(table_column(lines, "local folder")) == str(deep)
    assert on_terminal(["-c", str(acct.config), "fetch"])[0] == 0
    code, lines, _ = on_terminal(["-c", str(acct.config), "status"])
    assert code == 0
    when = [c for c in table_column(lines, "last run") if c]
    assert len(when) == 1 and len(when[0]) == len("2026-01-01 00:00"), lines


def test_the_mass_delete_refusal_is_readable_and_run_takes_the_option(imap_account, cli):
    s = imap_with_folders(imap_account)
    config = str(s.acct.config)
    assert cli("-c", config, "run").code == 0
    for f in s.local.files("Work"):
        f.unlink()
    refused = cli("-c", config, "run")
    assert refused.code == 1
    lines = refused.err.splitlines()
    assert lines[0].startswith("mailsync: account test folder Work: refused:")
    assert all(len(line) <= 100 for line in lines), lines
    assert any(line.strip().startswith("rerun with --allow-mass-delete") for line in lines)
    assert cli("-c", config, "run", "--allow-mass-delete").code == 0
    assert s.remote.bodies("Work") == []


def test_json_outputs_have_numbers_and_fields(make_account, cli):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    check = json.loads(cli("-c", str(acct.config), "--json", "check").out)
    account, = check["accounts"]
    assert account["messages"] == 3 and isinstance(account["bytes"], int)
    assert account["port"] == acct.server.pop3s_port and account["certificate_verified"]
    assert "UIDL" in account["capabilities"]
    folders = json.loads(cli("-c", str(acct.config), "--json", "folders").out)
    assert folders["folders"][0]["messages"] == 3
    assert cli("-c", str(acct.config), "fetch").code == 0
    status = json.loads(cli("-c", str(acct.config), "--json", "status").out)
    account, = status["accounts"]
    assert account["known_messages"] == 3 and account["last_run"]["downloaded"] == 3
    assert account["last_run"]["exit_code"] == 0 and account["last_run"]["finished"]


def test_a_failed_check_as_json_has_the_error_and_hint_apart(make_account, cli):
    acct = make_account(password="wrong")
    result = cli("-c", str(acct.config), "--json", "check")
    account, = json.loads(result.out)["accounts"]
    assert result.code == 77 and account["exit_code"] == 77 and not account["ok"]
    assert account["error"] and "(" not in account["error"][-1:]


def test_status_after_an_interrupted_fetch_shows_what_was_stored(make_account, cli,
                                                                 monkeypatch):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(150, seed=2))
    step, written = crashpoints.step, []

    def signalled_at_the_130th_message(name: str) -> None:
        if name == "written":
            written.append(name)
            if len(written) == 130:
                stopping.request_stop(signal.SIGINT)   # as Ctrl-C would
        step(name)

    monkeypatch.setattr(crashpoints, "step", signalled_at_the_130th_message)
    stopping.reset()
    stopped = cli("-c", str(acct.config), "fetch")
    monkeypatch.setattr(crashpoints, "step", step)
    stopping.reset()
    assert stopped.code == 130, stopped.err
    stored = len(acct.local_messages())
    assert 100 < stored < 150
    status = cli("-c", str(acct.config), "status")
    row = status.out.splitlines()[1].split("\t")
    assert row[4] == str(stored) and "exit 130" in row[3]
    account, = json.loads(cli("-c", str(acct.config), "--json", "status").out)["accounts"]
    assert account["last_run"]["downloaded"] == stored


def test_an_unknown_key_suggests_the_key_it_is_a_typo_of(tmp_path, cli):
    config = write_config(tmp_path / "config.toml", "home", {
        "protocol": "imap", "hots": "mail.example.org", "user": "me", "password": "x"})
    result = cli("-c", str(config), "check")
    assert result.code == 78 and "unknown key 'hots'" in result.err
    assert "did you mean 'host'?" in result.err


def test_status_after_an_interrupted_sync_shows_what_was_stored(imap_account, cli,
                                                                monkeypatch):
    s = imap_account(connections=2)
    for folder, n in (("INBOX", 120), ("Work", 60)):
        if folder != "INBOX":
            s.remote.create(folder)
        s.acct.server.seed(s.acct.user, make_corpus(n, seed=len(folder)), folder=folder)
    step, downloaded = crashpoints.step, []
    lock = threading.Lock()

    def signalled_after_100_messages(name: str) -> None:
        if name == "downloaded":
            with lock:
                downloaded.append(name)
                if len(downloaded) == 100:
                    stopping.request_stop(signal.SIGINT)   # as Ctrl-C would
        step(name)

    monkeypatch.setattr(crashpoints, "step", signalled_after_100_messages)
    stopping.reset()
    stopped = cli("-c", str(s.acct.config), "sync")
    monkeypatch.setattr(crashpoints, "step", step)
    stopping.reset()
    assert stopped.code == 130, stopped.err
    stored = {f: len(s.local.bodies(f)) for f in ("INBOX", "Work")}
    assert 100 <= sum(stored.values()) < 180
    table = [line.split("\t") for line in cli("-c", str(s.acct.config), "status").out.splitlines()]
    rows = {(r[0], r[1]): r for r in table[1:]}
    assert rows[("test", "*")][5] == str(sum(stored.values()))
    for folder, n in stored.items():
        if n:
            assert rows[("test", folder)][5] == str(n)
    account, = json.loads(cli("-c", str(s.acct.config), "--json", "status").out)["accounts"]
    assert account["last_run"]["downloaded"] == sum(stored.values())
