"""The synthetic task family of the bundled CPU model.

Every problem asks for `def f(xs):` on a list of small non-negative ints. Its hidden solution is a
pipeline of 2-3 one-line list ops followed by `return xs`. The prompt describes every op in order,
but shows 1-2 of the constants as `?`. Nothing in the prompt tells the hidden constants apart, so
a model without feedback can only guess them from their range: two hidden constants of ranges 8x7
make a problem "very hard" (a base pass rate near 1-2%). The verifier's feedback (Input, Output,
Expected of a failing test) does reveal them, because the function returns the list itself, so a
constant's signature survives to the output; the tests are chosen so that they pin it down.

Only some ops may have their constant hidden (`OpKind.hideable`): multiply and keep-multiples
(every expected number is a multiple of k) and keep-first (the expected length), whose constants
the model reads off the feedback, and remove-first, whose 3 values make the easy tasks. Add and
keep-above always show theirs: their constant has to be computed (a difference, a threshold
between two numbers). Shown the feedback on a wrong attempt, the stage-2 model raised the true
constant's probability x2.1-2.8 for the first three, but only x1.3 / x1.4 for add and keep-above
(and x1.2 for remove-first); a 3.4M-parameter model does not learn that arithmetic in our
training budget.

Everything is deterministic given a task seed. Held-out tasks use seeds from `HELDOUT_SEED_BASE`
on; training never uses those seeds, nor any task equal to one of the first `HELDOUT_GUARD`
held-out tasks.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

from sandbox.feedback import build_feedback
from sandbox.result import TestResult
from sandbox.spec import FunctionTestsSpec
from worker.prompts import solution_prompt

from .tokenizer import answer_text

HELDOUT_SEED_BASE = 10_000_000
HELDOUT_GUARD = 2000  # training excludes tasks equal to any of the first this many held-out ones
N_TESTS = 5
MIN_LEN, MAX_LEN = 3, 7  # test input lengths
MAX_VALUE = 20  # test input values are 0..MAX_VALUE
ENTRY_POINT = "f"
_CANDIDATE_INPUTS = 16  # inputs drawn per task; the most informative N_TESTS are kept
P_TWO_HIDDEN = 0.7  # share of two-hidden tasks among those with two parametric ops
# the spec's default limits (verifier_spec leaves them out); feedback only names them on limits
_TIME_LIMIT_S = FunctionTestsSpec.model_fields["time_limit_s"].default
_MEMORY_LIMIT_MB = FunctionTestsSpec.model_fields["memory_limit_mb"].default
_TEST_DRAWS = 8  # draws of candidate inputs before a task is rejected as unidentifiable


@dataclass(frozen=True)
class OpKind:
    """One kind of list op: its canonical code line, its English text and its constant range."""

    name: str
    code: str  # `{k}` is the constant
    text: str
    lo: int = 0  # constant range lo..hi; lo == hi == 0 for ops without a constant
    hi: int = 0
    hideable: bool = False  # the prompt may show this op's constant as `?`

    @property
    def parametric(self) -> bool:
        return self.hi > 0

    @property
    def values(self) -> range:
        return range(self.lo, self.hi + 1)


OP_KINDS: dict[str, OpKind] = {
    k.name: k
    for k in (
        OpKind("add", "xs = [x + {k} for x in xs]", "add {k} to each element", 1, 9),
        OpKind("mul", "xs = [x * {k} for x in xs]", "multiply each element by {k}", 2, 9, True),
        OpKind("take", "xs = xs[:{k}]", "keep the first {k} elements", 1, 7, True),
        OpKind("drop", "xs = xs[{k}:]", "remove the first {k} elements", 1, 3, True),
        OpKind(
            "mod", "xs = [x for x in xs if x % {k} == 0]", "keep the multiples of {k}", 2, 9, True
        ),
        OpKind("above", "xs = [x for x in xs if x > {k}]", "keep the elements above {k}", 1, 9),
        OpKind("sort", "xs = sorted(xs)", "sort the list in increasing order"),
        OpKind("reverse", "xs = xs[::-1]", "reverse the list"),
    )
}
KIND_NAMES: tuple[str, ...] = tuple(OP_KINDS)  # pinned order: rng.choice must see a fixed list
PARAMETRIC: tuple[str, ...] = tuple(n for n in KIND_NAMES if OP_KINDS[n].parametric)


@dataclass(frozen=True)
class Op:
    """One op of a pipeline; `k` is its constant (0 for sort and reverse)."""

    kind: str
    k: int = 0

    def apply(self, xs: list[int]) -> list[int]:
        k = self.k
        match self.kind:
            case "add":
                return [x + k for x in xs]
            case "mul":
                return [x * k for x in xs]
            case "take":
                return xs[:k]
            case "drop":
                return xs[k:]
            case "mod":
                return [x for x in xs if x % k == 0]
            case "above":
                return [x for x in xs if x > k]
            case "sort":
                return sorted(xs)
            case "reverse":
                return xs[::-1]
        raise ValueError(f"unknown op kind {self.kind!r}")

    def code(self) -> str:
        return OP_KINDS[self.kind].code.format(k=self.k)

    def text(self, hidden: bool = False) -> str:
        return OP_KINDS[self.kind].text.format(k="?" if hidden else self.k)


@dataclass(frozen=True)
class Task:
    """One problem: the op pipeline, which ops' constants the prompt hides, and the test inputs."""

    seed: int
    ops: tuple[Op, ...]
    hidden: tuple[int, ...]  # indices into `ops` of the ops whose constant is shown as `?`
    inputs: tuple[tuple[int, ...], ...]  # N_TESTS test inputs

    @property
    def key(self) -> tuple[tuple[str, int], ...]:
        """Identity of the hidden solution: ops and constants (what held-out exclusion compares)."""
        return tuple((op.kind, op.k) for op in self.ops)

    @cached_property
    def expected(self) -> tuple[list[int], ...]:
        return tuple(run_ops(self.ops, list(xs)) for xs in self.inputs)

    @property
    def search_space(self) -> int:
        """How many constant combinations a feedback-blind guesser chooses from (1/base rate)."""
        size = 1
        for i in self.hidden:
            size *= len(OP_KINDS[self.ops[i].kind].values)
        return size


