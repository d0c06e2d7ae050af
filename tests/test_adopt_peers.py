"""A Maildir that is already full, pointed at by a new mailsync account: the messages it
shares with the server are adopted, never copied again, and only the true leftovers move.

The Maildirs are made by the real peers (mbsync, offlineimap: tests/peers.py) against the
test Dovecot, in their own layouts and with a non-ASCII folder, or by mailsync itself and
then restored without its state."""

from __future__ import annotations

import shutil
import time

import pytest

from mailsync.drivers.maildir import FINE_SETTLE

from tests.corpus import make_corpus, make_message
from tests.peers import PEER_LAYOUTS, PeerLayout, PeerMaildir, fill, require, without_tuid

FOLDERS = ["INBOX", "Archive", "Entwürfe", "Projects/2026"]


def seed_mailbox(server, user: str) -> dict[str, list[bytes]]:
    """Several folders, one of them non-ASCII and one nested, with assorted flags."""
    inbox = make_corpus(8)
    server.seed(user, inbox[:4])
    server.seed(user, inbox[4:7], flags="S")
    server.seed(user, inbox[7:], flags="FS")
    archive = make_corpus(3, seed=2)
    server.seed(user, archive, folder="Archive", flags="RS")
    drafts = make_corpus(2, seed=3)
    server.seed(user, drafts, folder="Entwürfe", flags="D")
    projects = make_corpus(3, seed=4)
    server.seed(user, projects[:2], folder="Projects/2026")
    server.seed(user, projects[2:], folder="Projects/2026", flags="FS")
    return {"INBOX": inbox, "Archive": archive, "Entwürfe": drafts,
            "Projects/2026": projects}


def total(mailbox: dict[str, list[bytes]]) -> int:
    return sum(len(bodies) for bodies in mailbox.values())


def agree(s, folder: str) -> None:
    """Both sides hold the same messages with the same flags (an X-TUID line mbsync left
    in a file, and so maybe in its upload, is no difference)."""
    remote = {without_tuid(body): flags for body, flags in s.remote.flags_by_body(folder).items()}
    assert s.local.bodies(folder) == server_bodies(s, folder), folder
    assert s.local.flags_by_body(folder) == remote, folder


def server_bodies(s, folder: str) -> list[bytes]:
    return sorted(without_tuid(body) for body in s.remote.bodies(folder))


def counts(result) -> dict:
    assert result.code == 0, result.err
    summary = result.json["accounts"][0]
    return {key: summary[key] for key in ("downloaded", "bytes_downloaded", "uploaded",
                                          "deleted_local", "deleted_remote", "paired")}


def peer_filled(imap_account, dovecot, tmp_path, layout):
    """A mailbox the peer has synced into its Maildir, and a new mailsync account (no
    state) over that Maildir, with the layout nearest to the peer's."""
    require(layout.tool)
    user = dovecot.new_user()
    mailbox = seed_mailbox(dovecot, user)
    root = fill(layout, dovecot, user, tmp_path / f"{layout.tool}-home")
    s = imap_account(user=user, layout=layout.mailsync_layout, maildir=str(root))
    s.local = PeerMaildir(root, layout)
    for folder in FOLDERS:      # the peer did its job: every message is on both sides
        assert len(s.local.files(folder)) == len(mailbox[folder]), (layout.id, folder)
        agree(s, folder)
    return s, mailbox


def assert_adopted(s, mailbox) -> None:
    server_folders, directories = s.remote.folders(), s.local.directories()
    files = {folder: s.local.files(folder) for folder in FOLDERS}
    summary = counts(s.sync())
    assert summary == {"downloaded": 0, "bytes_downloaded": 0, "uploaded": 0,
                       "deleted_local": 0, "deleted_remote": 0, "paired": total(mailbox)}
    assert s.remote.folders() == server_folders
    assert s.local.directories() == directories, "a local folder was created"
    for folder in FOLDERS:
        assert s.remote.bodies(folder) == sorted(mailbox[folder]), folder
        agree(s, folder)
    assert {folder: s.local.files(folder) for folder in FOLDERS} == files, \
        "the peer's file names are kept"


MBSYNC = [layout for layout in PEER_LAYOUTS if layout.tool == "mbsync"]
OFFLINEIMAP = [layout for layout in PEER_LAYOUTS if layout.tool == "offlineimap"]


