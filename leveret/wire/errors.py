"""The exceptions every layer of leveret raises.

Two families, kept apart on purpose:

* :class:`ProtocolError` -- a rule of the protocol was broken *on this side of the wire*
  (:class:`LocalProtocolError`: the caller asked for something illegal, nothing was sent) or
  *by the peer* (:class:`RemoteProtocolError`: the bytes received are not valid AMQP).  A
  remote error carries the ``reply_code`` the client must close the connection with
  (501 frame-error, 502 syntax-error, 503 command-invalid, 505 unexpected-frame,
  540 not-implemented).

* :class:`AMQPError` -- the broker closed a channel (:class:`SoftError`) or the connection
  (:class:`HardError`) with a reply code.  One subclass per reply code is generated from the
  spec into :mod:`leveret.wire.replies` (``NotFound``, ``AccessRefused``, ...).

Everything derives from :class:`LeveretError`, so ``except leveret.LeveretError`` catches all
of it and nothing else.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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
]

# Reply codes a client closes the connection with when the peer misbehaves.  They are the
# spec's constants; the generated modules hold them too, but the hand-written wire layer must
# not import a particular version.
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
NOT_IMPLEMENTED = 540


class LeveretError(Exception):
    """Root of every exception leveret raises on purpose."""


class ProtocolError(LeveretError):
    """A rule of AMQP was broken.  ``reply_code`` is what the connection closes with."""

    reply_code: int = COMMAND_INVALID

    def __init__(self, message: str, reply_code: int | None = None) -> None:
        super().__init__(message)
        if reply_code is not None:
            self.reply_code = reply_code


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol forbids here; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid AMQP.

    The connection cannot continue: the client owes the peer a ``connection.close`` with
    ``reply_code`` and then drops the socket.
    """


class EncodeError(LocalProtocolError, ValueError):
    """A value cannot be put on the wire (a shortstr over 255 bytes, an int out of range,
    a table value of an unsupported type).  Nothing was written."""

    reply_code = SYNTAX_ERROR


class DecodeError(RemoteProtocolError):
    """A frame's payload does not decode (truncated, trailing bytes, unknown field type)."""

    reply_code = SYNTAX_ERROR


class FrameError(RemoteProtocolError):
    """The framing itself is broken: bad frame-end octet, unknown frame type, a heartbeat on a
    channel other than 0."""

    reply_code = FRAME_ERROR


class FrameTooLarge(FrameError):
    """A frame is larger than the negotiated ``frame_max``; nothing of it was buffered."""


class UnexpectedFrame(RemoteProtocolError):
    """A well-formed frame arrived where the protocol does not allow it (a body frame with no
    header before it, a method in the middle of a content)."""

    reply_code = UNEXPECTED_FRAME


class UnknownMethod(RemoteProtocolError):
    """A method or content class id that this protocol version does not define."""

    reply_code = NOT_IMPLEMENTED


class AMQPError(LeveretError):
    """The broker (or the client) closed a channel or the connection with a reply code.

    ``reply_code`` and ``reply_text`` are what ``channel.close`` / ``connection.close`` said;
    ``class_id`` and ``method_id`` name the method that caused it (0 when none did), and
    ``method_name`` its name (``"queue.declare"``) when the protocol version the error came
    from defines those ids (the client fills it in: this layer knows no version), else None.
    Subclasses per reply code live in :mod:`leveret.wire.replies`.
    """

    reply_code: int = 0
    #: True when this code closes only a channel (a soft error in the spec).
    soft: bool = False
    method_name: str | None = None

    def __init__(
        self,
        reply_text: str = "",
        reply_code: int | None = None,
        class_id: int = 0,
        method_id: int = 0,
        *,
        method_name: str | None = None,
    ) -> None:
        if reply_code is not None:
            self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id
        self.method_name = method_name
        super().__init__(reply_text)

    def __str__(self) -> str:
        """``404 NOT_FOUND - no queue 'q' in vhost '/' (caused by queue.declare 50/10)``;
        ``(caused by method 50/10)`` when the method's name is not known."""
        if not self.class_id:
            where = ""
        elif self.method_name:
            where = f" (caused by {self.method_name} {self.class_id}/{self.method_id})"
        else:
            where = f" (caused by method {self.class_id}/{self.method_id})"
        return f"{self.reply_code} {self.reply_text}{where}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling with our __init__'s arguments, then every attribute (method_name, and
        # notes or attributes a program added), as a plain exception's keeps them.
        return (
            type(self),
            (self.reply_text, self.__dict__.get("reply_code"), self.class_id, self.method_id),
            self.__dict__,
        )


class SoftError(AMQPError):
    """A reply code that closes one channel; the connection stays usable."""

    soft = True


class HardError(AMQPError):
    """A reply code that closes the whole connection."""

    soft = False


def again(error: BaseException) -> BaseException:
    """What to raise when ``error``, kept from earlier, is to be raised once more.

    A connection or reader that has failed raises why on every later call.  Raising the one
    kept object each time would add every raise's frames to its ``__traceback__`` and keep
    them, with their variables, alive: a program retrying on a dead connection grew it
    without end (160,000 frames after 20,000 calls).  So ``error`` itself is raised only the
    first time (while it has no traceback); later calls raise a copy of it -- same type,
    arguments and attributes -- whose ``__cause__`` is ``error``, so that a traceback shows
    both where the call was made and where it first went wrong.
    """
    if error.__traceback__ is None:
        return error
    clone = copy_error(error)
    if clone is None:
        return error.with_traceback(None)
    clone.__cause__ = error
    return clone


def copy_error(error: BaseException) -> BaseException | None:
    """A new exception of ``error``'s type with its arguments and attributes, and no
    traceback, cause or context; None for an exotic one that does not copy so (made without
    its ``__init__``, whose signature need not match ``args``)."""
    cls = type(error)
    try:
        clone = cls.__new__(cls, *error.args)
        clone.args = error.args
        clone.__dict__.update(error.__dict__)
    except Exception:  # noqa: BLE001 - an exception that does not copy like this
        return None
    return clone
