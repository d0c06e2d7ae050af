"""A first sync into a Maildir that already holds the server's mail (a restored copy, a
lost state directory, another tool's Maildir): nothing is doubled on either side, only
the true leftovers move. Against the real Dovecot."""

from __future__ import annotations

import shutil

from tests.test_sync_crash import killed_sync, steps_of

from tests.corpus import make_corpus, make_message


def summary(result):
    assert result.code == 0, result.err
    return result.json["accounts"][0]


def agree(s, folder="INBOX"):
    assert s.local.bodies(folder) == s.remote.bodies(folder), folder
    assert s.local.flags_by_body(folder) == s.remote.flags_by_body(folder), folder


def no_duplicates(s, folder="INBOX"):
    local, remote = s.local.bodies(folder), s.remote.bodies(folder)
    assert len(local) == len(set(local)) or sorted(local) == sorted(remote), folder
    return local, remote


def without_id(message: bytes) -> bytes:
    head, _, body = message.partition(b"\n\n")
    kept = [line for line in head.split(b"\n") if not line.lower().startswith(b"message-id:")]
    return b"\n".join(kept) + b"\n\n" + body


def with_body(message: bytes, body: bytes) -> bytes:
    return message.partition(b"\n\n")[0] + b"\n\n" + body


def synced_then_state_lost(imap_account, messages, folder="INBOX", flags=""):
    s = imap_account()
    s.acct.server.seed(s.acct.user, messages, folder=folder, flags=flags)
    summary(s.sync())
    shutil.rmtree(s.acct.state_dir)
    return s


def test_lost_state_directory_pairs_everything_and_copies_nothing(imap_account):
    s = synced_then_state_lost(imap_account, make_corpus(12))
    again = summary(s.sync())
    assert (again["downloaded"], again["uploaded"], again["paired"]) == (0, 0, 12)
    assert again["bytes_downloaded"] == 0
    agree(s)
    assert len(s.remote.bodies()) == 12
    assert summary(s.sync())["paired"] == 0   # recorded: the next run is an ordinary one


def test_lost_state_with_new_mail_on_each_side_moves_only_the_new(imap_account):
    s = synced_then_state_lost(imap_account, make_corpus(10))
    s.remote.append("INBOX", make_message(800), "S")
    s.local.deliver("INBOX", make_message(801), "F")
    again = summary(s.sync())
    assert (again["downloaded"], again["uploaded"], again["paired"]) == (1, 1, 10)
    agree(s)
    assert len(s.remote.bodies()) == 12


def test_first_sync_merges_flags_that_differ_between_the_sides(imap_account):
    s = synced_then_state_lost(imap_account, make_corpus(6))
    body = make_corpus(6)[1]
    s.local.set_flags("INBOX", body, "F")
    uid = s.remote.uid_of("INBOX", body)
    s.remote.set_flags("INBOX", uid, add="S")
    again = summary(s.sync())
    assert again["paired"] == 6 and again["downloaded"] == again["uploaded"] == 0
    assert s.remote.flags_by_body()[body] == "FS" == s.local.flags_by_body()[body]


def test_a_second_account_over_the_same_maildir_doubles_nothing(imap_account):
    first = imap_account()
    first.acct.server.seed(first.acct.user, make_corpus(5))
    summary(first.sync())
    second = imap_account(user=first.acct.user, maildir=str(first.acct.maildir))
    again = summary(second.sync())
    assert (again["paired"], again["downloaded"], again["uploaded"]) == (5, 0, 0)
    assert len(first.remote.bodies()) == 5 == len(first.local.bodies())


def test_messages_without_message_id_pair_by_header_and_size(imap_account):
    messages = [without_id(m) for m in make_corpus(6)]
    s = synced_then_state_lost(imap_account, messages)
    again = summary(s.sync())
    assert (again["downloaded"], again["uploaded"], again["paired"]) == (0, 0, 6)
    agree(s)


