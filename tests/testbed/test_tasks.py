"""The task family: determinism, identifiable tests, and feedback equal to the real sandbox's."""

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from sandbox import FunctionTestsSpec, Sandbox, parse_spec
from testbed.tasks import (
    HELDOUT_SEED_BASE,
    MAX_LEN,
    MAX_VALUE,
    MIN_LEN,
    N_TESTS,
    OP_KINDS,
    Op,
    _alternatives,
    code_for,
    feedback_for,
    heldout_task,
    is_trainable,
    parse_code,
    passes,
    prompt,
    reference_code,
    run_ops,
    task_from_seed,
    verifier_spec,
)

SEEDS = range(300)
REPO = Path(__file__).resolve().parents[3]


def test_same_seed_same_task():
    for seed in (0, 7, 123456, HELDOUT_SEED_BASE + 3):
        a, b = task_from_seed(seed), task_from_seed(seed)
        assert a == b
        assert prompt(a) == prompt(b)
        assert verifier_spec(a) == verifier_spec(b)


_FINGERPRINT = (
    "import json; from testbed.tasks import task_from_seed, prompt, verifier_spec;"
    "print(json.dumps([[prompt(t), verifier_spec(t)] for t in map(task_from_seed, range(30))]))"
)


def test_tasks_do_not_depend_on_string_hashing():
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _FINGERPRINT],
            env={"PYTHONHASHSEED": str(hash_seed), "PATH": ""},
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in (1, 2)
    }
    assert len(outputs) == 1


def test_tests_are_well_formed_and_pin_the_hidden_constants():
    for seed in SEEDS:
        task = task_from_seed(seed)
        assert len(task.inputs) == N_TESTS and 2 <= len(task.ops) <= 3
        assert 1 <= len(task.hidden) <= 2
        assert all(OP_KINDS[task.ops[i].kind].hideable for i in task.hidden)
        assert len({op.kind for op in task.ops}) == len(task.ops)
        for xs, expected in zip(task.inputs, task.expected, strict=True):
            assert MIN_LEN <= len(xs) <= MAX_LEN and all(0 <= x <= MAX_VALUE for x in xs)
            assert expected  # an empty list would hide the constants' signature
        assert passes(task, task.ops)
        # only the true constants pass: the tests identify them
        assert not any(passes(task, alt) for alt in _alternatives(task.ops, task.hidden))


def test_add_and_keep_above_appear_but_are_never_hidden():
    """Their constants must be computed from the feedback (a difference, a threshold), which the
    bundled model does not learn; they stay in the family with their constants shown."""
    shown, hidden = set(), set()
    for seed in SEEDS:
        task = task_from_seed(seed)
        for i, op in enumerate(task.ops):
            (hidden if i in task.hidden else shown).add(op.kind)
    assert {"add", "above"} <= shown
    assert hidden == {"mul", "mod", "take", "drop"}


def test_prompt_hides_exactly_the_hidden_constants():
    task = task_from_seed(11)
    lines = prompt(task).split("\n")[1 : 1 + len(task.ops)]
    for i, (line, op) in enumerate(zip(lines, task.ops, strict=True)):
        assert line == f"{i + 1}. {op.text(i in task.hidden)}"
        assert ("?" in line) == (i in task.hidden)


def test_canonical_code_round_trips_through_the_parser():
    for seed in SEEDS:
        task = task_from_seed(seed)
        assert parse_code(reference_code(task)) == task.ops
    assert parse_code("def f(xs):\n    xs = xs[:2] \n    return xs") is None
    assert parse_code("def f(xs):\n    xs = [x + y for x in xs]\n    return xs") is None
    assert parse_code("print(1)") is None


def test_interpreter_matches_python_on_every_op():
    xs = [5, 0, 12, 7, 3, 20, 9]
    for name, kind in OP_KINDS.items():
        for k in kind.values if kind.parametric else [0]:
            op = Op(name, k)
            namespace: dict = {}
            exec(code_for([op]), namespace)  # trusted: our own canonical code
            assert run_ops([op], list(xs)) == namespace["f"](list(xs)), op


def test_verifier_spec_is_a_valid_sandbox_spec():
    spec = parse_spec(verifier_spec(task_from_seed(5)))
    assert isinstance(spec, FunctionTestsSpec) and spec.entry_point == "f"
    assert len(spec.tests) == N_TESTS
    json.dumps(verifier_spec(task_from_seed(5)))  # plain JSON


def test_heldout_tasks_are_never_trainable():
    for i in range(50):
        task = heldout_task(i)
        assert task.seed >= HELDOUT_SEED_BASE and not is_trainable(task)
    copy = dataclasses.replace(heldout_task(7), seed=5)  # a training seed, a held-out solution
    assert not is_trainable(copy)
    assert is_trainable(task_from_seed(0))


def _wrong_constants(seed: int) -> tuple[Op, ...]:
    task = task_from_seed(seed)
    ops = list(task.ops)
    for i in task.hidden:
        kind = OP_KINDS[ops[i].kind]
        ops[i] = Op(ops[i].kind, next(k for k in kind.values if k != ops[i].k))
    return tuple(ops)


def test_feedback_for_equals_the_real_sandbox(sandbox: Sandbox):
    async def judge_all():
        jobs = []
        for seed in (1, 2, 3, 4):
            task = task_from_seed(seed)
            spec = parse_spec(verifier_spec(task))
            jobs.append(sandbox.judge(spec, reference_code(task)))
            jobs.append(sandbox.judge(spec, code_for(_wrong_constants(seed))))
            jobs.append(sandbox.judge(spec, code_for(task.ops[:1])))
        return await asyncio.gather(*jobs)

    judgements = asyncio.run(judge_all())
    for n, seed in enumerate((1, 2, 3, 4)):
        task = task_from_seed(seed)
        right, wrong, partial = judgements[3 * n : 3 * n + 3]
        assert right.passed and feedback_for(task, task.ops) == ""
        for ops, judgement in ((_wrong_constants(seed), wrong), (task.ops[:1], partial)):
            assert judgement.verdict == "wrong_answer"
            assert judgement.feedback == feedback_for(task, ops)
