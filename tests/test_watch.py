"""`mailsync watch` against a real Dovecot (issue 14, acceptance 1 and 2).

The session's Dovecot offers NOTIFY: watch uses one connection for every folder. A
Dovecot of this module's own has NOTIFY trimmed from its capabilities: watch falls back
to IDLE on watch_folders; that one is also killed and restarted mid-watch. Every watch
is a subprocess stopped by its pid; every wait polls with a generous deadline."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.dovecot import private_dovecot
from tests.watchhelp import NO_NOTIFY, Watching, account_on, recorded_runs, wait_until

A = b"From: a@example.org\nSubject: one\nMessage-ID: <one@example.org>\n\nfirst\n"
B = b"From: b@example.org\nSubject: two\nMessage-ID: <two@example.org>\n\nsecond\n"
C = b"From: c@example.org\nSubject: three\nMessage-ID: <three@example.org>\n\nthird\n"
D = b"From: d@example.org\nSubject: four\nMessage-ID: <four@example.org>\n\nfourth\n"
E = b"From: e@example.org\nSubject: five\nMessage-ID: <five@example.org>\n\nfifth\n"
BIG = (b"From: g@example.org\nSubject: big\nMessage-ID: <big@example.org>\n\n"
       + b"x" * 70 + b"\n") * 100


@pytest.fixture(scope="module")
def idle_dovecot():
    """A Dovecot without NOTIFY, of this module's own (it is restarted below)."""
    with private_dovecot(extra_config=NO_NOTIFY) as server:
        yield server


def test_notify_watch_carries_every_change_both_ways(imap_account):
    setup = imap_account(max_size=2000)
    remote, local, acct = setup.remote, setup.local, setup.acct
    remote.append("INBOX", A)
    remote.create("Archive")
    with Watching(acct) as w:
        w.connected("NOTIFY")
        w.wait(lambda: local.bodies() == [A] and local.path("Archive").is_dir(),
               "first pass")
        # server -> Maildir: a delivery, one in another folder, a new folder
        remote.append("INBOX", B)
        w.wait(lambda: local.bodies() == sorted([A, B]), "delivery to INBOX")
        remote.append("Archive", C)
        w.wait(lambda: local.bodies("Archive") == [C], "delivery to Archive")
        remote.create("From Server")
        remote.append("From Server", D)
        w.wait(lambda: local.bodies("From Server") == [D], "a new server folder")
        # Maildir -> server: a flag, a move, a new folder
        local.set_flags("INBOX", A, "F")
        w.wait(lambda: remote.flags_by_body()[A] == "F", "a local flag")
        local.move("INBOX", B, "Archive")
        w.wait(lambda: remote.bodies("Archive") == sorted([B, C])
               and remote.bodies() == [A], "a local move")
        local.make_folder("From Here")
        local.deliver("From Here", E)
        w.wait(lambda: remote.bodies("From Here") == [E], "a new local folder")
        # headers first; opened (S set) in the mail client: the body follows
        remote.append("INBOX", BIG)
        stub = w.wait(lambda: next(b for b in local.bodies() if b"Subject: big" in b),
                      "the placeholder")
        assert stub != BIG and b"X-Mailsync-Placeholder" in stub
        local.set_flags("INBOX", stub, "S")
        w.wait(lambda: BIG in local.bodies(), "the placeholder upgraded")
        assert local.flags_by_body()[BIG] == "S"
        w.wait(lambda: remote.flags_by_body()[BIG] == "S", "its S on the server")
        # the lock: a second watch and a sync exit 75 while this one runs
        assert acct.run("sync").code == 75
        second = acct.run("watch", timeout=60)
        assert second.code == 75, second.err
        assert w.stop() == 0, w.output()
    assert "stopped" in w.output()
    runs = recorded_runs(acct)
    # the last pass either ended before SIGTERM or was stopped by it, recorded (75)
    assert runs and all(cmd == "watch" for cmd, _ in runs) and runs[-1][1] in (0, 75)
    assert sum(code == 0 for _, code in runs) >= len(runs) - 1
    assert w.status()["connection"] == "stopped"
    assert sorted(remote.bodies()) == sorted([A, BIG])
    assert sorted(local.bodies("Archive")) == sorted([B, C])


def test_idle_watch_without_notify(idle_dovecot, tmp_path):
    from tests.imaphelp import Local, Remote
    acct = account_on(idle_dovecot, tmp_path / "a", watch_full_sync=2)
    remote, local = Remote(idle_dovecot, acct.user), Local(acct.maildir)
    try:
        remote.append("INBOX", A)
        with Watching(acct) as w:
            w.connected("IDLE INBOX")
            w.wait(lambda: local.bodies() == [A], "first pass")
            remote.append("INBOX", B)
            w.wait(lambda: local.bodies() == sorted([A, B]), "delivery (IDLE)")
            local.set_flags("INBOX", B, "S")
            w.wait(lambda: remote.flags_by_body()[B] == "S", "a local flag")
            remote.create("Later")          # not watched: the periodic full sync finds it
            remote.append("Later", C)
            w.wait(lambda: local.bodies("Later") == [C], "the full sync")
            assert w.stop(signal.SIGINT) == 0, w.output()
    finally:
        remote.close()


def test_dovecot_killed_and_restarted_mid_watch(idle_dovecot, tmp_path):
    from tests.imaphelp import Local, Remote
    server = idle_dovecot
    acct = account_on(server, tmp_path / "r")
    server.seed(acct.user, [A, B])
    local = Local(acct.maildir)
    with Watching(acct) as w:
        w.connected("IDLE INBOX")
        w.wait(lambda: local.bodies() == sorted([A, B]), "first pass")
        with server._lock:
            server._kill()                  # Dovecot is gone: the watch loses its link
        local.deliver("INBOX", C)           # changes on both sides while it is down
        server.seed(acct.user, [D])
        w.wait(lambda: "disconnected" in w.output(), "the lost connection noticed")
        server.start(keep_ports=True)
        remote = Remote(server, acct.user)
        try:
            want = sorted([A, B, C, D])
            w.wait(lambda: local.bodies() == want and remote.bodies() == want,
                   "caught up on both sides", timeout=60)
            w.wait(lambda: "reconnected" in w.output(), "reconnected")
            remote.append("INBOX", E)      # and it listens again
            want = sorted(want + [E])
            w.wait(lambda: local.bodies() == want, "a delivery after the restart")
            assert remote.bodies() == want   # nothing lost, nothing doubled
        finally:
            remote.close()
        assert w.stop() == 0, w.output()


def test_pop3_polled_and_sighup_rereads_the_config(make_account, dovecot, tmp_path):
    """Also: under systemd (NOTIFY_SOCKET) READY=1 and WATCHDOG=1 arrive; --log-file
    gets one line per event."""
    acct = make_account("pop3", poll_interval=1)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    log = tmp_path / "events.log"
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    with Watching(acct, "--log-file", str(log), env=env) as w, notify:
        said: set[str] = set()
        while not {"READY=1", "WATCHDOG=1"} <= said:
            said.update(notify.recv(4096).decode().splitlines())
        w.wait(lambda: "fetch" in w.output(), "first poll")
        dovecot.seed(acct.user, [A])
        w.wait(lambda: acct.local_messages() == [A], "a POP3 poll")
        acct.config.write_text(acct.config.read_text().replace("poll_interval = 1",
                                                               "poll_interval = 2"))
        w.proc.send_signal(signal.SIGHUP)
        w.wait(lambda: "reloaded" in w.output(), "SIGHUP")
        dovecot.seed(acct.user, [B])
        # the poll stores the mail, then deletes it on the server: wait for both, so the
        # stop below does not land between the two (the next run would finish the delete)
        w.wait(lambda: sorted(acct.local_messages()) == sorted([A, B])
               and dovecot.server_messages(acct.user) == [], "polling again")
        assert w.stop() == 0, w.output()
    assert dovecot.server_messages(acct.user) == []
    lines = log.read_text().splitlines()
    assert any(" test - fetch downloaded=1 deleted_remote=1" in line for line in lines)
    assert lines[-1].endswith(" - - stopped")


def test_sigterm_during_the_first_pass_exits_0_with_the_state_recorded(imap_account):
    setup = imap_account()
    for n in range(300):
        setup.remote.append("INBOX", b"Subject: m%d\n\nbody %d\n" % (n, n))
    with Watching(setup.acct) as w:
        wait_until(lambda: setup.local.files(), "the first messages", output=w.output)
        assert w.stop() == 0, w.output()
    # what was stored is recorded: the next sync stores only the rest, doubling nothing
    done = setup.sync()
    assert done.code == 0, done.err
    assert len(setup.local.bodies()) == 300
    assert len(set(setup.local.bodies())) == 300


