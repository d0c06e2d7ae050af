"""The sync scenarios against every server configuration we can run here (issue 16).

One scenario list (initial, no-op, flags both ways, uploads, new folders both ways,
deletions both ways, local moves, UIDVALIDITY) over:

* ``stock``: the session's Dovecot, as Debian ships it (CONDSTORE, QRESYNC, UIDPLUS,
  MOVE, LIST-STATUS, ESEARCH, NAMESPACE with no prefix, separator "/");
* ``prefix``: Dovecot with ``namespace inbox { prefix = INBOX. separator = . }`` (Courier's
  and older Dovecot setups' layout): every folder but INBOX is ``INBOX.Name`` on the
  server and ``.Name`` locally;
* ``trimmed``: Dovecot advertising neither UIDPLUS, MOVE, CONDSTORE, QRESYNC, ESEARCH
  nor LIST-STATUS (what mailsync may use is what is advertised; the trace test checks
  that it never sends those commands);
* ``cyrus-alt``: Cyrus IMAP 3.6 (tests/cyrus.py) in its alternate namespace (folders
  beside INBOX, separator "/", other users and shared folders in their own namespaces);
* ``cyrus-classic``: Cyrus in its classic namespace (``INBOX.Sent``, separator ".",
  shared folders with no prefix at all).

Each configuration's server is started once per module; each test takes a fresh user.
Runs are in-process (`mailsync.cli.app.main`) to keep the matrix fast.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailsync.imapsync import folder as sync_module
from mailsync import folders as folders_module
from mailsync.errors import ProtocolError
from imapclient import IMAPClient

from tests.conftest import write_config
from tests.corpus import make_message
from tests.cyrus import Cyrus, require_cyrus
from tests.dovecot import Dovecot, private_dovecot, require_or_skip
from tests.imaphelp import Local, Remote

TRIMMED_CAPABILITIES = ("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
                        "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND "
                        "URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE LIST-EXTENDED "
                        "I18NLEVEL=1 SEARCHRES WITHIN CONTEXT=SEARCH SPECIAL-USE BINARY "
                        "LITERAL+ NOTIFY")
NOT_ADVERTISED = ("UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH", "LIST-STATUS")


@dataclass
class ServerConf:
    name: str
    server: Dovecot | Cyrus
    prefix: str          # the personal namespace's prefix: server name = prefix + name
    sep: str
    tls: bool = True     # Dovecot: implicit TLS; Cyrus here: plain IMAP on loopback

    def full(self, folder: str) -> str:
        """The server's name of a folder the user sees as `folder` ("/"-separated)."""
        if folder == "INBOX":
            return folder
        return self.prefix + folder.replace("/", self.sep)


@pytest.fixture(scope="module")
def prefix_dovecot():
    with private_dovecot(namespace_prefix="INBOX.", separator=".") as server:
        yield server


@pytest.fixture(scope="module")
def trimmed_dovecot():
    with private_dovecot(extra_config=f"imap_capability = {TRIMMED_CAPABILITIES}\n") as server:
        yield server


def _start_cyrus(**kwargs) -> Cyrus:
    require_or_skip(require_cyrus, "Cyrus IMAP not installed (.ci/setup installs it)")
    return Cyrus(**kwargs).start()


