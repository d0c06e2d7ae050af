"""Any folder name a server sends is synced, or named when it cannot be (issue 16), and
namespaces other than the personal one are left alone unless asked for.

Dovecot refuses names that are not modified UTF-7, so a rewriting proxy in front of the
session's Dovecot (plain IMAP on loopback) shows the client a raw UTF-8 name, a control
character and a bare `&` for three ordinary server folders. The names that cannot be
synced at all come from the scripted fake server.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from mailsync import folders, names
from mailsync.drivers import imap
from mailsync.folders import Namespace, ServerSide, pair_folders
from tests.conftest import write_config
from tests.corpus import make_message
from tests.fakeserver import FakeRun, FakeServer, imap_script
from tests.imaphelp import Remote

# server's name (as Dovecot quotes it) <-> the name the client sees
RENAMED = {b'"R and D"': b'"R&D"',                                # & alone: not mUTF-7
           b'"Entw rfe"': '"Entwürfe"'.encode(),                 # raw UTF-8
           b'"Ctl one"': b'"Ctl\x01one"'}                          # a control character
# the name the client sees, on disk in modified UTF-7 (maildir++, as Dovecot writes it)
LOCAL = {"R and D": ".R&-D", "Entw rfe": ".Entw&APw-rfe", "Ctl one": ".Ctl&AAE-one"}


class RenamingProxy:
    """Forwards loopback TCP to a plain IMAP port, rewriting folder names both ways
    (each name is short: it never straddles two reads of a command or answer line)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> "RenamingProxy":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
        self.listener.close()

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            self._spawn(self._pump, client, server, {v: k for k, v in RENAMED.items()})
            self._spawn(self._pump, server, client, RENAMED)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, mapping: dict[bytes, bytes]) -> None:
        try:
            while data := src.recv(65536):
                for old, new in mapping.items():
                    data = data.replace(old, new)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _run(config, capsys, *args: str) -> tuple[int, dict, str]:
    from mailsync.cli.app import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["-c", str(config), "--json", "--no-progress", *args])
    captured = capsys.readouterr()
    return done.value.code, json.loads(captured.out), captured.err


def test_names_that_are_not_modified_utf7_are_synced_and_round_trip(dovecot, tmp_path,
                                                                    capsys):
    user = dovecot.new_user()
    remote = Remote(dovecot, user)
    try:
        for n, name in enumerate(LOCAL):
            remote.create(name)
            remote.append(name, make_message(n, size=500))
        with RenamingProxy(dovecot.host, dovecot.imap_port) as proxy:
            maildir = tmp_path / "Mail"
            config = write_config(tmp_path / "config.toml", "test", {
                "protocol": "imap", "host": "127.0.0.1", "port": proxy.port, "tls": "none",
                "allow_plaintext": True, "user": user, "password": dovecot.password,
                "maildir": str(maildir), "state_dir": str(tmp_path / "state"),
                "timeout": 20})
            code, out, err = _run(config, capsys, "sync")
            summary = out["accounts"][0]
            assert code == 0, err
            assert summary["skipped_folders"] == []
            assert summary["downloaded"] == 3
            assert sorted(f["name"] for f in summary["folders"]) == sorted(
                ["INBOX", "R&D", "Entwürfe", "Ctl\x01one"])
            for n, (name, relpath) in enumerate(LOCAL.items()):
                files = [p for sub in ("new", "cur") for p in (maildir / relpath / sub).iterdir()]
                assert [p.read_bytes() for p in files] == [make_message(n, size=500)], name
                folder = maildir / relpath
                (folder / "new" / f"local{n}.x").write_bytes(make_message(10 + n, size=500))
            code, out, err = _run(config, capsys, "sync")
            assert code == 0, err
            assert out["accounts"][0]["uploaded"] == 3
            code, out, err = _run(config, capsys, "sync")
            again = out["accounts"][0]
            assert code == 0 and again["uploaded"] == again["downloaded"] == 0, err
        for n, name in enumerate(LOCAL):        # on the server, under its own names
            assert remote.bodies(name) == sorted([make_message(n, size=500),
                                                  make_message(10 + n, size=500)]), name
        assert names.decode_mutf7("Entw&APw-rfe") == "Entwürfe"
    finally:
        remote.close()


def test_a_folder_that_cannot_be_synced_is_named_in_the_summary_and_status(tmp_path):
    raw = [b'(\\HasNoChildren) "/" {11}\r\nline\r\nbreak', b'(\\HasNoChildren) "/" "R&D"']
    run = FakeRun(tmp_path, "imap")
    with FakeServer(imap_script(folders=["INBOX", *raw], messages={1: b"Subject: a\n\nb\n"})
                    ) as server:
        result = run.run(server, "--json", "sync")
        status = run.run(server, "--json", "status")
    assert result.code == 1, result.err
    summary = json.loads(result.out)["accounts"][0]
    assert summary["downloaded"] == 1
    assert [s["name"] for s in summary["skipped_folders"]] == ["line\\r\\nbreak"]
    assert "line break" in summary["skipped_folders"][0]["reason"]
    assert "folder line\\r\\nbreak skipped" in result.err
    account = json.loads(status.out)["accounts"][0]
    shown = {f["name"]: f for f in account["folders"]}
    assert "line\\r\\nbreak" in shown, account
    assert shown["line\\r\\nbreak"]["in_last_run"]


