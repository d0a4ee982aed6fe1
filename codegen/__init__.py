"""leveret's code generator: AMQP spec XML -> typed model -> Python modules.

``python -m codegen`` (from the repository root) rewrites the generated files;
``python -m codegen --check`` regenerates them in memory and fails, naming each file, when a
committed file differs.  See spec/README.md for the inputs.
"""

from __future__ import annotations

from pathlib import Path

from .model import Spec, load_spec, merge_extensions
from .render import render_replies, render_version

__all__ = ["ROOT", "OUTPUTS", "REPLIES", "load_specs", "generate", "check", "write"]

#: The repository root: the directory holding spec/ and leveret/.
ROOT = Path(__file__).resolve().parent.parent

#: Generated file (relative to the root) for each spec, in generation order.
OUTPUTS = {
    "0-9-1": "leveret/wire/amqp0_9_1.py",
    "0-8": "leveret/wire/amqp0_8.py",
}
REPLIES = "leveret/wire/replies.py"


def load_specs(root: Path = ROOT) -> list[Spec]:
    """The 0-9-1 model (with spec/rabbitmq-extensions.xml merged in) and the 0-8 model."""
    spec_dir = root / "spec"
    v091 = load_spec(spec_dir / "amqp0-9-1.stripped.extended.xml")
    merge_extensions(v091, spec_dir / "rabbitmq-extensions.xml")
    v08 = load_spec(spec_dir / "amqp0-8.stripped.xml")
    return [v091, v08]


def generate(root: Path = ROOT) -> dict[str, str]:
    """Every generated file's path (relative to ``root``) and its text, without writing."""
    specs = load_specs(root)
    out = {OUTPUTS[spec.name]: render_version(spec) for spec in specs}
    out[REPLIES] = render_replies(specs)
    return out


def check(root: Path = ROOT) -> list[str]:
    """Paths of the generated files under ``root`` that are missing or differ from a fresh
    generation; empty when everything is up to date."""
    stale = []
    for rel, text in generate(root).items():
        path = root / rel
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(rel)
    return stale


def write(root: Path = ROOT) -> list[str]:
    """Regenerate every file under ``root``; return the paths whose content changed."""
    changed = []
    for rel, text in generate(root).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed
