"""Users who run a type checker get the types leveret declares (it ships ``py.typed``).

The README's examples are what users copy first: each is checked with ``mypy --strict``
as a user's module would be, against the package in this tree.  A lazily imported name
(``leveret.client.AsyncConnection`` is imported on first use) once reached type checkers
as a plain ``object``, so the README's own asyncio example did not type-check.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "user_code.py"
    module.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(ROOT / ".mypy_cache"), "--python-version", "3.10", str(module)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )


def revealed(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The types mypy revealed (``reveal_type``), in order."""
    return re.findall(r'Revealed type is "(.*)"', result.stdout)


def revealed_without_errors(tmp_path: Path, source: str) -> list[str]:
    """mypy --strict on ``source``, which must type-check; what it revealed."""
    result = mypy(tmp_path, source)
    assert result.returncode == 0, result.stdout + result.stderr
    return revealed(result)


QUEUE_DECLARE_OK = "tuple[str, int, int, fallback=leveret.client._shared.QueueDeclareOk]"


def test_the_readme_has_examples_to_check() -> None:
    assert len(readme_examples()) >= 3


def test_readme_examples_type_check(tmp_path: Path) -> None:
    source = "\n\n".join(
        f"def example_{i}() -> None:\n" + "".join(f"    {line}\n" if line else "\n" for line in code.splitlines())
        for i, code in enumerate(readme_examples())
    )
    # Imports and nested async defs work inside functions; asyncio.run() is not called.
    result = mypy(tmp_path, source)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names_have_their_declared_types(tmp_path: Path) -> None:
    source = '''
from leveret import Connection as HLConnection, Producer, Queue
from leveret.client import AsyncChannel, AsyncConnection, Channel, Connection, QueueDeclareOk
from leveret.wire import amqp0_9_1

async def run() -> None:
    conn = await AsyncConnection("amqp://").connect()
    reveal_type(conn)
    ch = await conn.channel()
    reveal_type(ch)
    reveal_type(await ch.queue_declare("", exclusive=True))
    reveal_type(await ch.queue_declare("q", nowait=True))

def blocking() -> None:
    conn = Connection("amqp://").connect()
    reveal_type(conn.channel())
    reveal_type(conn.channel().queue_declare("q", durable=True))
    reveal_type(conn.channel().queue_declare("q", nowait=True))
    reveal_type(amqp0_9_1.Basic.Publish(exchange="x").routing_key)
    reveal_type(HLConnection("memory://").Producer())
'''
    result = mypy(tmp_path, source)
    assert revealed(result) == [
        "leveret.client.aio.AsyncConnection",
        "leveret.client.aio.AsyncChannel",
        QUEUE_DECLARE_OK,
        "None",
        "leveret.client.blocking.Channel",
        QUEUE_DECLARE_OK,
        "None",
        "str",
        "leveret.highlevel.messaging.Producer",
    ], result.stdout + result.stderr


def test_a_received_body_is_typed_bytes(tmp_path: Path) -> None:
    # What a consumer callback does with a body (decode it, slice it) must type-check:
    # a received body is always bytes, not "bytes-like" (a memoryview has no decode()).
    source = '''
from leveret.client import Channel, Message

def on_message(msg: Message) -> None:
    text: str = msg.body.decode()
    head: bytes = msg.body[:4]
    reveal_type(msg.body)

def get(ch: Channel) -> str | None:
    msg = ch.basic_get("q")
    return None if msg is None else msg.body.decode()
'''
    assert revealed_without_errors(tmp_path, source) == ["bytes"]


def test_kombu_style_decode_error_handlers_type_check(tmp_path: Path) -> None:
    # A decode failure is an Exception: a worker's on_decode_error(message, exc: Exception)
    # override was refused as narrowing the base's BaseException; a handler typed either
    # way may be given to a Consumer.
    source = '''
from typing import Any
from leveret import Connection, Consumer, Queue
from leveret.highlevel.mixins import ConsumerMixin

class Worker(ConsumerMixin):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:
        return [Consumer([Queue("q")], callbacks=[self.on_task])]

    def on_task(self, body: Any, message: Any) -> None:
        message.ack()

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        message.reject()

def narrow(message: Any, exc: Exception) -> None: ...
def wide(message: Any, exc: BaseException) -> None: ...

def consumers(conn: Connection) -> None:
    Consumer(conn.default_channel, [Queue("q")], on_decode_error=narrow)
    Consumer(conn.default_channel, [Queue("q")], on_decode_error=wide)
'''
    result = mypy(tmp_path, source)
    assert result.returncode == 0, result.stdout + result.stderr


