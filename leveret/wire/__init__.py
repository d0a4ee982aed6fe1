"""The AMQP wire layer: field types, frames and the per-version method codecs.

Nothing in here does I/O.  :mod:`.amqp0_9_1` and :mod:`.amqp0_8` are generated from the
protocol specifications (constants, one class per method, content properties); the rest is
written by hand: :mod:`.fields` (field tables), :mod:`.frames` (the frame reader and
writer) and :mod:`.errors` (every exception leveret raises on purpose).
"""

from __future__ import annotations

from . import amqp0_8, amqp0_9_1, replies
from ._base import ContentProperties, Method
from .errors import (
    AMQPError,
    DecodeError,
    EncodeError,
    FrameError,
    FrameTooLarge,
    HardError,
    LeveretError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    SoftError,
    UnexpectedFrame,
    UnknownMethod,
)
from .fields import decode_array, decode_table, encode_array, encode_table
from .frames import (
    HEARTBEAT_FRAME,
    NEED_DATA,
    BodyFrame,
    Frame,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    body_frame,
    content_frames,
    encode_frame,
    header_frame,
    heartbeat_frame,
    method_frame,
)

__all__ = [
    # version modules
    "amqp0_9_1",
    "amqp0_8",
    "replies",
    # generated-code bases
    "Method",
    "ContentProperties",
    # errors
    "LeveretError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "EncodeError",
    "DecodeError",
    "FrameError",
    "FrameTooLarge",
    "UnexpectedFrame",
    "UnknownMethod",
    "AMQPError",
    "SoftError",
    "HardError",
    # field tables
    "encode_table",
    "decode_table",
    "encode_array",
    "decode_array",
    # frames
    "Frame",
    "MethodFrame",
    "HeaderFrame",
    "BodyFrame",
    "HeartbeatFrame",
    "NEED_DATA",
    "FrameReader",
    "method_frame",
    "header_frame",
    "body_frame",
    "content_frames",
    "encode_frame",
    "heartbeat_frame",
    "HEARTBEAT_FRAME",
]
