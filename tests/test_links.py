"""Cut and slow links for IMAP (and a POP3 stall): a loopback proxy drops the connection
after N bytes (N swept from the TLS handshake to late in the run), stalls, or trickles.
A failed run reports exit 75 in one clean line; the next run without the proxy
converges: both sides hold the same messages (as multisets: nothing lost, nothing
doubled) with the same flags."""

from __future__ import annotations

import time

import pytest

from tests.corpus import make_corpus
from tests.proxy import CutProxy

# The account as seeded on the server: folder -> (messages, flags).
SEED = {
    "INBOX": (make_corpus(24), ""),
    "Work": (make_corpus(8, seed=2), "S"),
    "Archive/2025": (make_corpus(4, seed=3), "FS"),
}


# Helpers shared with the other torture tests ---------------------------------------------

def seed_server(s, seed=SEED) -> dict[str, list[bytes]]:
    for folder, (messages, flags) in seed.items():
        s.acct.server.seed(s.acct.user, messages, folder=folder, flags=flags)
    return {folder: list(messages) for folder, (messages, _) in seed.items()}


def via(make_account, s, proxy: CutProxy, **keys):
    """The same account (user, maildir, state) reached through the proxy; one connection
    unless asked (a cut at byte N is then a point of the whole run)."""
    keys.setdefault("connections", 1)
    return make_account("imap", user=s.acct.user, port=proxy.port,
                        maildir=str(s.acct.maildir), state_dir=str(s.acct.state_dir), **keys)


def assert_clean_failure(result, code: int) -> None:
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "account test" in lines[0], result.err


def assert_converged(s, expected: dict[str, list[bytes]]) -> None:
    """Every folder holds exactly the expected messages on both sides, same flags; no
    other folder has mail on either side."""
    server_folders = set(s.remote.folders())
    assert set(expected) <= server_folders, server_folders
    for folder in sorted(server_folders | set(expected)):
        want = sorted(expected.get(folder, []))
        local, remote = s.local.bodies(folder), s.remote.bodies(folder)
        assert local == want, (folder, len(local), len(want))
        assert remote == want, (folder, len(remote), len(want))
        assert s.local.flags_by_body(folder) == s.remote.flags_by_body(folder), folder
    assert len(all_local(s)) == sum(len(b) for b in expected.values()), "stray local mail"


def all_local(s) -> list[bytes]:
    """Every message in the account's Maildir, whatever its folder."""
    root = s.acct.maildir
    return [p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.parent.name in ("new", "cur")] if root.is_dir() else []


def everything_on(s) -> set[bytes]:
    """Every message on either side, whatever its folder."""
    bodies = set(all_local(s))
    for folder in s.remote.folders():
        bodies |= set(s.remote.bodies(folder))
    return bodies


def assert_nothing_lost(s, expected: dict[str, list[bytes]]) -> None:
    present = everything_on(s)
    for folder, bodies in expected.items():
        missing = [b for b in bodies if b not in present]
        assert not missing, (folder, len(missing))


def assert_settles(s, expected: dict[str, list[bytes]]) -> None:
    """A plain run converges, and the run after it has nothing left to do."""
    result = s.sync()
    assert result.code == 0, result.err
    assert_converged(s, expected)
    again = s.sync().json["accounts"][0]
    assert again["ok"], again
    assert again["downloaded"] == again["uploaded"] == again["flags_changed"] == 0, again
    assert again["deleted_local"] == again["deleted_remote"] == 0, again


# Scenarios ---------------------------------------------------------------------------------

def initial(imap_account):
    """A fresh account: everything is downloaded by the run under test."""
    s = imap_account(timeout=5)
    return s, seed_server(s)


NEW_REMOTE = make_corpus(3, seed=10)
NEW_LOCAL = make_corpus(4, seed=11)
NEW_FOLDER = make_corpus(2, seed=12)


