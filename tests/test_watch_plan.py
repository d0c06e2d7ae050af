"""The planner's part of watch: a headers-only placeholder opened in the mail client (S
set locally) is upgraded in place, keeping its flags; S set elsewhere is not a request."""

from mailsync.imapsync.plan import (LocalMsg, Pair, Policy, RemoteMsg, SetRemoteFlags,
                               UpgradePlaceholder, plan_folder)

F = frozenset


def plan(remote, local, last, **policy):
    return plan_folder({m.uid: m for m in remote}, {m.key: m for m in local}, list(last),
                       Policy(**policy))


def test_placeholder_opened_locally_is_upgraded_keeping_its_flags():
    p = plan([RemoteMsg(1, F(""), 5000)], [LocalMsg("k", F("SR"), True)],
             [Pair(1, "k", F(""), True)], max_size=1000)
    assert p.actions == (
        UpgradePlaceholder(1, "k", F("SR"), Pair(1, "k", F(""), False)),
        SetRemoteFlags(1, F("SR"), F(), Pair(1, "k", F("SR"), False)),
    )


def test_placeholder_read_elsewhere_stays_a_placeholder():
    p = plan([RemoteMsg(1, F("S"), 5000)], [LocalMsg("k", F(""), True)],
             [Pair(1, "k", F(""), True)], max_size=1000)
    assert [type(a).__name__ for a in p.actions] == ["SetLocalFlags"]
    assert p.actions[0].pair_after().placeholder


def test_placeholder_already_seen_stays_a_placeholder():
    p = plan([RemoteMsg(1, F("S"), 5000)], [LocalMsg("k", F("S"), True)],
             [Pair(1, "k", F("S"), True)], max_size=1000)
    assert p.actions == ()
