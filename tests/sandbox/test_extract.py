"""Code extraction, on real SmolLM2-135M-Instruct answers and on hand-written edge cases."""

import json
from pathlib import Path

import pytest

from sandbox import extract_code
from sandbox.extract import fenced_blocks

FIXTURES = Path(__file__).parent / "fixtures" / "smollm2_answers.json"
SMOLLM2_ANSWERS = json.loads(FIXTURES.read_text("utf-8"))["answers"]


@pytest.mark.parametrize("case", SMOLLM2_ANSWERS, ids=[c["id"] for c in SMOLLM2_ANSWERS])
def test_real_smollm2_answer(case):
    code, fenced = extract_code(case["answer"], entry_point=case["entry_point"])
    assert fenced is case["fenced"]
    assert code == (case["code"] if fenced else case["answer"].strip("\n"))


def test_fixtures_cover_the_shapes_we_meant_to():
    """The fixture set stays varied: each shape below has at least one real answer."""
    shapes = {shape for case in SMOLLM2_ANSWERS for shape in case["shapes"]}
    assert shapes >= {
        "prose",
        "several_blocks",
        "usage_block_after_definition",
        "bare_fence",
        "missing_opening_fence",
        "unterminated",
        "no_code",
    }


def test_last_python_block_wins():
    answer = "First try:\n```python\nprint(1)\n```\nBetter:\n```python\nprint(2)\n```\nDone."
    assert extract_code(answer) == ("print(2)", True)


def test_bare_fence_and_unclosed_fence():
    assert extract_code("```\nx = 1\n```") == ("x = 1", True)
    assert extract_code("text\n```py\nx = 2\n") == ("x = 2", True)


@pytest.mark.parametrize("label", ["python", "py", "python3", "Python", " python", "py3"])
def test_python_labels(label):
    assert extract_code(f"Here:\n```{label}\nx = 1\n```\n") == ("x = 1", True)


def test_other_languages_are_not_python():
    assert extract_code("```cpp\nint main(){}\n```") == ("```cpp\nint main(){}\n```", False)


def test_closing_fence_of_another_language_opens_nothing():
    answer = "```cpp\nint main(){}\n```\nDone."
    assert extract_code(answer) == (answer, False)


def test_shell_and_output_blocks_are_skipped():
    answer = (
        "```python\nprint(input())\n```\nRun it:\n```bash\necho 3 | python main.py\n```\n"
        "Output:\n```text\n3\n```\n"
    )
    assert extract_code(answer) == ("print(input())", True)


def test_fences_inside_another_language_block_are_not_blocks():
    answer = "Write it like this:\n````markdown\n```python\nprint(1)\n```\n````\n"
    assert extract_code(answer) == (answer.strip("\n"), False)


def test_no_fence_gives_whole_text():
    assert extract_code("\nprint(3)\n") == ("print(3)", False)


def test_backticks_inside_a_string_do_not_close_the_block():
    answer = "```python\nfence = '```'\nprint(fence)\n```"
    assert extract_code(answer) == ("fence = '```'\nprint(fence)", True)


def test_fence_indented_in_a_list_item_is_dedented():
    answer = "1. The code:\n\n   ```python\n   def f():\n       return 1\n   ```\n"
    assert extract_code(answer) == ("def f():\n    return 1", True)


def test_empty_block_is_no_candidate():
    answer = "```python\nprint(1)\n```\nAnd then:\n```\n```"
    assert extract_code(answer) == ("print(1)", True)
    assert extract_code("```python\n```") == ("```python\n```", False)


def test_complete_block_beats_a_cut_rewrite():
    answer = "```python\nprint(1)\n```\nShorter:\n```python\nprint(1"
    assert extract_code(answer) == ("print(1)", True)


def test_entry_point_skips_a_trailing_usage_block():
    answer = (
        "```python\ndef add(x, y):\n    return x + y\n```\nUsage:\n```python\nprint(add(2, 3))\n```"
    )
    assert extract_code(answer) == ("print(add(2, 3))", True)
    assert extract_code(answer, entry_point="add") == ("def add(x, y):\n    return x + y", True)


def test_entry_point_takes_the_last_definition():
    answer = (
        "```python\ndef add(x, y):\n    return x - y\n```\nOops, fixed:\n"
        "```python\ndef add(x, y):\n    return x + y\n```\n```python\nassert add(1, 1) == 2\n```"
    )
    assert extract_code(answer, entry_point="add") == ("def add(x, y):\n    return x + y", True)


