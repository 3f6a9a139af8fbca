"""LiveCodeBench (code_generation_lite JSONL rows) as a problem set.

A row's tests are its public ones plus its private ones. "stdin" problems become `io_tests`;
"functional" ones (LeetCode) become `function_tests` calling `metadata.func_name`, one JSON
value per line of a test's input for each argument. The prompt is LiveCodeBench's own generic
one: the question, then the starter code (or a stdin/stdout instruction) in a ```python block.
The prelude gives the imports LiveCodeBench's grader puts before every program.

`private_test_cases` is base64(zlib(pickle(a JSON string))), or plain JSON in some releases. A
pickle can run code when loaded, so it is decoded by an unpickler that refuses every global:
only a plain str can come out of it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sdpo.problem_set import ProblemSetEntry

MAX_PRIVATE_BYTES = 256 << 20  # decompressed private tests of one row, at most
PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, functools, heapq, itertools, math, re, string, sys\n"
    "from bisect import bisect_left, bisect_right\n"
    "from collections import Counter, defaultdict, deque\n"
    "from functools import cache, lru_cache, reduce\n"
    "from heapq import heapify, heappop, heappush\n"
    "from itertools import accumulate, combinations, permutations, product\n"
    "from math import ceil, comb, floor, gcd, inf, isqrt, log2, sqrt\n"
)
_WITH_STARTER = (
    "You will use the following starter code to write the solution to the problem and enclose "
    "your code within delimiters."
)
_WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not "
    "directly test on the sample inputs). Enclose your code within delimiters as follows."
)


class LiveCodeBenchError(ValueError):
    """A row that cannot be converted (its tests, its metadata or its pickle)."""


class _StrOnlyUnpickler(pickle.Unpickler):
    """Loads a pickled str and nothing else: any global (a class, a function) is refused
    before it is looked up, so no constructor or callable can run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name} in private_test_cases")


def decode_private(text: str) -> list[dict]:
    """The private tests of a row: plain JSON, or base64(zlib(pickle(JSON string)))."""
    if not text.strip():
        return []
    if text.lstrip().startswith("["):
        return json.loads(text)
    try:
        packed = base64.b64decode(text, validate=True)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, MAX_PRIVATE_BYTES)
    except (binascii.Error, zlib.error) as error:
        raise LiveCodeBenchError(f"private_test_cases: {error}") from None
    if inflate.unconsumed_tail:
        raise LiveCodeBenchError(f"private tests larger than {MAX_PRIVATE_BYTES} bytes")
    try:
        value = _StrOnlyUnpickler(io.BytesIO(raw)).load()
    except Exception as error:  # a malformed pickle fails in many ways; none runs code
        raise LiveCodeBenchError(f"private_test_cases: {error}") from None
    if not isinstance(value, str):
        raise LiveCodeBenchError(f"private_test_cases: a {type(value).__name__}, not a str")
    return json.loads(value)


def prompt_for(question: str, starter_code: str) -> str:
    """LiveCodeBench's generic code-generation prompt (its lcb_runner/prompts)."""
    text = f"### Question:\n{question}\n\n"
    if starter_code:
        text += f"### Format: {_WITH_STARTER}\n```python\n{starter_code}\n```\n\n"
    else:
        text += f"### Format: {_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return text + "### Answer: (use the provided format with backticks)\n\n"


def _function_test(test: dict) -> dict:
    lines = [line for line in test["input"].split("\n") if line.strip()]
    return {"args": [json.loads(line) for line in lines], "expected": json.loads(test["output"])}


def verifier_for(row: dict) -> dict:
    tests = json.loads(row.get("public_test_cases") or "[]")
    tests += decode_private(row.get("private_test_cases") or "")
    if not tests:
        raise LiveCodeBenchError("no tests")
    kinds = {test.get("testtype") for test in tests}
    if kinds == {"stdin"}:
        io_tests = [{"input": t["input"], "output": t["output"]} for t in tests]
        return {"type": "io_tests", "tests": io_tests, "prelude": PRELUDE}
    if kinds == {"functional"}:
        func_name = json.loads(row.get("metadata") or "{}").get("func_name")
        if not func_name:
            raise LiveCodeBenchError("a functional problem without metadata.func_name")
        function_tests = [_function_test(t) for t in tests]
        return {"type": "function_tests", "entry_point": func_name, "tests": function_tests,
                "prelude": PRELUDE}  # fmt: skip
    raise LiveCodeBenchError(f"test types {sorted(map(str, kinds))}, not stdin or functional")


def convert(row: dict) -> ProblemSetEntry:
    tags = [str(row[key]) for key in ("platform", "difficulty") if row.get(key)]
    return ProblemSetEntry(
        id=f"livecodebench/{row['question_id']}",
        prompt=prompt_for(row["question_content"], row.get("starter_code") or ""),
        verifier=verifier_for(row),
        source="livecodebench",
        tags=["livecodebench", *tags],
    )


@dataclass
class Imported:
    problems: list[ProblemSetEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line N: why", one per row left out


def livecodebench_problems(path: Path) -> Imported:
    """Every row of the file that converts; the others are listed in `skipped`."""
    imported = Imported()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                _add(imported, number, line)
    return imported


def _add(imported: Imported, number: int, line: str) -> None:
    try:
        imported.problems.append(convert(json.loads(line)))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        imported.skipped.append(f"line {number}: {where}: {first['msg']}")
    except (LiveCodeBenchError, ValueError, KeyError, TypeError) as error:
        reason = f"missing {error}" if isinstance(error, KeyError) else str(error)
        imported.skipped.append(f"line {number}: {reason}")
