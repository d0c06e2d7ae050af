"""The sync window in the pure planner: outside it, a local copy is removed, a server
message is never expunged and nothing is downloaded (issue 14, sync window)."""

from hypothesis import given, settings, strategies as st

from mailsync.imapsync.plan import (DeleteLocal, Download, ExpungeRemote, Forget, LocalMsg,
                               MODES, Pair, Policy, RemoteMsg, SetRemoteFlags, plan_folder)

F = frozenset


def plan(remote, local, last, **policy):
    return plan_folder({m.uid: m for m in remote}, {m.key: m for m in local}, list(last),
                       Policy(**policy))


def test_a_message_leaving_the_window_is_removed_locally_only():
    remote = [RemoteMsg(u, F("S"), 100) for u in (1, 2, 3)]
    local = [LocalMsg(k, F("S")) for k in "abc"]
    last = [Pair(1, "a", F("S")), Pair(2, "b", F("S")), Pair(3, "c", F("S"))]
    p = plan(remote, local, last, window=F({3}))
    assert p.refused is None   # 2 of 3 removed: not the mass-delete guard's business
    assert p.actions == (DeleteLocal("a", 1, window=True), DeleteLocal("b", 2, window=True))


def test_a_local_flag_change_is_pushed_before_the_copy_goes():
    p = plan([RemoteMsg(1, F(), 100)], [LocalMsg("a", F("F"))], [Pair(1, "a", F())],
             window=F())
    assert p.actions == (SetRemoteFlags(1, F("F"), F(), Pair(1, "a", F("F"))),
                         DeleteLocal("a", 1, window=True))


def test_outside_the_window_nothing_is_downloaded():
    p = plan([RemoteMsg(1, F(), 100), RemoteMsg(2, F(), 100)], [], [], window=F({2}))
    assert p.actions == (Download(2, F(), False),)


def test_gone_locally_outside_the_window_is_forgotten_never_expunged():
    p = plan([RemoteMsg(1, F("S"), 100)], [], [Pair(1, "a", F("S"))], window=F())
    assert p.actions == (Forget(1, "a"),)


def test_no_window_changes_nothing():
    remote, local = [RemoteMsg(1, F(), 100)], [LocalMsg("a", F())]
    assert plan(remote, local, [Pair(1, "a", F())], window=None).actions == ()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_nothing_outside_the_window_is_ever_expunged(data):
    uids = data.draw(st.lists(st.integers(1, 12), unique=True, max_size=8))
    flags = st.frozensets(st.sampled_from("DFRST"), max_size=3)
    remote = {u: RemoteMsg(u, data.draw(flags), 100) for u in uids}
    last, local = [], {}
    for u in data.draw(st.lists(st.sampled_from(uids), unique=True)) if uids else []:
        key = f"k{u}"
        last.append(Pair(u, key, data.draw(flags)))
        if data.draw(st.booleans()):
            local[key] = LocalMsg(key, data.draw(flags))
    window = F(data.draw(st.lists(st.sampled_from(uids), unique=True))) if uids else F()
    mode = data.draw(st.sampled_from(MODES))
    p = plan_folder(remote, local, last, Policy(mode=mode, window=window,
                                                allow_mass_delete=True))
    expunged = {a.uid for a in p.actions if isinstance(a, ExpungeRemote)}
    assert not expunged - window
    downloaded = {a.uid for a in p.actions if isinstance(a, Download)}
    assert downloaded <= window