def run_ops(ops: Sequence[Op], xs: list[int]) -> list[int]:
    """The in-process interpreter of an op pipeline (trusted, generated ops only)."""
    for op in ops:
        xs = op.apply(xs)
    return xs


def code_for(ops: Sequence[Op]) -> str:
    """The canonical program of a pipeline: one line per op, then `return xs`."""
    body = "".join(f"    {op.code()}\n" for op in ops)
    return f"def {ENTRY_POINT}(xs):\n{body}    return xs"


def reference_code(task: Task) -> str:
    return code_for(task.ops)


_HEADER = (
    "Write a Python function f(xs) that takes a list xs of integers and returns a list. "
    "Apply these steps in order:"
)
_FOOTER = {1: "The ? is a hidden number.", 2: "Each ? is a hidden number."}


def prompt(task: Task) -> str:
    """The problem text: every op in order, hidden constants shown as `?`."""
    steps = [f"{i + 1}. {op.text(i in task.hidden)}" for i, op in enumerate(task.ops)]
    return "\n".join([_HEADER, *steps, _FOOTER[len(task.hidden)]])


def reference_prompt(task: Task) -> str:
    """What the reference-teacher control sees: the problem plus the reference program. (The
    problem with its constants shown instead was out of distribution for the bundled model: it
    made the reference 22 nats *less* likely.)"""
    return solution_prompt(prompt(task), answer_text(reference_code(task)))


def call_text(xs: Sequence[int]) -> str:
    """How the sandbox shows a function test's input: `f(<json args>)`."""
    return f"{ENTRY_POINT}({json.dumps(list(xs))})"


def verifier_spec(task: Task) -> dict:
    """The task's verifier as a `function_tests` spec (what the service receives)."""
    tests = [
        {"args": [list(xs)], "expected": exp}
        for xs, exp in zip(task.inputs, task.expected, strict=True)
    ]
    return {"type": "function_tests", "entry_point": ENTRY_POINT, "tests": tests}


def judge_ops(task: Task, ops: Sequence[Op]) -> list[TestResult]:
    """What the sandbox would record for the program `code_for(ops)` on the task's tests."""
    results = []
    for i, (xs, exp) in enumerate(zip(task.inputs, task.expected, strict=True)):
        out = run_ops(ops, list(xs))
        results.append(
            TestResult(
                index=i,
                verdict="accepted" if out == exp else "wrong_answer",
                time_s=0.0,
                input=call_text(xs),
                output=json.dumps(out),
                expected=json.dumps(exp),
            )
        )
    return results


def feedback_for(task: Task, code_ops: Sequence[Op]) -> str:
    """The feedback text the real sandbox gives `code_for(code_ops)`; empty when it passes."""
    return build_feedback(
        judge_ops(task, code_ops), time_limit_s=_TIME_LIMIT_S, memory_limit_mb=_MEMORY_LIMIT_MB
    )


def passes(task: Task, code_ops: Sequence[Op]) -> bool:
    return all(
        run_ops(code_ops, list(xs)) == exp
        for xs, exp in zip(task.inputs, task.expected, strict=True)
    )


