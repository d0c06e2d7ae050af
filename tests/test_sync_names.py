"""Hostile server folder names never lead outside the account's maildir (README, "Folder
names"), and every name round-trips.

Dovecot refuses most of these names, so the in-memory server (tests/memory_remote.py,
held to the driver contract by tests/test_contracts.py) stands in: `mailsync.drivers.imap.connect`
is replaced by one returning its session, and the sync runs in-process through
engine.run_account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailsync import folders, names
from mailsync.drivers import imap
from mailsync.config import load_config
from mailsync.accounts import RunOptions, run_account
from mailsync.reporting import SilentReporter
from tests.conftest import write_config
from tests.corpus import make_message
from tests.memory_remote import MemoryServer, MemorySession

HOSTILE = [
    "../../evil", "a/../../b", ".hidden", "foo.bar", "..", ".", "/etc/passwd", "a//b",
    "Entwürfe", "日本語/メール", "tab\tnl\nnul\x00del\x7f", "c1\x85ls\u2028", "back\\slash",
    "100%", "%2E%2E", "%+cont", "new", "cur/tmp", "INBOX/..", "~", "$HOME", "ä" * 200,
]
LONG = "ä" * 200                # 400 bytes: split into two path components
# A folder made locally (as a mail client would, with the escaped name on disk) must
# reach the server under exactly this name; it must be valid for the delimiter.
LOCAL_MADE = {"/": "../../von lokal/ä\x01", ".": "/etc/passwd\x00 ä/.."}
LAYOUTS = ("maildir++", "fs")
DELIMITERS = ("/", ".")


@dataclass
class Setup:
    base: Path
    server: MemoryServer
    config: Path
    layout: str

    @property
    def account(self):
        return load_config(self.config).accounts["fake"]

    @property
    def maildir(self) -> Path:
        return self.account.maildir

    def sync(self, **options):
        return run_account(self.account, RunOptions(command="sync", **options),
                           SilentReporter())

    def local_path(self, server_name: str) -> Path:
        parts = names.canonical_parts(names.server_to_components(server_name,
                                                                 self.server.delimiter))
        rel = names.local_relpath(parts, self.layout)
        return self.maildir / rel if rel else self.maildir

    def local_bodies(self, server_name: str) -> list[bytes]:
        p = self.local_path(server_name)
        return sorted(f.read_bytes() for sub in ("new", "cur") if (p / sub).is_dir()
                      for f in (p / sub).iterdir())


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """make(layout, delimiter) -> Setup: an account whose maildir is two levels down in
    tmp_path (so '../..' from it would still land inside tmp_path, where the test looks)."""
    def make(layout: str = "maildir++", delimiter: str | None = "/") -> Setup:
        # no MOVE (local moves are uploads here), no CONDSTORE: every run looks at all
        server = MemoryServer(delimiter, move=False, condstore=False)
        monkeypatch.setattr(imap, "connect",
                            lambda account, secret, trace=None, **kw: MemorySession(server))
        deep = tmp_path / "one" / "two"
        deep.mkdir(parents=True)
        config = write_config(tmp_path / "config.toml", "fake", {
            "protocol": "imap", "host": "fake.invalid", "user": "u", "password": "p",
            "maildir": str(deep / "Mail"), "state_dir": str(tmp_path / "state"),
            "layout": layout, "max_delete": 1.0})
        return Setup(tmp_path, server, config, layout)
    return make


def everything_under(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [Path(dirpath, n) for n in dirnames + filenames]
    return out


def assert_nothing_outside(s: Setup) -> None:
    """Every path under the test's tmp dir is the config, the state or inside the maildir
    (or one of the maildir's parent folders); no symlink anywhere."""
    maildir, state = os.path.realpath(s.maildir), os.path.realpath(s.base / "state")
    parents = {os.path.realpath(s.base / "one"), os.path.realpath(s.base / "one" / "two")}
    for path in everything_under(s.base):
        assert not path.is_symlink(), path
        real = os.path.realpath(path)
        inside = any(real == r or real.startswith(r + os.sep) for r in (maildir, state))
        assert inside or real in parents or path == s.config, f"written outside: {path}"


def seed(server: MemoryServer) -> dict[str, list[bytes]]:
    server.folder("INBOX").add(make_message(0), "S")
    bodies = {"INBOX": [make_message(0)]}
    for i, name in enumerate(HOSTILE, start=1):
        msgs = [make_message(100 + i), make_message(200 + i)]
        folder = server.folder(name)
        folder.add(msgs[0], "F")
        folder.add(msgs[1])
        bodies[name] = msgs
    return bodies


@pytest.mark.parametrize("delimiter", DELIMITERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_hostile_server_names_stay_inside_the_maildir_and_round_trip(fake, layout, delimiter):
    s = fake(layout, delimiter)
    bodies = seed(s.server)
    result = s.sync()
    assert result.ok, result.error
    assert [f.name for f in result.folders if not f.ok] == []
    assert_nothing_outside(s)
    for name, msgs in bodies.items():                       # each folder got its mail
        assert s.local_bodies(name) == sorted(msgs), name
        rel = os.path.relpath(s.local_path(name), s.maildir)
        assert names.is_safe_relpath("" if rel == "." else rel), rel
    # Every local folder maps back to exactly the server name it came from. (In maildir++
    # a name longer than 255 bytes lives in a "%+" continuation folder below the root,
    # which local_folders() does not look into; the state knows the folder, so it syncs.)
    found = {names.components_to_server(parts, delimiter)
             for parts in folders.local_folders(s.maildir, layout)}
    unlisted = {LONG} if layout == "maildir++" else set()
    assert found == set(bodies) - unlisted
    assert s.server.log == []                               # nothing went to the server

    again = s.sync(dry_run=True)
    assert again.ok and again.plan == []                    # a second sync plans nothing
    second = s.sync()
    assert second.ok and s.server.log == []
    assert second.downloaded == second.uploaded == second.flags_changed == 0
    assert_nothing_outside(s)


@pytest.mark.parametrize("delimiter", DELIMITERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_local_folder_with_an_escaped_name_reaches_the_server_under_that_name(
        fake, layout, delimiter):
    s = fake(layout, delimiter)
    seed(s.server)
    assert s.sync().ok
    name = LOCAL_MADE[delimiter]
    path = s.local_path(name)
    assert path.parent == s.maildir or layout == "fs"
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    (path / "new" / "1700000000.local.test").write_bytes(make_message(300))
    result = s.sync()
    assert result.ok, result.error
    assert ("create", name) in s.server.log
    assert [m[0] for m in s.server.folders[name].messages.values()] == [make_message(300)]
    s.server.log.clear()
    assert s.sync().ok and s.server.log == []
    assert s.sync(dry_run=True).plan == []
    assert_nothing_outside(s)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_folder_symlinked_outside_the_maildir_is_refused_and_others_go_on(fake, layout):
    """Decision: a folder whose local path leads outside the maildir (a symbolic link) is a
    folder error with exit code 74 (LocalIOError) in its entry; the account's other folders
    still sync, so the account ends with exit 1 (partial). Nothing is read from or written
    through the link, nothing of it reaches the server. The same holds for a link in place
    of a folder's cur/, new/ or tmp/."""
    s = fake(layout, "/")
    s.server.folder("INBOX").add(make_message(1))
    s.server.folder("Work").add(make_message(2))
    outside = s.base / "outside"
    for sub in ("cur", "new", "tmp"):
        (outside / sub).mkdir(parents=True)
    (outside / "new" / "1700000000.mine.test").write_bytes(make_message(3))
    s.maildir.mkdir(parents=True)
    (s.maildir / (".Local" if layout == "maildir++" else "Local")).symlink_to(outside)
    (s.maildir / (".Work" if layout == "maildir++" else "Work")).symlink_to(outside)
    before = {p: p.read_bytes() if p.is_file() else None for p in everything_under(outside)}

    result = s.sync()
    assert not result.ok and result.exit_code == 1
    failed = {f.name: f for f in result.folders if not f.ok}
    # maildir++ lists the root's ".*" entries, so the local-only link is found and refused;
    # the fs layout walks the tree without following links, so it never sees it at all.
    assert set(failed) == ({"Work", "Local"} if layout == "maildir++" else {"Work"})
    for f in failed.values():
        assert f.exit_code == 74 and "symbolic link" in f.error
    assert "INBOX" in {f.name for f in result.folders if f.ok}
    assert s.local_bodies("INBOX") == [make_message(1)]
    assert {p: p.read_bytes() if p.is_file() else None
            for p in everything_under(outside)} == before          # nothing written there
    assert "Local" not in s.server.folders and s.server.log == []  # nothing uploaded
    assert [m[0] for m in s.server.folders["Work"].messages.values()] == [make_message(2)]


@pytest.mark.parametrize("sub", ["tmp", "new", "cur"])
def test_folder_whose_subfolder_is_a_symlink_outside_is_refused(fake, sub):
    s = fake("maildir++", "/")
    s.server.folder("INBOX").add(make_message(1))
    s.server.folder("Work").add(make_message(2))
    assert s.sync().ok
    s.server.folders["Work"].add(make_message(4))
    outside = s.base / "outside"
    outside.mkdir()
    work = s.maildir / ".Work"
    moved = s.base / "moved"
    (work / sub).rename(moved)
    (work / sub).symlink_to(outside)
    s.server.folders["INBOX"].add(make_message(5))
    result = s.sync()
    assert result.exit_code == 1
    failed, = [f for f in result.folders if not f.ok]
    assert failed.name == "Work" and failed.exit_code == 74
    assert list(outside.iterdir()) == []
    assert make_message(5) in s.local_bodies("INBOX")
