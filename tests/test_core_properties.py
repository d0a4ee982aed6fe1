"""Property tests of the sans-IO core's state machine (after h2's): every (state, input) pair
either lands in a documented state or raises a leveret error, and errors behave as the
module docstring promises.

``CoreMachine`` drives one connection that has finished its handshake with

* client actions: open_channel, close_channel, send_method (good and refused methods),
  publish, close, tick, and
* server inputs: frames a correct broker could send now (chosen from a model of the
  conversation), and, once a step says so, arbitrary frames, random bytes and EOF.

While only "valid" server inputs have been fed, the machine keeps a model of what the core
must do and checks it exactly: which requests succeed, the frames they queue, the events each
input gives, the channel states, delivery tags and unconfirmed publishes.  After the first
arbitrary input the model is dropped (``fuzzed``) and only the general properties are
checked:

* a step succeeds, and then the core's state is a ConnState, every channel it holds is in a
  ChannelState other than CLOSED and has an id in 1..channel_max, and what it queued parses
  as whole frames; or
* it raises a LocalProtocolError subclass, and then nothing changed and nothing was queued; or
* it raises another LeveretError (RemoteProtocolError, ConnectionLost), and then the state is
  ERROR, ``core.error`` is that exception, at most one connection.close (with its reply code)
  was queued, and every later receive_data / tick raises the very same exception;
* never any other exception type.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from leveret.client import events as ev
from leveret.client.core import ChannelState, ConnState
from leveret.client.errors import ConnectionLost
from leveret.wire.errors import LeveretError, LocalProtocolError, RemoteProtocolError
from leveret.wire.frames import (
    HEARTBEAT_FRAME,
    BodyFrame,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    body_frame,
    header_frame,
    method_frame,
)

from scripted import Scripted, one, parse_client_bytes
from strategies import methods as method_strategy
from strategies import properties as properties_strategy

FRAME_MAX = 4096
SOFT_CODES = [403, 404, 405, 406, 311]
HARD_CODES = [200, 320, 530, 541]
#: True now and then (sampled_from leans to its first element, as shrinking does)
RARELY = st.sampled_from([False] * 29 + [True])
NAMES = st.sampled_from(["q", "q2", "amq.direct", "ex", ""])

# send_method requests that must succeed on an open channel (0-8 spellings where they differ)
GOOD_REQUESTS = [
    "queue.declare", "queue.bind", "queue.purge", "queue.delete", "exchange.declare",
    "exchange.delete", "basic.qos", "basic.consume", "basic.cancel", "basic.get", "basic.ack",
    "basic.reject", "tx.select", "tx.commit", "tx.rollback", "confirm.select", "channel.flow",
    "basic.nack", "basic.recover-async", "basic.recover", "queue.unbind", "exchange.bind", "access.request",
]
# send_method must refuse these whatever the state
BAD_REQUESTS = [
    "basic.deliver", "basic.publish", "basic.return", "basic.get-ok", "queue.declare-ok",
    "channel.open", "channel.close", "channel.close-ok", "channel.open-ok", "channel.flow-ok",
    "connection.close", "connection.tune-ok", "connection.start", "basic.cancel-ok",
]


class MChan:
    """The model of one channel."""

    def __init__(self) -> None:
        self.state = "opening"
        self.pending: list[frozenset[str]] = []
        self.confirm = False
        self.tx = False
        self.next_tag = 1
        self.unconfirmed: list[int] = []
        self.mandatory: dict[int, tuple[str, bytes]] = {}  # tag -> (routing key, body)
        # Returns the core holds until a confirm settles their publish: (routing key, body).
        self.held: list[tuple[str, bytes]] = []


def _returned(events: list[Any]) -> list[tuple[int, int | None, bytes]]:
    """(channel, delivery tag, body) of the MessageReturned events among ``events``."""
    return [(e.channel_id, e.delivery_tag, e.body) for e in events if isinstance(e, ev.MessageReturned)]


def _publish_props(s: Any, body: bytes) -> Any:
    """The properties the model publishes ``body`` with (and a return gives back)."""
    return s.props(delivery_mode=2) if len(body) % 2 else None


def _snapshot(core: Any) -> Any:
    chans = {
        cid: (
            ch.state, [set(e) for e in ch.expect], ch.confirm, ch.tx, ch.next_tag,
            dict(ch.unconfirmed), ch.c_method, ch.c_props, ch.c_size, list(ch.c_chunks),
            ch.c_received, ch.c_discard, ch.flow_active, ch.close_error, ch.ticket,
            list(ch.held_returns),
        )
        for cid, ch in core._channels.items()
    }
    return (
        core.state, core._error, chans, sorted(core._free_ids), core._next_id, len(core._out),
        core.blocked, core.close_error, core.last_sent, core.last_received, core.channel_max,
        core.frame_max, core.heartbeat, core._reader.buffered,
    )


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s: Scripted = None  # type: ignore[assignment]  # set by the initialize rule

    # ------------------------------------------------------------------ set-up

    @initialize(
        protocol=st.sampled_from(["0-9-1", "0-8"]),
        channel_max=st.sampled_from([3, 1, 2, 4]),
        heartbeat=st.sampled_from([0, 10]),
        max_body_size=st.sampled_from([8, 5000]),
        opened=st.sampled_from([2, 0, 1, 3, 4]),
        confirm=st.booleans(),
    )
    def handshake(
        self, protocol: str, channel_max: int, heartbeat: int, max_body_size: int, opened: int,
        confirm: bool,
    ) -> None:
        self.s = Scripted(protocol, max_body_size=max_body_size, heartbeat=heartbeat)
        self.s.handshake(channel_max=channel_max, frame_max=FRAME_MAX, heartbeat=heartbeat)
        self.core = self.s.core
        self.spec = self.s.spec
        self.now = 0.0
        self.core.last_received = self.core.last_sent = 0.0
        self.fuzzed = False
        self.steps = 0
        self.error: BaseException | None = None
        self.conn = "open"
        self.chans: dict[int, MChan] = {}
        self.max_body_size = max_body_size
        self.m_last_received = 0.0
        self.m_last_sent = 0.0
        # start with some channels open, so that the steps get to the interesting states
        for _ in range(min(opened, channel_max)):
            cid = self.s.open_channel()
            self.chans[cid] = MChan()
            self.chans[cid].state = "open"
            if confirm and protocol == "0-9-1" and cid % 2:
                self.s.core.send_method(cid, self.s.m("confirm.select"))
                self.s.sent_bytes()
                self.s.feed(self.s.frame(cid, "confirm.select-ok"))
                self.chans[cid].confirm = True
        # The handshake was fed without a clock (tick would date it at its own now): put
        # the receive clock at 0 through the API.
        self.core.receive_data(HEARTBEAT_FRAME, now=0.0)

    # ------------------------------------------------------------------ helpers

    @property
    def modelled(self) -> bool:
        return not self.fuzzed and self.error is None

    def is_sticky(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the broken connection's error: the kept object itself, or (once
        that has been raised) a copy of it caused by it (see leveret.wire.errors.again)."""
        error = self.error
        return error is not None and (
            exc is error or (type(exc) is type(error) and exc.__cause__ is error and str(exc) == str(error))
        )

    def drain(self) -> list[Any]:
        """What the core queued, as frames; checks each fits the negotiated frame_max."""
        data = self.core.data_to_send(now=self.now)
        if data:
            self.m_last_sent = self.now
        self.last_data = data
        frames = parse_client_bytes(self.spec, data)
        at = 0
        for f in frames:
            size = int.from_bytes(data[at + 3 : at + 7], "big")
            assert size + 8 <= self.core.frame_max, f
            at += size + 8
        return frames

    def names(self, frames: list[Any]) -> list[tuple[int, str]]:
        return [(f.channel, f.method.NAME if isinstance(f, MethodFrame) else type(f).__name__) for f in frames]

    def client(self, action: Any, expect_ok: bool | None) -> tuple[bool, Any]:
        """Run a client request; on a LocalProtocolError check that nothing changed.

        ``expect_ok`` is the model's prediction (None: no prediction)."""
        before = _snapshot(self.core)
        try:
            result = action()
        except LocalProtocolError as exc:
            # a broken connection answers every request with its own error
            assert self.error is None, f"{exc!r} instead of the sticky {self.error!r}"
            assert _snapshot(self.core) == before, f"{exc!r} changed the core"
            assert self.core.data_to_send() == b"", f"{exc!r} queued bytes"
            if expect_ok and self.modelled:
                raise AssertionError(f"the model expected success, got {exc!r}")
            return False, exc
        except LeveretError as exc:
            # only the sticky error of a broken connection may come out of a request
            assert self.error is not None, repr(exc)
            assert self.is_sticky(exc), repr(exc)
            assert self.core.state is ConnState.ERROR
            assert self.core.data_to_send() == b""
            return False, exc
        if self.error is not None:
            # a broken connection refuses every request but close()
            assert self.core.state is ConnState.ERROR
        if expect_ok is False and self.modelled:
            raise AssertionError(f"the model expected a refusal, got {result!r}")
        return True, result

    def server(self, data: bytes, pieces: list[int], valid: bool) -> list[ev.Event] | None:
        """Feed ``data`` cut at ``pieces``; returns the events, or None after an error."""
        cuts = sorted({p % len(data) for p in pieces if data and p % len(data)}) if data else []
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])] if data else [b""]
        events: list[ev.Event] = []
        state_at = self.core.state
        try:
            for chunk in chunks:
                state_at = self.core.state
                self.m_last_received = self.now
                events.extend(self.core.receive_data(chunk, now=self.now))
        except (RemoteProtocolError, ConnectionLost) as exc:
            if self.error is not None:
                assert self.is_sticky(exc)
                return None
            if valid and self.modelled and not (data == b"" and isinstance(exc, ConnectionLost)):
                raise AssertionError(f"a valid input raised {exc!r}")
            self.broken(exc, state_at)
            return None
        except LeveretError as exc:
            raise AssertionError(f"receive_data raised {exc!r}, not a remote error") from exc
        assert self.error is None, "a broken connection accepted input"
        late = self.core.error
        if late is not None:
            # The violation came after frames that made events: those were returned and
            # the error waits for the next call.
            assert isinstance(late, RemoteProtocolError) and events, (late, events)
            if valid and self.modelled:
                raise AssertionError(f"a valid input broke the connection: {late!r}")
            self.broken(late, state_at)
            return None
        return events

    def broken(self, exc: BaseException, state_before: ConnState) -> None:
        core = self.core
        assert core.state is ConnState.ERROR
        assert core.error is exc
        frames = self.drain()
        names = self.names(frames)
        closes = [f for f in frames if isinstance(f, MethodFrame) and f.method.NAME == "connection.close"]
        if isinstance(exc, RemoteProtocolError):
            assert len(closes) <= 1, names
            if state_before is ConnState.OPEN and (0, "connection.close-ok") not in names:
                assert len(closes) == 1, names  # the close the spec asks for
            if closes:
                assert closes[0] is frames[-1] and closes[0].channel == 0, names
                assert closes[0].method.reply_code == exc.reply_code
        else:
            assert closes == [], names
        for later in (lambda: core.receive_data(HEARTBEAT_FRAME), lambda: core.tick(self.now + 1e6),
                      lambda: core.receive_data(b"")):
            try:
                later()
            except LeveretError as again:
                # the kept error, or (once it has been raised) a copy of it caused by it
                assert again is exc or (again.__cause__ is exc and str(again) == str(exc))
            else:
                raise AssertionError("the error is not sticky")
        core.close()
        assert core.data_to_send() == b""
        self.error = exc

    def pick_channel(self, data: st.DataObject, states: tuple[str, ...]) -> int | None:
        ids = sorted(cid for cid, ch in self.chans.items() if ch.state in states)
        if not ids:
            return None
        return data.draw(st.sampled_from(ids))

    def some_channel(self, data: st.DataObject) -> int:
        """Mostly an open channel (of the model, or of the core once fuzzed), sometimes any id."""
        ids = sorted(cid for cid, ch in self.core._channels.items() if ch.state is ChannelState.OPEN)
        if ids and data.draw(st.integers(0, 3), label="open one?") != 0:
            return data.draw(st.sampled_from(ids), label="channel")
        return data.draw(st.integers(0, self.core.channel_max + 1), label="channel")

    def model_unconfirmed(self) -> dict[int, list[int]]:
        return {cid: list(ch.unconfirmed) for cid, ch in self.chans.items() if ch.unconfirmed}

    def free_ids(self) -> list[int]:
        return [i for i in range(1, self.core.channel_max + 1) if i not in self.chans]

    # ------------------------------------------------------------------ client actions

    @rule(explicit=st.one_of(st.none(), st.integers(0, 6)))
    def open_channel(self, explicit: int | None) -> None:
        free = self.free_ids()
        if explicit is None:
            predicted = self.conn == "open" and bool(free)
        else:
            predicted = self.conn == "open" and explicit in free
        ok, cid = self.client(lambda: self.core.open_channel(explicit), predicted)
        if not ok:
            return
        assert 1 <= cid <= self.core.channel_max
        assert self.names(self.drain()) == [(cid, "channel.open")]
        if self.modelled:
            assert cid == (min(free) if explicit is None else explicit)
            self.chans[cid] = MChan()

    @rule(data=st.data())
    def close_channel(self, data: st.DataObject) -> None:
        if not data.draw(st.sampled_from([False, False, True]), label="close one?"):
            return
        cid = data.draw(st.integers(0, self.core.channel_max + 1), label="channel")
        ch = self.chans.get(cid)
        code = data.draw(st.sampled_from([200, 200, 406]), label="code")
        predicted = self.conn == "open" and ch is not None
        ok, _ = self.client(lambda: self.core.close_channel(cid, code, "bye"), predicted)
        if not ok:
            return
        frames = self.drain()
        if self.modelled:
            assert ch is not None
            if ch.state == "closing":
                assert frames == []
            else:
                assert self.names(frames) == [(cid, "channel.close")]
                assert frames[0].method.reply_code == code
                ch.state = "closing"
                ch.pending.clear()

    @rule(data=st.data(), good=st.booleans(), no_wait=st.sampled_from([False, False, False, True]))
    def send_method(self, data: st.DataObject, good: bool, no_wait: bool) -> None:
        has = self.core.has_method
        names = [n for n in (GOOD_REQUESTS if good else BAD_REQUESTS) if has(n)]
        name = data.draw(st.sampled_from(names), label="method")
        cid = self.some_channel(data)
        method = self.s.m(name)
        for field in method.FIELDS:
            if field in ("queue", "exchange", "consumer_tag"):
                setattr(method, field, data.draw(NAMES, label=field))
            elif field in ("no_wait", "nowait"):
                setattr(method, field, no_wait)
            elif field in ("delivery_tag", "prefetch_count"):
                setattr(method, field, data.draw(st.integers(0, 5), label=field))
        ch = self.chans.get(cid)
        predicted = (
            good and self.conn == "open" and ch is not None and ch.state == "open"
            and not (name == "confirm.select" and ch.tx) and not (name == "tx.select" and ch.confirm)
        )
        ok, _ = self.client(lambda: self.core.send_method(cid, method), predicted)
        if not ok:
            return
        self.drain()
        assert self.last_data == method_frame(cid, method)
        if self.modelled:
            assert ch is not None
            if name == "confirm.select":
                ch.confirm = True
            elif name == "tx.select":
                ch.tx = True
            waits = not (getattr(method, "no_wait", False) or getattr(method, "nowait", False))
            if method.SYNCHRONOUS and method.RESPONSES and waits:
                ch.pending.append(frozenset(r.NAME for r in method.RESPONSES))

    @rule(
        data=st.data(),
        size=st.sampled_from([0, 1, 7, 4088, 4089, 10000]),
        mandatory=st.booleans(),
        rk=st.sampled_from(["a", "b"]),
    )
    def publish(self, data: st.DataObject, size: int, mandatory: bool, rk: str) -> None:
        cid = self.some_channel(data)
        body = bytes([size % 251]) * size
        method = self.s.m("basic.publish", exchange="ex", routing_key=rk, mandatory=mandatory)
        props = _publish_props(self.s, body)
        ch = self.chans.get(cid)
        predicted = self.conn == "open" and ch is not None and ch.state == "open"
        ok, tag = self.client(
            lambda: self.core.publish(cid, method, props, body), predicted
        )
        if not ok:
            return
        frames = self.drain()
        assert frames[0] == MethodFrame(cid, method)
        assert isinstance(frames[1], HeaderFrame) and frames[1].body_size == size
        assert all(isinstance(f, BodyFrame) and f.channel == cid for f in frames[2:])
        assert b"".join(f.payload for f in frames[2:]) == body
        assert len(frames) == 2 + -(-size // (self.core.frame_max - 8))
        if self.modelled:
            assert ch is not None
            if ch.confirm:
                assert tag == ch.next_tag
                ch.unconfirmed.append(tag)
                if mandatory:
                    ch.mandatory[tag] = (rk, body)
                ch.next_tag += 1
            else:
                assert tag is None

    @rule(code=st.sampled_from([200, 320]), now=RARELY)
    def close(self, code: int, now: bool) -> None:
        if not now:  # closing ends the conversation: rarely
            return
        ok, _ = self.client(lambda: self.core.close(code, "bye"), True if self.error is None else None)
        frames = self.drain()
        if self.modelled:
            if self.conn == "open":
                assert self.names(frames) == [(0, "connection.close")]
                self.conn = "closing"
            else:
                assert frames == []
        elif self.error is not None:
            assert frames == []

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 4.9, 5.0, 6.0, 25.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        hb = self.core.heartbeat
        sent_before = self.m_last_sent
        state_before = self.core.state
        try:
            result = self.core.tick(self.now)
        except ConnectionLost as exc:
            if self.error is not None:
                assert self.is_sticky(exc)
                return
            if self.modelled:
                assert hb and self.conn in ("open", "closing")
                assert self.now - self.m_last_received > 2 * hb
            self.broken(exc, state_before)
            return
        except LeveretError as exc:
            assert self.is_sticky(exc), repr(exc)
            return
        assert self.error is None
        frames = self.drain()
        if self.modelled:
            if not hb or self.conn not in ("open", "closing"):
                assert result is None and frames == []
            else:
                assert self.now - self.m_last_received <= 2 * hb
                assert result is not None and result > 0
                due = self.now - sent_before >= hb / 2
                assert frames == ([HeartbeatFrame(0)] if due else []), (self.now, sent_before)

    # ------------------------------------------------------------------ valid server input

    # Three rules for the same thing, so that server input is about as frequent as client
    # requests (hypothesis picks rules uniformly).
    @precondition(lambda self: self.s is not None and self.modelled)
    @rule(data=st.data(), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_valid(self, data: st.DataObject, pieces: list[int]) -> None:
        self._server_valid(data, pieces)

    @precondition(lambda self: self.s is not None and self.modelled)
    @rule(data=st.data(), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_valid_too(self, data: st.DataObject, pieces: list[int]) -> None:
        self._server_valid(data, pieces)

    @precondition(lambda self: self.s is not None and self.modelled)
    @rule(data=st.data(), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_valid_again(self, data: st.DataObject, pieces: list[int]) -> None:
        self._server_valid(data, pieces)

    def _server_valid(self, data: st.DataObject, pieces: list[int]) -> None:
        options = ["heartbeat"]
        if self.conn == "open":
            if data.draw(RARELY, label="end it?"):
                options += ["conn_close", "eof"]
            if self.spec.NAME == "0-9-1":
                options += ["blocked"]
            states = {c.state for c in self.chans.values()}
            if "opening" in states:
                options += ["open_ok"] * 3
            if "open" in states:
                options += ["deliver", "deliver", "flow", "chan_close"]
            if any(c.state == "open" and c.pending for c in self.chans.values()):
                options += ["reply"] * 4
            if any(c.state == "open" and c.unconfirmed for c in self.chans.values()):
                options += ["confirm", "confirm", "return"]
            if "closing" in states:
                options += ["close_ok", "close_ok", "chan_close_too", "dropped"]
        elif self.conn == "closing":
            options += ["conn_close_ok", "conn_close", "dropped_conn", "eof"]
        else:
            options += ["eof", "late_close_ok"]
        kind = data.draw(st.sampled_from(options), label="input")
        event(f"valid input: {kind}")
        handler = getattr(self, "_in_" + kind)
        handler(data, pieces)

    def _in_heartbeat(self, data: st.DataObject, pieces: list[int]) -> None:
        assert self.server(HEARTBEAT_FRAME, pieces, True) == []
        assert self.drain() == []

    def _in_eof(self, data: st.DataObject, pieces: list[int]) -> None:
        unconfirmed = self.model_unconfirmed()
        state_before = self.core.state
        try:
            events = self.core.receive_data(b"", now=self.now)
        except ConnectionLost as exc:
            assert self.conn == "open"
            assert exc.unconfirmed == unconfirmed
            self.broken(exc, state_before)
            return
        if self.conn == "closing":
            assert one(events, ev.ConnectionClosed).unconfirmed == unconfirmed
            self.conn = "closed"
            self.chans.clear()
        else:
            assert self.conn == "closed" and events == []

    def _in_blocked(self, data: st.DataObject, pieces: list[int]) -> None:
        if data.draw(st.booleans()):
            assert self.server(self.s.frame(0, "connection.blocked", reason="mem"), pieces, True) == [
                ev.ConnectionBlocked("mem")
            ]
        else:
            assert self.server(self.s.frame(0, "connection.unblocked"), pieces, True) == [
                ev.ConnectionUnblocked()
            ]
        assert self.drain() == []

    def _in_open_ok(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("opening",))
        assert cid is not None
        assert self.server(self.s.frame(cid, "channel.open-ok"), pieces, True) == [ev.ChannelOpened(cid)]
        assert self.drain() == []
        self.chans[cid].state = "open"

    def _content(self, data: st.DataObject, cid: int, method: Any, body: bytes) -> bytes:
        props = data.draw(st.sampled_from([None, self.s.props(content_type="text/plain", priority=3)]))
        chunk = data.draw(st.sampled_from([None, 1, 3, FRAME_MAX - 8]))
        if chunk is None or (chunk < 10 and len(body) > 100):
            chunk = FRAME_MAX - 8
        return self.s.content(cid, method, body, props, chunk)

    def _in_deliver(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("open",))
        assert cid is not None
        body = data.draw(st.binary(max_size=20) | st.just(b"z" * 9000))
        method = self.s.m("basic.deliver", consumer_tag="c", delivery_tag=7, exchange="ex", routing_key="k")
        events = self.server(self._content(data, cid, method, body), pieces, True)
        assert events is not None and len(events) == 1
        [event] = events
        if len(body) > self.max_body_size:
            assert isinstance(event, ev.MessageTooLarge)
            assert (event.channel_id, event.method, event.body_size) == (cid, method, len(body))
        else:
            assert isinstance(event, ev.MessageReceived)
            assert (event.channel_id, event.method, event.body) == (cid, method, body)
        assert self.core._channels[cid].c_chunks == []
        assert self.drain() == []

    def _in_flow(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("open",))
        assert cid is not None
        active = data.draw(st.booleans())
        assert self.server(self.s.frame(cid, "channel.flow", active=active), pieces, True) == [
            ev.FlowChanged(cid, active)
        ]
        assert self.drain() == [MethodFrame(cid, self.s.m("channel.flow-ok", active=active))]

    def _in_chan_close(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("open",))
        assert cid is not None
        code = data.draw(st.sampled_from(SOFT_CODES))
        events = self.server(self.s.frame(cid, "channel.close", reply_code=code, reply_text="x"), pieces, True)
        assert events is not None
        assert _returned(events[:-1]) == [(cid, None, body) for _, body in self.chans[cid].held]
        closed = events[-1]
        assert isinstance(closed, ev.ChannelClosed) and closed.channel_id == cid and closed.by_peer
        assert closed.error is not None and closed.error.reply_code == code
        assert list(closed.unconfirmed) == self.chans[cid].unconfirmed
        assert self.drain() == [MethodFrame(cid, self.s.m("channel.close-ok"))]
        del self.chans[cid]

    def _in_reply(self, data: st.DataObject, pieces: list[int]) -> None:
        cids = sorted(c for c, ch in self.chans.items() if ch.state == "open" and ch.pending)
        cid = data.draw(st.sampled_from(cids))
        ch = self.chans[cid]
        name = data.draw(st.sampled_from(sorted(ch.pending[0])))
        method = self.s.m(name)
        if method.HAS_CONTENT:  # basic.get-ok
            body = data.draw(st.binary(max_size=12))
            events = self.server(self._content(data, cid, method, body), pieces, True)
            if len(body) > self.max_body_size:
                assert events is not None
                assert one(events, ev.MessageTooLarge).body_size == len(body)
            else:
                assert events is not None
                assert one(events, ev.MessageReceived).body == body
        else:
            assert self.server(self.s.frame(cid, method), pieces, True) == [ev.MethodReceived(cid, method)]
        ch.pending.pop(0)
        assert self.drain() == []

    def _in_confirm(self, data: st.DataObject, pieces: list[int]) -> None:
        cids = sorted(c for c, ch in self.chans.items() if ch.state == "open" and ch.unconfirmed)
        cid = data.draw(st.sampled_from(cids))
        ch = self.chans[cid]
        tag = data.draw(st.sampled_from(ch.unconfirmed))
        multiple = data.draw(st.booleans())
        all_ = multiple and data.draw(st.booleans())
        ack = data.draw(st.booleans())
        name = "basic.ack" if ack else "basic.nack"
        frame = self.s.frame(cid, name, delivery_tag=0 if all_ else tag, multiple=multiple)
        if all_:
            settled = list(ch.unconfirmed)
        elif multiple:
            settled = [t for t in ch.unconfirmed if t <= tag]
        else:
            settled = [tag]
        # Held returns pair with publishes this confirm settles (same key and body, lowest
        # tag first), and come out just before it; the rest wait, or come out untagged
        # when no publish they could be is left.
        candidates = [t for t in settled if t in ch.mandatory]
        paired: list[tuple[int, int | None, bytes]] = []
        still: list[tuple[str, bytes]] = []
        for rk, body in ch.held:
            match = next((t for t in candidates if ch.mandatory[t] == (rk, body)), None)
            if match is None:
                still.append((rk, body))
                continue
            candidates.remove(match)
            del ch.mandatory[match]
            paired.append((cid, match, body))
        ch.held = []
        for rk, body in still:
            if any(info == (rk, body) for t, info in ch.mandatory.items() if t not in settled):
                ch.held.append((rk, body))
            else:
                paired.append((cid, None, body))
        events = self.server(frame, pieces, True)
        assert events is not None
        assert _returned(events) == paired
        assert events[len(paired):] == [ev.PublishConfirmed(cid, settled, ack)]
        for t in settled:
            ch.unconfirmed.remove(t)
            ch.mandatory.pop(t, None)
        assert self.core.unconfirmed().get(cid, []) == ch.unconfirmed
        assert self.drain() == []

    def _in_return(self, data: st.DataObject, pieces: list[int]) -> None:
        # A publish the broker has not returned yet (at most one return per publish).
        candidates = sorted(
            (cid, tag)
            for cid, ch in self.chans.items()
            if ch.state == "open"
            for tag, info in ch.mandatory.items()
            if len(info[1]) <= self.max_body_size
            and ch.held.count(info) < list(ch.mandatory.values()).count(info)
        )
        if not candidates:
            return self._in_heartbeat(data, pieces)
        cid, tag = data.draw(st.sampled_from(candidates))
        ch = self.chans[cid]
        rk, body = ch.mandatory[tag]
        method = self.s.m("basic.return", reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key=rk)
        frame = self.s.content(cid, method, body, _publish_props(self.s, body), FRAME_MAX - 8)
        # Held until the confirm that settles its publish says which one it is.
        assert self.server(frame, pieces, True) == []
        ch.held.append((rk, body))
        assert self.drain() == []

    def _in_close_ok(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("closing",))
        assert cid is not None
        events = self.server(self.s.frame(cid, "channel.close-ok"), pieces, True)
        assert events is not None
        assert _returned(events[:-1]) == [(cid, None, body) for _, body in self.chans[cid].held]
        events = events[-1:]
        assert isinstance(events[0], ev.ChannelClosed) and events[0].channel_id == cid
        assert events[0].by_peer is False
        assert list(events[0].unconfirmed) == self.chans[cid].unconfirmed
        assert self.drain() == []
        del self.chans[cid]

    def _in_chan_close_too(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("closing",))
        assert cid is not None
        assert self.server(self.s.frame(cid, "channel.close", reply_code=406, reply_text="x"), pieces, True) == []
        assert self.drain() == [MethodFrame(cid, self.s.m("channel.close-ok"))]

    def _dropped_frames(self, data: st.DataObject, cid: int) -> bytes:
        s = self.s
        choices = [
            s.content(cid, s.m("basic.deliver", delivery_tag=1), b"abc", None, 1),
            s.content(cid, s.m("basic.deliver", delivery_tag=1), b"z" * 9000, None, FRAME_MAX - 8),
            s.frame(cid, "basic.cancel", consumer_tag="c"),
            s.frame(cid, "queue.declare-ok", queue="q"),
            s.frame(cid, "basic.ack", delivery_tag=1),
        ]
        return data.draw(st.sampled_from(choices))

    def _in_dropped(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = self.pick_channel(data, ("closing",))
        assert cid is not None
        assert self.server(self._dropped_frames(data, cid), pieces, True) == []
        assert self.drain() == []
        assert self.core._channels[cid].c_chunks == []

    def _in_dropped_conn(self, data: st.DataObject, pieces: list[int]) -> None:
        ids = sorted(self.chans)
        if not ids:
            return self._in_heartbeat(data, pieces)
        cid = data.draw(st.sampled_from(ids))
        assert self.server(self._dropped_frames(data, cid), pieces, True) == []
        assert self.drain() == []

    def _in_conn_close(self, data: st.DataObject, pieces: list[int]) -> None:
        code = data.draw(st.sampled_from(HARD_CODES))
        events = self.server(self.s.frame(0, "connection.close", reply_code=code, reply_text="x"), pieces, True)
        assert events is not None
        assert sorted(_returned(events[:-1])) == self.held_returns()
        closed = events[-1]
        assert isinstance(closed, ev.ConnectionClosed)
        assert closed.unconfirmed == self.model_unconfirmed()
        if self.conn == "open":
            assert closed.by_peer is True
            assert (closed.error is None) == (code == 200)
            if code != 200:
                assert closed.error is not None and closed.error.reply_code == code
        else:
            assert closed.by_peer is False
        assert self.drain() == [MethodFrame(0, self.s.m("connection.close-ok"))]
        self.conn = "closed"
        self.chans.clear()

    def _in_conn_close_ok(self, data: st.DataObject, pieces: list[int]) -> None:
        events = self.server(self.s.frame(0, "connection.close-ok"), pieces, True)
        assert events is not None
        assert sorted(_returned(events[:-1])) == self.held_returns()
        closed = one(events[-1:], ev.ConnectionClosed)
        assert closed.by_peer is False
        assert closed.unconfirmed == self.model_unconfirmed()
        assert self.drain() == []
        self.conn = "closed"
        self.chans.clear()

    def held_returns(self) -> list[tuple[int, int | None, bytes]]:
        """What a close reports of the returns still held, untagged, sorted."""
        return sorted((cid, None, body) for cid, ch in self.chans.items() for _, body in ch.held)

    def _in_late_close_ok(self, data: st.DataObject, pieces: list[int]) -> None:
        # after a simultaneous close the peer's close-ok may still come
        assert self.server(self.s.frame(0, "connection.close-ok"), pieces, True) == []
        assert self.drain() == []

    def teardown(self) -> None:
        if self.s is not None:
            event(f"final state: {self.core.state.value}{' (fuzzed)' if self.fuzzed else ''}")
            event(f"steps: {min(self.steps // 10 * 10, 40)}+")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def states_are_documented(self) -> None:
        if self.s is None:
            return
        self.steps += 1
        core = self.core
        assert isinstance(core.state, ConnState)
        assert (core.error is not None) == (core.state is ConnState.ERROR)
        for cid, ch in core._channels.items():
            assert isinstance(ch.state, ChannelState) and ch.state is not ChannelState.CLOSED
            assert 1 <= cid <= core.channel_max
            assert ch.id == cid
            if ch.c_method is None:
                assert ch.c_chunks == [] and ch.c_props is None
        assert not set(core._free_ids) & set(core._channels)
        assert len(set(core._free_ids)) == len(core._free_ids)
        assert all(1 <= i <= core.channel_max for i in core._free_ids)
        assert not core.wants_write, "a step left bytes undrained"

    @invariant()
    def model_agrees(self) -> None:
        if self.s is None or not self.modelled:
            return
        core = self.core
        assert core.state.value == self.conn
        for cid in range(0, core.channel_max + 2):
            ch = self.chans.get(cid)
            assert core.channel_state(cid).value == (ch.state if ch else "closed")
            if ch is not None:
                assert core.is_confirm_mode(cid) == ch.confirm
        assert core.unconfirmed() == self.model_unconfirmed()


class FuzzMachine(CoreMachine):
    """CoreMachine plus arbitrary server input: after the first one, only the general
    properties are checked."""

    # ------------------------------------------------------------------ arbitrary server input

    def _fuzz(self, data: bytes, pieces: list[int]) -> None:
        self.fuzzed = True
        events = self.server(data, pieces, False)
        if events is not None:
            for e in events:
                assert isinstance(e, ev.Event)
            self.drain()

    @precondition(lambda self: self.s is not None)
    @rule(data=st.data(), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_any_method(self, data: st.DataObject, pieces: list[int]) -> None:
        classes = sorted(self.spec.METHODS.values(), key=lambda c: c.INDEX)
        cls = data.draw(st.sampled_from(classes), label="class")
        method = data.draw(method_strategy(cls), label="method")
        cid = data.draw(st.integers(0, self.core.channel_max + 1), label="channel")
        frame = method_frame(cid, method)
        if method.HAS_CONTENT and data.draw(st.booleans()):
            size = data.draw(st.integers(0, 20))
            frame += header_frame(cid, cls.CLASS_ID, size, None) + (body_frame(cid, b"b" * size) if size else b"")
        self._fuzz(frame, pieces)

    @precondition(lambda self: self.s is not None)
    @rule(data=st.data(), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_any_content_frame(self, data: st.DataObject, pieces: list[int]) -> None:
        cid = data.draw(st.integers(0, self.core.channel_max + 1), label="channel")
        if data.draw(st.booleans()):
            pcls = data.draw(st.sampled_from(sorted(self.spec.PROPERTIES.values(), key=lambda c: c.__qualname__)))
            props = data.draw(properties_strategy(pcls))
            size = data.draw(st.integers(0, 2**64 - 1) | st.integers(0, 30))
            class_id = data.draw(st.sampled_from([60, 60, 50, 70]))
            frame = header_frame(cid, class_id, size, props)
        else:
            frame = body_frame(cid, data.draw(st.binary(max_size=40)))
        self._fuzz(frame, pieces)

    @precondition(lambda self: self.s is not None)
    @rule(junk=st.binary(min_size=1, max_size=40), pieces=st.lists(st.integers(0, 10**6), max_size=3))
    def server_random_bytes(self, junk: bytes, pieces: list[int]) -> None:
        self._fuzz(junk, pieces)

    @precondition(lambda self: self.s is not None and not self.modelled)
    @rule()
    def server_eof(self) -> None:
        self._fuzz(b"", [])
        if self.error is None:
            assert self.core.state is ConnState.CLOSED


SETTINGS = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
CoreMachine.TestCase.settings = SETTINGS
FuzzMachine.TestCase.settings = SETTINGS
TestCoreMachine = CoreMachine.TestCase
TestFuzzMachine = FuzzMachine.TestCase
