"""TLS through the client, with both drivers, against a private node with a TLS listener.

The node (one per module) listens for TLS on a port of its own, checks client certificates
against our test CA when one is offered (``verify_peer``, ``fail_if_no_peer_cert = false``),
and offers SASL EXTERNAL (rabbitmq_auth_mechanism_ssl) with the certificate's common name
as the user name.  Certificates come from tests/certs.py (``openssl``).

What users rely on: verification is on by default and uses the name they connect to (or
``server_name_indication``); ``verify=false`` is the only way around it; a client
certificate with ``auth_mechanism=EXTERNAL`` logs in as its CN, and EXTERNAL is never chosen
unless asked for.

Each test runs with the blocking driver and with the asyncio one behind the synchronous
facade of tests/drivers.py (``new_connection``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import threading
import time
import uuid
from typing import Any, Iterator
from urllib.parse import quote

import pytest

from broker import PrivateNode, private_node
from certs import Certs, make_certs
from drivers import NewConnection
from helpers import in_forked_child, publish_until_blocked, within
from tcpproxy import Mode
from leveret.client import AsyncConnection, AuthenticationError, Connection, ConnectionLost, Message
from leveret.wire.errors import RemoteProtocolError

pytestmark = pytest.mark.broker

CLIENT_CN = "leveret-tls-client"


class TLSNode:
    """The node, its TLS port and the certificates."""

    def __init__(self, node: PrivateNode, tls_port: int, certs: Certs, rogue: Certs) -> None:
        self.node = node
        self.tls_port = tls_port
        self.certs = certs
        self.rogue = rogue

    def url(self, host: str = "localhost", user: str = "guest", password: str = "guest", **options: Any) -> str:
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in options.items())
        return f"amqps://{user}:{password}@{host}:{self.tls_port}/" + (f"?{query}" if query else "")

    def connection_rows(self, name: str) -> list[list[str]]:
        """(user, ssl, auth_mechanism, peer_cert_subject) of the connection called ``name``."""
        rows = self.node.list_connections("user", "ssl", "auth_mechanism", "peer_cert_subject",
                                          "client_properties")
        return [row[:4] for row in rows if name in row[4]]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSNode]:
    import rabbitmq  # scripts/, on sys.path through tests/broker.py

    folder = tmp_path_factory.mktemp("tls")
    certs = make_certs(folder / "good", CLIENT_CN)
    # The same CN, signed by a CA the broker does not trust.
    rogue = make_certs(folder / "rogue", CLIENT_CN)
    port = rabbitmq.free_port()
    config = (
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {certs.ca_cert}\n"
        f"ssl_options.certfile = {certs.server_cert}\n"
        f"ssl_options.keyfile = {certs.server_key}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        "auth_mechanisms.1 = PLAIN\n"
        "auth_mechanisms.2 = AMQPLAIN\n"
        "auth_mechanisms.3 = EXTERNAL\n"
        "ssl_cert_login_from = common_name\n"
    )
    node = private_node(plugins=["rabbitmq_auth_mechanism_ssl"], config=config)
    try:
        # EXTERNAL needs a user of that name; its password is never used.
        node.add_user(CLIENT_CN, uuid.uuid4().hex)
        node.set_permissions(CLIENT_CN, "/")
        yield TLSNode(node, port, certs, rogue)
    finally:
        node.stop()


def named(new_connection: NewConnection, url: str, **options: Any) -> tuple[Connection, str]:
    name = f"tls-{uuid.uuid4().hex[:10]}"
    return new_connection(url, client_properties={"connection_name": name}, **options), name


def round_trip(conn: Connection, body: bytes = b"over TLS") -> None:
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).queue
    ch.basic_publish(Message(body, content_type="application/octet-stream"), routing_key=queue)
    deadline = time.monotonic() + 10
    while True:
        msg = ch.basic_get(queue, no_ack=True)
        if msg is not None:
            break
        assert time.monotonic() < deadline, "the message never arrived"
        time.sleep(0.05)
    assert msg.body == body
    assert msg.properties["content_type"] == "application/octet-stream"


# --------------------------------------------------------------------------- verification


def test_amqps_with_the_ca_verifies_and_works(new_connection: NewConnection, tls: TLSNode) -> None:
    conn, name = named(new_connection, tls.url(cacertfile=tls.certs.ca_cert))
    with within(15, conn.connect):
        round_trip(conn)
        [(user, is_ssl, mechanism, _)] = tls.connection_rows(name)
        assert (user, is_ssl, mechanism) == ("guest", "true", "PLAIN")


def test_verification_is_on_by_default(new_connection: NewConnection, tls: TLSNode) -> None:
    # No cacertfile: the system's CAs, which never signed our test CA.
    conn = new_connection(tls.url())
    with pytest.raises(ssl.SSLCertVerificationError):
        within(15, conn.connect)
    assert not conn.is_open
    within(5, conn.close)


def test_verify_false_connects_without_the_ca(new_connection: NewConnection, tls: TLSNode) -> None:
    conn = new_connection(tls.url(verify="false"))
    with within(15, conn.connect):
        round_trip(conn)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_certificate_must_name_the_host(new_connection: NewConnection, tls: TLSNode, host: str) -> None:
    # Verified against the CA, but the certificate names localhost and 127.0.0.1 only: a
    # connection through another name for the same broker must fail.
    with within(15, new_connection(tls.url(host=host, cacertfile=tls.certs.ca_cert)).connect) as conn:
        assert conn.is_open
    conn = new_connection(tls.url(host=host, cacertfile=tls.certs.ca_cert,
                              server_name_indication="broker.example.com"))
    with pytest.raises(ssl.SSLCertVerificationError, match="broker.example.com"):
        within(15, conn.connect)


def test_check_hostname_false_still_verifies_the_chain(new_connection: NewConnection, tls: TLSNode) -> None:
    """``check_hostname=false`` skips the name only: a certificate for another name from
    the known CA connects, one from an unknown CA still fails."""
    conn = new_connection(tls.url(cacertfile=tls.certs.ca_cert, server_name_indication="broker.example.com",
                                  check_hostname="false"))
    with within(15, conn.connect):
        round_trip(conn)
    conn = new_connection(tls.url(check_hostname="false"))  # the system's CAs: not ours
    with pytest.raises(ssl.SSLCertVerificationError):
        within(15, conn.connect)
    within(5, conn.close)


def test_server_name_indication_is_the_name_verified(new_connection: NewConnection, tls: TLSNode) -> None:
    conn = new_connection(tls.url(host="127.0.0.1", cacertfile=tls.certs.ca_cert,
                              server_name_indication="localhost"))
    with within(15, conn.connect):
        round_trip(conn)


def test_ssl_context_is_used_as_given(new_connection: NewConnection, tls: TLSNode) -> None:
    ctx = ssl.create_default_context(cafile=str(tls.certs.ca_cert))
    ctx.load_cert_chain(str(tls.certs.client_cert), str(tls.certs.client_key))
    conn, name = named(new_connection, tls.url(auth_mechanism="EXTERNAL", user="", password=""), ssl_context=ctx)
    with within(15, conn.connect):
        [(user, _, mechanism, _)] = tls.connection_rows(name)
        assert (user, mechanism) == (CLIENT_CN, "EXTERNAL")


# --------------------------------------------------------------------------- client certificates


def test_client_certificate_with_external_logs_in_as_its_cn(new_connection: NewConnection, tls: TLSNode) -> None:
    c = tls.certs
    conn, name = named(new_connection, tls.url(user="someone-else", password="ignored", cacertfile=c.ca_cert,
                               certfile=c.client_cert, keyfile=c.client_key,
                               auth_mechanism="EXTERNAL"))
    with within(15, conn.connect):
        round_trip(conn)
        [(user, is_ssl, mechanism, subject)] = tls.connection_rows(name)
        assert (user, is_ssl, mechanism) == (CLIENT_CN, "true", "EXTERNAL")
        assert CLIENT_CN in subject


def test_external_is_never_chosen_unless_asked_for(new_connection: NewConnection, tls: TLSNode) -> None:
    c = tls.certs
    conn, name = named(new_connection, tls.url(cacertfile=c.ca_cert, certfile=c.client_cert, keyfile=c.client_key))
    with within(15, conn.connect):
        assert "EXTERNAL" in conn.core.mechanisms  # offered, and a certificate is there
        [(user, is_ssl, mechanism, subject)] = tls.connection_rows(name)
        assert (user, is_ssl, mechanism) == ("guest", "true", "PLAIN")
        assert CLIENT_CN in subject  # the certificate was presented, and not used to log in


def test_external_without_a_client_certificate_is_refused(new_connection: NewConnection, tls: TLSNode) -> None:
    conn = new_connection(tls.url(cacertfile=tls.certs.ca_cert, auth_mechanism="EXTERNAL"))
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        within(15, conn.connect)
    assert time.monotonic() - started < 5
    assert info.value.reply_code == 403
    within(5, conn.close)


def test_external_on_plain_tcp_names_the_offered_mechanisms(new_connection: NewConnection, tls: TLSNode) -> None:
    # The broker offers EXTERNAL on TLS connections only.
    conn = new_connection(f"amqp://guest:guest@127.0.0.1:{tls.node.port}/?auth_mechanism=EXTERNAL")
    with pytest.raises(AuthenticationError) as info:
        within(15, conn.connect)
    text = str(info.value)
    assert "EXTERNAL" in text and "PLAIN" in text and "AMQPLAIN" in text
    assert not conn.is_open
    within(5, conn.close)
    # PLAIN on the same port is fine.
    with within(15, new_connection(tls.node.url).connect) as plain:
        assert plain.is_open


def test_client_certificate_from_an_unknown_ca_is_rejected(new_connection: NewConnection, tls: TLSNode) -> None:
    r = tls.rogue

    def logged_in_as_client() -> list[Any]:
        return [row for row in tls.node.list_connections("user") if row == [CLIENT_CN]]

    # Earlier tests' EXTERNAL connections as CLIENT_CN may take a moment to leave the
    # broker's list after their close: start from none, so that the check below means this one.
    deadline = time.monotonic() + 10
    while logged_in_as_client():
        assert time.monotonic() < deadline, "an earlier test's connection is still open"
        time.sleep(0.1)
    conn = new_connection(tls.url(cacertfile=tls.certs.ca_cert, certfile=r.client_cert, keyfile=r.client_key,
                              auth_mechanism="EXTERNAL"), connection_timeout=5)
    # With TLS 1.3 the broker's alert arrives after the client's side of the handshake, so
    # the failure shows while reading ("tlsv1 alert unknown ca") or, when our protocol
    # header is written after the broker hung up, while writing ("EOF occurred in
    # violation of protocol"; the alert is then never read).
    started = time.monotonic()
    with pytest.raises((ssl.SSLError, ConnectionLost)):
        within(15, conn.connect)
    assert time.monotonic() - started < 3
    assert not conn.is_open
    within(5, conn.close)
    assert logged_in_as_client() == []


def test_amqps_to_a_plain_port_fails_fast_with_an_ssl_error(new_connection: NewConnection, tls: TLSNode) -> None:
    conn = new_connection(f"amqps://guest:guest@localhost:{tls.node.port}/?cacertfile={tls.certs.ca_cert}",
                      connection_timeout=5)
    started = time.monotonic()
    with pytest.raises(ssl.SSLError):
        within(15, conn.connect)
    assert time.monotonic() - started < 3
    within(5, conn.close)


def test_plain_amqp_to_the_tls_port_fails_fast_with_a_protocol_error(
    new_connection: NewConnection, tls: TLSNode
) -> None:
    # The TLS listener answers our protocol header with a TLS alert record.
    conn = new_connection(f"amqp://guest:guest@127.0.0.1:{tls.tls_port}/", connection_timeout=5)
    started = time.monotonic()
    with pytest.raises((RemoteProtocolError, ConnectionLost)):
        within(15, conn.connect)
    assert time.monotonic() - started < 3
    assert not conn.is_open
    within(5, conn.close)


# --------------------------------------------------------------------------- bulk over TLS


def test_large_messages_and_many_deliveries_over_tls(new_connection: NewConnection, tls: TLSNode) -> None:
    # Records larger than one TLS record, and deliveries waiting in the TLS layer's buffer
    # rather than the socket's (select() does not see those).
    big = bytes(range(256)) * 12288  # 3 MiB
    with within(15, new_connection(tls.url(cacertfile=tls.certs.ca_cert)).connect) as conn:
        round_trip(conn, big)
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        for i in range(200):
            ch.basic_publish(f"small {i}".encode(), routing_key=queue)
        got: list[bytes] = []
        ch.basic_consume(queue, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
        deadline = time.monotonic() + 15
        while len(got) < 200:
            assert time.monotonic() < deadline, f"only {len(got)} of 200 deliveries arrived"
            within(10, conn.drain_events, timeout=5)
        assert got == [f"small {i}".encode() for i in range(200)]


class _OneThreadInside:
    """Stands in for a connection's ssl socket and counts the times a second thread entered
    it (recv, send, pending) while another was inside: OpenSSL allows one at a time.  Each
    call lingers a little, so that threads that do overlap are caught doing it."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._guard = threading.Lock()
        self.inside = 0
        self.overlaps = 0
        self.calls = 0

    def _call(self, name: str, *args: Any) -> Any:
        with self._guard:
            self.inside += 1
            self.calls += 1
            if self.inside > 1:
                self.overlaps += 1
        try:
            time.sleep(0.0005)
            return getattr(self._sock, name)(*args)
        finally:
            with self._guard:
                self.inside -= 1

    def recv(self, size: int) -> bytes:
        return self._call("recv", size)  # type: ignore[no-any-return]

    def send(self, data: Any) -> int:
        return self._call("send", data)  # type: ignore[no-any-return]

    def pending(self) -> int:
        return self._call("pending")  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_one_thread_at_a_time_inside_the_ssl_socket(tls: TLSNode) -> None:
    # The blocking driver reads in one thread while others publish (and the I/O thread
    # writes): every call into the ssl socket must be alone in it.
    conn = Connection(tls.url(cacertfile=tls.certs.ca_cert), heartbeat=1).connect()
    try:
        watched = _OneThreadInside(conn._sock)
        conn._sock = watched  # type: ignore[assignment]
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue
        got: list[bytes] = []
        ch.basic_consume(queue, no_ack=True, callback=lambda m: got.append(bytes(m.body)))
        pub = conn.channel()
        failed: list[BaseException] = []

        def publish() -> None:
            try:
                for i in range(400):
                    pub.basic_publish(f"m{i}".encode() * 50, routing_key=queue)
                    if i % 20 == 0:
                        time.sleep(0.002)  # let the reader in between bursts
            except BaseException as exc:  # reported by the main thread
                failed.append(exc)

        publisher = threading.Thread(target=publish)
        publisher.start()
        deadline = time.monotonic() + 30
        while len(got) < 400:
            assert time.monotonic() < deadline, f"only {len(got)} of 400 deliveries arrived"
            conn.drain_events(timeout=5)
        publisher.join(10)
        assert not failed, failed
        assert got == [f"m{i}".encode() * 50 for i in range(400)]
        assert watched.calls > 400
        assert watched.overlaps == 0, f"{watched.overlaps} of {watched.calls} calls overlapped"
    finally:
        within(10, conn.close)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.parametrize("driver", ["blocking", "asyncio"])
