"""The least a Python IMAP client can do, for bench/floor.py: no library but ssl and
socket, no state, no durability. Not a tool: a yardstick for what this machine and
this server allow a Python program at all.

    bare_client.py login    HOST PORT USER PASSWORD CA [--stack]
    bare_client.py download HOST PORT USER PASSWORD CA [--connections N]
    bare_client.py write    HOST PORT USER PASSWORD CA OUTDIR [--connections N]

login: TLS, LOGIN, one LIST-STATUS of every folder, LOGOUT: what a no-op resync must
do at the least. With --stack it first imports what mailsync's stack brings (click,
imapclient, sqlite3, tomllib) and uses none of it.
download: login, then per folder SELECT and one `UID FETCH 1:* (UID FLAGS BODY.PEEK[])`,
every body read and dropped. write: the same, each body (CRLF -> LF) written to its
own new file in OUTDIR: no fsync, no rename, nothing recorded.
Prints one line: "messages=N bytes=B".

Run it with `python -S` (no site: no editable-install finder, no .pth files); --stack
adds the venv's site-packages (BENCH_PURELIB, set by floor.py) to sys.path itself.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import sys
import threading

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class Session:
    def __init__(self, host: str, port: int, ca: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=ca)
        raw = socket.create_connection((host, port), timeout=120)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.file = self.sock.makefile("rb", buffering=1 << 20)
        self.file.readline()                      # greeting
        self.n = 0

    def command(self, text: str, on_literal=None) -> list[bytes]:
        self.n += 1
        tag = b"B%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise SystemExit("connection closed")
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1:].startswith(b"OK"):
                    raise SystemExit(f"{text.split()[0]} failed: {line!r}")
                return lines
            lines.append(line)
            m = _LITERAL.search(line)
            if m:
                data = self.file.read(int(m.group(1)))
                if on_literal is not None:
                    on_literal(data)


def folders(session: Session) -> dict[str, int]:
    """Every folder's size in messages, from one LIST-STATUS."""
    out = {}
    for line in session.command('LIST "" "*" RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY))'):
        m = re.match(rb"\* STATUS (\S+|\"[^\"]*\") \(MESSAGES (\d+)", line)
        if m:
            out[m.group(1).decode().strip('"')] = int(m.group(2))
    return out


def fetch_all(args: list[str], names: list[str], outdir: str | None, totals: list) -> None:
    host, port, user, password, ca = args[:5]
    s = Session(host, int(port), ca)
    s.command(f"LOGIN {user} {password}")
    count = size = 0

    def keep(data: bytes) -> None:
        nonlocal count, size
        count += 1
        size += len(data)
        if outdir is not None:
            fd = os.open(f"{outdir}/{threading.get_ident()}.{count}",
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data.translate(None, b"\r"))
            os.close(fd)

    for name in names:
        s.command(f'SELECT "{name}"')
        s.command("UID FETCH 1:* (UID FLAGS BODY.PEEK[])", keep)
    s.command("LOGOUT")
    totals.append((count, size))


def split(sizes: dict[str, int], parts: int) -> list[list[str]]:
    """Folders over connections, largest first onto the least loaded."""
    loads = [[0, []] for _ in range(parts)]
    for name in sorted(sizes, key=sizes.get, reverse=True):
        target = min(loads, key=lambda x: x[0])
        target[0] += sizes[name]
        target[1].append(name)
    return [names for _, names in loads if names]


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "login":
        if "--stack" in args:
            # under -S this Python does not know it runs in a venv: floor.py says where
            # the venv's libraries are
            import os
            sys.path.append(os.environ["BENCH_PURELIB"])
            import sqlite3, tomllib  # noqa: E401,F401 -- the cost of loading is the point
            import click, imapclient  # noqa: E401,F401
        host, port, user, password, ca = args[:5]
        s = Session(host, int(port), ca)
        s.command(f"LOGIN {user} {password}")
        n = len(folders(s))
        s.command("LOGOUT")
        print(f"folders={n}")
        return
    connections = int(args[args.index("--connections") + 1]) if "--connections" in args else 1
    outdir = args[5] if mode == "write" else None
    host, port, user, password, ca = args[:5]
    s = Session(host, int(port), ca)
    s.command(f"LOGIN {user} {password}")
    sizes = folders(s)
    s.command("LOGOUT")
    totals: list = []
    threads = [threading.Thread(target=fetch_all, args=(args, names, outdir, totals))
               for names in split(sizes, connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"messages={sum(c for c, _ in totals)} bytes={sum(b for _, b in totals)}")


if __name__ == "__main__":
    main(sys.argv[1:])
