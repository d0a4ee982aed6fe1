"""A small threaded TCP proxy on 127.0.0.1 that tests can freeze and cut.

``TCPProxy(target_port)`` listens on a free loopback port (``.port``) and forwards every
connection it accepts to ``127.0.0.1:target_port``, two threads per connection.  The test
then breaks the path the way networks break:

* ``cut(mode)`` drops every live connection at once: ``"reset"`` (both ends get a TCP RST,
  like a crashed middlebox) or ``"close"`` (both ends get a FIN, like a peer that exits);
* ``cut_after(up=N)`` / ``cut_after(down=N)`` forwards at most N more bytes client-to-server
  (up) or server-to-client (down) on each live connection and then cuts it -- so a cut lands
  in the middle of a frame, a publish or a delivery;
* ``freeze("down")`` / ``freeze("up")`` / ``freeze()`` stops forwarding in that direction
  without closing anything (a black hole: the bytes wait in kernel buffers); ``thaw()``
  resumes.

With ``record=True`` every byte forwarded is also kept (``transcript(direction)``), so a
test can see exactly what reached the client before a cut.

Only loopback addresses are used, for listening and for the target.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

__all__ = ["Mode", "TCPProxy"]

Direction = Literal["up", "down", "both"]
Mode = Literal["reset", "close"]

_POLL = 0.05  # how often a pump looks at its flags while waiting on a socket
_CHUNK = 65536


class _Pair:
    """One proxied connection: the client's socket and ours to the target."""

    def __init__(self, proxy: TCPProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.dead = threading.Event()
        self.mode: Mode = "close"
        self.budget: dict[str, int | None] = {"up": None, "down": None}
        self.forwarded = {"up": 0, "down": 0}
        self.transcript: dict[str, bytearray] | None = (
            {"up": bytearray(), "down": bytearray()} if proxy.record else None
        )
        self._lock = threading.Lock()
        self._running = 2
        self.threads = [
            threading.Thread(target=self._pump, args=("up", client, upstream), daemon=True,
                             name="tcpproxy-up"),
            threading.Thread(target=self._pump, args=("down", upstream, client), daemon=True,
                             name="tcpproxy-down"),
        ]
        for sock in (client, upstream):
            sock.settimeout(_POLL)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def kill(self, mode: Mode) -> None:
        with self._lock:
            if not self.dead.is_set():
                self.mode = mode
                self.dead.set()

    def join(self, timeout: float = 5.0) -> None:
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def _pump(self, direction: str, src: socket.socket, dst: socket.socket) -> None:
        frozen = self.proxy._frozen[direction]
        try:
            while not self.dead.is_set():
                if frozen.is_set():
                    time.sleep(_POLL)
                    continue
                try:
                    data = src.recv(_CHUNK)
                except socket.timeout:
                    continue
                except OSError:
                    self.kill("reset")
                    break
                if not data:
                    # The peer closed its side: pass a clean close on.
                    self.kill("close")
                    break
                while frozen.is_set() and not self.dead.is_set():
                    time.sleep(_POLL)  # frozen while we were in recv(): hold these bytes too
                with self._lock:
                    budget = self.budget[direction]
                    if budget is not None:
                        data = data[:budget]
                        self.budget[direction] = budget - len(data)
                cut_now = budget is not None and self.budget[direction] == 0
                sent = self._send(dst, data)
                self.forwarded[direction] += sent
                if self.transcript is not None:
                    self.transcript[direction] += data[:sent]
                self.proxy._count(direction, sent)
                rate = self.proxy._rate[direction]
                if rate:
                    time.sleep(sent / rate)  # a slow link: steady, never stalled
                if sent < len(data):
                    self.kill("reset")  # the other side went away, or we were cut meanwhile
                    break
                if cut_now:
                    self.kill(self.proxy._cut_mode)
                    break
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                self._close()

    def _send(self, dst: socket.socket, data: bytes) -> int:
        """Send ``data``; returns how much went out (less when the pair dies meanwhile)."""
        done = 0
        while done < len(data) and not self.dead.is_set():
            try:
                done += dst.send(data[done:])
            except socket.timeout:
                continue
            except OSError:
                break
        return done

    def _close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                if self.mode == "reset":
                    # Linger 0: close() sends RST instead of FIN and drops unsent data.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        self.proxy._forget(self)


class TCPProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target_port``.  Use as a context manager
    or call ``start()`` / ``close()``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", record: bool = False) -> None:
        if target_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the test proxy only forwards to loopback")
        self.target = (target_host, target_port)
        self.record = record
        self._transcripts: list[dict[str, bytearray]] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._frozen = {"up": threading.Event(), "down": threading.Event()}
        self._rate: dict[str, float | None] = {"up": None, "down": None}
        self._cut_mode: Mode = "reset"
        self.bytes_up = 0
        self.bytes_down = 0
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="tcpproxy-accept")

    # ---- life cycle

    def start(self) -> TCPProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.cut("close")
        self._thread.join(5)
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def url(self, user: str = "guest", password: str = "guest", query: str = "") -> str:
        """An AMQP URL that goes through the proxy."""
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    # ---- faults

    @property
    def active(self) -> int:
        """Connections currently forwarded."""
        with self._lock:
            return len(self._pairs)

    def cut(self, mode: Mode = "reset") -> None:
        """Drop every live connection now; returns once their sockets are closed."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.kill(mode)
        for pair in pairs:
            pair.join()

    def cut_after(self, up: int | None = None, down: int | None = None, mode: Mode = "reset") -> None:
        """On every live connection, forward at most ``up`` more bytes client-to-server and
        ``down`` more bytes server-to-client, then cut it (``mode`` as in :meth:`cut`)."""
        self._cut_mode = mode
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            with pair._lock:
                if up is not None:
                    pair.budget["up"] = up
                if down is not None:
                    pair.budget["down"] = down

    def freeze(self, direction: Direction = "both") -> None:
        """Stop forwarding (the sockets stay open; data waits in the kernel)."""
        for d in ("up", "down"):
            if direction in (d, "both"):
                self._frozen[d].set()

    def throttle(self, direction: Direction, bytes_per_second: float | None) -> None:
        """Forward at most about ``bytes_per_second`` in ``direction`` (None: full speed),
        in chunks of at most 64 KiB: a slow link that keeps moving."""
        for d in ("up", "down"):
            if direction in (d, "both"):
                self._rate[d] = bytes_per_second

    def thaw(self) -> None:
        for event in self._frozen.values():
            event.clear()

    def transcript(self, direction: Literal["up", "down"], connection: int = 0) -> bytes:
        """Every byte forwarded in ``direction`` on the ``connection``-th connection accepted
        (needs ``record=True``); kept after the connection is cut."""
        with self._lock:
            return bytes(self._transcripts[connection][direction])

    # ---- internals

    def _count(self, direction: str, n: int) -> None:
        with self._lock:
            if direction == "up":
                self.bytes_up += n
            else:
                self.bytes_down += n

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(self, client, upstream)
            with self._lock:
                if pair.transcript is not None:
                    self._transcripts.append(pair.transcript)
                self._pairs.append(pair)
                self.accepted += 1
            pair.start()