@pytest.mark.parametrize("layout", MBSYNC, ids=lambda layout: layout.id)
def test_maildir_filled_by_mbsync_is_adopted_without_copying(imap_account, dovecot,
                                                             tmp_path, layout):
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    assert_adopted(s, mailbox)


@pytest.mark.parametrize("layout", OFFLINEIMAP, ids=lambda layout: layout.id)
def test_maildir_filled_by_offlineimap_is_adopted_without_copying(imap_account, dovecot,
                                                                  tmp_path, layout):
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    assert_adopted(s, mailbox)


@pytest.mark.parametrize("layout", PEER_LAYOUTS, ids=lambda layout: layout.id)
def test_after_adopting_a_peers_maildir_the_next_sync_carries_exactly_the_changes(
        imap_account, dovecot, tmp_path, layout):
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    assert s.sync().code == 0
    arrived = make_message(700)
    s.remote.append("INBOX", arrived, "F")
    reflagged = mailbox["Archive"][1]
    s.local.set_flags("Archive", reflagged, "FRS")
    removed = mailbox["Projects/2026"][0]
    s.local.delete("Projects/2026", removed)
    server_folders, directories = s.remote.folders(), s.local.directories()

    summary = s.sync().json["accounts"][0]
    assert {key: summary[key] for key in ("downloaded", "uploaded", "flags_changed",
                                          "deleted_local", "deleted_remote")} == {
        "downloaded": 1, "uploaded": 0, "flags_changed": 1, "deleted_local": 0,
        "deleted_remote": 1}, summary
    assert s.local.flags_by_body("INBOX")[arrived] == "F"
    assert s.remote.flags_by_body("Archive")[reflagged] == "FRS"
    assert removed not in s.remote.bodies("Projects/2026")
    assert s.remote.folders() == server_folders
    assert s.local.directories() == directories
    for folder in FOLDERS:
        agree(s, folder)
    again = s.sync().json["accounts"][0]
    assert again["downloaded"] == again["uploaded"] == again["flags_changed"] == 0, again


@pytest.mark.parametrize("layout", PEER_LAYOUTS, ids=lambda layout: layout.id)
def test_mail_new_on_both_sides_since_the_peers_last_run_is_all_that_moves(
        imap_account, dovecot, tmp_path, layout):
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    directories = s.local.directories()
    on_server, in_maildir = new_on_both_sides(s, s.local)
    assert s.local.directories() == directories     # delivered into the peer's folders
    assert_only_new_moved(s, mailbox, on_server, in_maildir, counts(s.sync()))
    assert s.local.directories() == directories


@pytest.mark.parametrize("layout", PEER_LAYOUTS, ids=lambda layout: layout.id)
def test_a_draft_edited_in_the_peers_maildir_is_not_taken_for_the_servers_copy(
        imap_account, dovecot, tmp_path, layout):
    """The file keeps the peer's name, UID and all (,U=1 ...), but no longer holds what
    the server's UID 1 holds: both versions are kept on both sides, none is lost."""
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    original = mailbox["Entwürfe"][0]
    draft = s.local.file_of("Entwürfe", original)
    draft.write_bytes(draft.read_bytes() + b"\nP.S. one more line, written later.\n")
    edited = original + b"\nP.S. one more line, written later.\n"
    summary = counts(s.sync())
    assert (summary["downloaded"], summary["uploaded"], summary["paired"]) == (
        1, 1, total(mailbox) - 1), summary
    assert server_bodies(s, "Entwürfe") == sorted(mailbox["Entwürfe"] + [edited])
    for folder in FOLDERS:
        agree(s, folder)


@pytest.mark.parametrize("layout", PEER_LAYOUTS, ids=lambda layout: layout.id)
def test_a_peers_uids_from_before_the_server_folder_was_rebuilt_pair_nothing_wrongly(
        imap_account, dovecot, tmp_path, layout):
    """The server's Archive was rebuilt after the peer's last run (same messages, new
    order, new UIDs): the peer's ,U=1 is now another message. Each file still pairs with
    its own message, so a deletion afterwards removes the right one."""
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    archive = mailbox["Archive"]
    s.remote.delete_folder("Archive")
    s.remote.create("Archive")
    for body, letters in zip(reversed(archive), ("FS", "RS", "S")):
        s.remote.append("Archive", body, letters)
    summary = counts(s.sync())
    assert (summary["downloaded"], summary["uploaded"], summary["paired"]) == (
        0, 0, total(mailbox)), summary
    for folder in FOLDERS:
        agree(s, folder)
    assert s.local.flags_by_body("Archive") == {archive[0]: "RS", archive[1]: "RS",
                                                archive[2]: "FRS"}
    s.local.delete("Archive", archive[0])
    assert s.sync().json["accounts"][0]["deleted_remote"] == 1
    assert server_bodies(s, "Archive") == sorted(archive[1:])
    agree(s, "Archive")