def test_a_forked_child_sends_nothing_on_its_parents_tls_session(tls: TLSNode, driver: str) -> None:
    """A child made by fork() shares the parent's TLS session: one record from it (a
    close_notify, a connection.close) would end the parent's connection or break its
    record stream.  The child lets go of the connection without a byte: a call raises
    ConnectionLost, close() and the child's exit (at-exit close, transports collected) send
    nothing, and the parent carries on over the same session.  Both drivers, each with its
    own I/O (not the synchronous facade, whose event loop runs in a thread)."""
    url = tls.url(cacertfile=tls.certs.ca_cert)
    if driver == "blocking":
        from leveret.client import blocking

        conn = within(15, Connection(url).connect)
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).queue

        def child() -> str:
            with pytest.raises(ConnectionLost, match="before fork"):
                within(5, lambda: ch.basic_publish(b"x", "", queue))
            conn.close()
            blocking._close_at_exit()
            gc.collect()
            return "ok"

        assert in_forked_child(child, timeout=60) == "ok"
        time.sleep(0.2)  # long enough for a record or a FIN from the child to reach the broker
        round_trip(conn)
        within(10, conn.close)
        return

    async def main() -> None:
        conn = await asyncio.wait_for(AsyncConnection(url).connect(), 15)
        ch = await conn.channel()
        ok = await ch.queue_declare("", exclusive=True)
        assert ok is not None

        def child() -> str:
            async def in_child() -> None:
                with pytest.raises(ConnectionLost, match="before fork"):
                    await asyncio.wait_for(ch.basic_publish(b"x", "", ok.queue), 5)
                await asyncio.wait_for(conn.close(), 5)

            asyncio.run(in_child())
            gc.collect()
            return "ok"

        assert in_forked_child(child, timeout=60) == "ok"
        await asyncio.sleep(0.2)  # long enough for a record or a FIN from the child to reach the broker
        assert conn.is_open
        await ch.basic_publish(b"after the fork", "", ok.queue)
        for _ in range(100):
            got = await ch.basic_get(ok.queue, no_ack=True)
            if got is not None:
                break
            await asyncio.sleep(0.05)
        assert got is not None and got.body == b"after the fork"
        await asyncio.wait_for(conn.close(), 10)

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_tls_connection_cut_in_the_middle_of_a_delivery_is_connection_lost(
    new_connection: NewConnection, tls: TLSNode, mode: Mode
) -> None:
    from tcpproxy import TCPProxy

    big = bytes(range(256)) * 8192  # 2 MiB
    queue = f"tlscut-{uuid.uuid4().hex[:8]}"
    with within(15, new_connection(tls.url(cacertfile=tls.certs.ca_cert)).connect) as direct:
        dch = direct.channel()
        dch.queue_declare(queue)
        dch.basic_publish(big, routing_key=queue)
    with TCPProxy(tls.tls_port) as proxy:
        conn = new_connection(tls.url(host="127.0.0.1", cacertfile=tls.certs.ca_cert,
                                  server_name_indication="localhost").replace(
                                      f":{tls.tls_port}/", f":{proxy.port}/"), rpc_timeout=15)
        within(15, conn.connect)
        try:
            ch = conn.channel()
            got: list[Message] = []
            proxy.cut_after(down=600_000, mode=mode)
            ch.basic_consume(queue, callback=got.append)
            # Not a raw ssl.SSLError / SSLEOFError: the driver's own error.
            with pytest.raises(ConnectionLost):
                within(20, conn.drain_events, timeout=15)
            assert got == []
        finally:
            within(5, conn.close)
    with within(15, new_connection(tls.url(cacertfile=tls.certs.ca_cert)).connect) as direct:
        dch = direct.channel()
        deadline = time.monotonic() + 10
        while dch.queue_declare(queue, passive=True).message_count != 1:
            assert time.monotonic() < deadline, "the message was not requeued"
            time.sleep(0.1)
        assert dch.basic_get(queue, no_ack=True).body == big
        dch.queue_delete(queue)


