"""pre_sync_command and post_sync_command around an account's run, as a user sees them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.corpus import make_corpus


def _need_notmuch() -> str:
    found = shutil.which("notmuch")
    if found:
        return found
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail("notmuch is missing (apt-get install notmuch)")
    pytest.skip("notmuch is not installed")


def test_post_sync_command_notmuch_new_indexes_the_new_mail(make_account, tmp_path):
    notmuch = _need_notmuch()
    home = tmp_path / "home"
    home.mkdir()
    acct = make_account(post_sync_command="notmuch new")
    config = tmp_path / "notmuch-config"
    config.write_text(f"[database]\npath={acct.maildir}\n[new]\ntags=unread;inbox;\n")
    env = {"HOME": str(home), "NOTMUCH_CONFIG": str(config)}

    def count() -> int:
        done = subprocess.run([notmuch, "count", "*"], env={**os.environ, **env},
                              capture_output=True, check=True)
        return int(done.stdout)

    acct.server.seed(acct.user, make_corpus(5))
    result = acct.run("-q", "run", env=env)
    assert (result.code, result.out, result.err) == (0, "", "")   # notmuch's talk captured
    assert count() == 5
    acct.server.seed(acct.user, make_corpus(3, seed=2))
    assert acct.run("--json", "run", env=env).json["exit_code"] == 0
    assert count() == 8


def test_post_sync_command_gets_the_account_counts_and_exit_code(make_account, tmp_path):
    out = tmp_path / "env.txt"
    acct = make_account(post_sync_command=f"env | grep ^MAILSYNC_ > {out}; echo chatter")
    acct.server.seed(acct.user, make_corpus(3))
    result = acct.run("--json", "run")
    json.loads(result.out)                     # the hook's output is not on stdout
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert seen["MAILSYNC_ACCOUNT"] == "test" and seen["MAILSYNC_EXIT_CODE"] == "0"
    assert seen["MAILSYNC_DOWNLOADED"] == "3" and seen["MAILSYNC_DELETED_REMOTE"] == "3"
    assert seen["MAILSYNC_PROTOCOL"] == "pop3" and seen["MAILSYNC_COMMAND"] == "run"
    assert seen["MAILSYNC_MAILDIR"] == str(acct.maildir) and seen["MAILSYNC_ERROR"] == ""
    assert not any(acct.server.password in v for v in seen.values())
    verbose = make_account(post_sync_command="echo chatter").run("-v", "run")
    assert "post_sync_command: chatter" in verbose.err


def test_post_sync_command_hears_of_a_failed_run_too(make_account, tmp_path):
    out = tmp_path / "env.txt"
    acct = make_account(post_sync_command=f"env | grep ^MAILSYNC_ > {out}",
                        port=1, timeout=5)
    result = acct.run("run")
    assert result.code == 69
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert seen["MAILSYNC_EXIT_CODE"] == "69" and "cannot reach" in seen["MAILSYNC_ERROR"]


def test_a_failing_post_sync_command_is_reported_and_the_result_stands(make_account):
    acct = make_account(post_sync_command="echo 'index locked' >&2; exit 3")
    acct.server.seed(acct.user, make_corpus(2))
    for args in (["-q", "run"], ["--json", "run"]):
        result = acct.run(*args)
        assert result.code == 0, result.err
        assert "account test: post_sync_command failed with exit status 3: index locked" \
            in result.err
        assert "its result stands" in result.err
    assert len(acct.local_messages()) == 2 and acct.server_messages() == []


def test_a_failing_pre_sync_command_skips_the_account(make_account, tmp_path):
    marker = tmp_path / "post-ran"
    acct = make_account(pre_sync_command="echo 'VPN is down' >&2; exit 1",
                        post_sync_command=f"touch {marker}")
    acct.server.seed(acct.user, make_corpus(2))
    result = acct.run("run")
    assert result.code == 75
    assert "account test: pre_sync_command failed with exit status 1: VPN is down" \
        in result.err and "skipped" in result.err
    assert len(acct.server_messages()) == 2 and not acct.maildir.exists()
    assert not marker.exists()
    status = acct.run("status")
    assert "pre_sync_command failed" in status.out


def test_a_pre_sync_command_that_cannot_run_is_a_config_error(make_account):
    acct = make_account(pre_sync_command="no-such-prepare --now")
    result = acct.run("run")
    assert result.code == 78 and "pre_sync_command failed with exit status 127" in result.err
    # A path that plainly does not exist is found at load, for every command.
    acct = make_account(post_sync_command="/nonexistent/index --all")
    result = acct.run("status")
    assert result.code == 78 and "config.toml:" in result.err
    assert "post_sync_command runs /nonexistent/index, which does not exist" in result.err


def test_hooks_run_in_order_around_the_run_and_not_on_a_dry_run(make_account, tmp_path):
    log = tmp_path / "log"
    acct = make_account(pre_sync_command=f"echo pre >> {log}",
                        post_sync_command=f"echo post $MAILSYNC_DOWNLOADED >> {log}")
    acct.server.seed(acct.user, make_corpus(2))
    assert acct.run("fetch", "--dry-run").code == 0
    assert not log.exists()
    assert acct.run("fetch").code == 0
    assert log.read_text().split("\n") == ["pre", "post 2", ""]


def test_an_imap_sync_runs_the_hooks_too(make_account, tmp_path):
    out = tmp_path / "env.txt"
    acct = make_account("imap", pre_sync_command=f"echo pre > {out}",
                        post_sync_command=f"env | grep ^MAILSYNC_ >> {out}")
    acct.server.seed(acct.user, make_corpus(4))
    assert acct.run("-q", "sync").code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "pre"
    seen = dict(line.split("=", 1) for line in lines[1:])
    assert seen["MAILSYNC_PROTOCOL"] == "imap" and seen["MAILSYNC_COMMAND"] == "sync"
    assert seen["MAILSYNC_DOWNLOADED"] == "4" and seen["MAILSYNC_EXIT_CODE"] == "0"


def test_every_hook_variable_is_documented():
    from pathlib import Path

    from mailsync.results import COUNTS
    from tests.test_docs import roff_text
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    man = roff_text((root / "man" / "mailsync.1").read_text(encoding="utf-8"))
    names = [f"MAILSYNC_{n.upper()}" for n in COUNTS] + [
        "MAILSYNC_ACCOUNT", "MAILSYNC_PROTOCOL", "MAILSYNC_COMMAND", "MAILSYNC_MAILDIR",
        "MAILSYNC_EXIT_CODE", "MAILSYNC_ERROR"]
    for name in names:
        assert f"`{name}`" in readme, f"README.md does not document {name}"
        assert name in man, f"man/mailsync.1 does not document {name}"
