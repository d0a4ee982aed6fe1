"""The test broker is real: it answers AMQP protocol headers and rabbitmqctl, on loopback only.

These tests use raw sockets on purpose: they check the test harness, not leveret.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path

import pytest

from broker import Broker, PrivateNode, RabbitMQError

HEADER_0_9_1 = b"AMQP\x00\x00\x09\x01"
HEADER_0_8 = b"AMQP\x01\x01\x08\x00"
FRAME_METHOD = 1
FRAME_END = 0xCE


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def first_frame(broker: Broker, header: bytes) -> tuple[int, int, bytes]:
    """(frame type, channel, payload) of the server's first frame after ``header``."""
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        sock.sendall(header)
        frame_type, channel, size = struct.unpack(">BHI", _recv_exactly(sock, 7))
        payload = _recv_exactly(sock, size)
        assert _recv_exactly(sock, 1) == bytes([FRAME_END])
    return frame_type, channel, payload


@pytest.mark.parametrize(
    ("header", "version"),
    [(HEADER_0_9_1, (0, 9)), (HEADER_0_8, (8, 0))],
    ids=["0-9-1", "0-8"],
)
def test_connection_start_for_each_protocol_header(broker: Broker, header: bytes,
                                                   version: tuple[int, int]) -> None:
    frame_type, channel, payload = first_frame(broker, header)
    assert (frame_type, channel) == (FRAME_METHOD, 0)
    class_id, method_id, major, minor = struct.unpack_from(">HHBB", payload)
    assert (class_id, method_id) == (10, 10)  # connection.start
    # 0-8 puts its version the odd way round: major 8, minor 0.
    assert (major, minor) == version
    assert b"RabbitMQ" in payload


def test_unknown_protocol_header_gets_ours_back(broker: Broker) -> None:
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x07\x00")
        assert _recv_exactly(sock, 8) == HEADER_0_9_1


def test_ctl_status(node: PrivateNode) -> None:
    out = node.ctl("status")
    assert node.nodename in out
    assert "RabbitMQ version" in out
    assert node.eval("node().") == f"'{node.nodename}'"  # an Erlang atom, quoted


def test_url_and_names(node: PrivateNode) -> None:
    assert node.url == f"amqp://guest:guest@127.0.0.1:{node.port}/"
    assert node.nodename.startswith(f"leveret-{os.getpid()}-")
    assert node.port not in (5672, 0)


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", 4), ("tcp6", 6)):
        path = Path(f"/proc/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints the address as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.IPv4Address(raw) if family == 4 else ipaddress.IPv6Address(raw)
            found.add((str(addr), int(hex_port, 16)))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
def test_node_listens_on_loopback_only(node: PrivateNode) -> None:
    listening = _listening_addresses(node.beam_pid)
    ports = {port for _, port in listening}
    assert node.port in ports  # AMQP
    assert node.dist_port in ports  # Erlang distribution
    assert node.epmd_pid is not None
    epmd = _listening_addresses(node.epmd_pid)
    assert node.epmd_port in {port for _, port in epmd}
    for address, port in listening | epmd:
        assert ipaddress.ip_address(address).is_loopback, (address, port)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_fresh_node_manage_pause_restart_and_stop(fresh_node: PrivateNode) -> None:
    node = fresh_node
    node.add_vhost("leveret-test")
    node.add_user("leveret", "secret")
    node.set_permissions("leveret", "leveret-test")
    assert "leveret-test" in node.ctl("list_vhosts", "-q").split()
    broker = Broker(node.url, node)

    node.pause()
    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.settimeout(1.0)
        sock.sendall(HEADER_0_9_1)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # the kernel accepted, but the frozen VM cannot answer
        node.resume()
        sock.settimeout(10)
        assert sock.recv(1) == bytes([FRAME_METHOD])

    node.stop_app()
    with pytest.raises(OSError):
        first_frame(broker, HEADER_0_9_1)
    node.start_app()
    assert first_frame(broker, HEADER_0_9_1)[0] == FRAME_METHOD

    folder, pid = node.dir, node.beam_pid
    assert folder is not None and folder.exists() and _alive(pid)
    node.stop()
    assert not folder.exists()
    assert not _alive(pid)
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=2).close()
    with pytest.raises(RabbitMQError):
        node.ctl("status")


_OWNER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from rabbitmq import PrivateNode
node = PrivateNode().start()
print(node.dir, node.port, node.epmd_pid, node.beam_pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_node_does_not_outlive_its_owner(signal_name: str) -> None:
    # A test run killed by a CI time limit (SIGTERM), the OOM killer or kill -9 runs no
    # atexit and no finally; the node, its epmd and its folder must still go.
    import signal
    import subprocess
    import sys
    import time

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(scripts)],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline() if owner.stdout else ""
        assert line, "the owner could not start a node"
        folder_text, port_text, epmd_text, beam_text = line.split()
        folder, port, epmd, beam = Path(folder_text), int(port_text), int(epmd_text), int(beam_text)
        assert folder.exists() and _alive(epmd) and _alive(beam)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

        owner.send_signal(getattr(signal, signal_name))
        owner.wait(10)
        deadline = time.monotonic() + 20
        while (_alive(beam) or _alive(epmd) or folder.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(beam), "the node outlived its owner"
        assert not _alive(epmd), "the node's epmd outlived its owner"
        assert not folder.exists(), "the node's folder outlived its owner"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