# Namespaces other than the personal one -------------------------------------------------

CYRUS_CLASSIC = Namespace("INBOX.", ("user.", ""))


def _pairings(server_names, include=("*",), exclude=(), local=None, namespace=CYRUS_CLASSIC,
              delimiter=".", mode="sync"):
    side = [ServerSide(n, n, delimiter) for n in server_names]
    listing = {rel: names.parts_from_local(rel, "maildir++") for rel in (local or [])}
    pairings, skipped = pair_folders(side, listing, {}, "maildir++", mode, tuple(include),
                                     tuple(exclude), delimiter, namespace)
    return {p.name: p for p in pairings}, skipped


def test_only_the_personal_namespace_by_default():
    found, _ = _pairings(["INBOX", "INBOX.Sent", "INBOX.a.b", "user.bob", "user.bob.Sent",
                          "Shared Team"])
    assert {n: p.relpath for n, p in found.items()} == {
        "INBOX": "", "INBOX.Sent": ".Sent", "INBOX.a.b": ".a.b"}


def test_other_namespaces_when_a_glob_names_them():
    found, _ = _pairings(["INBOX", "INBOX.Sent", "user.bob", "user.bob.Sent", "Shared Team"],
                         include=("*", "user.bob.*", "Shared*"))
    assert {n: p.relpath for n, p in found.items()} == {
        "INBOX": "", "INBOX.Sent": ".Sent", "user.bob.Sent": ".user.bob.Sent",
        "Shared Team": ".Shared Team"}


@pytest.mark.parametrize("pattern", ["Sent", "INBOX.Sent", "S*", "INBOX.S*"])
def test_excludes_take_either_name(pattern):
    found, _ = _pairings(["INBOX", "INBOX.Sent", "INBOX.Archive"], exclude=(pattern,))
    assert sorted(found) == ["INBOX", "INBOX.Archive"]


def test_an_exclude_of_inbox_star_is_not_everything():
    found, _ = _pairings(["INBOX", "INBOX.Sent", "INBOX.Archive"], exclude=("INBOX*",))
    assert sorted(found) == ["INBOX.Archive", "INBOX.Sent"]


def test_new_local_folders_go_under_the_prefix():
    found, _ = _pairings(["INBOX", "INBOX.Sent"], local=["", ".Sent", ".Foo", ".Foo.Bar"])
    assert found["INBOX.Foo"].create_remote and found["INBOX.Foo"].relpath == ".Foo"
    assert found["INBOX.Foo.Bar"].relpath == ".Foo.Bar"
    assert not found["INBOX.Sent"].create_remote


def test_no_prefix_other_namespaces_by_prefix():
    ns = Namespace("", ("#shared/", "#users/"))
    found, _ = _pairings(["INBOX", "Sent", "#shared/team", "#users/bob/INBOX"],
                         namespace=ns, delimiter="/")
    assert sorted(found) == ["INBOX", "Sent"]
    assert ns.shown("Sent") == "Sent" and ns.outside("#shared/team")
    assert not folders.Namespace("INBOX.").outside("inbox")


# NAMESPACE answers ----------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    (['* NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))', "{tag} OK done"],
     imap.Namespaces("INBOX.", ".", (("user.", "."),))),
    (['* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Shared Folders/" "/"))',
      "{tag} OK done"],
     imap.Namespaces("", "/", (("Other Users/", "/"), ("Shared Folders/", "/")))),
    (['* NAMESPACE NIL NIL NIL', "{tag} OK done"], imap.Namespaces("", "/", ())),
    (["{tag} NO not today"], imap.Namespaces("", "/", ())),
    (['* NAMESPACE (("INBOX." "." "X-EXT" ("a"))) NIL NIL', "{tag} OK done"],
     imap.Namespaces("", "/", ())),                       # unreadable: no namespace
])
def test_namespace_answers(tmp_path, answer, expected):
    run = FakeRun(tmp_path, "imap")
    with FakeServer(imap_script({"NAMESPACE": answer},
                                capabilities="IMAP4rev1 UIDPLUS NAMESPACE AUTH=PLAIN")) as server:
        from mailsync.config import load_config
        run.run(server, "check")                          # writes the config
        account = load_config(run.config).accounts["test"]
        session = imap.connect(account, account.password)
        try:
            assert session.namespaces == expected
        finally:
            session.logout()
