#!/usr/bin/env python3
"""leveret's demo job (``make demo``): a real exchange with a RabbitMQ node started for it.

For now it opens a raw TCP connection, sends the AMQP 0-9-1 protocol header and decodes the
connection.start the broker answers with (using ``leveret.wire.amqp0_9_1`` when it exists,
else printing the frame in hex).

HOOK: once ``leveret.client`` can connect, replace ``exchange()`` with a publish/consume
round trip against ``url``; the node handling around it stays as it is.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rabbitmq import PrivateNode  # noqa: E402

HEADER_0_9_1 = b"AMQP\x00\x00\x09\x01"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def exchange(url: str) -> None:
    """The demo's body: talk to the broker at ``url`` and show what happened."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672),
                                  timeout=10) as sock:
        sock.sendall(HEADER_0_9_1)
        head = _recv_exactly(sock, 7)
        frame_type, channel, size = struct.unpack(">BHI", head)
        frame = head + _recv_exactly(sock, size + 1)
    print(f"sent the 0-9-1 protocol header; got a frame of type {frame_type} on channel "
          f"{channel}, {len(frame)} bytes")

    try:
        from leveret.wire import amqp0_9_1
    except ImportError:
        print("(leveret.wire.amqp0_9_1 is not there yet: raw frame follows)")
        for offset in range(0, len(frame), 32):
            print(f"  {offset:04x}  {frame[offset:offset + 32].hex(' ')}")
        return

    class_id, method_id = struct.unpack_from(">HH", frame, 7)
    method_type = amqp0_9_1.method_class(class_id, method_id)
    method = method_type.decode(frame, 11, 7 + size)
    print(f"decoded {method_type.NAME} with leveret.wire.amqp0_9_1:")
    for name in method_type.FIELDS:
        value = getattr(method, name)
        if isinstance(value, dict):
            print(f"  {name}:")
            for key, item in value.items():
                print(f"    {key}: {item!r}")
        else:
            print(f"  {name}: {value!r}")


def main() -> int:
    url = os.environ.get("LEVERET_TEST_URL")
    if url:
        print(f"using the broker at {url} (LEVERET_TEST_URL)")
        exchange(url)
        return 0
    print("starting a private RabbitMQ node ...", flush=True)
    with PrivateNode() as node:
        print(f"node {node.nodename} listening on {node.url}")
        exchange(node.url)
    print("node stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