@pytest.fixture(scope="module")
def cyrus_alt():
    server = _start_cyrus(altnamespace=True, unixhierarchysep=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cyrus_classic():
    server = _start_cyrus(altnamespace=False, unixhierarchysep=False)
    yield server
    server.stop()


SERVERS = ("stock", "prefix", "trimmed", "cyrus-alt", "cyrus-classic")


@pytest.fixture(params=SERVERS)
def conf(request) -> ServerConf:
    if request.param == "stock":
        server = request.getfixturevalue("dovecot")
        return ServerConf("stock", server, "", server.separator)
    if request.param == "prefix":
        return ServerConf("prefix", request.getfixturevalue("prefix_dovecot"), "INBOX.", ".")
    if request.param.startswith("cyrus"):
        server = request.getfixturevalue(request.param.replace("-", "_"))
        return ServerConf(request.param, server, server.prefix, server.separator, tls=False)
    server = request.getfixturevalue("trimmed_dovecot")
    return ServerConf("trimmed", server, "", server.separator)


class Account:
    """A fresh user on conf's server, its mailsync config, and both sides' hands."""

    def __init__(self, conf: ServerConf, base: Path, capsys, **keys) -> None:
        self.conf, self.capsys = conf, capsys
        server = conf.server
        self.user = server.new_user()
        self.maildir, self.state_dir = base / "Mail", base / "state"
        settings = {"protocol": "imap", "host": server.host, "user": self.user,
                    "password": server.password, "maildir": str(self.maildir),
                    "state_dir": str(self.state_dir), "timeout": 20}
        if conf.tls:
            settings.update(port=server.imaps_port, ca_file=str(server.ca_file))
        else:
            settings.update(port=server.imap_port, tls="none", allow_plaintext=True)
        settings.update(keys)
        self.config = write_config(base / "config.toml", "test", settings)
        self.remote = Remote(server, self.user) if conf.tls else PlainRemote(server,
                                                                             self.user)
        self.local = Local(self.maildir)

    def run(self, *args: str) -> tuple[int, dict, str]:
        """mailsync --json ARGS in this process: (exit status, the account's summary,
        stderr)."""
        from mailsync.cli.app import main
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(["-c", str(self.config), "--json", "--no-progress", *args])
        captured = self.capsys.readouterr()
        summary = json.loads(captured.out)["accounts"][0] if captured.out.strip() else {}
        return done.value.code, summary, captured.err

    def sync(self, *args: str) -> tuple[int, dict, str]:
        return self.run("sync", *args)

    def server_expunge(self, folder: str, body: bytes) -> None:
        """Another client deletes a message (a plain EXPUNGE: nothing else is marked)."""
        uid = self.remote.uid_of(self.conf.full(folder), body)
        self.remote.set_flags(self.conf.full(folder), uid, add="T")
        self.remote.c.expunge()

    def server(self, folder: str = "INBOX") -> dict[bytes, str]:
        """body -> flag letters of the server folder the user sees as `folder`."""
        return self.remote.flags_by_body(self.conf.full(folder))

    def local_dirs(self) -> list[str]:
        return sorted(p.name for p in self.maildir.iterdir()
                      if p.name.startswith(".") and p.is_dir())


class PlainRemote(Remote):
    """Remote over plain IMAP (the Cyrus fixture listens without TLS, on loopback)."""

    def __init__(self, server, user: str) -> None:
        self.c = IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=30)
        self.c.login(user, server.password)


@pytest.fixture
def account(conf, tmp_path, capsys):
    made: list[Account] = []

    def make(**keys) -> Account:
        base = tmp_path / f"acct{len(made)}"
        base.mkdir()
        made.append(Account(conf, base, capsys, **keys))
        return made[-1]

    yield make
    for a in made:
        a.remote.close()


NO_ID = b"Subject: a note without a Message-ID\nFrom: me@example.org\n\nbody\n"


def msg(n: int) -> bytes:
    return make_message(n, size=600)


def assert_dirs(a: Account, expected: list[str]) -> None:
    """The local folders are these, give or take parents a server made on its own
    (Cyrus creates Projects with Projects/2026); none carries the namespace prefix."""
    dirs = a.local_dirs()
    assert set(expected) <= set(dirs), dirs
    assert all(any(e.startswith(x + ".") for e in expected) for x in set(dirs) - set(expected)
               ), dirs


def ok(result: tuple[int, dict, str]) -> dict:
    code, summary, err = result
    assert code == 0, (code, summary, err)
    return summary


# Scenarios ------------------------------------------------------------------------------

def test_initial_then_noop(account):
    a = account()
    for n in range(3):
        a.remote.append("INBOX", msg(n), "S" if n == 0 else "")
    a.remote.create(a.conf.full("Archive"))
    a.remote.create(a.conf.full("Projects/2026"))
    for n in range(3, 5):
        a.remote.append(a.conf.full("Archive"), msg(n))
    a.remote.append(a.conf.full("Projects/2026"), msg(5))

    first = ok(a.sync())
    assert first["downloaded"] == 6
    assert {f["name"] for f in first["folders"]} >= {
        "INBOX", a.conf.full("Archive"), a.conf.full("Projects/2026")}
    # Local names never carry the server's namespace prefix.
    assert_dirs(a, [".Archive", ".Projects.2026"])
    assert a.local.bodies("INBOX") == sorted(msg(n) for n in range(3))
    assert a.local.bodies("Archive") == sorted([msg(3), msg(4)])
    assert a.local.flags_by_body("INBOX")[msg(0)] == "S"

    again = ok(a.sync())
    for key in ("downloaded", "uploaded", "flags_changed", "deleted_local",
                "deleted_remote"):
        assert again[key] == 0, key
    assert_dirs(a, [".Archive", ".Projects.2026"])


