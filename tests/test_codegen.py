"""The code generator: the committed output is fresh, --check catches drift, the model reads
both spec dialects."""

from __future__ import annotations

import py_compile
import shutil
from pathlib import Path

import pytest

import codegen
from codegen.__main__ import main
from codegen.model import SpecError, load_spec, merge_extensions
from codegen.render import HEADER

GENERATED = [*codegen.OUTPUTS.values(), codegen.REPLIES]


def _copy_tree(tmp: Path) -> Path:
    shutil.copytree(codegen.ROOT / "spec", tmp / "spec")
    (tmp / "leveret" / "wire").mkdir(parents=True)
    for rel in GENERATED:
        shutil.copy(codegen.ROOT / rel, tmp / rel)
    return tmp


def test_committed_output_is_up_to_date() -> None:
    assert codegen.check() == []


def test_check_names_an_altered_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_tree(tmp_path)
    assert codegen.check(root) == []
    assert main(["--check", "--root", str(root)]) == 0
    assert "up to date" in capsys.readouterr().out

    target = root / "leveret/wire/amqp0_9_1.py"
    target.write_text(target.read_text().replace("METHOD_ID = 40", "METHOD_ID = 41", 1))
    (root / codegen.REPLIES).unlink()
    assert codegen.check(root) == ["leveret/wire/amqp0_9_1.py", codegen.REPLIES]
    assert main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "leveret/wire/amqp0_9_1.py" in err and codegen.REPLIES in err
    assert "amqp0_8" not in err

    # regenerating repairs exactly those files
    assert main(["--root", str(root)]) == 0
    assert codegen.check(root) == []


def test_a_spec_change_makes_the_check_fail(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    ext = root / "spec/rabbitmq-extensions.xml"
    text = ext.read_text().replace('name="reason" type="shortstr"', 'name="why" type="shortstr"')
    ext.write_text(text)
    assert codegen.check(root) == ["leveret/wire/amqp0_9_1.py"]


@pytest.mark.parametrize("rel", GENERATED)
def test_generated_files_say_so_and_are_clean(rel: str, tmp_path: Path) -> None:
    path = codegen.ROOT / rel
    text = path.read_text()
    assert text.splitlines()[0] + "\n" == HEADER
    assert "python -m codegen" in HEADER
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)
    for n, line in enumerate(text.splitlines(), 1):
        assert len(line) <= 99, f"{rel}:{n} is {len(line)} characters"
        assert line == line.rstrip(), f"{rel}:{n} has trailing whitespace"
        assert "\t" not in line


def test_model_reads_both_dialects() -> None:
    v091, v08 = codegen.load_specs()
    assert v091.version == (0, 9, 1) and v08.version == (0, 8, 0)
    assert v08.name == "0-8" and v08.protocol_header == b"AMQP\x01\x01\x08\x00"
    consts = {c.name: c for c in v08.constants}
    assert consts["frame-method"].value == 1 and consts["frame-method"].error_class is None
    assert consts["not-found"].error_class == "soft"
    assert consts["connection-forced"].error_class == "hard"
    basic = next(c for c in v08.classes if c.name == "basic")
    deliver = next(m for m in basic.methods if m.name == "deliver")
    assert [(f.name, f.type) for f in deliver.fields] == [
        ("consumer-tag", "shortstr"),
        ("delivery-tag", "longlong"),
        ("redelivered", "bit"),
        ("exchange", "shortstr"),
        ("routing-key", "shortstr"),
    ]
    basic091 = next(c for c in v091.classes if c.name == "basic")
    assert basic091.properties[-1].name == "cluster-id" and basic091.properties[-1].reserved
    conn = next(c for c in v091.classes if c.name == "connection")
    assert [m.index for m in conn.methods][-4:] == [60, 61, 70, 71]
    assert "rabbitmq-extensions.xml" in v091.sources


def test_extension_index_collision_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "ext.xml"
    bad.write_text(
        '<amqp-extension for="0-9-1"><class name="connection" index="10">'
        '<method name="again" index="10"/></class></amqp-extension>'
    )
    spec = load_spec(codegen.ROOT / "spec/amqp0-9-1.stripped.extended.xml")
    with pytest.raises(SpecError, match="reuses index 10"):
        merge_extensions(spec, bad)


def test_reply_classes_do_not_reuse_the_names_of_wire_errors() -> None:
    # replies.py is star-imported into leveret.client; a reply class named like one of
    # leveret.wire.errors (UnexpectedFrame, raised by the client core for a frame out of
    # place) would make ``from leveret.client import UnexpectedFrame`` the wrong class,
    # one that never catches what the core raises.
    from leveret.wire import errors, replies

    clashes = sorted(set(replies.__all__) & set(errors.__all__))
    assert not clashes, f"reply classes shadow leveret.wire.errors names: {clashes}"
    assert replies.REPLY_ERRORS[505].__name__ == "AMQPUnexpectedFrame"
    assert issubclass(replies.REPLY_ERRORS[505], errors.HardError)
    # The generator's own list of those names keeps up with errors.py.
    from codegen import render

    assert set(errors.__all__) <= render._ERRORS_NAMES
