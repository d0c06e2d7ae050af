"""Tests for mailsync.folders: which local Maildir each server folder pairs with, other
tools' folder names (mbsync, offlineimap) included, and which local folders are new."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsync import names
from mailsync.folders import ServerSide, _parts, local_folders, local_maildirs, pair_folders


def listing(layout: str, *relpaths: str) -> dict[str, tuple[str, ...] | None]:
    """What local_maildirs would report for these Maildirs."""
    return {rel: _parts(rel, layout) for rel in relpaths}


def pair(layout, server, local, known=None, mode="sync", include=("*",), exclude=()):
    side = [ServerSide(n, names.encode_mutf7(n), "/") for n in server]
    pairings, skipped = pair_folders(side, listing(layout, *local), known or {}, layout,
                                     mode, include, exclude, "/")
    synced = {p.name: (p.relpath, "exists" if p.local_exists else
                       "create" if p.create_local else "missing")
              for p in pairings if p.server is not None}
    uploads = {p.name: p.relpath for p in pairings if p.create_remote}
    return synced, uploads, {s.name: s.reason for s in skipped}


# (layout, server folders, local Maildirs, state's records, want synced, want uploads,
#  want skipped names)
CASES = [
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], ["", ".Entw&APw-rfe"], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "exists")}, {}, set(),
        id="mbsync-maildir++-adopted"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], [""], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "create")}, {}, set(),
        id="nothing-to-adopt-creates-own"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], ["", ".Entwürfe", ".Entw&APw-rfe"], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "exists")}, {},
        {"Entw&APw-rfe"}, id="own-wins-peer-copy-left-alone-not-uploaded"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], ["", ".Entwürfe", ".Entw&APw-rfe"],
        {"Entwürfe": ".Entw&APw-rfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "exists")}, {},
        {"Entwürfe"}, id="recorded-wins-own-copy-left-alone"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], [""], {"Entwürfe": ".Entw&APw-rfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "missing")}, {}, set(),
        id="recorded-peer-path-kept-when-missing"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], ["", "Entwürfe"], {"Entwürfe": "Entwürfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "missing")}, {}, set(),
        id="record-from-another-layout-maps-afresh"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "INBOX/Sub"], ["", "..Sub"], {},
        {"INBOX": ("", "exists"), "INBOX/Sub": ("..Sub", "exists")}, {}, set(),
        id="mbsync-inbox-child"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe", "Entw&APw-rfe"], ["", ".Entw&APw-rfe"], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "create"),
         "Entw&APw-rfe": (".Entw&APw-rfe", "exists")}, {}, set(),
        id="a-folder-own-name-beats-another-peer-name"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe", "Entw&APw-rfe"], ["", ".Entw&APw-rfe"],
        {"Entwürfe": ".Entw&APw-rfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "exists")}, {},
        {"Entw&APw-rfe"}, id="own-path-held-by-an-adopted-folder-is-refused"),
    pytest.param(
        "maildir++-utf8", ["INBOX"], ["", ".Entw&APw-rfe"], {},
        {"INBOX": ("", "exists")}, {"Entw&APw-rfe": ".Entw&APw-rfe"}, set(),
        id="unmatched-local-folder-still-uploaded"),
    pytest.param(
        "maildir++-utf8", ["INBOX"], ["", ".Entw&APw-rfe"], {"Entwürfe": ".Entw&APw-rfe"},
        {"INBOX": ("", "exists")}, {}, {"Entwürfe"},
        id="adopted-folder-gone-from-server-not-uploaded-again"),
    pytest.param(
        "fs", ["INBOX", "Projects", "Projects/2026"], ["INBOX", "Projects", "Projects.2026"],
        {},
        {"INBOX": ("INBOX", "exists"), "Projects": ("Projects", "exists"),
         "Projects/2026": ("Projects.2026", "exists")}, {}, set(), id="offlineimap-fs"),
    pytest.param(
        "fs", ["INBOX", "Entwürfe", "INBOX/Sub"],
        ["INBOX", "Entw&APw-rfe", "INBOX.Sub"], {},
        {"INBOX": ("INBOX", "exists"), "Entwürfe": ("Entw&APw-rfe", "exists"),
         "INBOX/Sub": ("INBOX.Sub", "exists")}, {}, set(), id="offlineimap-fs-inbox-child"),
    pytest.param(
        "fs", ["INBOX", "Top", "Top/Sub", "Top/Sub/Deep"],
        ["INBOX", "Top", "Top/.Sub", "Top/.Sub/.Deep"], {},
        {"INBOX": ("INBOX", "exists"), "Top": ("Top", "exists"),
         "Top/Sub": ("Top/.Sub", "exists"), "Top/Sub/Deep": ("Top/.Sub/.Deep", "exists")},
        {}, set(), id="mbsync-legacy"),
    pytest.param(
        "fs", ["INBOX", "Projects/2026"], ["INBOX", "Projects/.2026", "Projects.2026"], {},
        {"INBOX": ("INBOX", "exists"), "Projects/2026": ("Projects/.2026", "exists")}, {},
        {"Projects.2026"}, id="first-peer-in-preference-order"),
    pytest.param(
        "fs", ["INBOX", "Projects/2026", "Projects.2026"], ["INBOX", "Projects.2026"], {},
        {"INBOX": ("INBOX", "exists"), "Projects/2026": ("Projects/2026", "create"),
         "Projects.2026": ("Projects.2026", "exists")}, {}, set(),
        id="peer-name-that-is-another-folders-own-is-not-taken"),
    pytest.param(
        "fs", ["INBOX", "A.B/C", "A/B.C"], ["INBOX", "A.B.C"], {},
        {"INBOX": ("INBOX", "exists"), "A.B/C": ("A.B.C", "exists"),
         "A/B.C": ("A/B.C", "create")}, {}, set(), id="one-path-to-one-folder-only"),
    # maildir++ (the default) names folders in modified UTF-7, as Dovecot and Courier;
    # mailsync wrote UTF-8 there before: an upgrade keeps those folders where they are.
    pytest.param(
        "maildir++", ["INBOX", "Entwürfe"], [""], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "create")}, {}, set(),
        id="new-folder-in-modified-utf7"),
    pytest.param(
        "maildir++", ["INBOX", "Entwürfe"], ["", ".Entwürfe"], {"Entwürfe": ".Entwürfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "exists")}, {}, set(),
        id="upgrade-keeps-the-recorded-utf8-folder"),
    pytest.param(
        "maildir++", ["INBOX", "Entwürfe"], ["", ".Entwürfe"], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "exists")}, {}, set(),
        id="unrecorded-utf8-folder-adopted-not-doubled"),
    pytest.param(
        "maildir++", ["INBOX", "Entwürfe"], ["", ".Entw&APw-rfe"], {"Entwürfe": ".Entwürfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "exists")}, {}, set(),
        id="utf8-folder-renamed-to-modified-utf7-follows"),
    pytest.param(
        "maildir++", ["INBOX", "Entwürfe"], ["", ".Entwürfe", ".Entw&APw-rfe"],
        {"Entwürfe": ".Entwürfe"},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "exists")}, {}, {"Entwürfe"},
        id="recorded-utf8-wins-own-left-alone"),
    pytest.param(
        "maildir++", ["INBOX"], ["", ".Entwürfe", ".R&-D"], {},
        {"INBOX": ("", "exists")}, {"Entwürfe": ".Entwürfe", "R&D": ".R&-D"}, set(),
        id="local-folders-in-either-spelling-uploaded"),
    pytest.param(
        "maildir++", ["INBOX"], ["", ".Entwürfe", ".Entw&APw-rfe"], {},
        {"INBOX": ("", "exists")}, {"Entwürfe": ".Entw&APw-rfe"}, {".Entwürfe"},
        id="one-name-in-both-spellings-uploaded-once"),
    pytest.param(
        "maildir++-utf8", ["INBOX", "Entwürfe"], [""], {},
        {"INBOX": ("", "exists"), "Entwürfe": (".Entwürfe", "create")}, {}, set(),
        id="utf8-choice-creates-utf8"),
]


@pytest.mark.parametrize("layout,server,local,known,synced,uploads,skipped", CASES)
def test_pair_folders(layout, server, local, known, synced, uploads, skipped):
    got_synced, got_uploads, got_skipped = pair(layout, server, local, known)
    assert got_synced == synced
    assert got_uploads == uploads
    assert set(got_skipped) == skipped
    used = [rel for rel, _ in got_synced.values()] + list(got_uploads.values())
    assert len(used) == len(set(used))                # never two folders in one Maildir


def test_excluded_folder_peer_copy_is_neither_synced_nor_uploaded():
    synced, uploads, skipped = pair("maildir++-utf8", ["INBOX", "Entwürfe"],
                                    ["", ".Entw&APw-rfe"], exclude=("Entwürfe",))
    assert synced == {"INBOX": ("", "exists")}
    assert uploads == {} and skipped == {}


def test_push_adopts_but_never_creates_local_folders():
    synced, uploads, _ = pair("maildir++-utf8", ["INBOX", "Entwürfe", "Sent"],
                              ["", ".Entw&APw-rfe"], mode="push")
    assert synced == {"INBOX": ("", "exists"), "Entwürfe": (".Entw&APw-rfe", "exists")}
    assert uploads == {}


def test_the_notes_name_the_folders():
    _, _, skipped = pair("maildir++-utf8", ["INBOX", "Entwürfe"],
                         ["", ".Entwürfe", ".Entw&APw-rfe"])
    assert "copy of server folder Entwürfe" in skipped["Entw&APw-rfe"]
    assert ".Entwürfe" in skipped["Entw&APw-rfe"]
    _, _, skipped = pair("maildir++-utf8", ["INBOX", "Entwürfe", "Entw&APw-rfe"],
                         ["", ".Entw&APw-rfe"], {"Entwürfe": ".Entw&APw-rfe"})
    assert "Entwürfe" in skipped["Entw&APw-rfe"]


def maildir(root: Path, rel: str) -> None:
    for sub in ("cur", "new", "tmp"):
        (root / rel / sub).mkdir(parents=True, exist_ok=True)


def test_local_maildirs_lists_peer_names_and_local_folders_only_mailsyncs(tmp_path):
    for rel in ("INBOX", "Top", "Top/.Sub", "Entw&APw-rfe", "100%", "Projects.2026"):
        maildir(tmp_path, rel)
    maildir(tmp_path, ".notmuch")           # another program's, at the top: not looked at
    (tmp_path / "Plain" / "x").mkdir(parents=True)   # no Maildir
    found = local_maildirs(tmp_path, "fs")
    assert found == {"INBOX": ("INBOX",), "Top": ("Top",), "Top/.Sub": None,
                     "Entw&APw-rfe": ("Entw&APw-rfe",), "100%": None,
                     "Projects.2026": ("Projects.2026",)}
    assert local_folders(tmp_path, "fs") == {
        p: rel for rel, p in found.items() if p is not None}


def test_local_maildirs_maildirpp(tmp_path):
    for rel in ("", ".Entw&APw-rfe", "..Sub", ".100%"):
        maildir(tmp_path, rel)
    assert local_maildirs(tmp_path, "maildir++-utf8") == {
        "": ("INBOX",), ".Entw&APw-rfe": ("Entw&APw-rfe",), "..Sub": None, ".100%": None}
    maildir(tmp_path, ".Entwürfe")       # written in UTF-8 before, or made by hand
    assert local_maildirs(tmp_path, "maildir++") == {
        "": ("INBOX",), ".Entw&APw-rfe": ("Entwürfe",), ".Entwürfe": ("Entwürfe",),
        "..Sub": None, ".100%": None}
    assert local_maildirs(tmp_path / "absent", "maildir++") == {}
