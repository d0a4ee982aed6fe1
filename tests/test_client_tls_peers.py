"""TLS failures that need no broker, with both drivers: certificate files that cannot be
used, and peers on 127.0.0.1 that hang up or fall silent during the TLS or AMQP handshake.

What users rely on: a mistake in their own TLS options is reported naming the option and
the path, before any connection is made; a peer that goes away during the TLS handshake is
a :class:`ConnectionLost` like one that goes away during the AMQP handshake; a TLS peer that
says nothing is a ``TimeoutError`` after ``connection_timeout``, as on plain TCP.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote

import pytest

from certs import Certs, make_certs
from drivers import NewConnection
from helpers import within
from leveret.client import ConnectionLost


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls-peers"))


class Peer:
    """A listener on 127.0.0.1 that hands each accepted socket to ``serve`` in a thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._serve = serve
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._guarded, args=(sock,), daemon=True).start()

    def _guarded(self, sock: socket.socket) -> None:
        try:
            self._serve(sock)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def peer() -> Iterator[Callable[[Callable[[socket.socket], None]], Peer]]:
    peers: list[Peer] = []

    def start(serve: Callable[[socket.socket], None]) -> Peer:
        peers.append(Peer(serve))
        return peers[-1]

    yield start
    for p in peers:
        p.close()


def url(port: int, **options: object) -> str:
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in options.items())
    return f"amqps://guest:s3cret-pw@localhost:{port}/?{query}"


# --------------------------------------------------------------------------- certificate files


@pytest.mark.parametrize("option", ["cacertfile", "certfile", "keyfile"])
def test_a_missing_certificate_file_is_named_before_connecting(
    new_connection: NewConnection, certs: Certs, peer: Callable[..., Peer], tmp_path: Path, option: str
) -> None:
    p = peer(lambda sock: None)
    files = {"cacertfile": certs.ca_cert, "certfile": certs.client_cert, "keyfile": certs.client_key}
    files[option] = tmp_path / f"no-such-{option}.pem"
    conn = new_connection(url(p.port, **files))
    with pytest.raises(FileNotFoundError) as info:
        within(15, conn.connect)
    text = str(info.value)
    assert option in text and f"no-such-{option}.pem" in text, text
    assert info.value.filename == str(files[option])
    assert "s3cret-pw" not in text
    assert p.accepted == 0  # reported before the broker saw a connection


def test_a_certificate_file_without_a_certificate_names_the_files(
    new_connection: NewConnection, certs: Certs, peer: Callable[..., Peer], tmp_path: Path
) -> None:
    p = peer(lambda sock: None)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    conn = new_connection(url(p.port, cacertfile=junk))
    with pytest.raises(ssl.SSLError, match=f"cacertfile='{junk}'"):
        within(15, conn.connect)
    # A certificate whose key is in another file, and no keyfile.
    conn = new_connection(url(p.port, cacertfile=certs.ca_cert, certfile=certs.client_cert))
    with pytest.raises(ssl.SSLError, match="certfile=.*client.pem"):
        within(15, conn.connect)
    assert p.accepted == 0


def test_a_keyfile_without_a_certfile_is_refused(new_connection: NewConnection, certs: Certs) -> None:
    # ssl has no use for a key alone: it would connect without a client certificate.
    with pytest.raises(ValueError, match="keyfile.*certfile"):
        new_connection(url(5671, cacertfile=certs.ca_cert, keyfile=certs.client_key))


# --------------------------------------------------------------------------- peers that hang up


def server_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    return ctx


def hang_up_at_once(sock: socket.socket) -> None:
    pass  # closed by Peer


def hang_up_after_the_client_hello(sock: socket.socket) -> None:
    sock.recv(4096)


def hang_up_after_half_a_record(sock: socket.socket) -> None:
    sock.recv(4096)
    sock.sendall(b"\x16\x03\x03\x00\x50" + b"\x02" * 20)  # a handshake record cut short


@pytest.mark.parametrize("serve", [hang_up_at_once, hang_up_after_the_client_hello, hang_up_after_half_a_record])
def test_a_peer_hanging_up_in_the_tls_handshake_is_connection_lost(
    new_connection: NewConnection, certs: Certs, peer: Callable[..., Peer], serve: Callable[[socket.socket], None]
) -> None:
    # As a peer hanging up in the AMQP handshake is: not ssl's SSLEOFError or a bare
    # ConnectionResetError (the asyncio driver's said nothing at all).
    p = peer(serve)
    conn = new_connection(url(p.port, cacertfile=certs.ca_cert, connection_timeout=5))
    with pytest.raises(ConnectionLost, match="during the TLS handshake"):
        within(15, conn.connect)
    assert not conn.is_open
    within(5, conn.close)


def test_a_tls_peer_that_says_nothing_is_a_timeout(
    new_connection: NewConnection, certs: Certs, peer: Callable[..., Peer]
) -> None:
    # A TLS front (a proxy, a load balancer) whose broker does not answer: the TLS handshake
    # succeeds, a TLS 1.3 session ticket arrives, and then nothing -- no connection.start.
    ctx = server_context(certs)
    done = threading.Event()

    def serve(sock: socket.socket) -> None:
        with ctx.wrap_socket(sock, server_side=True):
            done.wait(20)

    p = peer(serve)
    try:
        conn = new_connection(url(p.port, cacertfile=certs.ca_cert, connection_timeout=2))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="handshake"):
            within(15, conn.connect)
        assert time.monotonic() - started < 4.5
        assert not conn.is_open
        within(5, conn.close)
    finally:
        done.set()


def test_a_peer_that_never_completes_the_tls_handshake_is_a_timeout_that_says_so(
    new_connection: NewConnection, certs: Certs, peer: Callable[..., Peer]
) -> None:
    done = threading.Event()
    p = peer(lambda sock: done.wait(20))
    try:
        conn = new_connection(url(p.port, cacertfile=certs.ca_cert, connection_timeout=1))
        with pytest.raises(TimeoutError) as info:
            within(15, conn.connect)
        assert "handshake" in str(info.value) and "s3cret-pw" not in str(info.value)
    finally:
        done.set()