@pytest.mark.parametrize("layout", PEER_LAYOUTS, ids=lambda layout: layout.id)
def test_flags_changed_since_the_peers_last_run_are_merged_on_adoption(
        imap_account, dovecot, tmp_path, layout):
    """No record says which side changed a flag since the peer's last run: a flag set on
    either side is kept, and nothing is copied for it."""
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    flagged_here, read_there, both = mailbox["INBOX"][:3]
    s.local.set_flags("INBOX", flagged_here, "F")
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", read_there), add="S")
    s.local.set_flags("INBOX", both, "F")
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", both), add="S")
    summary = counts(s.sync())
    assert summary == {"downloaded": 0, "bytes_downloaded": 0, "uploaded": 0,
                       "deleted_local": 0, "deleted_remote": 0, "paired": total(mailbox)}
    expected = {flagged_here: "F", read_there: "S", both: "FS"}
    assert {body: s.remote.flags_by_body()[body] for body in expected} == expected
    assert {body: s.local.flags_by_body()[body] for body in expected} == expected
    for folder in FOLDERS:
        agree(s, folder)


@pytest.mark.parametrize("layout", [PEER_LAYOUTS[0], PEER_LAYOUTS[3]],
                         ids=lambda layout: layout.id)
def test_a_dry_run_over_a_peers_maildir_shows_the_pairing_and_changes_nothing(
        imap_account, dovecot, tmp_path, layout):
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    server_folders, directories = s.remote.folders(), s.local.directories()
    files = {folder: s.local.files(folder) for folder in FOLDERS}
    result = s.sync("--dry-run")
    assert result.code == 0, result.err
    plan = result.json["accounts"][0]["plan"]
    assert sorted(plan) == sorted(
        f"{folder}: pair {len(mailbox[folder])} message(s) found on both sides "
        "(nothing copied)" for folder in FOLDERS)
    assert s.remote.folders() == server_folders
    assert s.local.directories() == directories
    assert {folder: s.local.files(folder) for folder in FOLDERS} == files
    assert counts(s.sync())["paired"] == total(mailbox)


def new_on_both_sides(s, local) -> tuple[list[bytes], list[bytes]]:
    """Two messages new on the server and three new in the Maildir *local*."""
    on_server = [make_message(800), make_message(801)]
    s.remote.append("INBOX", on_server[0])
    s.remote.append("Archive", on_server[1], "S")
    in_maildir = [make_message(810), make_message(811), make_message(812)]
    local.deliver("INBOX", in_maildir[0])
    local.deliver("Entwürfe", in_maildir[1], "D")
    local.deliver("Projects/2026", in_maildir[2], "S")
    return on_server, in_maildir


def assert_only_new_moved(s, mailbox, on_server, in_maildir, summary) -> None:
    size = summary.pop("bytes_downloaded")
    assert summary == {"downloaded": len(on_server), "uploaded": len(in_maildir),
                       "deleted_local": 0, "deleted_remote": 0, "paired": total(mailbox)}
    stored = sum(len(m) for m in on_server)
    assert size in (stored, stored + sum(m.count(b"\n") for m in on_server))  # LF or CRLF
    assert sorted(s.remote.folders()) == sorted(FOLDERS)
    for folder in FOLDERS:
        agree(s, folder)
    assert len(s.remote.bodies()) == len(mailbox["INBOX"]) + 2