_LINE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(re.escape(kind.code).replace(re.escape("{k}"), r"(0|[1-9][0-9]*)")))
    for name, kind in OP_KINDS.items()
)
_DEF_LINE = f"def {ENTRY_POINT}(xs):"


def parse_code(code: str) -> tuple[Op, ...] | None:
    """Ops of a program written in the canonical style, or None if any line is not canonical."""
    lines = code.strip("\n").split("\n")
    if len(lines) < 2 or lines[0] != _DEF_LINE or lines[-1] != "    return xs":
        return None
    ops = []
    for line in lines[1:-1]:
        if not line.startswith("    "):
            return None
        op = _parse_line(line[4:])
        if op is None:
            return None
        ops.append(op)
    return tuple(ops)


def _parse_line(line: str) -> Op | None:
    for name, pattern in _LINE_PATTERNS:
        match = pattern.fullmatch(line)
        if match:
            return Op(name, int(match.group(1)) if match.groups() else 0)
    return None


def random_task(rng: random.Random, seed: int = -1) -> Task:
    """A random identifiable task; `seed` is only recorded (use `task_from_seed` for a seed)."""
    while True:
        ops, hidden = _random_pipeline(rng)
        inputs = _choose_inputs(rng, ops, hidden)
        if inputs is not None:
            return Task(seed=seed, ops=ops, hidden=hidden, inputs=inputs)


def task_from_seed(seed: int) -> Task:
    return random_task(random.Random(seed), seed=seed)


def heldout_task(i: int) -> Task:
    """The i-th held-out task (never used for training)."""
    return task_from_seed(HELDOUT_SEED_BASE + i)


@lru_cache(maxsize=1)
def heldout_keys() -> frozenset[tuple[tuple[str, int], ...]]:
    """Solutions of the first HELDOUT_GUARD held-out tasks: training must not contain them."""
    return frozenset(heldout_task(i).key for i in range(HELDOUT_GUARD))


def is_trainable(task: Task) -> bool:
    return 0 <= task.seed < HELDOUT_SEED_BASE and task.key not in heldout_keys()


def _random_pipeline(rng: random.Random) -> tuple[tuple[Op, ...], tuple[int, ...]]:
    """2-3 ops of distinct kinds, at least one hideable; 1 or 2 of the hideable ones hidden."""
    while True:
        kinds = rng.sample(KIND_NAMES, rng.choice((2, 3)))
        hideable = [i for i, name in enumerate(kinds) if OP_KINDS[name].hideable]
        if hideable:
            break
    ops = tuple(Op(name, rng.choice(OP_KINDS[name].values) if name in PARAMETRIC else 0)
                for name in kinds)  # fmt: skip
    n_hidden = 2 if len(hideable) >= 2 and rng.random() < P_TWO_HIDDEN else 1
    return ops, tuple(sorted(rng.sample(hideable, n_hidden)))


def _alternatives(ops: tuple[Op, ...], hidden: tuple[int, ...]) -> list[tuple[Op, ...]]:
    """Every pipeline that differs from `ops` only in its hidden constants."""
    ranges = [OP_KINDS[ops[i].kind].values for i in hidden]
    result = []
    for combo in itertools.product(*ranges):
        alt = list(ops)
        for i, k in zip(hidden, combo, strict=True):
            alt[i] = Op(ops[i].kind, k)
        if tuple(alt) != ops:
            result.append(tuple(alt))
    return result


def _choose_inputs(
    rng: random.Random, ops: tuple[Op, ...], hidden: tuple[int, ...]
) -> tuple[tuple[int, ...], ...] | None:
    """Test inputs that pin the hidden constants down, or None if none were found.

    Of `_CANDIDATE_INPUTS` random inputs with a non-empty expected output, keep the N_TESTS that
    each rule out the most alternative constants (feedback shows only two failing tests, so
    every test should be telling); accept them only if together they rule out all alternatives.
    """
    alternatives = _alternatives(ops, hidden)
    for _ in range(_TEST_DRAWS):
        scored = []
        for j in range(_CANDIDATE_INPUTS):
            xs = [rng.randint(0, MAX_VALUE) for _ in range(rng.randint(MIN_LEN, MAX_LEN))]
            expected = run_ops(ops, xs)
            if not expected:
                continue
            clashes = {a for a in alternatives if run_ops(a, xs) == expected}
            scored.append((len(clashes), j, tuple(xs), clashes))
        scored.sort(key=lambda s: s[:2])
        chosen = scored[:N_TESTS]
        if len(chosen) == N_TESTS and not set.intersection(
            set(alternatives), *(c[3] for c in chosen)
        ):
            return tuple(c[2] for c in sorted(chosen, key=lambda c: c[1]))
    return None
