"""The commands around fetch: check, status, folders, init, run, and progress on a terminal.

In-process (tests/inprocess.py) where the output and the exit status are the point; a
separate process where the process is: the entry point, a normal exit, a terminal, and
what a fresh interpreter imports."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys

from tests.conftest import cli_command, cli_env, run_cli
from tests.inprocess import run_in_process
from tests.corpus import make_corpus


def test_check_connects_logs_in_and_changes_nothing(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(4))
    before = acct.server.server_entries(acct.user)
    result = acct.run_here("check")
    assert result.code == 0, result.err
    assert "certificate verified" in result.out and "4 (" in result.out
    assert "UIDL" in result.out
    assert acct.server.server_entries(acct.user) == before
    assert not acct.maildir.exists()


def test_check_reports_a_wrong_password(make_account):
    result = make_account(password="nope").run_here("check")
    assert result.code == 77 and "login" in result.err


def test_status_shows_the_last_run(make_account):
    acct = make_account()
    assert "never" in acct.run_here("status").out
    acct.server.seed(acct.user, make_corpus(2))
    acct.run_here("fetch")
    out = acct.run_here("status").out
    assert "test" in out and "ok" in out


def test_folders_lists_the_inbox_with_its_count(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    out = acct.run_here("folders", "test").out
    assert "INBOX" in out and "3" in out and str(acct.maildir) in out


def test_run_fetches_pop3_accounts(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    assert acct.run_here("run").code == 0 and len(acct.local_messages()) == 3


def test_init_writes_a_private_example_and_never_overwrites(tmp_path):
    path = tmp_path / "cfg" / "config.toml"
    assert run_in_process("init", str(path)).code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "[accounts.home]" in path.read_text()
    path.write_text("mine")
    result = run_in_process("init", str(path))
    assert result.code == 64 and path.read_text() == "mine"


def test_init_example_is_a_valid_config(tmp_path):
    from mailsync.config import load_config
    path = tmp_path / "config.toml"
    run_in_process("init", str(path))
    assert list(load_config(path).accounts) == ["home"]


def test_progress_is_drawn_when_stderr_is_a_terminal(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(50))
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli_command("-c", str(acct.config), "fetch"), env=cli_env(
        {"COLUMNS": "120", "TERM": "xterm"}), stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        screen += data
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    text = screen.decode("utf-8", "replace")
    assert "50/50 msgs" in text and "test" in text


def test_usage_error_exits_64_with_one_line():
    result = run_in_process("fetch", "--limit", "many")
    assert result.code == 64 and len(result.err.strip().splitlines()) == 1


def test_version():
    result = run_cli("--version")
    assert result.code == 0 and "mailsync" in result.out


def test_mailsync_alone_prints_the_help_and_exits_64():
    result = run_cli()
    assert result.code == 64 and "Commands:" in result.err and result.out == ""


def test_the_command_exits_normally_so_exit_handlers_run():
    # The process is the point: exit handlers (and coverage) run at a normal exit only.
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('exit handler ran', file=sys.stderr))\n"
            "from mailsync.cli.app import entry\n"
            "sys.argv = ['mailsync', 'fetch', '--limit', 'many']\n"
            "entry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env())
    assert done.returncode == 64
    assert done.stderr.strip().splitlines()[-1] == "exit handler ran", done.stderr


def test_help_imports_no_protocol_library():
    code = ("import sys; from mailsync.cli import app as cli; "
            "sys.argv=['mailsync','--help']\n"
            "try:\n    cli.cli.main(standalone_mode=False)\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('imapclient','poplib','sqlite3','rich','mailsync.imapsync.plan')"
            " if m in sys.modules))")   # the sync decision costs ~15 ms to import
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env()).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_control_characters_from_servers_never_reach_the_terminal():
    from mailsync.cli.ui import printable
    assert printable("evil\x1b]0;pwned\x07name\x9b") == "evil\\x1b]0;pwned\\x07name\\x9b"


def test_a_cron_run_does_not_import_rich(make_account):
    code = ("import sys\nfrom mailsync.cli.app import main\n"
            "sys.argv=['mailsync','-c',sys.argv[1],'-q','fetch']\n"
            "try:\n    main()\n"
            "except SystemExit: pass\nprint('rich' in sys.modules, file=sys.stderr)")
    acct = make_account()
    done = subprocess.run([sys.executable, "-c", code, str(acct.config)],
                          capture_output=True, text=True, env=cli_env())
    assert done.stderr.strip().splitlines()[-1] == "False"


def test_an_imap_sync_loads_neither_the_pop3_engine_nor_importlib_metadata(make_account):
    # Start-up time: importlib.metadata alone is ~20 ms of a no-op sync; the POP3
    # engine is not needed for IMAP. imapclient still reports its true version.
    code = ("import sys\nfrom mailsync.cli.app import main\n"
            "sys.argv=['mailsync','-c',sys.argv[1],'-q','sync']\n"
            "try:\n    main()\n"
            "except SystemExit: pass\n"
            "loaded = sorted(m for m in ('importlib.metadata', 'poplib', 'mailsync.pop3fetch.account')"
            " if m in sys.modules)\n"
            "import imapclient, importlib.metadata\n"
            "print(loaded, imapclient.__version__ == importlib.metadata.version('imapclient'),"
            " file=sys.stderr)")
    acct = make_account("imap")
    done = subprocess.run([sys.executable, "-c", code, str(acct.config)],
                          capture_output=True, text=True, env=cli_env())
    assert done.stderr.strip().splitlines()[-1] == "[] True", done.stderr


def test_v_counts_add_up_before_and_after_the_command(tmp_path):
    # click's own count option, on the group and on the command: no re-reading of argv
    from mailsync.cli.app import Settings, cli
    settings = Settings()
    try:
        cli.main(["-v", "init", str(tmp_path / "config.toml"), "-v"], prog_name="mailsync",
                 standalone_mode=False, obj=settings)
        assert settings.verbose == 2 and settings.make_context().ui.tracing
    finally:
        settings.close()