def test_need_data_narrows_what_next_frame_returns(tmp_path: Path) -> None:
    # The sans-IO reader's documented loop: `is NEED_DATA` must narrow to a Frame.
    source = '''
from leveret.wire import NEED_DATA, FrameReader, amqp0_9_1

def channels(reader: FrameReader) -> list[int]:
    out = []
    while (frame := reader.next_frame()) is not NEED_DATA:
        reveal_type(frame)
        out.append(frame.channel)
    return out
'''
    assert revealed_without_errors(tmp_path, source) == ["leveret.wire.frames.Frame"]


def test_a_type_checker_refuses_positional_fields(tmp_path: Path) -> None:
    # The generated classes take fields by keyword only, through a guard parameter
    # (leveret.wire._base.KeywordsOnly) rather than ``*,``: mypy must still refuse a
    # positional call, and accept the keyword one.
    result = mypy(tmp_path, (
        "from leveret.wire.amqp0_9_1 import Basic, Queue\n"
        "ok = Queue.Declare(queue='q', durable=True)\n"
        "props = Basic.Properties(content_type='text/plain', delivery_mode=2)\n"
        "bad = Queue.Declare('q', True)\n"
        "bad_props = Basic.Properties('text/plain')\n"
    ))
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert [line.split(":")[1] for line in errors] == ["4", "5"], result.stdout
    assert all("[arg-type]" in line for line in errors), result.stdout


WRONG_USES = """\
from typing import Any
from leveret import Connection, Consumer, Queue, pools
from leveret.client import Connection as ClientConnection

def handle_one(body: Any) -> None: ...

def main(url: str) -> None:
    conn = Connection(url)
    q = Queue("q")
    Consumer(conn, q, callbacks=[handle_one])  # WRONG: callbacks get (body, message)
    conn.Consumer(q, callbacks=[handle_one])  # WRONG: the same through the shortcut
    conn.Consumer(q, prefetch_count="10")  # WRONG
    conn.Producer(exchange=5)  # WRONG
    with pools.producers[conn].acquire(block=True) as producer:
        producer.publsh({"a": 1}, routing_key="q")  # WRONG: a typo
    with pools.connections[conn].acquire(block=True) as c:
        c.drain_evnets(timeout=1)  # WRONG: a typo
    ClientConnection(url, heartbeat="30")  # WRONG
    ClientConnection(url, hearbeat=30)  # WRONG: a typo
    ClientConnection(url, heartbeat=30, userid="me", cacertfile=None, port=None)
    conn.Consumer(q, callbacks=[lambda body, message: None], prefetch_count=10)
"""


def test_wrong_uses_of_the_shortcuts_pools_and_options_are_reported(tmp_path: Path) -> None:
    # They were typed Any (conn.Consumer(*args, **kwargs), pools.producers[conn],
    # Connection(url, **options: Any)): mypy --strict took every line marked WRONG, which
    # fail at run time.
    result = mypy(tmp_path, WRONG_USES)
    reported = {int(line.split(":")[1]) for line in result.stdout.splitlines() if "error:" in line}
    wrong = {n for n, line in enumerate(WRONG_USES.splitlines(), 1) if "# WRONG" in line}
    assert reported == wrong, result.stdout


def test_the_returns_a_failed_flush_reports_are_typed(tmp_path: Path) -> None:
    # Producer.flush() documents .returned on what it raises: user code reads it.
    source = '''
from leveret.client import PublishNacked
from leveret.highlevel import MessageReturned, Producer

def flush(producer: Producer) -> list[str]:
    try:
        producer.flush()
    except MessageReturned as exc:
        reveal_type(exc.returned)
        return [r.routing_key or "" for r in exc.returned]
    except PublishNacked as exc:
        return [str(tag) for tag in exc.delivery_tags] + [repr(r) for r in exc.returned]
    return []
'''
    assert revealed_without_errors(tmp_path, source) == ["list[leveret.highlevel.exceptions.MessageReturned]"]


