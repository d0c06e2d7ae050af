"""Signals and concurrent runs for IMAP: cron starting a second run while the first still
works (75 at once, the first unharmed), a lock left by a killed run never blocks,
SIGTERM mid-sync stops cleanly, and different accounts sync in parallel processes
without touching each other's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cli_command, cli_env
from tests.corpus import make_corpus
from tests.proxy import CutProxy
from tests.test_links import assert_converged, assert_settles, seed_server, via

SLOW = (8192, 0.01)       # ~800 KB/s: a run over ~1.5 MB lasts about two seconds
SEED = {"INBOX": (make_corpus(120), ""), "Work": (make_corpus(20, seed=2), "S")}


def wait_for(predicate, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def downloading(maildir: Path, at_least: int = 3):
    """True once the run has written at least this many messages into tmp/ or beyond."""
    def check() -> bool:
        n = 0
        for sub in ("tmp", "new", "cur"):
            d = maildir / sub
            if d.is_dir():
                n += len(os.listdir(d))
        return n >= at_least
    return check


def test_second_imap_run_exits_75_at_once_and_the_first_is_unharmed(
        imap_account, make_account, dovecot):
    s = imap_account()
    expected = seed_server(s, SEED)
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=SLOW) as proxy:
        first = via(make_account, s, proxy).popen("--no-progress", "sync")
        try:
            wait_for(downloading(s.acct.maildir), what="the first run to download")
            started = time.monotonic()
            second = s.acct.run("sync", timeout=30)
            elapsed = time.monotonic() - started
            assert first.poll() is None, "the first run ended before the second started"
        finally:
            out, err = first.communicate(timeout=120)
    assert second.code == 75, second.err
    assert "another mailsync run holds its lock" in second.err
    assert len(second.err.strip().splitlines()) == 1 and "Traceback" not in second.err
    assert elapsed < 5, elapsed
    assert first.returncode == 0, err.decode()
    assert_converged(s, expected)
    assert_settles(s, expected)


def test_a_lock_left_by_a_killed_imap_run_never_blocks(imap_account, make_account, dovecot):
    s = imap_account()
    expected = seed_server(s, SEED)
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=SLOW) as proxy:
        run = via(make_account, s, proxy).popen("--no-progress", "sync")
        wait_for(downloading(s.acct.maildir), what="the run to download")
        run.kill()
        run.communicate(timeout=30)
    assert run.returncode == -signal.SIGKILL
    assert (s.acct.state_dir / "lock").exists()
    assert_settles(s, expected)


def test_sigterm_mid_imap_sync_stops_cleanly_and_the_next_run_converges(
        imap_account, make_account, dovecot):
    s = imap_account()
    expected = seed_server(s, SEED)
    total = sum(len(bodies) for bodies in expected.values())
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=SLOW) as proxy:
        run = via(make_account, s, proxy).popen("--no-progress", "--json", "sync")
        wait_for(downloading(s.acct.maildir, 10), what="the run to download")
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 75, err.decode()
    assert "stopped by SIGTERM" in err.decode() and "Traceback" not in err.decode()
    assert json.loads(out)["exit_code"] == 75
    stored = s.local.bodies() + s.local.bodies("Work")
    assert len(stored) == len(set(stored)) < total
    # What was complete when the signal came is kept: INBOX had 10 files under way.
    assert len(s.local.bodies()) >= 9
    assert not [p for p in (s.acct.maildir / "tmp").iterdir()]
    # The server is untouched: a sync run that stops deletes nothing anywhere.
    for folder, bodies in expected.items():
        assert s.remote.bodies(folder) == sorted(bodies)
    after = s.sync()
    assert after.code == 0, after.err
    assert after.json["accounts"][0]["downloaded"] == total - len(stored)
    assert_converged(s, expected)


# Different accounts in parallel processes --------------------------------------------------

def write_accounts(path: Path, accounts: dict[str, dict], defaults: dict | None = None) -> Path:
    lines = []
    for section, keys in ([("defaults", defaults)] if defaults else []) + [
            (f"accounts.{name}", keys) for name, keys in accounts.items()]:
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def server_keys(dovecot, protocol: str, user: str, port: int) -> dict:
    return {"protocol": protocol, "host": dovecot.host, "port": port, "user": user,
            "password": dovecot.password, "ca_file": str(dovecot.ca_file), "timeout": 20}


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def local_bodies(maildir: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in maildir.rglob("*")
                  if p.is_file() and p.parent.name in ("new", "cur"))


@pytest.mark.parametrize("kinds", [("pop3", "imap"), ("imap", "imap")],
                         ids=["pop3+imap", "imap+imap"])
def test_two_accounts_sync_in_parallel_without_touching_each_other(dovecot, tmp_path, kinds):
    corpora = {"alpha": make_corpus(100, seed=21), "beta": make_corpus(100, seed=22)}
    users = {name: dovecot.new_user() for name in corpora}
    for name, corpus in corpora.items():
        dovecot.seed(users[name], corpus[:80])
        dovecot.seed(users[name], corpus[80:], folder="Lists")
    proxies = {name: CutProxy(dovecot.host, dovecot.pop3s_port if kind == "pop3"
                              else dovecot.imaps_port, trickle=(16384, 0.01)).start()
               for name, kind in zip(corpora, kinds)}
    accounts = {name: server_keys(dovecot, kind, users[name], proxies[name].port)
                for name, kind in zip(corpora, kinds)}
    # Default places: <maildir_root>/<name> and $XDG_STATE_HOME/mailsync/<name>.
    mail_root, state_root = tmp_path / "Mail", tmp_path / "xdg-state"
    config = write_accounts(tmp_path / "config.toml", accounts,
                            defaults={"maildir_root": str(mail_root)})
    before = tree(tmp_path)
    env = cli_env({"XDG_STATE_HOME": str(state_root)})
    try:
        procs = {name: subprocess.Popen(cli_command("-c", str(config), "--no-progress", "run",
                                                    name), env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
                 for name in corpora}
        outputs = {name: p.communicate(timeout=120) for name, p in procs.items()}
    finally:
        for proxy in proxies.values():
            proxy.stop()
    for name, p in procs.items():
        assert p.returncode == 0, (name, outputs[name][1].decode())
    # Each account's mail and state are in its own places, and nowhere else.
    own = {name: (mail_root / name, state_root / "mailsync" / name) for name in corpora}
    for path in tree(tmp_path) - before:
        owners = [name for name, dirs in own.items()
                  if any(d in path.parents for d in dirs)]
        assert len(owners) == 1, path
    for name, kind in zip(corpora, kinds):
        maildir = own[name][0]
        if kind == "imap":
            assert local_bodies(maildir) == sorted(corpora[name]), name
            assert sorted(p.read_bytes() for sub in ("new", "cur")
                          for p in (maildir / ".Lists" / sub).iterdir()) \
                == sorted(corpora[name][80:])
            assert sorted(dovecot.server_messages(users[name])) == sorted(corpora[name][:80])
        else:   # POP3 sees INBOX only: fetched and deleted
            assert local_bodies(maildir) == sorted(corpora[name][:80]), name
            assert dovecot.server_messages(users[name]) == []
        assert (own[name][1] / "state.sqlite3").is_file()
