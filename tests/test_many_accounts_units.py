"""Many accounts without a server: configs that scale (accounts.d/, include, {account}
templates), --shard's split, the per-host connection budget, the progress view's count
of accounts and status's one-screen summary of many."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsync.budget import HostBudget
from mailsync.config import TOP_KEYS, load_config
from mailsync.errors import ConfigError, UsageError
from mailsync.shard import in_shard, parse_shard, shard_of

DEFAULTS = """\
jobs = 3
[defaults]
protocol = "imap"
host = "imap.example.org"
user = "{account}@example.org"
password_command = "echo pw-{account}"
maildir = "/srv/mail/{account}"
state_dir = "/srv/state/{account}"
"""


def config_dir(tmp_path, main: str, files: dict[str, str]):
    path = tmp_path / "config.toml"
    path.write_text(main)
    path.chmod(0o600)
    for name, text in files.items():
        f = tmp_path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        f.chmod(0o600)
    return path


def refused(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 78
    return str(info.value)


# Configs that scale ----------------------------------------------------------------------
def test_empty_account_files_in_accounts_d_become_accounts_filled_in_from_defaults(tmp_path):
    path = config_dir(tmp_path, DEFAULTS, {"accounts.d/alice.toml": "",
                                           "accounts.d/bob.toml": 'mode = "pull"\n',
                                           "accounts.d/notes.txt": "not an account"})
    config = load_config(path)
    assert list(config.accounts) == ["alice", "bob"] and config.jobs == 3
    alice, bob = config.accounts["alice"], config.accounts["bob"]
    assert alice.user == "alice@example.org" and bob.user == "bob@example.org"
    assert str(alice.maildir) == "/srv/mail/alice" and str(bob.state_dir) == "/srv/state/bob"
    assert alice.password_command == "echo pw-alice" and bob.mode == "pull"


def test_include_globs_add_files_of_account_tables_relative_to_the_config(tmp_path):
    main = 'include = ["teams/*.toml"]\n' + DEFAULTS.split("\n", 1)[1] + \
        '[accounts.own]\nuser = "boss"\n'
    path = config_dir(tmp_path, main, {
        "teams/a.toml": "[accounts.carol]\n[accounts.dave]\nuser = \"d\"\n",
        "teams/b.toml": "",           # an empty account file: the account "b"
    })
    accounts = load_config(path).accounts
    assert list(accounts) == ["own", "carol", "dave", "b"]
    assert accounts["own"].user == "boss" and accounts["carol"].user == "carol@example.org"
    assert accounts["dave"].user == "d"


def test_an_account_defined_twice_is_refused_naming_both_places(tmp_path):
    path = config_dir(tmp_path, DEFAULTS + "[accounts.alice]\n",
                      {"accounts.d/alice.toml": ""})
    message = refused(path)
    assert "'alice' is defined twice" in message
    assert "accounts.d/alice.toml" in message and "config.toml:" in message


def test_a_mistake_in_an_account_file_names_that_file_and_line(tmp_path):
    path = config_dir(tmp_path, DEFAULTS, {"accounts.d/eve.toml": 'mode = "pull"\nhots = "x"\n'})
    message = refused(path)
    assert "accounts.d/eve.toml:2" in message and "did you mean 'host'" in message


def test_defaults_and_top_level_keys_are_refused_in_an_account_file(tmp_path):
    path = config_dir(tmp_path, DEFAULTS, {"accounts.d/eve.toml": "jobs = 2\n"})
    assert "belongs in the main config" in refused(path)


def test_an_include_path_that_does_not_exist_is_refused(tmp_path):
    path = config_dir(tmp_path, 'include = ["missing.toml"]\n' + DEFAULTS.split("\n", 1)[1]
                      + "[accounts.a]\n", {})
    assert "include names" in refused(path)


@pytest.mark.parametrize("line,expected", [
    ("jobs = 0", "jobs = 0 must be 1 or more"),
    ('jobs = "many"', "jobs must be a whole number"),
    ("colour = 1", "unknown key 'colour' at the top"),
])
def test_top_level_keys_are_checked(tmp_path, line, expected):
    path = config_dir(tmp_path, line + "\n" + DEFAULTS.split("\n", 1)[1] + "[accounts.a]\n",
                      {})
    assert expected in refused(path)


def test_max_connections_per_host_defaults_to_8_and_must_be_positive(tmp_path):
    path = config_dir(tmp_path, DEFAULTS + "[accounts.a]\n", {})
    assert load_config(path).accounts["a"].max_connections_per_host == 8
    path = config_dir(tmp_path, DEFAULTS + "[accounts.a]\nmax_connections_per_host = 0\n", {})
    assert "max_connections_per_host = 0 must be 1 or more" in refused(path)


def test_a_bad_account_file_name_is_refused(tmp_path):
    path = config_dir(tmp_path, DEFAULTS, {"accounts.d/bad name.toml": ""})
    assert "is not usable" in refused(path)


# --shard ------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(names=st.sets(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-@+",
                             min_size=1, max_size=30), max_size=60),
       count=st.integers(min_value=1, max_value=40))
def test_every_shard_split_takes_each_account_exactly_once(names, count):
    names = sorted(names)
    taken = [n for k in range(count) for n in in_shard(names, (k, count), name=str)]
    assert sorted(taken) == names   # each once: no account missing, none twice


def test_an_accounts_share_is_the_same_in_every_process_and_python():
    # SHA-256 of the name, not Python's salted hash(): fixed values, any machine.
    assert [shard_of(n, 7) for n in ("alice", "bob", "carol@example.org")] == [1, 1, 5]


def test_shares_spread_accounts_evenly_enough():
    names = [f"user{i}" for i in range(1000)]
    sizes = [len(in_shard(names, (k, 4), name=str)) for k in range(4)]
    assert min(sizes) > 200 and max(sizes) < 300, sizes


@pytest.mark.parametrize("text", ["3", "a/4", "4/4", "0/0", "-1/2", "1/2/3"])
def test_a_shard_that_is_not_k_of_n_is_a_usage_error(text):
    with pytest.raises(UsageError) as info:
        parse_shard(text)
    assert info.value.exit_code == 64


def test_shard_on_the_command_line_selects_the_share_and_a_bad_one_exits_64(tmp_path):
    from click.testing import CliRunner

    from mailsync.cli.app import cli, main
    path = config_dir(tmp_path, DEFAULTS, {f"accounts.d/a{i}.toml": "" for i in range(12)})
    shown = set()
    for k in range(3):
        out = CliRunner().invoke(cli, ["-c", str(path), "--json", "--shard", f"{k}/3",
                                       "status", "--all"], obj=None)
        assert out.exit_code == 0, out.output
        import json
        names = [a["name"] for a in json.loads(out.output)["accounts"]]
        assert not shown & set(names)
        shown |= set(names)
    assert shown == {f"a{i}" for i in range(12)}
    with pytest.raises(SystemExit) as done:
        main(["-c", str(path), "--shard", "3/3", "status"])
    assert done.value.code == 64


# The connection budget ----------------------------------------------------------------
def test_the_budget_never_lets_one_host_exceed_its_limit_and_grants_what_is_free():
    budget, peak, lock = HostBudget(), [0], threading.Lock()

    grants: list[tuple[int, int]] = []

    def account(want: int) -> None:
        got = budget.take("IMAP.example.org", want, 5)
        try:
            with lock:
                grants.append((want, got))
                peak[0] = max(peak[0], budget.in_use("imap.example.org"))
            time.sleep(0.01)
        finally:
            budget.give("imap.example.org.", got)

    threads = [threading.Thread(target=account, args=(1 + i % 3,), daemon=True)
               for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(grants) == 40 and all(1 <= got <= want for want, got in grants)
    assert peak[0] <= 5 and budget.in_use("imap.example.org") == 0
    assert budget.take("other.example.org", 3, 5) == 3    # hosts are counted apart
    assert budget.take("other.example.org", 3, 5) == 2    # what is left, not more


def test_parallel_accounts_run_within_the_budget_and_report_in_config_order(monkeypatch):
    from mailsync import accounts as engine
    from mailsync.config import Account
    from mailsync.results import AccountResult
    from mailsync.reporting import SilentReporter
    open_now, peak, lock = [0], [0], threading.Lock()
    seen: dict[str, int] = {}

    def fake_run(account, options, reporter, clock):
        with lock:
            open_now[0] += account.connections
            peak[0] = max(peak[0], open_now[0])
            seen[account.name] = account.connections
        time.sleep(0.02 if account.name != "a0" else 0.2)   # a0 is slow
        with lock:
            open_now[0] -= account.connections
        return AccountResult(name=account.name, protocol="imap", ok=True)

    monkeypatch.setattr(engine, "run_account", fake_run)
    accounts = [Account(name=f"a{i}", protocol="imap", host="h", user="u", port=993,
                        tls="implicit", maildir=None, state_dir=None, connections=3,
                        max_connections_per_host=4) for i in range(12)]
    started = time.monotonic()
    results = engine.run_accounts(accounts, engine.RunOptions(command="sync"),
                                  SilentReporter(), jobs=4)
    assert [r.name for r in results] == [a.name for a in accounts]
    assert peak[0] <= 4 and all(1 <= c <= 3 for c in seen.values())
    assert time.monotonic() - started < 1.5   # the slow one held up nobody else


def test_the_exit_status_of_many_accounts_follows_the_contract():
    from mailsync.accounts import overall_exit_code
    from mailsync.results import AccountResult

    def r(ok, code=0):
        return AccountResult(name="x", protocol="imap", ok=ok, exit_code=code)

    assert overall_exit_code([r(True), r(True)]) == 0
    assert overall_exit_code([r(False, 69), r(False, 69)]) == 69
    assert overall_exit_code([r(True), r(False, 69), r(False, 75)]) == 1
    assert overall_exit_code([r(False, 69), r(False, 75)]) == 1


# What the user sees --------------------------------------------------------------------
def test_the_progress_view_counts_accounts_and_draws_the_working_ones_first():
    from mailsync.cli.ui import MAX_BARS, Board
    board = Board()
    try:
        board.accounts(30)
        for i in range(12):
            board.started(f"acct{i}", "INBOX", 1, 100)
            board.transferred(100, 100)
            board.finished()
            board.account_finished(ok=i != 3)
        done_at = threading.Thread(target=board.started, args=("busy", "INBOX", 5, 500))
        done_at.start()
        done_at.join()
        lines = str(board._render()).splitlines()
        assert lines[0] == "accounts 12/30 done, 1 failed, 1 transferring"
        bars = [ln for ln in lines if "msgs" in ln and not ln.startswith("  └")]
        assert len(bars) == MAX_BARS and bars[0].startswith("busy ")
        assert "  └ INBOX 0/5 msgs 0 B" in lines
    finally:
        board.stop()


def test_status_of_many_accounts_fits_one_screen(tmp_path, capsys, monkeypatch):
    from mailsync.cli import statussummary
    from mailsync.cli.readonly import show_status
    from mailsync.state import State
    from mailsync.cli.ui import OutputOptions, Ui
    monkeypatch.setattr(statussummary, "ATTENTION_ROWS", 5)
    path = config_dir(tmp_path, DEFAULTS.replace("/srv/", f"{tmp_path}/"),
                      {f"accounts.d/u{i:03d}.toml": "" for i in range(40)})
    accounts = list(load_config(path).accounts.values())
    now = time.time()
    for i, account in enumerate(accounts[:36]):
        state = State(account.state_dir)
        failed = i % 9 == 7
        state.record_run("run", now - 60 + i, {
            "exit_code": 69 if failed else 0, "downloaded": 2,
            "error": f"u{i:03d} unreachable" if failed else None})
        state.close()
    assert show_status(accounts, Ui(OutputOptions(progress=False))) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "40 accounts: 32 ok, 4 failing, 4 never run"
    assert "72 messages downloaded" in out[1]
    rows = [ln for ln in out if ln.startswith("u")]
    assert [r.split("\t")[0] for r in rows] == ["u007", "u016", "u025", "u034", "u036"]
    assert "exit 69: u007 unreachable" in rows[0] and "never run" in rows[4]
    assert out[-1].startswith("... and 3 more needing a look")
    assert show_status(accounts, Ui(OutputOptions(progress=False)), every_row=True) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("u0")]) >= 40   # --all: a row for every account


def test_hooks_of_accounts_run_in_parallel_never_overlap(tmp_path):
    """pre_sync_command of several accounts at once: one at a time (a shared notmuch
    index, say). The hook fails if another is inside; the accounts then fail on the
    closed port they point at (69), never on their hook (75)."""
    from mailsync.cli.app import main
    busy = tmp_path / "busy"
    hook = f"mkdir {busy} && sleep 0.1 && rmdir {busy}"
    path = config_dir(tmp_path, DEFAULTS.replace("/srv/", f"{tmp_path}/").replace(
        'host = "imap.example.org"', f'host = "127.0.0.1"\nport = {_closed_port()}\n'
        f'pre_sync_command = "{hook}"\ntimeout = 5'),
        {f"accounts.d/h{i}.toml": "" for i in range(4)})
    with pytest.raises(SystemExit) as done:
        main(["-c", str(path), "-q", "--jobs", "4", "run"])
    assert done.value.code == 69   # every account alike: refused connections, no hook failure


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("key", sorted(TOP_KEYS))
def test_top_level_keys_are_documented_in_the_man_page_and_readme(key):
    from pathlib import Path

    from tests.test_docs import roff_text, split_sections
    root = Path(__file__).resolve().parent.parent
    man = split_sections(roff_text((root / "man" / "mailsync.1").read_text()), "SH")
    many = split_sections(man["CONFIGURATION"], "SS")["Many accounts"]
    assert f"{key} = " in many
    readme = (root / "README.md").read_text()
    assert f"| `{key}` |" in readme
