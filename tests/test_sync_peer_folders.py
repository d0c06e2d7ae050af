"""Folders that mbsync or offlineimap wrote (modified UTF-7 names on disk, their own
hierarchy spelling) sync with the server folders they came from, against the real
Dovecot: no second local copy under mailsync's name, no new server folder under the
peer's spelling, and the next run still uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.corpus import make_corpus, make_message


def peer_maildir(root: Path, relpath: str) -> Path:
    """An empty Maildir folder as a peer tool leaves it (relpath "" is the root)."""
    path = root / relpath if relpath else root
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def bodies(path: Path) -> list[bytes]:
    return sorted(f.read_bytes() for sub in ("new", "cur") if (path / sub).is_dir()
                  for f in (path / sub).iterdir())


def maildirs(root: Path) -> set[str]:
    """Every Maildir folder under root, as relpaths ("" is the root)."""
    return {"" if p == root else str(p.relative_to(root)) for p in [root, *root.rglob("*")]
            if p.is_dir() and (p / "cur").is_dir() and (p / "new").is_dir()}


def ok(result) -> dict:
    assert result.code == 0, result.err
    return result.json["accounts"][0]


# (mailsync layout, server folder, the peer's directory for it, mailsync's own)
CASES = [
    pytest.param("maildir++-utf8", "Entwürfe", ".Entw&APw-rfe", ".Entwürfe",
                 id="mbsync-maildir++"),
    pytest.param("maildir++", "INBOX/Sub", "..Sub", ".INBOX.Sub",
                 id="mbsync-maildir++-inbox-child"),
    pytest.param("fs", "Entwürfe", "Entw&APw-rfe", "Entwürfe",
                 id="mbsync-verbatim-offlineimap"),
    pytest.param("fs", "Projects/2026", "Projects.2026", "Projects/2026",
                 id="offlineimap-default"),
    pytest.param("fs", "Projects/2026", "Projects/.2026", "Projects/2026",
                 id="mbsync-legacy"),
]


@pytest.mark.parametrize("layout,folder,peer,own", CASES)
def test_peer_named_folder_syncs_with_the_server_folder_it_came_from(
        imap_account, layout, folder, peer, own):
    s = imap_account(layout=layout)
    server, user, root = s.acct.server, s.acct.user, s.acct.maildir
    server.seed(user, make_corpus(2))
    mail = make_corpus(3, seed=7)
    server.seed(user, mail, folder=folder, flags="S")
    server_folders = s.remote.folders()
    peer_maildir(root, "" if layout.startswith("maildir++") else "INBOX")
    peer_path = peer_maildir(root, peer)
    before = maildirs(root)

    summary = ok(s.sync())
    assert summary["uploaded"] == 0
    assert bodies(peer_path) == sorted(mail)          # the server's mail went there
    assert not (root / own).exists()                  # and not to a second copy
    assert maildirs(root) == before
    assert s.remote.folders() == server_folders       # no folder under the peer's name
    assert s.remote.bodies(folder) == sorted(mail)

    s.remote.append(folder, make_message(4711))       # the next run still uses it
    summary = ok(s.sync())
    assert summary["downloaded"] == 1 and summary["uploaded"] == 0
    assert bodies(peer_path) == sorted([*mail, make_message(4711)])
    assert maildirs(root) == before and s.remote.folders() == server_folders

    listing = s.acct.run("folders", s.acct.name)   # shows the path it uses
    assert listing.code == 0, listing.err
    row, = [r for r in (line.split("\t") for line in listing.out.splitlines())
            if r[0] == folder]                      # tab-separated: not a terminal
    assert row[2] == str(peer_path) and "mbsync" in row[3]


def test_peer_folder_with_the_servers_messages_maps_to_that_folder(imap_account):
    """A Maildir that mbsync filled: `.Entw&APw-rfe` holds the messages of `Entwürfe`.
    The folders pair (no `.Entwürfe`, no server folder `Entw&-APw-rfe`), and so do the
    messages in them: nothing is copied either way, now or in the second run."""
    s = imap_account()
    server, user, root = s.acct.server, s.acct.user, s.acct.maildir
    mail = make_corpus(3, seed=11)
    server.seed(user, mail, folder="Entwürfe", flags="S")
    peer_maildir(root, "")
    peer = peer_maildir(root, ".Entw&APw-rfe")
    for i, body in enumerate(mail):
        (peer / "cur" / f"1700000000.{i}_1.laptop,U={i + 1}:2,S").write_bytes(body)

    first = ok(s.sync())
    assert s.remote.folders() == ["Entwürfe", "INBOX"]
    assert maildirs(root) == {"", ".Entw&APw-rfe"}
    assert first["downloaded"] == first["uploaded"] == 0 and first["paired"] == 3
    assert bodies(peer) == sorted(mail) == s.remote.bodies("Entwürfe")
    again = ok(s.sync())
    assert again["downloaded"] == again["uploaded"] == 0
    assert s.remote.folders() == ["Entwürfe", "INBOX"]
    assert maildirs(root) == {"", ".Entw&APw-rfe"}
