"""A bare AMQP socket for the benchmarks' floors: what any client could reach.

Not a library.  A plain blocking socket (``TCP_NODELAY``) that writes pre-encoded frames
and reads what the broker answers, with no objects, no threads and no per-message
encoding: the only Python work per message is a share of one ``sendall`` of many
messages at once.  Its rate is the broker's own limit on this machine (plus the kernel's),
so ``floor / fastest peer`` is about the highest ratio any client can get in a run; the
benchmarks print it next to a target so that a reader can tell a slow client from a
target the broker does not allow.  It is a measurement, as noisy as the others: a client
that spreads its writes over time can beat the floor's best repeat by a little (the broker
starts on the first publishes sooner), which says that client is bound by the broker too.
It is never counted in a verdict.

The frames are encoded with ``leveret.wire`` (checked against every peer by the codec
benchmark) before the clock starts; what comes back is decoded and checked (acks in order,
no nack, the expected method), so the floor cannot skip work that the clients do.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["BareSocket"]

#: Pre-encoded publishes are written in chunks of about this many bytes (at least one
#: message per write): big enough that the write system calls cost next to nothing per
#: message, small enough that the broker starts on the first while the rest are written.
WRITE_CHUNK = 256 * 1024


class BareSocket:
    """One connection, one channel (1), opened by hand on a blocking socket."""

    def __init__(self, host: str, port: int, user: str, password: str, vhost: str, timeout: float) -> None:
        from leveret.wire import amqp0_9_1 as spec
        from leveret.wire.frames import FrameReader, method_frame

        self.spec, self.method_frame = spec, method_frame
        sock = self.sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader(spec, 131072)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(spec.Connection.Start)
        sock.sendall(method_frame(0, spec.Connection.StartOk(
            client_properties={"product": "leveret benchmark floor"}, mechanism="PLAIN",
            response=f"\0{user}\0{password}".encode(), locale="en_US")))
        tune = self.expect(spec.Connection.Tune)
        self.frame_max = min(tune.frame_max or 131072, 131072)
        sock.sendall(method_frame(0, spec.Connection.TuneOk(
            channel_max=tune.channel_max or 2047, frame_max=self.frame_max, heartbeat=0))
            + method_frame(0, spec.Connection.Open(virtual_host=vhost)))
        self.expect(spec.Connection.OpenOk)
        sock.sendall(method_frame(1, spec.Channel.Open()))
        self.expect(spec.Channel.OpenOk)
        self.acked = 0

    # ------------------------------------------------------------------ reading

    def frames(self) -> list[Any]:
        """The next frames the broker sent (at least one), blocking."""
        frames = self.reader.read_frames()
        while not frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            frames = self.reader.read_frames(data)
        return frames

    def expect(self, cls: type) -> Any:
        """Read one frame; it must carry a ``cls`` method."""
        for frame in self.frames():
            method = getattr(frame, "method", None)
            if type(method) is cls:
                return method
            raise RuntimeError(f"expected {cls.__name__}, got {frame!r}")
        raise AssertionError("unreachable")

    def confirm_select(self) -> None:
        self.sock.sendall(self.method_frame(1, self.spec.Confirm.Select()))
        self.expect(self.spec.Confirm.SelectOk)

    def wait_acked(self, upto: int) -> None:
        """Read acks until delivery tag ``upto`` is confirmed; anything else is an error."""
        Ack = self.spec.Basic.Ack
        while self.acked < upto:
            for frame in self.frames():
                method = getattr(frame, "method", None)
                if type(method) is not Ack:
                    raise RuntimeError(f"expected basic.ack, got {frame!r}")
                if not method.multiple and method.delivery_tag != self.acked + 1:
                    raise RuntimeError(f"ack {method.delivery_tag} out of order (after {self.acked})")
                self.acked = method.delivery_tag

    def sync(self, queue: str) -> None:
        """``queue.declare passive`` and its answer: the broker has taken every publish before."""
        spec = self.spec
        self.sock.sendall(self.method_frame(1, spec.Queue.Declare(queue=queue, passive=True)))
        self.expect(spec.Queue.DeclareOk)

    # ------------------------------------------------------------------ writing

    def publish_frames(self, queue: str, body: bytes, properties: Any = None) -> bytes:
        """One publish to the default exchange, routed to ``queue``: all its frames, joined."""
        from leveret.wire.frames import content_frames

        spec = self.spec
        frames = content_frames(1, spec.Basic.Publish(exchange="", routing_key=queue), properties, body, self.frame_max)
        return frames if isinstance(frames, bytes) else b"".join(frames)

    @staticmethod
    def chunks(frames: bytes, n: int) -> list[bytes]:
        """``n`` copies of ``frames`` cut into writes of about :data:`WRITE_CHUNK` bytes
        (whole messages; the copies are made here, before any clock starts)."""
        per = max(1, WRITE_CHUNK // len(frames))
        full, rest = divmod(n, per)
        out = [frames * per] * full
        if rest:
            out.append(frames * rest)
        return out

    def close(self) -> None:
        spec = self.spec
        try:
            self.sock.sendall(self.method_frame(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)))
            while not any(type(getattr(f, "method", None)) is spec.Connection.CloseOk for f in self.frames()):
                pass
        finally:
            self.sock.close()
