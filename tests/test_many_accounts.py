"""Many accounts against the real Dovecot, one user per account: in parallel as one at a
time, with dead and slow servers among them, spread over shard processes, and two
overlapping shards kept apart by each account's lock."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from mailsync.shard import shard_of
from tests.conftest import cli_command, cli_env, run_cli
from tests.corpus import make_corpus, make_message
from tests.imaphelp import Local, Remote
from tests.proxy import CutProxy


def many_accounts(dovecot, base: Path, names: list[str], main_extra: str = "",
                  files: dict[str, str] | None = None, secret: str | None = None) -> Path:
    """A config of one [defaults] template and an empty accounts.d/ file per account:
    each account is the Dovecot user of its name."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.toml"
    config.write_text(main_extra + f"""
[defaults]
protocol = "imap"
host = "{dovecot.host}"
port = {dovecot.imaps_port}
ca_file = "{dovecot.ca_file}"
{secret or f'password = "{dovecot.password}"'}
user = "{{account}}"
maildir = "{base}/mail/{{account}}"
state_dir = "{base}/state/{{account}}"
timeout = 20
""")
    config.chmod(0o600)
    (base / "accounts.d").mkdir(exist_ok=True)
    for name in names:
        path = base / "accounts.d" / f"{name}.toml"
        path.write_text((files or {}).get(name, ""))
        path.chmod(0o600)
    return config


def runs_of(base: Path, name: str) -> list[tuple[float, float, int]]:
    path = base / "state" / name / "state.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT started, finished, exit_code FROM runs ORDER BY id").fetchall()
    finally:
        db.close()


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_state(dovecot, base: Path, name: str, user: str) -> dict:
    """Both sides of one account: per folder, the messages with their flag letters."""
    remote, local = Remote(dovecot, user), Local(base / "mail" / name)
    try:
        return {folder: (sorted((b, f) for b, f in remote.flags_by_body(folder).items()),
                         sorted((b, f) for b, f in local.flags_by_body(folder).items()))
                for folder in ("INBOX", "Work")}
    finally:
        remote.close()


def test_accounts_in_parallel_end_as_they_do_one_at_a_time(dovecot, tmp_path):
    count = 5
    groups = {"serial": [dovecot.new_user("s") for _ in range(count)],
              "parallel": [dovecot.new_user("p") for _ in range(count)]}
    for users in groups.values():
        for i, user in enumerate(users):   # account i of each group gets the same mail
            dovecot.seed(user, make_corpus(12 + 3 * i, seed=70 + i))
            dovecot.seed(user, make_corpus(4, seed=90 + i), folder="Work")
    configs = {g: many_accounts(dovecot, tmp_path / g, users) for g, users in groups.items()}
    jobs = {"serial": "1", "parallel": str(count)}
    for g, config in configs.items():
        done = run_cli("-c", str(config), "--json", "--jobs", jobs[g], "run")
        assert done.code == 0, done.err
        assert [a["name"] for a in done.json["accounts"]] == sorted(groups[g])  # file order
    # Then changes on both sides of every account: a local message, a server flag.
    for g, users in groups.items():
        for i, user in enumerate(users):
            Local(tmp_path / g / "mail" / user).deliver("INBOX", make_message(500 + i), "S")
            remote = Remote(dovecot, user)
            try:
                first = sorted(remote.messages("INBOX"))[0]
                remote.set_flags("INBOX", first, add="F")
            finally:
                remote.close()
    for g, config in configs.items():
        done = run_cli("-c", str(config), "--json", "--jobs", jobs[g], "sync")
        assert done.code == 0, done.err
        assert [a["uploaded"] for a in done.json["accounts"]] == [1] * count
    for serial, parallel in zip(groups["serial"], groups["parallel"]):
        assert end_state(dovecot, tmp_path / "serial", serial, serial) == \
            end_state(dovecot, tmp_path / "parallel", parallel, parallel)