def test_memory_alarm_while_large_publishes_fill_the_tls_socket(new_connection: NewConnection, tls: TLSNode) -> None:
    """The TLS twin of test_client_faults' test of the same name: the broker stops reading
    a blocked connection, so a publisher of large bodies finds the socket full; every
    publish still returns or raises BlockedTimeout within about blocked_timeout (not after a
    write timeout that fails the connection), and once the alarm clears every publish that
    returned is confirmed and queued.

    On loopback the broker's TLS layer reads on for a few megabytes after it blocks the
    connection, so the connection.blocked notice would come before the socket is full; a
    proxy holds the notice back for a moment, as a longer link would, so that the socket
    fills first (plain TCP gets there without help).  This module's node takes the alarm,
    and it is lifted whatever happens."""
    from tcpproxy import TCPProxy

    with TCPProxy(tls.tls_port) as proxy:
        url = tls.url(host="127.0.0.1", cacertfile=tls.certs.ca_cert, server_name_indication="localhost")
        conn = new_connection(url.replace(f":{tls.tls_port}/", f":{proxy.port}/"), blocked_timeout=1.0)
        within(15, conn.connect)
        try:
            ch = conn.channel()
            queue = ch.queue_declare(f"tls-alarm-{uuid.uuid4().hex[:8]}").queue
            ch.confirm_select()
            body = b"x" * 1_000_000
            tls.node.set_vm_memory_high_watermark(0)
            thaw = threading.Timer(2.0, proxy.thaw)
            try:
                proxy.freeze("down")  # connection.blocked arrives 2 s late
                thaw.start()
                published = publish_until_blocked(ch, queue, body, each_within=50)
                assert conn.is_open
            finally:
                thaw.cancel()
                proxy.thaw()
                tls.node.set_vm_memory_high_watermark(0.4)
            deadline = time.monotonic() + 20
            while conn.blocked is not None:
                assert time.monotonic() < deadline, "no connection.unblocked within 20 s"
                time.sleep(0.1)
            assert within(30, ch.wait_for_confirms, timeout=25) is True
            assert ch.queue_declare(queue, passive=True).message_count == published
            ch.queue_delete(queue)
        finally:
            within(10, conn.close)