def test_maildir_copied_from_the_imap_servers_own_disk_is_adopted_without_copying(
        imap_account, dovecot, tmp_path):
    """Dovecot's own Maildir++ (modified UTF-7 names, dovecot-uidlist, its ,S=,W= file
    names) copied off the server, as a user moving from a self-hosted server would."""
    user = dovecot.new_user()
    mailbox = seed_mailbox(dovecot, user)
    copy = tmp_path / "copied"
    s = imap_account(user=user, maildir=str(copy))
    for folder in FOLDERS:
        s.remote.bodies(folder)             # Dovecot indexes the folder: dovecot-uidlist
    shutil.copytree(dovecot.maildir(user), copy, symlinks=True)
    assert (copy / "dovecot-uidlist").is_file() and (copy / ".Entw&APw-rfe").is_dir()
    s.local = PeerMaildir(copy, PeerLayout("dovecot", "dovecot", "Maildir++", "maildir++"))
    for folder in FOLDERS:
        agree(s, folder)
    assert_adopted(s, mailbox)


# A Maildir mailsync wrote itself, without the state that went with it -----------------
def test_a_second_account_over_the_same_maildir_adopts_it_without_copying(imap_account,
                                                                          dovecot):
    first = imap_account()
    mailbox = seed_mailbox(dovecot, first.acct.user)
    assert counts(first.sync())["downloaded"] == total(mailbox)
    second = imap_account(user=first.acct.user, maildir=str(first.acct.maildir))
    nothing = {"downloaded": 0, "bytes_downloaded": 0, "uploaded": 0, "deleted_local": 0,
               "deleted_remote": 0}
    assert counts(second.sync()) == {**nothing, "paired": total(mailbox)}
    assert counts(first.sync()) == {**nothing, "paired": 0}
    assert sorted(first.remote.folders()) == sorted(FOLDERS)
    for folder in FOLDERS:
        assert first.remote.bodies(folder) == sorted(mailbox[folder]), folder
        agree(first, folder)


@pytest.mark.parametrize("layout", ["maildir++", "fs"])
def test_maildir_restored_from_a_copy_moves_only_the_new_messages(imap_account, dovecot,
                                                                 tmp_path, layout):
    first = imap_account(layout=layout)
    mailbox = seed_mailbox(dovecot, first.acct.user)
    assert counts(first.sync())["downloaded"] == total(mailbox)
    copy = tmp_path / "restored"
    shutil.copytree(first.acct.maildir, copy, symlinks=True)
    s = imap_account(user=first.acct.user, layout=layout, maildir=str(copy))
    on_server, in_maildir = new_on_both_sides(s, s.local)
    assert_only_new_moved(s, mailbox, on_server, in_maildir, counts(s.sync()))


@pytest.mark.parametrize("layout", ["maildir++", "fs"])
def test_lost_state_directory_moves_only_the_new_messages(imap_account, dovecot, layout):
    s = imap_account(layout=layout)
    mailbox = seed_mailbox(dovecot, s.acct.user)
    assert counts(s.sync())["downloaded"] == total(mailbox)
    shutil.rmtree(s.acct.state_dir)
    on_server, in_maildir = new_on_both_sides(s, s.local)
    assert_only_new_moved(s, mailbox, on_server, in_maildir, counts(s.sync()))


@pytest.mark.parametrize("layout", MBSYNC[:1], ids=lambda layout: layout.id)
def test_after_adopting_mbsyncs_maildir_a_local_move_is_a_server_move_without_x_tuid(
        imap_account, dovecot, tmp_path, layout):
    """mbsync leaves an X-TUID line in every file it writes: a file the user then moves
    between folders is moved on the server (not uploaded again), and a file the user
    copies into another folder is uploaded without mbsync's line."""
    s, mailbox = peer_filled(imap_account, dovecot, tmp_path, layout)
    assert s.sync().code == 0
    moved, copied = mailbox["INBOX"][0], mailbox["INBOX"][1]
    assert b"X-TUID" in s.local.file_of("INBOX", moved).read_bytes()
    s.local.move("INBOX", moved, "Archive")
    s.local.deliver("Archive", s.local.file_of("INBOX", copied).read_bytes())
    time.sleep(2 * FINE_SETTLE)            # settled stamps, as for a user's changes

    summary = s.sync().json["accounts"][0]
    assert (summary["uploaded"], summary["deleted_remote"]) == (1, 0), summary
    archive = s.remote.bodies("Archive")
    assert moved in archive and copied in archive      # byte for byte: no X-TUID line
    assert moved not in s.remote.bodies("INBOX")
    for folder in FOLDERS:
        agree(s, folder)
