"""A small threaded loopback TCP proxy that injects network faults.

No pytest import (also used by bench/demo scripts).  It only forwards bytes,
so it is transparent to implicit TLS (imaps/pop3s) as well as to STARTTLS.

    with CutProxy(dc.host, dc.pop3s_port, cut_after_bytes=200_000) as px:
        # connect the client to ("127.0.0.1", px.port): the connection is
        # closed after exactly 200_000 bytes went server -> client.

Fault modes (applied after ``cut_after_bytes`` bytes have passed in the
watched *direction*; ``None`` means "from the start" for stall/trickle and
"never" for a plain cut):

* cut (default): forward exactly N bytes, then close both sockets (FIN, or
  RST with ``reset=True``).
* ``stall=True``: forward exactly N bytes, then forward nothing more in
  either direction while keeping both connections open (until the client
  closes or ``stop()``), for timeout tests.
* ``trickle=(chunk, delay)``: after N bytes, forward the watched direction
  in *chunk*-byte pieces with *delay* seconds between them.

*direction*: ``"down"`` counts server->client bytes, ``"up"`` client->server,
``"both"`` the sum.  Faults are applied per connection; ``max_faults=k``
limits them to the first k connections (later ones pass through untouched,
e.g. to test that a re-run resumes after a dropped connection); ``first_fault=n``
spares the connections before the n-th (e.g. a client's second connection fails).

Bounded: ``stop()`` closes every socket and joins every thread.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["CutProxy"]

_BUF = 64 * 1024


class _Conn:
    def __init__(self, proxy: "CutProxy", client: socket.socket, server: socket.socket, faulty: bool):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.faulty = faulty
        self.lock = threading.Lock()
        self.counted = 0          # bytes seen in the watched direction(s)
        self.closed = False
        self.stalled = False
        self.eofs = 0
        self.bytes = {"down": 0, "up": 0}

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            if self.proxy.reset:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _watched(self, name: str) -> bool:
        return self.proxy.direction in (name, "both")

    def pump(self, src: socket.socket, dst: socket.socket, name: str) -> None:
        stop = self.proxy._stop
        try:
            src.settimeout(0.1)
            while not stop.is_set() and not self.closed:
                if self.stalled:
                    stop.wait(0.05)
                    continue
                try:
                    data = src.recv(_BUF)
                except socket.timeout:
                    continue
                except OSError:
                    self.close()
                    return
                if self.stalled:
                    continue  # stalled meanwhile: forward nothing more
                if not data:
                    # orderly EOF: propagate the half-close; close all when both ended
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    with self.lock:
                        self.eofs += 1
                        both = self.eofs >= 2
                    if both:
                        self.close()
                    return
                if not self._forward(data, dst, name):
                    return
        finally:
            if stop.is_set():
                self.close()

    def _forward(self, data: bytes, dst: socket.socket, name: str) -> bool:
        p = self.proxy
        if not (self.faulty and self._watched(name)):
            return self._send(dst, data, name)
        limit = p.cut_after_bytes
        with self.lock:
            before = self.counted
            self.counted += len(data)
        if limit is not None and before < limit:
            head = data[: limit - before]
            if not self._send(dst, head, name):
                return False
            data = data[len(head):]
            if not data and before + len(head) < limit:
                return True
        # threshold reached (or there is no threshold)
        if p.stall:
            self.stalled = True
            return True
        if p.trickle is not None:
            chunk, delay = p.trickle
            for k in range(0, len(data), chunk):
                if p._stop.wait(delay) or self.closed:
                    return False
                if not self._send(dst, data[k:k + chunk], name):
                    return False
            return True
        if limit is not None:
            with p._lock:
                p._cuts += 1
            self.close()
            return False
        return self._send(dst, data, name)

    def _send(self, dst: socket.socket, data: bytes, name: str) -> bool:
        if not data:
            return True
        try:
            dst.sendall(data)
        except OSError:
            self.close()
            return False
        self.bytes[name] += len(data)
        self.proxy._add_bytes(name, len(data))
        return True


class CutProxy:
    """Loopback TCP proxy to ``target_host:target_port`` with fault injection.

    Attributes: ``host`` ("127.0.0.1"), ``port`` (after construction),
    ``connections`` (accepted so far), ``cuts`` (connections cut),
    ``bytes_down`` / ``bytes_up`` (forwarded totals).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        target_host: str,
        target_port: int,
        cut_after_bytes: int | None = None,
        direction: str = "down",
        stall: bool = False,
        trickle: tuple[int, float] | None = None,
        *,
        max_faults: int | None = None,
        first_fault: int = 1,
        reset: bool = False,
    ) -> None:
        if direction not in ("down", "up", "both"):
            raise ValueError("direction must be 'down', 'up' or 'both'")
        if stall and trickle is not None:
            raise ValueError("stall and trickle are exclusive")
        if trickle is not None:
            chunk, delay = trickle
            if chunk < 1 or delay < 0:
                raise ValueError("trickle=(chunk >= 1, delay >= 0)")
        self.target = (target_host, target_port)
        self.cut_after_bytes = cut_after_bytes
        self.direction = direction
        self.stall = stall
        self.trickle = trickle
        self.max_faults = max_faults
        self.first_fault = first_fault
        self.reset = reset

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conns: list[_Conn] = []
        self.connections = 0
        self._cuts = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread: threading.Thread | None = None

    @property
    def cuts(self) -> int:
        return self._cuts

    def _add_bytes(self, name: str, n: int) -> None:
        with self._lock:
            if name == "down":
                self.bytes_down += n
            else:
                self.bytes_up += n

    def start(self) -> "CutProxy":
        if self._accept_thread is None:
            self._accept_thread = threading.Thread(target=self._accept_loop, name=f"CutProxy:{self.port}", daemon=True)
            self._accept_thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                faulty = (self.connections >= self.first_fault and
                          (self.max_faults is None or self.connections <= self.max_faults))
                conn = _Conn(self, client, server, faulty)
                self._conns.append(conn)
                if self._stop.is_set():
                    conn.close()
                    break
                for src, dst, name in ((server, client, "down"), (client, server, "up")):
                    t = threading.Thread(target=conn.pump, args=(src, dst, name),
                                         name=f"CutProxy:{self.port}:{name}", daemon=True)
                    self._threads.append(t)
                    t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, join all threads. Idempotent."""
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            c.close()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "CutProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<CutProxy :{self.port} -> {self.target[0]}:{self.target[1]} cut={self.cut_after_bytes} "
                f"dir={self.direction} stall={self.stall} trickle={self.trickle}>")
