"""A scripted line-based fake server on loopback, for replies a real server won't send.

FakeServer(handler) accepts connections and runs handler(conn) in a thread, where
conn.send(line) writes a CRLF-terminated line and conn.readline() reads one. Used
for hostile and broken POP3/IMAP replies; stops by itself on stop().

pop3_script(replies) and imap_script(overrides, ...) are ready-made handlers: a working
server whose answer to any one command can be replaced by raw bytes, a stall or a hang-up.
FakeRun runs the CLI for one account against a fake server, inside a test's tmp dir, and
lists any file written outside that account's maildir and state folder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> str:
        return self.file.readline().decode("utf-8", "replace").rstrip("\r\n")


class FakeServer:
    host = "127.0.0.1"

    def __init__(self, handler: Callable[[Conn], None]) -> None:
        self.handler = handler
        self.commands: list[str] = []
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "FakeServer":
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            sock.settimeout(10)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.handler(Conn(sock))
        except OSError:
            pass
        finally:
            sock.close()


def pop3_script(replies: dict[str, str | bytes | list[str | bytes] | None],
                greeting: str | bytes | None = "+OK fake ready",
                log: list[str] | None = None) -> Callable[[Conn], None]:
    """A POP3 handler answering each command word from replies (default -ERR).

    A str is one line (CRLF added), a list several; bytes (alone or in a list) are
    sent exactly as given, so an unfinished reply makes the client wait; None (alone
    or ending a list) closes the connection. greeting: None closes at once."""
    def handler(conn: Conn) -> None:
        if greeting is None:
            return
        if isinstance(greeting, bytes):
            conn.send_raw(greeting)
        else:
            conn.send(greeting)
        while True:
            line = conn.readline()
            if not line:
                return
            if log is not None:
                log.append(line)
            word = line.split(" ", 1)[0].upper()
            reply = replies.get(word, "-ERR unknown command")
            if reply is None:
                return
            for out in ([reply] if isinstance(reply, (str, bytes)) else reply):
                if out is None:
                    return
                if isinstance(out, bytes):
                    conn.send_raw(out)
                else:
                    conn.send(out)
            if word == "QUIT":
                return
    return handler


# IMAP ---------------------------------------------------------------------------------

# An override value: a str is one reply line; a list is several lines; bytes are sent as
# they are (no CRLF added: an unfinished answer makes the client wait, i.e. a stall);
# None closes the connection without an answer; a callable(conn, tag, line) does the
# whole answer itself and returns True to close the connection. "{tag}" (b"{tag}") is
# replaced by the command's tag in str, list and bytes answers.
ImapAnswer = Any

IMAP_DATE = '"01-Jan-2024 10:00:00 +0000"'


def close_after(data: bytes | str) -> Callable[[Conn, str, str], bool]:
    """An IMAP answer: send data (tag substituted) as it is, then close the connection."""
    def answer(conn: Conn, tag: str, line: str) -> bool:
        raw = data.encode() if isinstance(data, str) else data
        conn.send_raw(raw.replace(b"{tag}", tag.encode()))
        return True
    return answer


def imap_quote(name: str | bytes) -> bytes:
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _imap_args(text: str) -> list[str]:
    """Atoms and quoted strings of a command's arguments (no nesting needed here)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == " ":
            i += 1
        elif text[i] == '"':
            j, buf = i + 1, []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text):
                    j += 1
                buf.append(text[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        elif text[i] == "(":
            j = text.find(")", i)
            j = len(text) - 1 if j < 0 else j
            out.append(text[i:j + 1])
            i = j + 1
        else:
            j = text.find(" ", i)
            j = len(text) if j < 0 else j
            out.append(text[i:j])
            i = j
    return out


def _in_set(uid: int, uidset: str, largest: int) -> bool:
    for part in uidset.split(","):
        a, _, b = part.partition(":")
        lo, hi = (largest if x == "*" else int(x) for x in (a, b or a))
        if min(lo, hi) <= uid <= max(lo, hi):
            return True
    return False


def imap_script(overrides: dict[str, ImapAnswer] | None = None, *,
                greeting: str | bytes | None = "* OK fake IMAP4rev1 ready",
                capabilities: str = "IMAP4rev1 UIDPLUS AUTH=PLAIN",
                folders: list[str | bytes] | None = None,
                messages: dict[int, bytes] | None = None,
                uidvalidity: int = 1,
                log: list[str] | None = None) -> Callable[[Conn], None]:
    """A plain-text IMAP4rev1 handler for FakeServer, one mailbox, scriptable per command.

    folders: server folder names (str: LISTed as (\\HasNoChildren) "/" "name"; bytes: the
    raw rest of the `* LIST ` line, e.g. b'() "/" {3}\\r\\nabc'); default ["INBOX"].
    messages: {uid: body (LF or CRLF)} in INBOX; every other folder is empty.
    overrides: answers by command, keyed by its name ("LIST", "SELECT", "UID FETCH"...)
    optionally followed by a space and a text the command line must contain, e.g.
    "UID FETCH BODY.PEEK[]" (the bodies) apart from "UID FETCH" (anything else); a
    key with such a text wins over the bare name. log collects each command line
    (without its tag). greeting None closes at once.
    """
    overrides = dict(overrides or {})
    folder_list = ["INBOX"] if folders is None else list(folders)
    inbox = {uid: body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
             for uid, body in sorted((messages or {}).items())}

    def find_override(name: str, line: str) -> tuple[bool, ImapAnswer]:
        fallback: tuple[bool, ImapAnswer] = (False, None)
        for key, value in overrides.items():
            words = key.split(" ")
            size = 2 if words[0].upper() == "UID" else 1
            kname, needle = " ".join(words[:size]).upper(), " ".join(words[size:])
            if kname != name:
                continue
            if needle and needle.upper() in line.upper():
                return True, value
            if not needle and not fallback[0]:
                fallback = (True, value)
        return fallback

    def read_command(conn: Conn) -> bytes:
        """One command line; a literal argument is read and shown as <literal>."""
        line = conn.file.readline(1 << 20)
        while (m := re.search(rb"\{(\d+)(\+?)\}\r\n$", line)) is not None:
            if not m.group(2):
                conn.send_raw(b"+ go ahead\r\n")
            conn.file.read(int(m.group(1)))
            line = line[:m.start()] + b"<literal>" + conn.file.readline(1 << 20)
        return line

    def folder_of(args: list[str]) -> str:
        return args[0] if args else ""

    def selected_messages(state: dict) -> dict[int, bytes]:
        return inbox if state.get("selected", "").upper() == "INBOX" else {}

    def default(conn: Conn, tag: str, name: str, rest: str, state: dict) -> bool:
        t = tag.encode()
        ok = t + b" OK " + name.encode() + b" completed\r\n"
        args = _imap_args(rest)
        if name == "CAPABILITY":
            conn.send_raw(b"* CAPABILITY " + capabilities.encode() + b"\r\n" + ok)
        elif name == "LOGIN":
            conn.send_raw(t + b" OK [CAPABILITY " + capabilities.encode() + b"] logged in\r\n")
        elif name == "AUTHENTICATE":
            if len(args) < 2:
                conn.send_raw(b"+ \r\n")
                conn.file.readline(1 << 20)
            conn.send_raw(t + b" OK [CAPABILITY " + capabilities.encode() + b"] logged in\r\n")
        elif name in ("LIST", "LSUB"):
            pattern = args[1] if len(args) > 1 else "*"
            out = b""
            if pattern == "":
                out = b'* LIST (\\Noselect) "/" ""\r\n'
            else:
                for folder in folder_list:
                    if isinstance(folder, bytes):
                        out += b"* LIST " + folder + b"\r\n"
                    else:
                        out += b'* LIST (\\HasNoChildren) "/" ' + imap_quote(folder) + b"\r\n"
            conn.send_raw(out + ok)
        elif name in ("SELECT", "EXAMINE"):
            state["selected"] = folder_of(args)
            msgs = selected_messages(state)
            nxt = max(msgs, default=0) + 1
            mode = b"READ-ONLY" if name == "EXAMINE" else b"READ-WRITE"
            conn.send_raw(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                          b"* %d EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY %d] ok\r\n"
                          b"* OK [UIDNEXT %d] ok\r\n" % (len(msgs), uidvalidity, nxt)
                          + t + b" OK [" + mode + b"] " + name.encode() + b" completed\r\n")
        elif name == "STATUS":
            msgs = inbox if folder_of(args).upper() == "INBOX" else {}
            conn.send_raw(b"* STATUS " + imap_quote(folder_of(args))
                          + b" (MESSAGES %d UIDNEXT %d UIDVALIDITY %d)\r\n"
                          % (len(msgs), max(msgs, default=0) + 1, uidvalidity) + ok)
        elif name == "ENABLE":
            conn.send_raw(b"* ENABLED\r\n" + ok)
        elif name == "UID FETCH":
            conn.send_raw(fetch_answer(args, selected_messages(state)) + ok)
        elif name == "UID SEARCH":
            msgs = selected_messages(state)
            conn.send_raw(b"* SEARCH" + b"".join(b" %d" % u for u in msgs) + b"\r\n" + ok)
        elif name == "APPEND":
            conn.send_raw(t + b" OK [APPENDUID %d 1000] appended\r\n" % uidvalidity)
        elif name == "LOGOUT":
            conn.send_raw(b"* BYE logging out\r\n" + ok)
            return True
        else:
            conn.send_raw(ok)
        return False

    def fetch_answer(args: list[str], msgs: dict[int, bytes]) -> bytes:
        uidset, items = (args + ["", ""])[:2]
        items = items.upper()
        largest = max(msgs, default=0)
        out = b""
        for seq, (uid, body) in enumerate(msgs.items(), 1):
            if not _in_set(uid, uidset, largest):
                continue
            parts = [b"UID %d" % uid]
            if "FLAGS" in items:
                parts.append(b"FLAGS ()")
            if "RFC822.SIZE" in items:
                parts.append(b"RFC822.SIZE %d" % len(body))
            if "INTERNALDATE" in items:
                parts.append(b"INTERNALDATE " + IMAP_DATE.encode())
            head = body.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            if "BODY.PEEK[]" in items:
                parts.append(b"BODY[] {%d}\r\n%s" % (len(body), body))
            if "BODY.PEEK[HEADER]" in items:
                parts.append(b"BODY[HEADER] {%d}\r\n%s" % (len(head), head))
            if "HEADER.FIELDS" in items:
                mid = b"".join(ln + b"\r\n" for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"message-id:")) + b"\r\n"
                parts.append(b"BODY[HEADER.FIELDS (MESSAGE-ID)] {%d}\r\n%s" % (len(mid), mid))
            out += b"* %d FETCH (" % seq + b" ".join(parts) + b")\r\n"
        return out

    def handler(conn: Conn) -> None:
        if greeting is None:
            return
        conn.send_raw((greeting.encode() if isinstance(greeting, str) else greeting)
                      + (b"\r\n" if isinstance(greeting, str) else b""))
        state: dict = {}
        while True:
            raw = read_command(conn)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tag, _, rest = line.partition(" ")
            words = rest.split(" ")
            name = words[0].upper()
            if name == "UID" and len(words) > 1:
                name = f"UID {words[1].upper()}"
            args_text = rest.split(" ", 2 if name.startswith("UID ") else 1)[-1] \
                if " " in rest else ""
            if log is not None:
                log.append(rest)
            found, answer = find_override(name, rest)
            if not found:
                if default(conn, tag, name, args_text, state):
                    return
                continue
            if answer is None:
                return
            if callable(answer):
                if answer(conn, tag, line):
                    return
                continue
            if name in ("SELECT", "EXAMINE"):
                state["selected"] = folder_of(_imap_args(args_text))
            lines = answer if isinstance(answer, list) else [answer]
            for item in lines:
                if isinstance(item, str):
                    conn.send_raw(item.replace("{tag}", tag).encode("utf-8", "surrogateescape")
                                  + b"\r\n")
                else:
                    conn.send_raw(item.replace(b"{tag}", tag.encode()))
            if name == "LOGOUT":
                return

    return handler


# Running the CLI against a fake server --------------------------------------------------

class FakeRun:
    """One account (config, maildir, state) under base, pointed at a fake server, run
    through the CLI with HOME and the XDG folders inside base (so a stray write shows)."""

    def __init__(self, base: Path, protocol: str = "pop3", **keys) -> None:
        self.base = Path(base)
        self.home = self.base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.maildir, self.state_dir = self.base / "Mail", self.base / "state"
        self.config = self.base / "config.toml"
        self.protocol, self.keys = protocol, keys

    def run(self, server: FakeServer, *args: str, timeout: float = 120, **popen):
        from tests.conftest import CliResult, cli_command, cli_env, write_config
        settings = {"protocol": self.protocol, "host": server.host, "port": server.port,
                    "user": "someone", "password": "pw-secret", "tls": "none",
                    "allow_plaintext": True, "maildir": str(self.maildir),
                    "state_dir": str(self.state_dir), "timeout": 3}
        settings.update(self.keys)
        write_config(self.config, "test", settings)
        env = cli_env({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"),
                       "XDG_STATE_HOME": str(self.home / ".state"),
                       "XDG_CACHE_HOME": str(self.home / ".cache"),
                       "XDG_DATA_HOME": str(self.home / ".data")})
        done = subprocess.run(cli_command("-c", str(self.config), *args), env=env,
                              capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **popen)
        return CliResult(done.returncode, done.stdout.decode("utf-8", "replace"),
                         done.stderr.decode("utf-8", "replace"))

    def stray_paths(self) -> list[str]:
        """Everything under base that is not the config, the maildir, the state or the
        (empty) home folder."""
        allowed = (str(self.maildir), str(self.state_dir))
        out = []
        for dirpath, dirnames, filenames in os.walk(self.base):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                if path in (str(self.config), str(self.home)):
                    continue
                if any(path == a or path.startswith(a + os.sep) for a in allowed):
                    continue
                out.append(path)
        return out

    def stored(self, folder: str = "") -> list[bytes]:
        root = self.maildir / folder if folder else self.maildir
        return [p.read_bytes() for sub in ("new", "cur") if (root / sub).is_dir()
                for p in sorted((root / sub).iterdir())]
