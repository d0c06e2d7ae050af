"""A scripted line-based fake server on loopback, for replies a real server won't send.

FakeServer(handler) accepts connections and runs handler(conn) in a thread, where
conn.send(line) writes a CRLF-terminated line and conn.readline() reads one. Used
for hostile and broken POP3/IMAP replies; stops by itself on stop().
"""

from __future__ import annotations

import socket
import threading
from typing import Callable


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


def pop3_script(replies: dict[str, str | list[str]], greeting: str = "+OK fake ready",
                log: list[str] | None = None) -> Callable[[Conn], None]:
    """A POP3 handler answering each command word from replies (default -ERR)."""
    def handler(conn: Conn) -> None:
        conn.send(greeting)
        while True:
            line = conn.readline()
            if not line:
                return
            if log is not None:
                log.append(line)
            word = line.split(" ", 1)[0].upper()
            reply = replies.get(word, "-ERR unknown command")
            for out in ([reply] if isinstance(reply, str) else reply):
                conn.send(out)
            if word == "QUIT":
                return
    return handler
