"""The conformance battery against the private RabbitMQ node.

The whole battery runs once in-process (module fixture): every check must pass or be one of
the deviations documented in docs/conformance.md, and RabbitMQ 3.10 must show each of them.
The battery is also shown able to fail (a check with a wrong expectation), to skip, and to
render its results as a table, JSON and JUnit XML; and it runs once more through
``python -m leveret conformance`` for the exit code and the files CI reads.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

from leveret.cli.main import main
from leveret.testing import CHECKS, ConformanceError, Report, check, run_checks, select_checks
from leveret.testing.conformance import CheckContext

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "conformance.md"


@pytest.fixture(scope="module")
def report(amqp_url: str) -> Report:
    return run_checks(amqp_url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("AMQP_URL", None)
    return env


# --------------------------------------------------------------------------- the battery


def test_every_check_passes_or_is_a_documented_deviation(report: Report) -> None:
    failed = [r for r in report.results if r.status != "pass"]
    assert not failed, "\n\n".join(f"{r.name} [{r.status}]: {r.note}" for r in failed)
    assert [r.name for r in report.results] == [c.name for c in CHECKS]
    for r in report.results:
        if r.deviation:
            assert r.documented_deviation, f"{r.name} deviated without a documented deviation"
    assert report.ok
    assert report.broker.startswith("RabbitMQ")


def test_rabbitmq_shows_every_documented_deviation(report: Report) -> None:
    """The deviations are RabbitMQ's real behaviour, asserted, not excuses."""
    by_name = {r.name: r for r in report.results}
    documented = [c for c in CHECKS if c.deviation]
    assert len(documented) >= 10
    for c in documented:
        assert by_name[c.name].deviation, f"{c.name}: RabbitMQ no longer deviates here"
    assert report.counts["deviations"] == len(documented)


def test_every_method_was_exercised(report: Report) -> None:
    coverage = next(r for r in report.results if r.name == "coverage.every-method")
    assert coverage.status == "pass" and "not exercised" in coverage.note


def test_battery_size_and_groups() -> None:
    groups = {c.group for c in CHECKS}
    assert {"negotiation", "tune", "frames", "content", "heartbeat", "channel", "exchange",
            "queue", "basic", "tx", "confirms", "auth", "coverage"} <= groups
    assert len(CHECKS) >= 70
    assert all(c.spec and c.description for c in CHECKS)


