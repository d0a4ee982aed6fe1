#!/usr/bin/env python3
"""Capture the connection.start frame RabbitMQ sends for each protocol header.

Starts a private node (scripts/rabbitmq.py), or uses ``--url``, sends the 0-9-1 and the
0-8 protocol header on fresh TCP connections, and writes the first frame received, byte
for byte (header, payload and frame-end octet), to::

    tests/data/rabbitmq-<major.minor>-connection-start-0-9-1.bin
    tests/data/rabbitmq-<major.minor>-connection-start-0-8.bin

The broker version in the names is read from the captured server properties.
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rabbitmq import PrivateNode  # noqa: E402

HEADERS = {
    "0-9-1": b"AMQP\x00\x00\x09\x01",
    "0-8": b"AMQP\x01\x01\x08\x00",
}
DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("the broker closed the connection mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def first_frame(host: str, port: int, header: bytes, timeout: float = 10.0) -> bytes:
    """Send ``header`` and return the first whole frame the server answers with."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(header)
        head = _recv_exactly(sock, 7)
        if head.startswith(b"AMQP"):
            # A protocol header back means the server refused our version.
            raise ConnectionError(f"server refused {header!r}, offering {head + sock.recv(1)!r}")
        (size,) = struct.unpack_from(">I", head, 3)
        return head + _recv_exactly(sock, size + 1)


def server_version(frame: bytes) -> str:
    """major.minor of the ``version`` server property, found without a table decoder."""
    found = re.search(rb"\x07versionS\x00\x00\x00.(\d+)\.(\d+)", frame, re.S)
    return f"{int(found.group(1))}.{int(found.group(2))}" if found else "unknown"


def capture(host: str, port: int, out_dir: Path) -> list[Path]:
    written = []
    for name, header in HEADERS.items():
        frame = first_frame(host, port, header)
        path = out_dir / f"rabbitmq-{server_version(frame)}-connection-start-{name}.bin"
        path.write_bytes(frame)
        written.append(path)
        print(f"{path.relative_to(out_dir.parent.parent) if path.is_relative_to(out_dir.parent.parent) else path}: "
              f"{len(frame)} bytes, type {frame[0]}, channel {frame[1] << 8 | frame[2]}, "
              f"class/method {frame[7:11].hex()}, version {frame[11]}-{frame[12]}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="use this broker instead of starting a private node")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        parts = urlsplit(args.url)
        capture(parts.hostname or "127.0.0.1", parts.port or 5672, args.out)
        return 0
    with PrivateNode() as node:
        print(f"RabbitMQ {node.eval('rabbit_misc:version().')} on {node.url}")
        capture("127.0.0.1", node.port, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
