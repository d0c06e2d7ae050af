"""Fill a Maildir the way a long-time mbsync or offlineimap user's is: by running the real
tool (Debian's ``isync`` and ``offlineimap3``) against the test Dovecot.

No pytest import at module level: ``require()`` imports it only to skip or fail.

Every run gets its own config file and its own HOME under the caller's directory, so
nothing of the invoking user's home is read or written; it connects with TLS to the
fixture's IMAPS port as ``localhost`` (the fixture certificate names ``localhost`` and
``127.0.0.1``, and both tools check the host name against a DNS name only), trusting
only ``server.ca_file`` besides the system store, with the fixture password. Both tools
are one-shot processes run with a timeout (``subprocess.run`` kills the child by pid
when it expires).

What the peers write (isync 1.4.4, offlineimap 8.0.0, seen by running them)
--------------------------------------------------------------------------------
Folder names on disk: both keep the server's modified UTF-7 spelling, so ``Entwürfe``
is ``Entw&APw-rfe`` (``.Entw&APw-rfe`` with Maildir++); mailsync writes UTF-8
(``.Entwürfe``). Folder ``Projects/2026`` and INBOX go to:

=========================  ==================  =====================  ==================
peer layout                INBOX               Projects/2026          mailsync layout
=========================  ==================  =====================  ==================
mbsync Maildir++           ``<root>``          ``.Projects.2026``     ``maildir++``
mbsync Verbatim            ``<root>/INBOX``    ``Projects/2026``      ``fs``
mbsync Legacy              ``<root>/INBOX``    ``Projects/.2026``     none (``fs`` nearest)
offlineimap default        ``<root>/INBOX``    ``Projects.2026``      none (``fs`` nearest)
offlineimap ``sep = /``    ``<root>/INBOX``    ``Projects/2026``      ``fs``
=========================  ==================  =====================  ==================

(mbsync's INBOX sits where its ``Inbox`` key says; ``<root>/INBOX`` with ``Path
<root>/`` is the usual Verbatim set-up, and Maildir++ requires ``Inbox`` = the root.
mbsync Legacy nests a sub-folder as a dotted directory inside its parent; offlineimap's
Maildir repository joins the hierarchy with its ``sep``, ``.`` by default, into one
flat directory; many users set ``sep = /`` to get nested directories instead.)

Message files:

* mbsync names them ``<time>.<pid>_<n>.<host>,U=<uid>:2,<flags>``; an unseen message
  goes to ``new/`` *with* the ``:2,`` info (``new/…,U=1:2,`` and ``new/…,U=1:2,R``).
  It inserts an ``X-TUID: <12 chars>`` header line at the end of the header of every
  message it downloads, and leaves it there: a local file is the server's message plus
  that one line (21 bytes). ``without_tuid()`` takes it out again.
* offlineimap names them ``<time>_<n>.<pid>.<host>,U=<uid>,FMD5=<md5 of the folder
  name>:2,<flags>``, also in ``new/`` when unseen; the bytes are the server's exactly.
* Both convert the server's CRLF to LF (the fixture's seeded messages are LF, Dovecot
  sends CRLF, the peers' files are LF again), as mailsync does.

Their state:

* mbsync: ``.uidvalidity`` (``<uidvalidity>\\n<last uid>\\n``) in every Maildir folder
  it made; its sync state either beside it, ``.mbsyncstate`` (with ``SyncState *``:
  ``FarUidValidity N``, ``NearUidValidity N``, ``MaxPulledUid N``, ``MaxPushedUid N``,
  a blank line, then one ``<far uid> <near uid> <flags>`` line per pair), or, by default,
  in ``~/.mbsync/`` (one file per channel and mailbox). The Maildir++ runs here use
  ``SyncState *``, the others the default, so both placements are seen.
* offlineimap: nothing in the Maildir but the messages; in its ``metadata`` directory
  (``~/.offlineimap``): ``Account-<name>/LocalStatus-sqlite/<folder>`` (SQLite, table
  ``status(id = server UID, flags, mtime, labels)``) and
  ``Repository-<name>/FolderValidity/<folder>``, ``<folder>`` in its local spelling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.dovecot import imap_utf7_encode
from tests.imaphelp import Local

__all__ = ["PEER_LAYOUTS", "PeerLayout", "PeerMaildir", "PeerError", "require", "fill",
           "without_tuid"]

TIMEOUT = 120


class PeerError(RuntimeError):
    """The peer tool failed; the message has its output."""


@dataclass(frozen=True)
class PeerLayout:
    id: str                  # test id, e.g. "mbsync-maildir++"
    tool: str                # the command: "mbsync" or "offlineimap"
    style: str               # mbsync SubFolders value; offlineimap: "default" or "sep=/"
    mailsync_layout: str     # the mailsync `layout` nearest to what the peer writes

    def relpath(self, folder: str) -> str:
        """Where the peer keeps server folder *folder* ("/"-separated), relative to its
        root ("" for the root itself)."""
        inbox = folder.upper() == "INBOX"
        parts = [imap_utf7_encode(p) for p in folder.split("/")]
        if self.style == "Maildir++":
            return "" if inbox else "." + ".".join(parts)
        if inbox:
            return "INBOX"
        if self.style in ("Verbatim", "sep=/"):
            return "/".join(parts)
        if self.style == "Legacy":
            return "/".join([parts[0]] + ["." + p for p in parts[1:]])
        return ".".join(parts)               # offlineimap, sep = "."

    def path(self, root: Path, folder: str) -> Path:
        rel = self.relpath(folder)
        return root / rel if rel else root


PEER_LAYOUTS = [
    PeerLayout("mbsync-maildir++", "mbsync", "Maildir++", "maildir++"),
    PeerLayout("mbsync-verbatim", "mbsync", "Verbatim", "fs"),
    PeerLayout("mbsync-legacy", "mbsync", "Legacy", "fs"),
    PeerLayout("offlineimap", "offlineimap", "default", "fs"),
    PeerLayout("offlineimap-sep-slash", "offlineimap", "sep=/", "fs"),
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(tool: str) -> None:
    """Skip the calling test when *tool* is not installed; fail it under ``CI=true``."""
    import pytest
    if shutil.which(tool):
        return
    package = {"mbsync": "isync", "offlineimap": "offlineimap3", "getmail": "getmail6"}.get(tool, tool)
    message = f"{tool} is not installed (apt-get install {package})"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _env(home: Path) -> dict:
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _run(argv: list[str], home: Path) -> str:
    try:
        done = subprocess.run(argv, env=_env(home), cwd=home, capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{argv[0]} did not finish in {TIMEOUT} s") from exc
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise PeerError(f"{' '.join(argv)} exited {done.returncode}:\n{output}")
    return output


def mbsync_config(server, user: str, root: Path, style: str) -> str:
    """A user's ~/.mbsyncrc: one channel, every folder, folders created locally."""
    inbox = root if style == "Maildir++" else root / "INBOX"
    lines = ["IMAPAccount test", "Host localhost", f"Port {server.imaps_port}",
             f"User {user}", f"Pass {server.password}", "SSLType IMAPS",
             f"CertificateFile {server.ca_file}", "",
             "IMAPStore test-remote", "Account test", "",
             "MaildirStore test-local"]
    if style != "Maildir++":          # Maildir++ refuses a Path: the INBOX is the root
        lines.append(f"Path {root}/")
    lines += [f"Inbox {inbox}", f"SubFolders {style}", "",
              "Channel test", "Far :test-remote:", "Near :test-local:", "Patterns *",
              "Create Near"]
    if style == "Maildir++":
        lines.append("SyncState *")    # .mbsyncstate in each folder; else ~/.mbsync/
    return "\n".join(lines) + "\n"


