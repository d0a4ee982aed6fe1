"""Every exception leveret raises survives pickling whole: multiprocessing and
concurrent.futures ship a worker's exception to the parent as a pickle, and one that does
not unpickle breaks the pool (``multiprocessing.Pool`` waited for ever; a
``ProcessPoolExecutor`` reported ``BrokenProcessPool`` instead of the error).  The type,
the text, every attribute and the notes a program added come back.  So does a received
message, without its channel (a channel belongs to its connection and process)."""

from __future__ import annotations

import inspect
import pickle
from concurrent.futures import ProcessPoolExecutor
from types import ModuleType
from typing import Any

import leveret.client
import leveret.client.errors
import leveret.highlevel
import leveret.highlevel.exceptions
import leveret.testing
import leveret.wire
import leveret.wire.errors
import leveret.wire.replies
from leveret.client import Message, MessageTooLargeError
from leveret.highlevel.exceptions import MessageReturned

MODULES: list[ModuleType] = [
    leveret.wire, leveret.wire.errors, leveret.wire.replies, leveret.client, leveret.client.errors,
    leveret.highlevel, leveret.highlevel.exceptions, leveret.testing,
]

# Exceptions whose constructor takes more than a message.
SAMPLES: dict[str, tuple[Any, ...]] = {
    name: ("message too large", 3, 17, 2_000_000)
    for name in ("MessageDiscardedError", "MessageTooLargeError", "MessageDecodeError")
}


def exception_classes() -> list[type[BaseException]]:
    found = {
        value
        for module in MODULES
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__.startswith("leveret")
    }
    return sorted(found, key=lambda cls: (cls.__module__, cls.__qualname__))


def test_every_exception_pickles_whole() -> None:
    classes = exception_classes()
    assert len(classes) > 50
    for cls in classes:
        error = cls(*SAMPLES.get(cls.__name__, ("what went wrong",)))
        setattr(error, "__notes__", ["job 42"])  # what add_note() (3.11) does
        error.task_id = "abc"  # type: ignore[attr-defined]  # what a framework attaches
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls
        assert str(copy) == str(error), cls
        assert copy.args == error.args, cls
        # (MessageReturned.returned holds the error itself, and errors compare by identity.)
        assert _own(copy) == _own(error), cls
        if isinstance(copy, MessageReturned):
            assert copy.returned == [copy]


def _own(error: BaseException) -> dict[str, Any]:
    return {name: value for name, value in vars(error).items() if name != "returned"}


def raise_too_large() -> None:
    raise MessageTooLargeError("message too large", 1, 5, 2_000_000)


def test_a_worker_processes_error_reaches_the_parent() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        error = pool.submit(raise_too_large).exception(timeout=60)
    assert type(error) is MessageTooLargeError
    assert (error.channel_id, error.delivery_tag, error.body_size) == (1, 5, 2_000_000)


class Unpicklable:
    """Stands for a channel: it holds a lock and a socket, which do not pickle."""

    def __reduce__(self) -> Any:
        raise TypeError("cannot pickle a channel")


def test_a_message_pickles_without_its_channel() -> None:
    message = Message(b"body", content_type="text/plain", headers={"x": [1, "a"]})
    message.delivery_info = {"delivery_tag": 9, "exchange": "", "routing_key": "q",
                              "reply_code": 312, "reply_text": "NO_ROUTE"}
    message.channel = Unpicklable()  # type: ignore[assignment]
    copy = pickle.loads(pickle.dumps(message))
    assert copy == message and copy.delivery_info == message.delivery_info
    assert copy.channel is None and copy.delivery_tag == 9
    for settle in (copy.ack, copy.nack, copy.reject):
        try:
            settle()
        except ValueError as exc:
            assert "unpickled" in str(exc)
        else:
            raise AssertionError("settled without a channel")
    # A returned publish's error holds such a message.
    returned = MessageReturned(message)
    back = pickle.loads(pickle.dumps(returned))
    assert back.message == message and back.reply_code == 312 and back.routing_key == "q"
    assert back.returned == [back]