# --------------------------------------------------------------------------- the high-level Connection


def hl_round_trip(conn: Any) -> None:
    """A Producer/Consumer round trip through a high-level Connection."""
    from leveret.highlevel import Consumer, Producer, Queue
    from leveret.highlevel import Message as HLMessage

    got: list[Any] = []
    q = Queue(f"tls-hl-{uuid.uuid4().hex[:8]}", exclusive=True)
    def on_message(m: HLMessage) -> None:
        got.append(m.payload)
        m.ack()

    with Consumer(conn, [q], on_message=on_message):
        Producer(conn).publish({"over": "tls"}, routing_key=q.name)
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, "the message never arrived"
            try:
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                pass
    assert got == [{"over": "tls"}]


def test_highlevel_ssl_options_as_kombu_spells_them(tls: TLSNode) -> None:
    """``ssl={...}`` with kombu's (py-amqp's) keys: ``ca_certs`` and ``cert_reqs`` verify,
    ``certfile``/``keyfile`` present a client certificate for ``login_method="EXTERNAL"``."""
    from leveret.highlevel import Connection as HLConnection

    c = tls.certs
    conn = HLConnection("localhost", port=tls.tls_port, ssl={"ca_certs": str(c.ca_cert), "cert_reqs": ssl.CERT_REQUIRED},
                        connect_timeout=15)
    try:
        assert conn.as_uri().startswith("amqps://") and conn.ssl
        hl_round_trip(conn)
    finally:
        conn.release()
    name = f"tls-hl-{uuid.uuid4().hex[:10]}"
    conn = HLConnection(
        f"amqps://localhost:{tls.tls_port}//", login_method="EXTERNAL", connect_timeout=15,
        ssl={"ca_certs": str(c.ca_cert), "certfile": str(c.client_cert), "keyfile": str(c.client_key)},
        transport_options={"client_properties": {"connection_name": name}},
    )
    try:
        hl_round_trip(conn)
        [(user, is_ssl, mechanism, _)] = tls.connection_rows(name)
        assert (user, is_ssl, mechanism) == (CLIENT_CN, "true", "EXTERNAL")
    finally:
        conn.release()