def offlineimap_config(server, user: str, root: Path, home: Path, style: str) -> str:
    """A user's ~/.offlineimaprc: offlineimap's defaults for the Maildir side, but for the
    hierarchy separator with style "sep=/"."""
    sep = ["sep = /"] if style == "sep=/" else []
    return "\n".join([
        "[general]", "accounts = test", f"metadata = {home / '.offlineimap'}", "",
        "[Account test]", "localrepository = test-local",
        "remoterepository = test-remote", "",
        "[Repository test-local]", "type = Maildir", f"localfolders = {root}", *sep, "",
        "[Repository test-remote]", "type = IMAP", "remotehost = localhost",
        f"remoteport = {server.imaps_port}", f"remoteuser = {user}",
        f"remotepass = {server.password}", "ssl = yes",
        f"sslcacertfile = {server.ca_file}", ""])


def fill(layout: PeerLayout, server, user: str, home: Path) -> Path:
    """Run the peer once over *user*'s whole mailbox into a new Maildir under *home*
    (its HOME too, holding its config and state); return the Maildir's root. Running it
    again with the same *home* syncs that Maildir again."""
    home.mkdir(parents=True, exist_ok=True)
    root = home / "Mail"
    root.mkdir(exist_ok=True)
    if layout.tool == "mbsync":
        config = home / ".mbsyncrc"
        config.write_text(mbsync_config(server, user, root, layout.style))
        config.chmod(0o600)
        _run(["mbsync", "-c", str(config), "-a"], home)
    else:
        config = home / ".offlineimaprc"
        config.write_text(offlineimap_config(server, user, root, home, layout.style))
        config.chmod(0o600)
        _run(["offlineimap", "-c", str(config), "-o", "-u", "quiet"], home)
    return root


def without_tuid(message: bytes) -> bytes:
    """The message without the ``X-TUID:`` header lines mbsync adds to its files."""
    head, sep, body = message.partition(b"\n\n")
    if not sep:
        return message
    lines = head.split(b"\n")
    kept = [line for line in lines if not line.lower().startswith(b"x-tuid:")]
    return b"\n".join(kept) + sep + body


class PeerMaildir(Local):
    """The peer's Maildir as a local mail client sees it: the peer's folder paths, and
    every message compared without the X-TUID line mbsync put in."""

    def __init__(self, root: Path, layout: PeerLayout) -> None:
        super().__init__(root, layout.mailsync_layout)
        self.peer = layout

    def path(self, folder: str = "INBOX") -> Path:
        return self.peer.path(self.root, folder)

    def bodies(self, folder: str = "INBOX") -> list[bytes]:
        return sorted(without_tuid(f.read_bytes()) for f in self.files(folder))

    def flags_by_body(self, folder: str = "INBOX") -> dict[bytes, str]:
        from tests.imaphelp import flags_of
        return {without_tuid(f.read_bytes()): flags_of(f) for f in self.files(folder)}

    def file_of(self, folder: str, body: bytes) -> Path:
        return next(f for f in self.files(folder) if without_tuid(f.read_bytes()) == body)

    def directories(self) -> set[str]:
        """Every directory under the root, relative: a new one is a new folder."""
        return {os.path.relpath(dirpath, self.root)
                for dirpath, _, _ in os.walk(self.root)}