def test_flags_both_ways(account):
    a = account()
    for n in range(3):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    a.remote.set_flags("INBOX", a.remote.uid_of("INBOX", msg(0)), add="SF")
    a.local.set_flags("INBOX", msg(1), "R")
    s = ok(a.sync())
    assert s["flags_changed"] == 2
    assert a.local.flags_by_body("INBOX")[msg(0)] == "FS"
    assert a.server()[msg(1)] == "R"
    assert ok(a.sync())["flags_changed"] == 0


def test_uploads_and_new_folders_both_ways(account):
    a = account()
    a.remote.append("INBOX", msg(0))
    ok(a.sync())
    a.local.deliver("INBOX", msg(1), "S")
    a.local.deliver("INBOX", NO_ID)                # found again by size and header
    a.local.deliver("Foo", msg(2))                 # a folder made by a local mail client
    a.local.deliver("Foo/Bar", msg(3))
    a.remote.create(a.conf.full("Server Made"))
    a.remote.append(a.conf.full("Server Made"), msg(4))

    s = ok(a.sync())
    assert (s["uploaded"], s["downloaded"]) == (4, 1)
    assert a.server("INBOX") == {msg(0): "", msg(1): "S", NO_ID: ""}
    # New local folders are created under the personal prefix (CREATE INBOX.Foo).
    assert a.server("Foo") == {msg(2): ""}
    assert a.server("Foo/Bar") == {msg(3): ""}
    assert a.conf.full("Foo") in a.remote.folders()
    assert a.local.bodies("Server Made") == [msg(4)]
    assert_dirs(a, [".Foo", ".Foo.Bar", ".Server Made"])
    again = ok(a.sync())
    assert (again["uploaded"], again["downloaded"]) == (0, 0)


def test_deletions_both_ways(account):
    a = account()
    for n in range(4):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    a.local.delete("INBOX", msg(0))
    a.server_expunge("INBOX", msg(1))
    s = ok(a.sync())
    assert (s["deleted_remote"], s["deleted_local"], s["left_marked"]) == (1, 1, 0)
    assert sorted(a.server()) == sorted([msg(2), msg(3)])
    assert a.local.bodies("INBOX") == sorted([msg(2), msg(3)])
    assert ok(a.sync())["deleted_remote"] == 0


def test_local_deletion_beside_another_clients_mark(account):
    """Without UIDPLUS a plain EXPUNGE would also remove what another client marked
    \\Deleted: ours stays marked and is said so (exit 0), and goes once it is safe."""
    a = account()
    for n in range(3):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    other = a.remote.uid_of("INBOX", msg(1))
    a.remote.set_flags("INBOX", other, add="T")   # another client's, not expunged
    a.local.delete("INBOX", msg(0))
    s = ok(a.sync())
    if a.conf.name == "trimmed":
        assert (s["deleted_remote"], s["left_marked"]) == (0, 1)
        assert a.server()[msg(0)] == "T"          # marked, still there
    else:
        assert (s["deleted_remote"], s["left_marked"]) == (1, 0)
        assert msg(0) not in a.server()
    assert a.server()[msg(1)] == "T"               # the other client's mark: untouched
    assert msg(1) in a.local.bodies("INBOX")
    a.remote.set_flags("INBOX", other, remove="T")  # the other client changed its mind
    s = ok(a.sync())
    assert msg(0) not in a.server()
    assert sorted(a.server()) == sorted([msg(1), msg(2)])
    assert a.local.bodies("INBOX") == sorted([msg(1), msg(2)])


def test_local_move(account):
    a = account()
    a.remote.create(a.conf.full("Archive"))
    for n in range(3):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    a.local.move("INBOX", msg(0), "Archive")
    s = ok(a.sync())
    assert s["uploaded"] == 0                      # moved on the server, not uploaded
    assert sorted(a.server()) == sorted([msg(1), msg(2)])
    assert list(a.server("Archive")) == [msg(0)]
    assert a.local.bodies("Archive") == [msg(0)]
    again = ok(a.sync())
    assert (again["uploaded"], again["downloaded"], again["deleted_local"]) == (0, 0, 0)


def test_uidvalidity_change(account):
    a = account()
    folder = a.conf.full("Archive")
    a.remote.create(folder)
    for n in range(3):
        a.remote.append(folder, msg(n))
    ok(a.sync())
    before = a.remote.uidvalidity(folder)
    a.remote.delete_folder(folder)                 # rebuilt: same mail, new UIDs
    a.remote.create(folder)
    for n in range(3):
        a.remote.append(folder, msg(n))
    assert a.remote.uidvalidity(folder) != before
    s = ok(a.sync())
    assert (s["downloaded"], s["uploaded"], s["deleted_local"]) == (0, 0, 0)
    assert a.local.bodies("Archive") == sorted(msg(n) for n in range(3))
    a.remote.append(folder, msg(3))
    assert ok(a.sync())["downloaded"] == 1