def incremental(imap_account):
    """A synced account, then changes on both sides (new mail, flags, deletions, a move,
    a new local folder) for the run under test."""
    s = imap_account(timeout=5)
    expected = seed_server(s)
    assert s.sync().code == 0
    inbox, work = SEED["INBOX"][0], SEED["Work"][0]
    # The server: new mail, a flag, an expunge.
    for body in NEW_REMOTE:
        s.remote.append("INBOX", body, "")
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", inbox[2]), add="F")
    s.remote.expunge("INBOX", s.remote.uid_of("INBOX", inbox[5]))
    # The local mail client: new mail, flags, a deletion, a move, a new folder.
    for body in NEW_LOCAL[:3]:
        s.local.deliver("INBOX", body, "S")
    s.local.deliver("Work", NEW_LOCAL[3], "")
    s.local.set_flags("INBOX", inbox[8], "RS")
    s.local.set_flags("Work", work[1], "")
    s.local.delete("INBOX", inbox[10])
    s.local.move("INBOX", inbox[12], "Work")
    s.local.make_folder("Outbox")
    for body in NEW_FOLDER:
        s.local.deliver("Outbox", body, "D")
    expected["INBOX"] = ([m for m in inbox if m not in (inbox[5], inbox[10], inbox[12])]
                         + NEW_REMOTE + NEW_LOCAL[:3])
    expected["Work"] = work + [NEW_LOCAL[3], inbox[12]]
    expected["Outbox"] = list(NEW_FOLDER)
    return s, expected


def assert_incremental_flags(s) -> None:
    inbox, work = SEED["INBOX"][0], SEED["Work"][0]
    for side in (s.local, s.remote):
        assert side.flags_by_body("INBOX")[inbox[2]] == "F"
        assert side.flags_by_body("INBOX")[inbox[8]] == "RS"
        assert side.flags_by_body("INBOX")[NEW_LOCAL[0]] == "S"
        assert side.flags_by_body("Work")[work[1]] == ""
        assert side.flags_by_body("Outbox")[NEW_FOLDER[0]] == "D"


SCENARIOS = {"initial": (initial, "down"), "incremental": (incremental, "both")}
_TOTALS: dict[str, int] = {}


def run_bytes(name: str, imap_account, make_account, dovecot) -> int:
    """Bytes the run under test moves in the proxy's watched direction (measured once)."""
    if name not in _TOTALS:
        build, direction = SCENARIOS[name]
        s, expected = build(imap_account)
        with CutProxy(dovecot.host, dovecot.imaps_port, direction=direction) as proxy:
            result = via(make_account, s, proxy).run("sync")
        assert result.code == 0, result.err
        assert_converged(s, expected)
        _TOTALS[name] = {"down": proxy.bytes_down, "up": proxy.bytes_up,
                         "both": proxy.bytes_down + proxy.bytes_up}[direction]
    return _TOTALS[name]


# Cut points: absolute ones inside the TLS handshake, the greeting, login and LIST, then
# shares of the whole run up to its last few hundred bytes (the LOGOUT).
CUTS = [("abs", 60), ("abs", 1_000), ("abs", 2_500), ("abs", 3_200), ("abs", 3_800),
        ("abs", 5_000), ("share", 0.12), ("share", 0.3), ("share", 0.5), ("share", 0.7),
        ("end", 3_000), ("end", 600), ("end", 80)]


def cut_at(kind: str, value: float, total: int) -> int:
    if kind == "abs":
        return int(value)
    if kind == "share":
        return int(total * value)
    return max(1, total - int(value))