def test_dead_and_slow_servers_hold_up_no_other_account_and_each_is_named(dovecot, tmp_path):
    good = [dovecot.new_user("g") for _ in range(4)]
    dead = [dovecot.new_user("d") for _ in range(2)]
    slow = dovecot.new_user("a")   # first in file order: it starts first
    for user in good + [slow]:
        dovecot.seed(user, make_corpus(10, seed=3))
    # The slow server accepts the connection and then says nothing (a stalled link).
    with CutProxy(dovecot.host, dovecot.imaps_port, stall=True) as stalled:
        files = {name: f"port = {closed_port()}\n" for name in dead}
        files[slow] = f"port = {stalled.port}\ntimeout = 6\n"
        names = [slow] + dead + good
        config = many_accounts(dovecot, tmp_path, names, files=files)
        started = time.monotonic()
        done = run_cli("-c", str(config), "--json", "--jobs", "3", "run", timeout=120)
        elapsed = time.monotonic() - started
    assert done.code == 1, done.err
    results = {a["name"]: a for a in done.json["accounts"]}
    assert list(results) == sorted(names) and sorted(names)[0] == slow
    for name in good:
        assert results[name]["ok"] and results[name]["downloaded"] == 10
    for name in dead:
        assert results[name]["exit_code"] == 69
    # Every good account was done while the slow one still waited for its server.
    slow_end = runs_of(tmp_path, slow)[-1][1]
    assert max(runs_of(tmp_path, name)[-1][1] for name in good) < slow_end - 3
    assert results[slow]["exit_code"] == 75 and not results[slow]["ok"]
    failed_lines = [ln for ln in done.err.splitlines() if ln.startswith("mailsync: ")]
    for name in dead + [slow]:   # every failure on its own line, naming its account
        assert sum(name in ln for ln in failed_lines) == 1, done.err
    assert elapsed < 6 + 15   # the slow account's timeout, not the sum of everything