def test_summary_keeps_counts_when_a_folder_breaks_the_run(account, monkeypatch):
    """A folder whose server breaks the protocol ends the run (65), but the summary
    still counts what the folders begun did and lists them."""
    a = account(connections=1)
    for n in range(2):
        a.remote.append("INBOX", msg(n))
    a.remote.create(a.conf.full("Broken"))
    a.remote.append(a.conf.full("Broken"), msg(2))
    real = sync_module.FolderSync.run
    ran: list[str] = []

    def run(self):
        ran.append(self.name)
        if len(ran) == 2:                          # the second folder breaks the run
            raise ProtocolError("the server broke the protocol (test)")
        return real(self)

    monkeypatch.setattr(sync_module.FolderSync, "run", run)
    code, s, _ = a.sync()
    assert code == 65
    by_name = {f["name"]: f for f in s["folders"]}
    first, second = ran
    assert by_name[first]["ok"] and by_name[first]["downloaded"] > 0
    assert s["downloaded"] == by_name[first]["downloaded"]
    assert not by_name[second]["ok"] and by_name[second]["exit_code"] == 65
    assert by_name[second]["error"] is None        # the run's error is the account's


# Namespaces -----------------------------------------------------------------------------

def test_globs_take_the_names_users_see(account):
    """`folders`, `exclude` and `sync --folder` take the name without the prefix
    (`Archive`, `Projects/2026`) and the server's whole name (`INBOX.Archive`) alike; a
    `--folder` that matches nothing says so (exit 64), never "nothing to do"."""
    a = account(exclude=["Junk"])
    for folder in ("Archive", "Junk", "Projects/2026"):
        a.remote.create(a.conf.full(folder))
        a.remote.append(a.conf.full(folder), msg(len(folder)))
    a.remote.append("INBOX", msg(0))
    s = ok(a.sync("--folder", "Archive"))
    assert [f["name"] for f in s["folders"]] == [a.conf.full("Archive")]
    s = ok(a.sync("--folder", a.conf.full("Projects/2026")))
    assert [f["name"] for f in s["folders"]] == [a.conf.full("Projects/2026")]
    s = ok(a.sync("--folder", "Projects/*"))
    assert [f["name"] for f in s["folders"]] == [a.conf.full("Projects/2026")]
    code, s, err = a.sync("--folder", "Nowhere")
    assert code == 64 and "'Nowhere' matches no folder" in err, err
    s = ok(a.sync())
    assert ".Junk" not in a.local_dirs()
    assert_dirs(a, [".Archive", ".Projects.2026"])


@pytest.mark.parametrize("conf", ["prefix", "cyrus-classic"], indirect=True)
def test_state_of_a_version_without_namespaces_keeps_its_folders(account, monkeypatch):
    """A state that recorded `INBOX.Archive` at `.INBOX.Archive` (what mailsync did
    before it read NAMESPACE) keeps syncing there: no second `.Archive`, nothing
    downloaded again."""
    a = account()
    a.remote.create(a.conf.full("Archive"))
    for n in range(2):
        a.remote.append(a.conf.full("Archive"), msg(n))
    with monkeypatch.context() as m:
        m.setattr(folders_module, "namespace_of", lambda session: folders_module.Namespace())
        assert ok(a.sync())["downloaded"] == 2
    assert a.local_dirs() == [".INBOX.Archive"]
    a.remote.append(a.conf.full("Archive"), msg(2))
    s = ok(a.sync())
    assert (s["downloaded"], s["uploaded"]) == (1, 0)
    assert a.local_dirs() == [".INBOX.Archive"]
    assert len(a.local.files("INBOX/Archive")) == 3
    db = sqlite3.connect(a.state_dir / "state.sqlite3")
    try:
        assert db.execute("SELECT name, relpath FROM imap_folders WHERE name != 'INBOX'"
                          ).fetchall() == [("INBOX.Archive", ".INBOX.Archive")]
    finally:
        db.close()
    # Renamed to the name without the prefix while no run went: synced there, no copy.
    os.rename(a.maildir / ".INBOX.Archive", a.maildir / ".Archive")
    a.remote.append(a.conf.full("Archive"), msg(3))
    s = ok(a.sync())
    assert (s["downloaded"], s["uploaded"], s["deleted_remote"]) == (1, 0, 0)
    assert a.local_dirs() == [".Archive"]
    assert len(a.local.files("Archive")) == 4