@pytest.mark.parametrize(
    "definition",
    [
        "def add(x, y):\n    return x + y",
        "async def add(x, y):\n    return x + y",
        "class Solution:\n    def add(self, x, y):\n        return x + y",
        "class add:\n    pass",
        "def add (x, y): return x + y",
        "add = lambda x, y: x + y",
    ],
)
def test_what_counts_as_defining_the_entry_point(definition):
    answer = f"```python\n{definition}\n```\n```python\nprint(add(1, 2))\n```"
    assert extract_code(answer, entry_point="add") == (definition, True)


@pytest.mark.parametrize(
    "near_miss",
    [
        "def addition(x, y):\n    return x + y",
        "class Adder:\n    def add(self, x, y):\n        return x + y",
        "# def add(x, y): comes later",
        "add == 3",
    ],
)
def test_near_misses_do_not_define_the_entry_point(near_miss):
    answer = f"```python\n{near_miss}\n```\n```python\nprint(add(1, 2))\n```"
    assert extract_code(answer, entry_point="add") == ("print(add(1, 2))", True)


def test_cut_definition_beats_a_complete_block_without_one():
    answer = (
        "```python\nprint(add(2, 3))\n```\nThe function:\n"
        "```python\ndef add(x, y):\n    return x + y\n\nprint(add("
    )
    code, fenced = extract_code(answer, entry_point="add")
    assert (code, fenced) == ("def add(x, y):\n    return x + y\n\nprint(add(", True)


def test_entry_point_nowhere_falls_back_to_the_last_complete_block():
    answer = "```python\ndef plus(x, y):\n    return x + y\n```\n```python\nprint(plus(1, 2))\n```"
    assert extract_code(answer, entry_point="add") == ("print(plus(1, 2))", True)


def test_entry_point_in_a_non_python_block_is_ignored():
    answer = "```python\nprint(1)\n```\n```text\ndef add(x, y):\n    return x + y\n```"
    assert extract_code(answer, entry_point="add") == ("print(1)", True)


def test_code_before_a_lone_closing_fence_is_a_block():
    answer = "def add(x, y):\n    return x + y\n```\n\nThis function adds `x` and `y`."
    assert extract_code(answer, entry_point="add") == ("def add(x, y):\n    return x + y", True)
    assert extract_code(answer) == ("def add(x, y):\n    return x + y", True)


def test_prose_before_a_bare_fence_is_no_block():
    answer = "Here is the code:\n```\nprint(1)\n```\nIt prints 1."
    assert [b.code for b in fenced_blocks(answer)] == ["print(1)"]


def test_bare_fence_followed_by_code_opens_a_block():
    """A line that looks like code before the fence does not make the fence a closing one when
    code follows it."""
    answer = "add(2, 3) returns 5:\n```\ndef add(x, y):\n    return x + y\n```\n"
    assert extract_code(answer, entry_point="add") == ("def add(x, y):\n    return x + y", True)


def test_headless_block_then_a_labelled_block():
    answer = "x = 1\n```\nNow the real one:\n```python\nx = 2\n```"
    assert [(b.code, b.language) for b in fenced_blocks(answer)] == [
        ("x = 1", ""),
        ("x = 2", "python"),
    ]


def test_bare_block_without_code_is_output_not_python():
    answer = "```python\nprint(2 + 3)\n```\nThe output will be:\n```\nSum: 5\n```\n```\n5\n```"
    assert extract_code(answer) == ("print(2 + 3)", True)


def test_bare_block_of_shell_commands_is_not_python():
    answer = "```python\nprint(1)\n```\nRun:\n```\npython main.py\n```"
    assert extract_code(answer) == ("print(1)", True)


def test_fence_glued_to_the_last_code_line_closes_the_block():
    answer = "```python\ndef f():\n    return 1```\nThis returns 1."
    assert extract_code(answer, entry_point="f") == ("def f():\n    return 1", True)


def test_a_fence_on_its_own_line_wins_over_a_glued_one():
    answer = "```python\nfence = '``'```\nprint(fence)\n```"
    assert extract_code(answer) == ("fence = '``'```\nprint(fence)", True)
