"""Protocol-level testing tools: a scripted raw AMQP session and a conformance battery.

* :class:`RawSession` (:mod:`.session`): connect at the byte level, send any frame --
  well-formed, malformed, out of order, oversized -- and expect the broker's reply with a
  timeout; a failed expectation is an :class:`ExpectationFailed` (an ``AssertionError``)
  that shows what came instead.
* :func:`run_checks` (:mod:`.conformance`): the battery of named checks, each with the spec
  section it checks, that ``leveret conformance URL`` runs; :class:`Report`
  (:mod:`.report`) renders the results as a table, JSON or JUnit XML.
* Frame builders for scripts: :func:`raw_frame` (any part of a frame may be wrong) and the
  wire layer's ``method_frame``, ``header_frame``, ``body_frame``, ``content_frames``,
  ``HEARTBEAT_FRAME``.
"""

from ..wire.frames import (
    HEARTBEAT_FRAME,
    BodyFrame,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    body_frame,
    content_frames,
    header_frame,
    method_frame,
)
from .conformance import CHECKS, Check, CheckContext, ConformanceError, Skip, check, run_checks, select_checks
from .report import CheckResult, Report
from .session import EOF, ExpectationFailed, LogEntry, ProtocolHeader, RawSession, describe, raw_frame

__all__ = [
    "RawSession",
    "ExpectationFailed",
    "ProtocolHeader",
    "EOF",
    "LogEntry",
    "describe",
    "raw_frame",
    "method_frame",
    "header_frame",
    "body_frame",
    "content_frames",
    "HEARTBEAT_FRAME",
    "MethodFrame",
    "HeaderFrame",
    "BodyFrame",
    "HeartbeatFrame",
    "CHECKS",
    "Check",
    "CheckContext",
    "CheckResult",
    "ConformanceError",
    "Report",
    "Skip",
    "check",
    "run_checks",
    "select_checks",
]