def test_shard_processes_together_sync_every_account_exactly_once(dovecot, tmp_path):
    names = [dovecot.new_user("h") for _ in range(9)]
    for i, user in enumerate(names):
        dovecot.seed(user, [make_message(i)])
    config = many_accounts(dovecot, tmp_path, names)
    shards = 3
    procs = [subprocess.Popen(cli_command("-c", str(config), "--json", "--shard",
                                          f"{k}/{shards}", "run"), env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(shards)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        outputs.append([a["name"] for a in json.loads(out)["accounts"]])
    taken = [name for out in outputs for name in out]
    assert sorted(taken) == sorted(names)            # the union is every account, once
    for name in names:
        assert len(runs_of(tmp_path, name)) == 1     # each synced by one process only
        assert len(Local(tmp_path / "mail" / name).bodies()) == 1


def test_overlapping_shards_never_sync_one_account_twice_at_once(dovecot, tmp_path):
    shares: dict[int, list[str]] = {0: [], 1: []}
    while min(len(v) for v in shares.values()) < 3:   # three accounts in each share of 2
        user = dovecot.new_user("o")
        if len(shares[shard_of(user, 2)]) < 3:
            shares[shard_of(user, 2)].append(user)
    names, first_share = shares[0] + shares[1], shares[0]
    for user in names:
        dovecot.seed(user, make_corpus(3, seed=5))
    marks = tmp_path / "inside"
    marks.mkdir()
    release = tmp_path / "release"
    # Each account's run says it is inside, holding its lock (the password command runs
    # under it); in the first run (HOLD set) it then waits for the test (at most 60 s).
    wait = (f"if [ x$HOLD = x1 ]; then for i in $(seq 1200); do [ -e {release} ] "
            f"&& break; sleep 0.05; done; fi")
    secret = (f'password_command = "touch {marks}/{{account}}; {wait}; '
              f'echo {dovecot.password}"')
    config = many_accounts(dovecot, tmp_path / "run", names, secret=secret)
    first = subprocess.Popen(cli_command("-c", str(config), "--json", "--jobs", "6",
                                         "--shard", "0/2", "run"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=cli_env({"HOLD": "1"}))
    deadline = time.monotonic() + 30
    while len(list(marks.iterdir())) < len(first_share) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(p.name for p in marks.iterdir()) == sorted(first_share)
    # The whole set now (as when N changes from 2 to 1): it overlaps the first share.
    try:
        second = run_cli("-c", str(config), "--json", "--jobs", "6", "--shard", "0/1", "run",
                         timeout=120)
    finally:
        release.touch()   # the first run goes on only now
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    assert second.code == 1, second.err
    results = {a["name"]: a for a in second.json["accounts"]}
    for name in names:
        if name in first_share:   # held by the first run: turned away, named, retried later
            assert results[name]["exit_code"] == 75
            assert "another mailsync run holds its lock" in results[name]["error"]
        else:
            assert results[name]["ok"]
        runs = runs_of(tmp_path / "run", name)
        assert len(runs) == 1 and runs[0][2] == 0    # one sync of each account, not two
        assert len(Local(tmp_path / "run" / "mail" / name).bodies()) == 3


def test_accounts_in_parallel_share_one_progress_view_that_ends_with_every_account_done(
        dovecot, tmp_path):
    from tests.test_progress import on_terminal
    names = [dovecot.new_user("v") for _ in range(3)]
    for i, user in enumerate(names):
        dovecot.seed(user, make_corpus(30 + 10 * i, seed=20 + i, big_every=10,
                                       max_attachment=100_000))
    config = many_accounts(dovecot, tmp_path, names)
    code, lines, _ = on_terminal(["-c", str(config), "--jobs", "3", "run"])
    text = "\n".join(lines)
    assert code == 0, text
    assert "accounts 3/3 done" in text                       # one count for the run
    bars = [ln for ln in lines if " msgs " in ln and not ln.startswith("  └")]
    assert sorted(b.split()[0] for b in bars) == sorted(names), text   # a bar each
    for name, count in zip(names, (30, 40, 50)):
        bar, = [b for b in bars if b.startswith(name + " ")]
        assert " 100% " in bar and f" {count}/{count} msgs " in bar and bar.endswith(" done")
    assert "└" not in text


def test_sigterm_stops_a_parallel_run_without_starting_the_accounts_still_waiting(
        dovecot, tmp_path):
    names = sorted(dovecot.new_user("t") for _ in range(6))
    for user in names:
        dovecot.seed(user, make_corpus(3, seed=8))
    marks = tmp_path / "inside"
    marks.mkdir()
    secret = (f'password_command = "touch {marks}/{{account}}; sleep 1; '
              f'echo {dovecot.password}"')
    config = many_accounts(dovecot, tmp_path / "run", names, secret=secret)
    proc = subprocess.Popen(cli_command("-c", str(config), "--json", "--jobs", "2", "run"),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err.decode()
    begun = sorted(p.name for p in marks.iterdir())
    assert len(begun) == 2, begun                     # the two at work when it came
    results = {a["name"]: a for a in json.loads(out)["accounts"]}
    assert sorted(results) == begun                   # the others never started
    for name in names:
        if name not in begun:
            assert runs_of(tmp_path / "run", name) == []
    # What was stored is recorded: the next run completes every account.
    done = run_cli("-c", str(config), "--json", "run")
    assert done.code == 0, done.err
    for name in names:
        assert len(Local(tmp_path / "run" / "mail" / name).bodies()) == 3


def test_connections_to_one_host_stay_within_its_budget_counting_each_accounts_own(
        dovecot, tmp_path):
    """6 accounts of 2 connections each, all at once: with max_connections_per_host = 3
    the server never sees more than 3 connections (counted at a proxy in front of it)."""
    names = sorted(dovecot.new_user("c") for _ in range(6))
    for i, user in enumerate(names):
        for folder in ("INBOX", "Work", "Lists"):   # work for a second connection
            dovecot.seed(user, make_corpus(15, seed=30 + i, big_every=5,
                                           max_attachment=60_000), folder=folder)
    with CutProxy(dovecot.host, dovecot.imaps_port) as proxy:
        config = many_accounts(dovecot, tmp_path, names, main_extra="jobs = 6\n")
        text = config.read_text().replace(f"port = {dovecot.imaps_port}",
                                          f"port = {proxy.port}")
        config.write_text(text + "connections = 2\nmax_connections_per_host = 3\n")
        peak, stop = [0], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], sum(not c.closed for c in list(proxy._conns)))
                time.sleep(0.002)

        sampler = threading.Thread(target=watch, daemon=True)
        sampler.start()
        try:
            done = run_cli("-c", str(config), "--json", "run", timeout=120)
        finally:
            stop.set()
            sampler.join(5)
    assert done.code == 0, done.err
    assert all(a["downloaded"] == 45 for a in done.json["accounts"])
    assert 2 <= peak[0] <= 3, peak[0]
