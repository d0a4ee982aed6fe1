"""The AMQP wire layer: field types, frames and the per-version method codecs.

Nothing in here does I/O.  :mod:`.amqp0_9_1` and :mod:`.amqp0_8` are generated from the
protocol specifications (constants, one class per method, content properties); the rest is
written by hand: :mod:`.fields` (field tables), :mod:`.frames` (the frame reader and
writer) and :mod:`.errors` (every exception leveret raises on purpose).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Iterator, Mapping

from . import amqp0_9_1, replies
from ._base import ContentProperties, Method, UndecodableProperties
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
    "SPECS",
    # generated-code bases
    "Method",
    "ContentProperties",
    "UndecodableProperties",
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


class _Specs(Mapping[str, ModuleType]):
    """``"0-9-1"`` and ``"0-8"`` -> their generated codec module, imported on first use:
    0-8's is the larger and rarely needed, and a process that only speaks 0-9-1 should
    not hold it in memory."""

    _modules = {"0-9-1": "amqp0_9_1", "0-8": "amqp0_8"}

    def __getitem__(self, protocol: str) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self._modules[protocol]}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


#: The codec module per protocol version, by the name used in URLs (``?protocol=0-8``).
SPECS: Mapping[str, ModuleType] = _Specs()


def __getattr__(name: str) -> ModuleType:
    # ``leveret.wire.amqp0_8`` as an attribute of the package, imported on first use.
    if name == "amqp0_8":
        return importlib.import_module(f"{__name__}.amqp0_8")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
