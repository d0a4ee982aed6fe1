"""Results of a conformance run, and their three renderings: a text table, JSON, JUnit XML.

A check's ``status`` is ``"pass"``, ``"fail"`` or ``"skip"``.  A passing check whose broker
showed a documented deviation from the spec has ``deviation`` set to what was observed; the
table shows it as ``deviation`` and counts it apart, but it is not a failure.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CheckResult", "Report"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    spec: str
    description: str
    status: str  # "pass" | "fail" | "skip"
    note: str = ""
    duration: float = 0.0
    #: What the broker did instead of the spec (a pass with a known deviation), else None.
    deviation: str | None = None
    #: The deviation documented for this check (whether or not this broker showed it).
    documented_deviation: str | None = None

    @property
    def label(self) -> str:
        """``pass``, ``deviation``, ``FAIL`` or ``skip``: the table's result column."""
        if self.status == "pass":
            return "deviation" if self.deviation else "pass"
        return "FAIL" if self.status == "fail" else "skip"


@dataclass
class Report:
    """Every result of a run, in the battery's order."""

    results: list[CheckResult]
    broker: str = ""
    url: str = ""
    duration: float = 0.0
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {
            "total": len(self.results),
            "passed": sum(1 for r in self.results if r.status == "pass" and not r.deviation),
            "deviations": sum(1 for r in self.results if r.status == "pass" and r.deviation),
            "failed": sum(1 for r in self.results if r.status == "fail"),
            "skipped": sum(1 for r in self.results if r.status == "skip"),
        }

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return self.counts["failed"] == 0

    def summary(self) -> str:
        c = self.counts
        return (f"{c['total']} checks: {c['passed']} passed, {c['deviations']} passed as "
                f"documented deviations, {c['failed']} failed, {c['skipped']} skipped "
                f"in {self.duration:.1f} s")

    # ------------------------------------------------------------------ text

    def format_table(self, width: int = 100) -> str:
        """The results as a table (check, spec reference, result, time), with the reason
        of every failure, skip and deviation on the lines below its row."""
        name_w = max([len("CHECK")] + [len(r.name) for r in self.results])
        spec_w = min(36, max([len("SPEC")] + [len(r.spec) for r in self.results]))
        lines = [f"{'CHECK':<{name_w}}  {'SPEC':<{spec_w}}  {'RESULT':<9}  {'TIME':>6}"]
        lines.append("-" * len(lines[0]))
        wrap_w = max(40, width - 6)
        for r in self.results:
            spec = r.spec if len(r.spec) <= spec_w else r.spec[: spec_w - 1] + "…"
            lines.append(f"{r.name:<{name_w}}  {spec:<{spec_w}}  {r.label:<9}  {r.duration:>5.2f}s")
            detail = ""
            if r.status == "fail":
                detail = r.note
            elif r.status == "skip":
                detail = r.note
            elif r.deviation:
                detail = f"RabbitMQ deviation: {r.documented_deviation or ''} (observed: {r.deviation})"
            for para in detail.splitlines()[:14]:
                for piece in textwrap.wrap(para, wrap_w) or [""]:
                    lines.append("      " + piece)
        lines.append("")
        if self.broker:
            lines.append(f"broker: {self.broker} at {self.url}")
        lines.append(self.summary())
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "broker": self.broker,
            "url": self.url,
            "duration": round(self.duration, 3),
            "counts": dict(self.counts),
            "ok": self.ok,
            "checks": [
                {**asdict(r), "duration": round(r.duration, 3), "result": r.label.lower()}
                for r in self.results
            ],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    # ------------------------------------------------------------------ JUnit XML

    def to_junit_xml(self) -> str:
        """JUnit XML, as CI systems read it: one ``testsuite`` ("leveret.conformance"),
        one ``testcase`` per check (``classname`` = its group), ``failure`` and
        ``skipped`` elements, deviations in ``system-out`` and as a property."""
        c = self.counts
        suites = ET.Element("testsuites", name="leveret conformance", tests=str(c["total"]),
                            failures=str(c["failed"]), errors="0", skipped=str(c["skipped"]),
                            time=f"{self.duration:.3f}")
        suite = ET.SubElement(suites, "testsuite", name="leveret.conformance",
                              tests=str(c["total"]), failures=str(c["failed"]), errors="0",
                              skipped=str(c["skipped"]), time=f"{self.duration:.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="broker", value=self.broker)
        ET.SubElement(props, "property", name="url", value=self.url)
        for r in self.results:
            case = ET.SubElement(suite, "testcase", classname=f"conformance.{r.name.split('.')[0]}",
                                 name=r.name, time=f"{r.duration:.3f}")
            case_props = ET.SubElement(case, "properties")
            ET.SubElement(case_props, "property", name="spec", value=r.spec)
            if r.status == "fail":
                failure = ET.SubElement(case, "failure", message=_first_line(r.note), type="ConformanceFailure")
                failure.text = f"{r.description}\n\n{r.note}"
            elif r.status == "skip":
                ET.SubElement(case, "skipped", message=r.note)
            elif r.deviation:
                ET.SubElement(case_props, "property", name="deviation", value=r.deviation)
                out = ET.SubElement(case, "system-out")
                out.text = f"RabbitMQ deviation: {r.documented_deviation}\nobserved: {r.deviation}"
        ET.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""