# Capabilities ---------------------------------------------------------------------------

@pytest.mark.parametrize("conf", ["trimmed"], indirect=True)
def test_no_command_of_an_extension_the_server_lacks(account):
    """Against the trimmed server the protocol trace holds no command of UIDPLUS, MOVE,
    CONDSTORE/QRESYNC, ESEARCH or LIST-STATUS, through deletions and moves."""
    a = account()
    a.remote.create("Archive")
    for n in range(4):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    a.local.delete("INBOX", msg(0))
    a.local.move("INBOX", msg(1), "Archive")
    a.local.set_flags("INBOX", msg(2), "F")
    code, s, err = a.run("-vv", "sync")
    assert code == 0, err
    assert s["deleted_remote"] == 1 and s["uploaded"] == 0
    sent = [line for line in err.splitlines() if line.startswith("> ")]
    assert any("EXPUNGE" in line for line in sent), err[-2000:]
    for line in sent:
        for command in ("UID EXPUNGE", "UID MOVE", "CHANGEDSINCE", "CONDSTORE", "QRESYNC",
                        "VANISHED", "RETURN (STATUS", "RETURN (", "ESEARCH"):
            assert command not in line, line
    assert sorted(a.server()) == sorted([msg(2), msg(3)])
    assert list(a.server("Archive")) == [msg(1)]


@pytest.mark.parametrize("conf", ["stock", "cyrus-alt"], indirect=True)
def test_with_qresync_a_resync_learns_expunges_from_vanished(account):
    """Where the server has QRESYNC, an incremental run asks for VANISHED and lists no
    UIDs; what another client expunged is deleted locally, nothing else."""
    a = account()
    for n in range(4):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    ok(a.sync())                               # a record to be incremental from
    a.remote.expunge("INBOX", a.remote.uid_of("INBOX", msg(1)))
    code, s, err = a.run("-vv", "sync")
    assert code == 0, err
    assert s["deleted_local"] == 1
    sent = [line for line in err.splitlines() if line.startswith("> ")]
    assert any("VANISHED" in line for line in sent), err[-2000:]
    assert not any("SEARCH ALL" in line for line in sent), err[-2000:]
    assert sorted(a.local.bodies()) == sorted([msg(0), msg(2), msg(3)])


@pytest.mark.parametrize("conf", ["prefix", "cyrus-classic"], indirect=True)
def test_folders_shows_local_folders_without_the_prefix(account):
    a = account()
    a.remote.create(a.conf.full("Archive"))
    from mailsync.cli.app import main
    a.capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["-c", str(a.config), "--json", "folders", "test"])
    assert done.value.code == 0
    rows = {r["server_folder"]: r for r in json.loads(a.capsys.readouterr().out)["folders"]}
    assert rows[a.conf.full("Archive")]["local_folder"] == str(a.maildir / ".Archive")
    assert "new" in rows[a.conf.full("Archive")]["note"]


@pytest.mark.parametrize("conf", ["trimmed"], indirect=True)
def test_a_local_move_beside_another_clients_mark(account):
    """No MOVE, no UIDPLUS, and another client's \\Deleted mark in the source: the COPY
    and expunge would not be exact, so the message is uploaded to its new folder and its
    old copy left marked (said, exit 0) until the mark is gone."""
    a = account()
    a.remote.create("Archive")
    for n in range(3):
        a.remote.append("INBOX", msg(n))
    ok(a.sync())
    other = a.remote.uid_of("INBOX", msg(1))
    a.remote.set_flags("INBOX", other, add="T")
    a.local.move("INBOX", msg(0), "Archive")
    s = ok(a.sync())
    assert (s["uploaded"], s["left_marked"], s["deleted_remote"]) == (1, 1, 0)
    assert list(a.server("Archive")) == [msg(0)]
    assert a.server()[msg(0)] == "T" and a.server()[msg(1)] == "T"
    a.remote.set_flags("INBOX", other, remove="T")
    s = ok(a.sync())
    assert (s["deleted_remote"], s["left_marked"], s["uploaded"]) == (1, 0, 0)
    assert sorted(a.server()) == sorted([msg(1), msg(2)])
    assert a.local.bodies("INBOX") == sorted([msg(1), msg(2)])
    assert a.local.bodies("Archive") == [msg(0)]
