"""The sync window against Dovecot (issue 14, acceptance 4): shrinking it removes local
copies only; the server keeps every message; widening it brings them back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def msg(n: int) -> bytes:
    return b"From: w@example.org\nSubject: m%d\nMessage-ID: <m%d@example.org>\n\nbody %d\n" % (
        n, n, n)


def set_keys(acct, **keys) -> None:
    lines = [l for l in acct.config.read_text().splitlines()
             if l.split(" = ")[0] not in ("max_messages", "max_age")]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    acct.config.write_text("\n".join(lines) + "\n")


def test_window_shrink_never_deletes_on_the_server(imap_account):
    setup = imap_account()
    old = datetime.now(timezone.utc) - timedelta(days=400)
    for n in range(3):                        # arrived long ago
        setup.remote.c.append("INBOX", msg(n).replace(b"\n", b"\r\n"), (), msg_time=old)
    for n in range(3, 10):
        setup.remote.append("INBOX", msg(n))
    assert setup.sync().code == 0
    assert len(setup.local.bodies()) == 10

    set_keys(setup.acct, max_messages=4)      # the newest 4 only
    done = setup.sync()
    assert done.code == 0, done.err
    assert setup.local.bodies() == sorted(msg(n) for n in range(6, 10))
    assert len(setup.remote.bodies()) == 10   # counted on the server: nothing deleted

    set_keys(setup.acct, max_age=30)          # the last 30 days: not the 3 old ones
    done = setup.sync()
    assert done.code == 0, done.err
    assert setup.local.bodies() == sorted(msg(n) for n in range(3, 10))
    assert len(setup.remote.bodies()) == 10

    # inside the window everything syncs as before; a local deletion there still counts
    setup.local.delete("INBOX", msg(9))
    setup.local.set_flags("INBOX", msg(8), "F")
    done = setup.sync()
    assert done.code == 0, done.err
    assert len(setup.remote.bodies()) == 9 and setup.remote.flags_by_body()[msg(8)] == "F"

    set_keys(setup.acct, max_messages=2)      # both limits: the newest 2 of the last 30 days
    assert setup.sync().code == 0
    assert setup.local.bodies() == sorted([msg(7), msg(8)])
    assert len(setup.remote.bodies()) == 9

    set_keys(setup.acct)                      # no window: everything comes back
    assert setup.sync().code == 0
    assert len(setup.local.bodies()) == 9
    assert sorted(setup.local.bodies()) == sorted(setup.remote.bodies())