def test_queue_delete_and_purge_return_a_count_unless_nowait(tmp_path: Path) -> None:
    # Like queue_declare: the count comes back except with nowait=True, and a type
    # checker should know it without the user narrowing away a None that cannot happen.
    source = '''
from leveret.client import AsyncConnection, Connection

async def run(flag: bool) -> None:
    ch = await (await AsyncConnection("amqp://").connect()).channel()
    reveal_type(await ch.queue_delete("q"))
    reveal_type(await ch.queue_delete("q", if_unused=True, nowait=False))
    reveal_type(await ch.queue_delete("q", nowait=True))
    reveal_type(await ch.queue_delete("q", nowait=flag))
    reveal_type(await ch.queue_purge("q"))
    reveal_type(await ch.queue_purge("q", nowait=True))
    reveal_type(await ch.queue_purge("q", nowait=flag))

def blocking(flag: bool) -> None:
    ch = Connection("amqp://").connect().channel()
    reveal_type(ch.queue_delete("q", timeout=1.0))
    reveal_type(ch.queue_delete("q", nowait=True))
    reveal_type(ch.queue_delete("q", nowait=flag))
    reveal_type(ch.queue_purge())
    reveal_type(ch.queue_purge("q", nowait=True))
    reveal_type(ch.queue_purge("q", nowait=flag))
    count: int = ch.queue_delete("q") + ch.queue_purge("q")
'''
    result = mypy(tmp_path, source)
    some = "int | None"
    assert revealed(result) == [
        "int", "int", "None", some, "int", "None", some,
        "int", "None", some, "int", "None", some,
    ], result.stdout + result.stderr
    assert "error" not in result.stdout, result.stdout


@pytest.mark.parametrize("name", ["queue_declare", "queue_delete", "queue_purge"])
@pytest.mark.parametrize("module", ["client/blocking", "client/aio", "highlevel/memory", "highlevel/recovery", "highlevel/transport"])
def test_typed_overloads_keep_in_step_with_the_real_ones(module: str, name: str) -> None:
    # The drivers declare these overloads for type checkers only (the method itself is
    # ChannelBase's operation), the memory transport and RecoveringChannel over their
    # own methods, the TransportChannel protocol for all: their parameters must be the
    # real ones.
    from leveret.client._shared import ChannelBase

    real = list(inspect.signature(getattr(ChannelBase, name).fn).parameters)
    tree = ast.parse((ROOT / "leveret" / f"{module}.py").read_text(encoding="utf-8"))
    declared = [
        [a.arg for a in node.args.args + node.args.kwonlyargs]
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name == name and node.decorator_list
    ]
    assert len(declared) == 3
    assert all(names == real for names in declared), (declared, real)


def test_every_transport_conforms_to_the_transport_protocols(tmp_path: Path) -> None:
    # What Connection.channel() and .default_channel return is typed TransportChannel:
    # each class they may really return must be one, as the type checker sees it.
    source = '''
from leveret.client import Channel, Connection
from leveret.highlevel import TransportChannel, TransportConnection
from leveret.highlevel.memory import MemoryChannel, MemoryConnection
from leveret.highlevel.recovery import RecoveringChannel

def conforms(a: Channel, b: MemoryChannel, c: RecoveringChannel, d: Connection, e: MemoryConnection) -> None:
    channels: list[TransportChannel] = [a, b, c]
    connections: list[TransportConnection] = [d, e]
'''
    result = mypy(tmp_path, source)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recovering_channel_has_the_protocol_members_itself() -> None:
    # RecoveringChannel forwards unknown attributes to the transport channel at run time
    # (__getattr__, which type checkers do not see): check that each member of
    # TransportChannel is its own at run time too, not forwarded.
    from leveret.highlevel import Connection, TransportChannel

    members = {
        name for name in [*vars(TransportChannel), *TransportChannel.__annotations__]
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    }
    assert {"queue_declare", "basic_consume", "close_error", "on_return", "returned"} <= members
    with Connection("memory://", autorecover=True) as conn:
        ch = conn.channel()
        missing = sorted(name for name in members if name not in dir(type(ch)) and name not in vars(ch))
    assert not missing, missing