def test_highlevel_ssl_verifies_unless_told_not_to(tls: TLSNode) -> None:
    from leveret.highlevel import Connection as HLConnection

    conn = HLConnection(f"amqps://guest:guest@localhost:{tls.tls_port}//", connect_timeout=15)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.connect()
    finally:
        conn.release()
    conn = HLConnection(f"localhost:{tls.tls_port}", ssl={"cert_reqs": ssl.CERT_NONE}, connect_timeout=15)
    try:
        hl_round_trip(conn)
    finally:
        conn.release()
    with pytest.raises(ValueError, match="unknown ssl option 'ciphers_please'"):
        HLConnection("localhost", ssl={"ciphers_please": "all"})
    # kombu's check_hostname=False skips the host-name check only, whatever the key order:
    # it once turned every check off, and a server with any certificate was taken.
    for options in ({"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": False},
                    {"check_hostname": False, "cert_reqs": ssl.CERT_REQUIRED},
                    {"check_hostname": False}):
        conn = HLConnection(f"localhost:{tls.tls_port}", ssl=options, connect_timeout=15)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                conn.connect()
        finally:
            conn.release()
    conn = HLConnection(f"127.0.0.1:{tls.tls_port}", connect_timeout=15, ssl={
        "ca_certs": str(tls.certs.ca_cert), "check_hostname": False, "server_hostname": "broker.example.com"})
    try:
        hl_round_trip(conn)
    finally:
        conn.release()


def test_highlevel_ssl_context_is_used_as_given(tls: TLSNode) -> None:
    from leveret.highlevel import Connection as HLConnection

    ctx = ssl.create_default_context(cafile=str(tls.certs.ca_cert))
    conn = HLConnection(f"localhost:{tls.tls_port}", ssl=ctx, connect_timeout=15)
    try:
        assert conn.ssl
        hl_round_trip(conn)
        clone = conn.clone()
        try:
            hl_round_trip(clone)  # a clone keeps the context
        finally:
            clone.release()
    finally:
        conn.release()