def test_one_failing_account_never_stops_the_others(imap_account):
    setup = imap_account()
    with open(setup.acct.config, "a") as f:   # a second account whose server is down
        f.write('[accounts.down]\nprotocol = "imap"\nhost = "127.0.0.1"\nport = 1\n'
                'user = "x"\npassword = "x"\ntls = "none"\nallow_plaintext = true\n'
                f'maildir = "{setup.acct.maildir.parent / "down"}"\n'
                f'state_dir = "{setup.acct.state_dir.parent / "down-state"}"\n')
    with Watching(setup.acct) as w:
        w.wait(lambda: "down - sync-failed" in w.output(), "the failing account")
        w.connected("NOTIFY")
        setup.remote.append("INBOX", A)
        w.wait(lambda: setup.local.bodies() == [A], "the other account's delivery")
        w.wait(lambda: w.output().count("down - disconnected") >= 2, "retries, backing off")
        assert w.stop() == 0, w.output()


def test_gmail_all_mail_is_watched_beside_inbox(idle_dovecot, tmp_path):
    """provider = "gmail" (the preset; X-GM-EXT-1 does the same): without NOTIFY, watch
    IDLEs on All Mail too, so mail a filter archives (it never reaches INBOX) arrives
    at once, not at the hourly full pass."""
    from tests.imaphelp import Local, Remote
    all_mail = "[Gmail]/All Mail"
    acct = account_on(idle_dovecot, tmp_path / "g", provider="gmail")
    remote, local = Remote(idle_dovecot, acct.user), Local(acct.maildir)
    try:
        remote.create(all_mail)
        with Watching(acct) as w:
            w.connected(f"IDLE {all_mail}")
            w.connected("IDLE INBOX")
            w.wait(lambda: local.path(all_mail).is_dir(), "first pass")
            remote.append(all_mail, A)                    # archived by a filter
            # the full pass is an hour away (watch_full_sync): IDLE on All Mail told it
            w.wait(lambda: local.bodies(all_mail) == [A], "a delivery to All Mail")
            assert w.stop() == 0, w.output()
    finally:
        remote.close()


def test_a_link_that_goes_silent_is_found_by_the_keepalive_and_replaced(
        idle_dovecot, tmp_path, monkeypatch):
    """A proxy that stops forwarding without closing anything (a NAT that forgot the
    connection, a new network address): the NOOP keepalive gets no answer within the
    account's timeout, the listener reconnects and catches up. In-process, to shorten
    the keepalive."""
    from mailsync import watch
    from mailsync.config import load_config
    from mailsync.logfile import EventLog
    from mailsync.state import AccountLock
    from tests.imaphelp import Local, Remote
    from tests.proxy import CutProxy
    monkeypatch.setattr(watch, "KEEPALIVE", 1.0)
    with CutProxy(idle_dovecot.host, idle_dovecot.imaps_port) as proxy:
        acct = account_on(idle_dovecot, tmp_path / "s", port=proxy.port, timeout=3)
        account, = load_config(acct.config).select(())
        remote, local = Remote(idle_dovecot, acct.user), Local(acct.maildir)
        log = tmp_path / "watch.log"
        lock = AccountLock(account.state_dir, account.name)
        lock.__enter__()
        w = watch.AccountWatch(account, EventLog([log]), lock)
        events = lambda: log.read_text() if log.exists() else ""   # noqa: E731
        try:
            w.start()
            wait_until(lambda: "connected (IDLE INBOX)" in w.info["connection"],
                       "IDLE through the proxy", output=events)
            wait_until(lambda: w.info["syncs"] >= 1, "first pass", output=events)
            for conn in list(proxy._conns):               # silence, not a close
                conn.stalled = True
            remote.append("INBOX", B)                    # meanwhile on the server
            wait_until(lambda: "reconnected" in events(), "the dead link replaced",
                       timeout=60, output=events)
            assert "disconnected" in events()
            wait_until(lambda: local.bodies() == [B], "caught up", output=events)
            remote.append("INBOX", C)                    # and it listens again
            wait_until(lambda: local.bodies() == sorted([B, C]), "a later delivery",
                       output=events)
        finally:
            w.stop()
            w.join(30)
            remote.close()
        assert not w.alive()