def test_high_level_channels_are_typed(tmp_path: Path) -> None:
    # Connection.channel(), .default_channel and .connection are one of several classes
    # (client, memory, recovering): typed by the protocols, a user's calls are checked.
    source = '''
from leveret.highlevel import Connection, Consumer, Producer, SimpleQueue

def run(conn: Connection, producer: Producer, consumer: Consumer, simple: SimpleQueue) -> None:
    reveal_type(conn.channel())
    reveal_type(conn.default_channel)
    reveal_type(conn.connection)
    reveal_type(conn.connection.channel())
    reveal_type(conn.default_channel.queue_declare("q", durable=True))
    reveal_type(conn.default_channel.queue_declare("q", nowait=True))
    reveal_type(conn.default_channel.queue_purge("q"))
    reveal_type(conn.default_channel.basic_get("q"))
    reveal_type(producer.channel)
    reveal_type(consumer.channel)
    reveal_type(simple.channel)
    with conn.channel() as ch:
        reveal_type(ch)
    conn.default_channel.queue_declare("q", durabel=True)
    conn.default_channel.basic_ack("1")
'''
    result = mypy(tmp_path, source)
    channel = "leveret.highlevel.transport.TransportChannel"
    assert revealed(result) == [
        channel, channel, "leveret.highlevel.transport.TransportConnection", channel,
        QUEUE_DECLARE_OK, "None", "int", "leveret.client.message.Message | None",
        channel, channel + " | None", channel, channel,
    ], result.stdout + result.stderr
    # The misspelt keyword and the wrong type are caught, nothing else.
    errors = re.findall(r":(\d+): error: (.*)", result.stdout)
    assert {line for line, _ in errors} == {"18", "19"}, result.stdout
    assert 'Unexpected keyword argument "durabel"' in result.stdout
    assert 'Argument 1 to "basic_ack" of "TransportChannel" has incompatible type "str"' in result.stdout


def test_a_received_messages_channel_is_typed_for_every_transport(tmp_path: Path) -> None:
    # Message.channel is the channel a message arrived on, of whichever transport (the
    # memory transport's messages carry a MemoryChannel): typed by what every one has, so
    # that a user can settle a message through it and each channel class may be stored.
    source = '''
from leveret.client import AsyncChannel, Channel, Message, MessageChannel
from leveret.highlevel import Connection
from leveret.highlevel.memory import MemoryChannel
from leveret.highlevel.recovery import RecoveringChannel

def settle(message: Message) -> None:
    channel = message.channel
    reveal_type(channel)
    if channel is not None and channel.is_open:
        reveal_type(channel.channel_id)
        channel.basic_ack(message.delivery_tag or 0)
        channel.basic_nack(1, multiple=True, requeue=False)
        channel.basic_reject(1, requeue=False)

def received(conn: Connection) -> None:
    message = conn.default_channel.basic_get("q")
    if message is not None and message.channel is not None:
        message.channel.basic_reject(message.delivery_tag or 0, requeue=True)

def conforms(message: Message, a: Channel, b: AsyncChannel, c: MemoryChannel, d: RecoveringChannel) -> None:
    channels: list[MessageChannel] = [a, b, c, d]
    message.channel = c
'''
    assert revealed_without_errors(tmp_path, source) == ["leveret.client.message.MessageChannel | None", "int"]


def test_recovering_channel_is_checked_for_what_it_has(tmp_path: Path) -> None:
    # RecoveringChannel forwards other attributes to the transport channel at run time
    # only: type checkers see its own members, so a misspelt or transport-specific one is
    # an error, and it is not taken for a protocol whose members it lacks.
    source = '''
from typing import Protocol
from leveret.highlevel.recovery import RecoveringChannel

class Unrelated(Protocol):
    def no_such_method(self) -> None: ...

def run(ch: RecoveringChannel) -> None:
    reveal_type(ch.flow_active)
    ch.queue_declar("q")
    ch.unconfirmed
    other: Unrelated = ch
'''
    result = mypy(tmp_path, source)
    assert revealed(result) == ["bool"], result.stdout
    errors = re.findall(r":(\d+): error: (.*)", result.stdout)
    assert {line for line, _ in errors} == {"10", "11", "12"}, result.stdout
