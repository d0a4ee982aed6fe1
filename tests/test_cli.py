"""``python -m leveret``: every command as a subprocess against the private RabbitMQ node.

Outputs and exit codes are checked, and what the commands did is checked on the broker
(``rabbitmqctl`` or a client connection).  Passwords must never be printed: the tests that
connect with credentials use a user whose password is distinctive and look for it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from broker import PrivateNode
from leveret.cli.bench import percentile
from leveret.cli.main import main
from leveret.cli.progress import Progress
from leveret.client import Connection, NotFound

ROOT = Path(__file__).resolve().parent.parent
SECRET = "Zq9-cli-S3cret-pw"
COMMANDS = ["info", "publish", "consume", "get", "declare", "delete", "purge", "bench", "conformance"]


def leveret(*args: str, url: str | None = None, stdin: str | bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m leveret ARGS`` with AMQP_URL set to ``url`` (unset when None)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("AMQP_URL", None)
    if url is not None:
        env["AMQP_URL"] = url
    data = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run([sys.executable, "-m", "leveret", *args], input=data,
                          capture_output=True, text=True, env=env, timeout=timeout)


def run(capsys: pytest.CaptureFixture[str], *args: str, stdin: bytes | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    """``main(ARGS)`` in this process (quicker than a subprocess, for the variations of a
    command whose subprocess run is tested elsewhere): (exit code, stdout, stderr)."""
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: --help, usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def unique(prefix: str) -> str:
    return f"leveret-cli-{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ctl_json(node: PrivateNode, command: str, *columns: str) -> list[dict[str, Any]]:
    return json.loads(node.ctl(command, "--formatter", "json", *columns))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def user_url(node: PrivateNode) -> Iterator[str]:
    """The private node with a user whose password is easy to spot in output."""
    name = unique("user")
    node.add_user(name, SECRET)
    node.set_permissions(name)
    try:
        yield f"amqp://{name}:{SECRET}@127.0.0.1:{node.port}/"
    finally:
        node.delete_user(name)


def depth(url: str, queue: str) -> int:
    with Connection(url) as conn:
        ok = conn.channel().queue_declare(queue, passive=True)
        assert ok is not None
        return ok.message_count


# --------------------------------------------------------------------------- offline


def test_help() -> None:
    proc = leveret("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: leveret")
    assert "AMQP_URL" in proc.stdout and "exit codes" in proc.stdout
    for name in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: leveret {command}")
    assert "AMQP_URL" in out and "exit codes" in out


def test_bad_url_is_a_usage_error_without_the_password(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    proc = leveret("info", f"amqp://guest:{SECRET}@127.0.0.1:99999/")
    assert proc.returncode == 2
    assert "bad URL" in proc.stderr and "Port out of range" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    monkeypatch.setenv("AMQP_URL", f"http://guest:{SECRET}@localhost/")
    code, out, err = run(capsys, "info")
    assert code == 2
    assert "bad URL (from AMQP_URL)" in err and "amqp://" in err
    assert SECRET not in out + err


@pytest.mark.parametrize("bad", [
    f"guest:{SECRET}@127.0.0.1:5672/",        # the scheme forgotten
    f"amqp//guest:{SECRET}@127.0.0.1:5672/",  # its colon forgotten
    f"amqp:/guest:{SECRET}@127.0.0.1:5672/",  # one slash forgotten
    f"amqp:guest:{SECRET}@127.0.0.1:5672/",   # both slashes forgotten
])
def test_mistyped_url_is_a_usage_error_without_the_password(
        bad: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Without its '//' the URL has no host part: it must be refused as a bad URL (not read
    # as the default localhost with the credentials and host taken for a vhost name), and
    # the message must not show the password.
    monkeypatch.delenv("AMQP_URL", raising=False)
    code, out, err = run(capsys, "info", bad)
    assert code == 2, err
    assert "bad URL" in err
    assert SECRET not in out + err


def test_missing_url_and_bad_arguments(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMQP_URL", raising=False)
    proc = leveret("info")
    assert proc.returncode == 2 and "no broker URL" in proc.stderr
    cases = [
        (("consume",), "usage: leveret consume [URL] QUEUE"),
        (("declare", "amqp://localhost/", "widget", "x"), "{exchange,queue,binding}"),
        (("declare", "amqp://localhost/", "binding", "only-one"), "binding SOURCE DESTINATION"),
        (("publish", "amqp://localhost/", "--body", "x", "--file", "y"), "not allowed with argument"),
        (("publish", "amqp://localhost/", "--body", "x", "--property", "colour=red"),
         "unknown message property 'colour'"),
        (("publish", "amqp://localhost/", "--body", "x", "-H", "novalue"), "--header takes KEY=VALUE"),
        (("get", "amqp://localhost/", "q", "--count", "0"), "--count must be 1 or more"),
        (("no-such-command",), "invalid choice"),
    ]
    for args, message in cases:
        code, _out, err = run(capsys, *args)
        assert code == 2, args
        assert message in err, (args, err)


def test_unreachable_broker() -> None:
    port = free_port()
    proc = leveret("info", f"amqp://guest:{SECRET}@127.0.0.1:{port}/")
    assert proc.returncode == 3
    assert f"cannot connect to 127.0.0.1:{port}" in proc.stderr
    assert "refused" in proc.stderr.lower()
    assert SECRET not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_progress_bar_rendering() -> None:
    import io

    stream = io.StringIO()
    with Progress(200, "publish", stream=stream, mode="always") as bar:
        for _ in range(200):
            bar.update()
    text = stream.getvalue()
    assert text.startswith("\rpublish [") and "100%" in text and "200/200" in text
    assert text.endswith("\r\x1b[K")  # the line is cleared at the end
    quiet = io.StringIO()
    with Progress(5, "x", stream=quiet, mode="auto") as bar:  # not a terminal
        bar.update(5)
    assert quiet.getvalue() == ""
    assert Progress(0, "n", mode="never").render(width=60).startswith("n 0")
    with pytest.raises(ValueError):
        Progress(1, mode="sometimes")


def test_percentile() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0 and percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0


# --------------------------------------------------------------------------- connecting


def test_wrong_password(node: PrivateNode, user_url: str) -> None:
    wrong = user_url.replace(SECRET, SECRET + "-wrong")
    proc = leveret("info", wrong)
    assert proc.returncode == 3
    assert "authentication failed" in proc.stderr and "ACCESS_REFUSED" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_unknown_vhost(user_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", user_url + "no-such-vhost")
    assert code == 3
    assert "refused to open virtual host 'no-such-vhost'" in err
    assert SECRET not in out + err


def test_info(user_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    proc = leveret("info", "--json", url=user_url)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["product"] == "RabbitMQ" and info["version"].startswith("3.")
    assert info["protocol"] == "0-9-1"
    assert (info["channel_max"], info["frame_max"], info["heartbeat"]) == (2047, 131072, 60)
    assert info["capabilities"]["publisher_confirms"] is True
    assert "PLAIN" in info["mechanisms"]
    assert "****" in info["url"]
    assert SECRET not in proc.stdout + proc.stderr
    code, out, err = run(capsys, "info", user_url + "?heartbeat=10&frame_max=8192")
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines()
                 if not line.startswith(" ") and len(line.split(None, 1)) == 2)
    assert lines["frame_max"] == "8192" and lines["heartbeat"] == "10 s"
    assert lines["protocol"] == "AMQP 0-9-1" and lines["broker"].startswith("RabbitMQ 3.")
    assert "exchange_exchange_bindings" in out
    assert SECRET not in out + err


def test_info_over_0_8(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", "--json", amqp_url + "?protocol=0-8")
    assert code == 0, err
    assert json.loads(out)["protocol"] == "0-8"


# --------------------------------------------------------------------------- messages


@pytest.fixture
def queue(amqp_url: str) -> Iterator[str]:
    """A fresh queue, declared and deleted with the client layer."""
    name = unique("q")
    with Connection(amqp_url) as conn:
        conn.channel().queue_declare(name)
    try:
        yield name
    finally:
        with Connection(amqp_url) as conn:
            conn.channel().queue_delete(name)


def test_publish_stdin_lines_and_consume_them_back(user_url: str, queue: str) -> None:
    lines = ["first", "second with spaces", "третий", ""]
    proc = leveret("publish", "--routing-key", queue, "--confirm", url=user_url,
                   stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "published 4 message(s) and confirmed" in proc.stderr
    assert depth(user_url, queue) == 4
    proc = leveret("consume", queue, "--count", "4", "--json", "--timeout", "10", url=user_url)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["body"] for r in records] == lines
    assert all(r["body_encoding"] == "utf-8" for r in records)
    assert [r["delivery_info"]["routing_key"] for r in records] == [queue] * 4
    assert depth(user_url, queue) == 0  # acknowledged
    assert SECRET not in proc.stdout + proc.stderr


def test_stdin_count_limit_and_text_output(amqp_url: str, queue: str, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, _out, err = run(capsys, "publish", amqp_url, "-k", queue, "--count", "2",
                          stdin=b"a\r\nb\nc\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert "published 2 message(s)" in err
    code, out, err = run(capsys, "consume", amqp_url, queue, "--count", "2", "--timeout", "10")
    assert code == 0, err
    assert out == "a\nb\n"  # CRLF line ends stripped too


def test_publish_body_with_headers_and_properties_then_get(amqp_url: str, queue: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    proc = leveret("publish", amqp_url, "-k", queue, "--body", "payload", "--count", "3",
                   "-H", "tenant=acme", "-H", "trace=abc",
                   "-p", "content_type=text/plain", "-p", "priority=4",
                   "-p", "message_id=m-1", "-p", "timestamp=1700000000", "--persistent")
    assert proc.returncode == 0, proc.stderr
    assert "published 3 message(s) to exchange ''" in proc.stderr
    proc = leveret("get", amqp_url, queue, "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["body"] == "payload"
    assert record["properties"] == {
        "content_type": "text/plain", "headers": {"tenant": "acme", "trace": "abc"},
        "delivery_mode": 2, "priority": 4, "message_id": "m-1",
        "timestamp": "2023-11-14T22:13:20+00:00",
    }
    assert record["delivery_info"]["message_count"] == 2
    code, out, _err = run(capsys, "get", amqp_url, queue, "--count", "5")
    assert code == 0 and out == "payload\npayload\n"
    proc = leveret("get", amqp_url, queue)
    assert proc.returncode == 1 and f"queue {queue!r} is empty" in proc.stderr


def test_publish_file_and_binary_body(amqp_url: str, queue: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    payload = bytes(range(256)) * 4
    path = tmp_path / "body.bin"
    path.write_bytes(payload)
    code, _out, err = run(capsys, "publish", amqp_url, "-k", queue, "--file", str(path), "--confirm")
    assert code == 0, err
    code, out, err = run(capsys, "consume", amqp_url, queue, "-n", "1", "--json", "-t", "10", "--no-ack")
    assert code == 0, err
    record = json.loads(out)
    assert record["body_encoding"] == "base64"
    assert base64.b64decode(record["body"]) == payload
    code, _out, err = run(capsys, "publish", amqp_url, "-k", queue, "--file", str(tmp_path / "absent"))
    assert code == 2 and "cannot read" in err


def test_publish_failures(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    proc = leveret("publish", amqp_url, "-e", unique("missing"), "-k", "k", "--body", "x")
    assert proc.returncode == 1
    assert "404 NOT_FOUND" in proc.stderr and "no exchange" in proc.stderr
    code, _out, err = run(capsys, "publish", amqp_url, "-k", unique("nowhere"), "--body", "x", "--mandatory")
    assert code == 1 and "returned as unroutable" in err


def test_consume_stops_at_timeout(amqp_url: str, queue: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Connection(amqp_url) as conn:
        conn.channel().basic_publish(b"only", "", queue)
    proc = leveret("consume", amqp_url, queue, "--count", "3", "--timeout", "0.5", "--prefetch", "1")
    assert proc.returncode == 1
    assert proc.stdout == "only\n"
    assert "received 1 of 3 message(s)" in proc.stderr
    code, out, _err = run(capsys, "consume", amqp_url, queue, "--timeout", "0.3")  # no count: idle stop
    assert code == 0 and out == ""
    code, _out, err = run(capsys, "consume", amqp_url, unique("missing"), "--count", "1", "--timeout", "1")
    assert code == 1 and "404 NOT_FOUND" in err


def test_consume_reports_a_broker_cancel(amqp_url: str, queue: str, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    import time

    def delete_soon() -> None:
        time.sleep(0.5)
        with Connection(amqp_url) as conn:
            conn.channel().queue_delete(queue)

    killer = threading.Thread(target=delete_soon)
    killer.start()
    try:
        code, _out, err = run(capsys, "consume", amqp_url, queue, "--timeout", "10")
    finally:
        killer.join()
    assert code == 1 and "the broker cancelled the consumer" in err


# --------------------------------------------------------------------------- topology


def test_declare_bind_purge_delete(node: PrivateNode, capsys: pytest.CaptureFixture[str]) -> None:
    url = node.url
    exchange, queue = unique("x"), unique("q")
    proc = leveret("declare", url, "queue", queue, "--durable", "-a", "x-max-length=100")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == queue + "\n"
    code, _out, err = run(capsys, "declare", url, "exchange", exchange, "--type", "topic", "--durable")
    assert code == 0, err
    code, _out, err = run(capsys, "declare", url, "binding", exchange, queue, "--routing-key", "a.#")
    assert code == 0, err
    try:
        queues = {r["name"]: r for r in ctl_json(node, "list_queues", "name", "durable", "arguments")}
        assert queues[queue]["durable"] is True
        # typed: the broker got a number, not the string "100"
        assert queues[queue]["arguments"] == [["x-max-length", "signedint", 100]]
        exchanges = {r["name"]: r for r in ctl_json(node, "list_exchanges", "name", "type", "durable")}
        assert exchanges[exchange]["type"] == "topic" and exchanges[exchange]["durable"] is True
        bindings = [r for r in ctl_json(node, "list_bindings", "source_name", "destination_name", "routing_key")
                    if r["source_name"] == exchange]
        assert bindings == [{"source_name": exchange, "destination_name": queue, "routing_key": "a.#"}]

        with Connection(url) as conn:
            ch = conn.channel()
            ch.confirm_select()
            for key in ("a.b", "a.c.d", "b.a"):
                ch.basic_publish(key.encode(), exchange, key)
            ch.wait_for_confirms(10)
        assert depth(url, queue) == 2
        proc = leveret("purge", url, queue)
        assert proc.returncode == 0 and f"purged 2 message(s) from queue {queue!r}" in proc.stderr
        assert depth(url, queue) == 0

        code, _out, err = run(capsys, "delete", url, "binding", exchange, queue, "--routing-key", "a.#")
        assert code == 0, err
        with Connection(url) as conn:
            ch = conn.channel()
            ch.confirm_select()
            ch.basic_publish(b"x", exchange, "a.b")
            ch.wait_for_confirms(10)
        assert depth(url, queue) == 0
        proc = leveret("delete", url, "queue", queue, "--if-empty")
        assert proc.returncode == 0, proc.stderr
        code, _out, err = run(capsys, "delete", url, "exchange", exchange, "--if-unused")
        assert code == 0, err
        with pytest.raises(NotFound):
            depth(url, queue)
        code, _out, err = run(capsys, "declare", url, "exchange", exchange, "--passive")
        assert code == 1 and "404" in err
    finally:
        with Connection(url) as conn:
            conn.channel().queue_delete(queue)
            conn.channel().exchange_delete(exchange)


def test_declare_refusals(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    exchange = unique("typed")
    code, _out, err = run(capsys, "declare", amqp_url, "exchange", exchange)
    assert code == 0, err
    try:
        code, _out, err = run(capsys, "declare", amqp_url, "exchange", exchange, "--type", "fanout")
        assert code == 1 and "406 PRECONDITION_FAILED" in err
        code, _out, err = run(capsys, "declare", amqp_url, "queue", unique("absent"), "--passive")
        assert code == 1 and "404 NOT_FOUND" in err
        code, out, err = run(capsys, "declare", amqp_url, "queue")  # server-named, printed
        assert code == 0 and out.startswith("amq.gen-")
        code, _out, err = run(capsys, "purge", amqp_url, unique("absent"))
        assert code == 1 and "404" in err
    finally:
        run(capsys, "delete", amqp_url, "exchange", exchange)


def test_exchange_to_exchange_binding(amqp_url: str, queue: str, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = unique("src"), unique("dst")
    for args in (("exchange", src, "--type", "fanout"), ("exchange", dst)):
        assert run(capsys, "declare", amqp_url, *args)[0] == 0
    try:
        code, _out, err = run(capsys, "declare", amqp_url, "binding", src, dst, "--destination-type", "exchange")
        assert code == 0, err
        assert run(capsys, "declare", amqp_url, "binding", dst, queue, "-k", "rk")[0] == 0
        assert run(capsys, "publish", amqp_url, "-e", src, "-k", "rk", "--body", "hop", "--confirm")[0] == 0
        code, out, _err = run(capsys, "get", amqp_url, queue)
        assert code == 0 and out == "hop\n"
    finally:
        run(capsys, "delete", amqp_url, "exchange", src)
        run(capsys, "delete", amqp_url, "exchange", dst)


# --------------------------------------------------------------------------- bench and progress


def test_bench_json_and_table(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    proc = leveret("bench", amqp_url, "--count", "500", "--size", "64", "--latency-count", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    phases = {p["name"]: p for p in data["phases"]}
    assert set(phases) == {"publish", "publish+confirm", "consume"}
    assert phases["publish"]["messages"] == 500 and phases["consume"]["messages"] == 1000
    assert all(p["seconds"] > 0 and p["msgs_per_s"] > 0 for p in phases.values())
    lat = data["latency_ms"]
    assert lat["count"] == 20 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert "****" in data["url"]
    assert "\x1b[K" not in proc.stderr and "[--" not in proc.stderr  # not a terminal: no bar

    code, out, err = run(capsys, "bench", amqp_url, "--count", "300", "--phases", "confirm,consume",
                         "--progress", "always")
    assert code == 0, err
    assert "PHASE" in out and "publish+confirm" in out and "consume" in out
    assert "latency" not in out
    assert "\rpublish+confirm [" in err and "\rconsume [" in err
    code, _out, err = run(capsys, "bench", amqp_url, "--phases", "warp")
    assert code == 2 and "--phases" in err


def test_publish_progress_bar_when_forced(amqp_url: str, queue: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "leveret", "publish", amqp_url, "-k", queue, "--body", "x", "-n", "2000",
         "--progress", "always"], capture_output=True, env=env, timeout=60)  # bytes: keep the \r
    assert proc.returncode == 0, proc.stderr
    assert b"\rpublish [" in proc.stderr and b"2000/2000" in proc.stderr
    assert proc.stderr.endswith(b"\r\x1b[Kpublished 2000 message(s) to exchange '' with routing key "
                                + repr(queue).encode() + b"\n")
    assert depth(amqp_url, queue) == 2000
