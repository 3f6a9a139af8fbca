"""Problem-set files: each line is a POST /v1/problems body plus an id; bad lines are named by
file, line and field."""

import json

import pytest

from sdpo.problem_set import (
    ProblemSetEntry,
    ProblemSetError,
    load_problem_set,
    write_problem_set,
)
from sdpo.schemas import ProblemCreate

GOOD = {
    "id": "demo/0",
    "prompt": "Write total(xs).",
    "verifier": {
        "type": "unit_tests",
        "entry_point": "total",
        "test_code": "assert total([1]) == 1",
    },
    "reference_solution": "def total(xs):\n    return sum(xs)\n",
    "source": "a test",
    "tags": ["demo"],
}


def _file(tmp_path, *lines):
    """Dicts are written as JSON lines, strings as they are."""
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" if isinstance(x, dict) else x for x in lines))
    return path


def test_round_trip(tmp_path):
    path = tmp_path / "set.jsonl"
    second = ProblemSetEntry.model_validate({**GOOD, "id": "demo/1", "budget": {"max_attempts": 8}})
    assert write_problem_set(path, [ProblemSetEntry.model_validate(GOOD), second]) == 2
    first_line = json.loads(path.read_text().splitlines()[0])
    assert first_line == GOOD  # only the fields that were given, as given
    loaded = load_problem_set(path)
    assert [e.id for e in loaded] == ["demo/0", "demo/1"]
    assert loaded[1].budget.max_attempts == 8 and loaded[0].verifier.type == "unit_tests"


def test_a_line_is_an_api_body(tmp_path):
    line = _file(tmp_path, GOOD).read_text().strip()
    body = ProblemCreate.model_validate_json(line)
    assert body.id == "demo/0" and body.reference_solution == GOOD["reference_solution"]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("{not json\n", "(line)", "not JSON"),
        ("[1, 2]\n", "(line)", "a JSON object"),
        ({**GOOD, "id": None}, "id", "string"),
        ({k: v for k, v in GOOD.items() if k != "id"}, "id", "Field required"),
        ({**GOOD, "id": "has space"}, "id", "pattern"),
        ({**GOOD, "prompt": ""}, "prompt", "at least 1 character"),
        ({**GOOD, "verifier": {"type": "io_tests", "tests": [{"input": "1"}]}},
         "verifier.io_tests.tests.0.output", "Field required"),
        ({**GOOD, "verifier": {**GOOD["verifier"], "entry_point": "1x"}},
         "verifier.unit_tests.entry_point", "pattern"),
        ({**GOOD, "tags": "demo"}, "tags", "list"),
        ({**GOOD, "surprise": 1}, "surprise", "Extra inputs"),
    ],
)  # fmt: skip
def test_bad_lines_name_file_line_and_field(tmp_path, line, field, message):
    path = _file(tmp_path, {**GOOD, "id": "fine/0"}, "\n", line)
    with pytest.raises(ProblemSetError) as error:
        load_problem_set(path)
    assert (error.value.line, error.value.field) == (3, field)
    assert message in error.value.message
    assert str(error.value).startswith(f"{path}:3: {field}: ")


def test_duplicate_ids(tmp_path):
    path = _file(tmp_path, GOOD, {**GOOD, "prompt": "again"})
    with pytest.raises(ProblemSetError, match=r":2: id: duplicate id 'demo/0' \(first on line 1\)"):
        load_problem_set(path)