@pytest.mark.parametrize("scenario", ["initial", "incremental"])
@pytest.mark.parametrize("kind, value", CUTS, ids=[f"{k}{v}" for k, v in CUTS])
def test_imap_cut_link_exits_75_and_the_next_run_converges(
        imap_account, make_account, dovecot, scenario, kind, value):
    total = run_bytes(scenario, imap_account, make_account, dovecot)
    n = cut_at(kind, value, total)
    build, direction = SCENARIOS[scenario]
    s, expected = build(imap_account)
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=n,
                  direction=direction) as proxy:
        result = via(make_account, s, proxy).run("sync")
    if result.code == 0:
        # Only a cut in the final LOGOUT may leave a complete run: then it is complete.
        assert kind == "end" and value <= 600, (n, total, result.err)
        assert_converged(s, expected)
    else:
        assert proxy.cuts == 1, (n, total)
        assert_clean_failure(result, 75)
    # Whatever the cut left, every message is still somewhere.
    assert_nothing_lost(s, expected)
    assert_settles(s, expected)
    if scenario == "incremental":
        assert_incremental_flags(s)


@pytest.mark.parametrize("where", [None, 0.4])
def test_imap_stalled_link_times_out_with_75_within_seconds(
        imap_account, make_account, dovecot, where):
    total = run_bytes("initial", imap_account, make_account, dovecot)
    s, expected = initial(imap_account)
    after = None if where is None else int(total * where)
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=after,
                  stall=True) as proxy:
        started = time.monotonic()
        result = via(make_account, s, proxy, timeout=2).run("sync", timeout=60)
        elapsed = time.monotonic() - started
    assert_clean_failure(result, 75)
    assert "in time" in result.err
    assert elapsed < 12, elapsed
    assert_settles(s, expected)


def test_imap_stalled_upload_times_out_with_75(imap_account, make_account, dovecot):
    s, expected = incremental(imap_account)
    # Client -> server stalls after a little: the APPENDs never reach the server.
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=3_000, direction="up",
                  stall=True) as proxy:
        started = time.monotonic()
        result = via(make_account, s, proxy, timeout=2).run("sync", timeout=60)
        elapsed = time.monotonic() - started
    assert_clean_failure(result, 75)
    assert elapsed < 12, elapsed
    assert_settles(s, expected)
    assert_incremental_flags(s)


def test_imap_trickling_link_completes(imap_account, make_account, dovecot):
    s, expected = initial(imap_account)
    # About 170 pieces 15 ms apart: the run lasts longer than its timeout, but every
    # read gets data well within it.
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=(2048, 0.015)) as proxy:
        started = time.monotonic()
        result = via(make_account, s, proxy, timeout=2).run("sync", timeout=120)
        elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert elapsed > 2, elapsed
    assert_converged(s, expected)


@pytest.mark.parametrize("after", [None, 20_000])
def test_pop3_stalled_link_times_out_with_75(make_account, dovecot, after):
    corpus = make_corpus(30)
    acct = make_account()
    acct.server.seed(acct.user, corpus)
    with CutProxy(dovecot.host, dovecot.pop3s_port, cut_after_bytes=after,
                  stall=True) as proxy:
        slow = make_account(user=acct.user, port=proxy.port, maildir=str(acct.maildir),
                            state_dir=str(acct.state_dir), timeout=2)
        started = time.monotonic()
        result = slow.run("fetch", timeout=60)
        elapsed = time.monotonic() - started
    assert_clean_failure(result, 75)
    assert elapsed < 12, elapsed
    stored = acct.local_messages()
    assert set(corpus) <= set(stored) | set(acct.server_messages())
    assert acct.run("fetch").code == 0
    assert sorted(acct.local_messages()) == sorted(corpus) and acct.server_messages() == []


def test_imap_messages_complete_before_a_cut_are_kept(imap_account, make_account, dovecot):
    s = imap_account()
    corpus = make_corpus(40)
    s.acct.server.seed(s.acct.user, corpus)
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=150_000) as proxy:
        assert via(make_account, s, proxy).run("sync").code == 75
    kept = s.local.bodies()
    assert kept and set(kept) <= set(corpus) and len(kept) == len(set(kept))
    rerun = s.sync().json["accounts"][0]
    assert rerun["downloaded"] == len(corpus) - len(kept)
    assert s.local.bodies() == sorted(corpus)