def test_identical_copies_of_one_message_pair_one_to_one(imap_account):
    twin = make_message(700)
    s = synced_then_state_lost(imap_account, [twin, twin, twin, make_message(701)])
    s.remote.append("INBOX", twin)                   # a fourth copy, on the server only
    again = summary(s.sync())
    assert (again["paired"], again["downloaded"], again["uploaded"]) == (4, 1, 0)
    assert s.local.bodies().count(twin) == 4 == s.remote.bodies().count(twin)


def test_same_message_id_with_different_bodies_is_never_paired_wrongly(imap_account):
    original = make_message(710)
    edited = with_body(original, b"Body A: edited by hand.\n")
    other = with_body(original, b"Body B: edited by hand.\n")
    assert len(edited) == len(other)
    s = synced_then_state_lost(imap_account, [original, edited])
    s.local.delete("INBOX", edited)
    s.local.deliver("INBOX", other)
    again = summary(s.sync())
    # original pairs; the server's `edited` and the local `other` are different messages
    assert (again["paired"], again["downloaded"], again["uploaded"]) == (1, 1, 1)
    assert sorted(s.remote.bodies()) == sorted([original, edited, other])
    agree(s)


def rewritten(message: bytes) -> bytes:
    """The message as a tool that re-wraps bodies would have stored it: same Message-ID,
    other bytes."""
    return message.replace(b"\n\n", b"\n\n[stored by another tool]\n", 1)


def test_pairing_that_finds_too_little_stops_and_names_the_override(imap_account):
    s = imap_account()
    corpus = make_corpus(8)
    s.acct.server.seed(s.acct.user, corpus)
    for message in corpus[:6]:
        s.local.deliver("INBOX", rewritten(message))
    refused = s.sync()
    assert refused.code == 1
    folder = refused.json["accounts"][0]["folders"][0]
    assert "--allow-mass-copy" in folder["error"] and "differ in content" in folder["error"]
    assert "download 8" in folder["error"] and "upload 6" in folder["error"]
    assert len(s.remote.bodies()) == 8 and len(s.local.bodies()) == 6   # nothing moved
    allowed = summary(s.sync("--allow-mass-copy"))
    assert (allowed["downloaded"], allowed["uploaded"]) == (8, 6)
    agree(s)


def test_a_few_unrelated_local_messages_are_simply_copied(imap_account):
    s = imap_account()
    s.acct.server.seed(s.acct.user, make_corpus(20))
    for message in make_corpus(6, seed=9):        # drafts of the user's own, say
        s.local.deliver("INBOX", message)
    done = summary(s.sync())
    assert (done["downloaded"], done["uploaded"], done["paired"]) == (20, 6, 0)
    agree(s)


def test_dry_run_of_an_adoption_says_how_many_pair_and_changes_nothing(imap_account):
    s = synced_then_state_lost(imap_account, make_corpus(4))
    s.remote.append("INBOX", make_message(720))
    dry = summary(s.sync("--dry-run"))
    assert dry["paired"] == 4
    assert any("pair 4 message(s)" in line for line in dry["plan"])
    assert len(s.local.bodies()) == 4 and len(s.remote.bodies()) == 5
    assert summary(s.sync("--dry-run"))["paired"] == 4   # nothing was recorded


def lost_state_with_news(imap_account):
    s = synced_then_state_lost(imap_account, make_corpus(10))
    s.remote.append("INBOX", make_message(820), "S")
    s.local.deliver("INBOX", make_message(821), "F")
    return s


def test_adoption_killed_at_any_step_then_rerun_doubles_nothing(imap_account, tmp_path):
    steps = steps_of(lost_state_with_news(imap_account), tmp_path, "adopt")
    assert "adopted" in steps
    for point in range(1, len(steps) + 1):
        s = lost_state_with_news(imap_account)
        killed_sync(s, point)
        rerun = summary(s.sync())
        assert sorted(s.local.bodies()) == sorted(s.remote.bodies()), f"step {point}"
        assert len(s.remote.bodies()) == 12, f"step {point}: {rerun}"
        s.remote.close()