def test_docs_list_every_check_and_every_deviation() -> None:
    text = DOC.read_text(encoding="utf-8")
    for c in CHECKS:
        assert f"`{c.name}`" in text, f"{c.name} missing from docs/conformance.md"
    section = text.split("## RabbitMQ 3.10 deviations from the spec", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9.\-]+)` \|", section, re.M))
    assert listed == {c.name for c in CHECKS if c.deviation}


def test_select_checks_by_group_glob_and_name() -> None:
    frames = select_checks(["frames"])
    assert frames and all(c.group == "frames" for c in frames)
    assert [c.name for c in select_checks(["confirms.n*"])] == ["confirms.nack"]
    assert [c.name for c in select_checks(["tx.commit-rollback"])] == ["tx.commit-rollback"]
    assert select_checks(["frame"]) == []  # a prefix must be a whole group name
    assert select_checks([]) == CHECKS


# --------------------------------------------------------------------------- renderings


def test_junit_xml_has_the_right_counts(report: Report) -> None:
    root = ET.fromstring(report.to_junit_xml())
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "-1")) == len(cases) == len(CHECKS)
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    assert not suite.findall("testcase/failure")
    deviating = [c for c in cases if c.find("properties/property[@name='deviation']") is not None]
    assert len(deviating) == report.counts["deviations"]
    first = cases[0]
    assert first.get("name") == CHECKS[0].name and first.get("classname") == "conformance.negotiation"
    assert float(first.get("time", "-1")) >= 0


def test_json_report(report: Report) -> None:
    data = json.loads(report.to_json())
    assert data["ok"] is True
    assert data["counts"]["total"] == len(CHECKS)
    assert data["counts"]["failed"] == 0
    assert sum(data["counts"][k] for k in ("passed", "deviations", "failed", "skipped")) == len(CHECKS)
    entry = next(c for c in data["checks"] if c["name"] == "frames.bad-frame-end")
    assert entry["result"] == "deviation" and "501" in entry["deviation"]
    assert "guest:guest" not in report.to_json()


def test_table(report: Report) -> None:
    table = report.format_table(120)
    lines = table.splitlines()
    assert lines[0].split() == ["CHECK", "SPEC", "RESULT", "TIME"]
    for c in CHECKS:
        assert c.name in table
    assert "RabbitMQ deviation:" in table
    assert lines[-1] == report.summary()
    assert re.match(r"\d+ checks: \d+ passed, \d+ passed as documented deviations, 0 failed", lines[-1])


# --------------------------------------------------------------------------- failing, skipping


@pytest.fixture
def extra_checks() -> Iterator[None]:
    """Two checks of the test's own: one with a wrong expectation, one that skips."""

    @check("zz-selftest.wrong-code", "test", "expects 404 where RabbitMQ answers 406")
    def _wrong(ctx: CheckContext) -> str | None:
        s = ctx.open()
        s.send_method(1, s.method("basic.ack", delivery_tag=7))
        s.expect_channel_close(1, 404)
        return None

    @check("zz-selftest.skips", "test", "needs a capability nobody has")
    def _skips(ctx: CheckContext) -> str | None:
        ctx.need_capability("no-such-capability")
        return None

    try:
        yield
    finally:
        CHECKS[:] = [c for c in CHECKS if c.group != "zz-selftest"]


def test_a_wrong_expectation_fails(amqp_url: str, extra_checks: None) -> None:
    result = run_checks(amqp_url, ["zz-selftest"])
    by_name = {r.name: r for r in result.results}
    wrong = by_name["zz-selftest.wrong-code"]
    assert wrong.status == "fail" and "reply code 404, got 406" in wrong.note
    assert by_name["zz-selftest.skips"].status == "skip"
    assert "no-such-capability" in by_name["zz-selftest.skips"].note
    assert not result.ok and result.counts["failed"] == 1 and result.counts["skipped"] == 1


def test_cli_exit_code_and_junit_on_failure(amqp_url: str, extra_checks: None, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "fail.xml"
    code = main(["conformance", amqp_url, "-c", "zz-selftest", "--junit-xml", str(junit),
                 "--progress", "never"])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "skip" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "1", "1")
    failure = suite.find("testcase[@name='zz-selftest.wrong-code']/failure")
    assert failure is not None and "404" in failure.get("message", "")
    assert suite.find("testcase[@name='zz-selftest.skips']/skipped") is not None


def test_properties_round_trip_fails_when_a_header_changes_type(
        amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # "comes back unchanged" must mean the same type too: a boolean header read back as the
    # int 1 (True == 1 in Python) is a broken round trip, not a pass.
    from leveret.wire import fields

    def bool_as_int(buf: bytes, offset: int, limit: int, depth: int) -> tuple[int, int]:
        return buf[offset], offset + 1

    monkeypatch.setitem(fields._DECODERS, ord("t"), bool_as_int)
    result = run_checks(amqp_url, ["content.properties-round-trip"]).results[0]
    assert result.status == "fail", result
    assert "header bool" in result.note


def test_same_value_is_strict_about_types_and_absent_keys() -> None:
    from datetime import datetime, timezone
    from decimal import Decimal

    from leveret.testing.conformance import _same

    assert _same({"a": [1, "x", {"b": None}]}, {"a": [1, "x", {"b": None}]})
    assert _same(Decimal("3.14"), Decimal("3.14"))
    stamp = datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert _same(stamp, stamp)
    for sent, got in [(True, 1), (1, True), (1.5, Decimal("1.5")), (42, 42.0), ([1], (1,)),
                      ({"k": None}, {}), ({}, {"k": None}), ([False], [0]),
                      (Decimal("1.50"), Decimal("1.5"))]:
        assert not _same(sent, got), (sent, got)


# --------------------------------------------------------------------------- connection problems


def test_unreachable_broker() -> None:
    url = f"amqp://guest:guest@127.0.0.1:{_free_port()}/"
    with pytest.raises(ConformanceError, match="cannot connect to 127.0.0.1"):
        run_checks(url)


def test_refused_credentials_stop_the_run(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = amqp_url.replace("guest:guest@", "guest:not-the-Passw0rd@")
    assert url != amqp_url
    with pytest.raises(ConformanceError, match="refused the credentials of user 'guest'") as info:
        run_checks(url)
    assert "not-the-Passw0rd" not in str(info.value)
    assert main(["conformance", url, "--progress", "never"]) == 3
    captured = capsys.readouterr()
    assert "not-the-Passw0rd" not in captured.out + captured.err


# --------------------------------------------------------------------------- through the CLI


def test_cli_full_battery_json_and_junit(amqp_url: str, tmp_path: Path) -> None:
    junit = tmp_path / "conformance.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "leveret", "conformance", amqp_url, "--json", "--junit-xml", str(junit)],
        capture_output=True, text=True, env=_env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["counts"]["total"] == len(CHECKS) and data["counts"]["failed"] == 0
    assert data["ok"] is True
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", "0")) == len(CHECKS)
    assert suite.get("failures") == "0"
    assert "\x1b[K" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_cli_list_and_bad_selection() -> None:
    proc = subprocess.run([sys.executable, "-m", "leveret", "conformance", "--list", "-c", "heartbeat"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0
    assert "heartbeat.nonzero-channel" in proc.stdout and "RabbitMQ deviation" in proc.stdout
    assert "frames." not in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "leveret", "conformance", "amqp://localhost/",
                           "-c", "no-such-group"], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 2 and "no check matches" in proc.stderr


def test_cli_refuses_a_pattern_that_matches_nothing_among_others(
        capsys: pytest.CaptureFixture[str]) -> None:
    # '-c frames -c confirm.ordering' (a typo for confirms.ordering) must not quietly run the
    # frames checks alone and report success as if the confirms had been checked too.
    code = main(["conformance", "amqp://localhost/", "-c", "frames", "-c", "confirm.ordering",
                 "--progress", "never"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no check matches confirm.ordering" in err


def test_cli_list_refuses_a_pattern_that_matches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # '--list -c confirm.ordering' printed nothing and exited 0, as if the check existed.
    assert main(["conformance", "amqp://localhost/", "--list", "-c", "confirm.ordering"]) == 2
    assert "no check matches confirm.ordering" in capsys.readouterr().err
    assert main(["conformance", "amqp://localhost/", "--list", "-c", "confirms.ordering"]) == 0
    assert "confirms.ordering" in capsys.readouterr().out


def test_a_0_8_url_is_refused_not_run_as_0_9_1(capsys: pytest.CaptureFixture[str]) -> None:
    # The battery speaks 0-9-1 whatever the URL says: a report for "?protocol=0-8" would
    # be read as 0-8's.  Refused before connecting (nothing listens on port 1).
    code = main(["conformance", "amqp://localhost:1/?protocol=0-8", "--progress", "never"])
    assert code == 2
    assert "leave ?protocol=0-8 out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="speaks AMQP 0-9-1"):
        run_checks("amqp://localhost:1/?protocol=0-8")
