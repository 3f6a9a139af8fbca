"""The training corpus: deterministic, free of held-out tasks, loss on answers only."""

import asyncio
import itertools
import random
import shutil
from collections import Counter

import pytest
import torch

from sandbox import Sandbox, SandboxSettings, parse_spec
from testbed.corpus import (
    IGNORE_INDEX,
    CorpusConfig,
    batches,
    compile_error_feedback,
    example_stream,
    wrong_attempt,
)
from testbed.tasks import (
    HELDOUT_SEED_BASE,
    OP_KINDS,
    code_for,
    heldout_keys,
    passes,
    prompt,
    reference_code,
    task_from_seed,
    verifier_spec,
)
from testbed.tokenizer import build_tokenizer
from worker.prompts import solution_prompt, teacher_prompt

CONFIG = CorpusConfig(seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _first(n: int, config: CorpusConfig = CONFIG):
    return list(itertools.islice(example_stream(config), n))


def test_stream_is_deterministic(tokenizer):
    assert _first(100) == _first(100)
    assert _first(20) != _first(20, CorpusConfig(seed=4))
    one, two = batches(CONFIG, tokenizer, 2), batches(CONFIG, tokenizer, 2)
    for _ in range(2):
        a, b = next(one), next(two)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_no_heldout_task_is_trained_on():
    guarded = heldout_keys()
    for example in _first(1500):
        assert 0 <= example.task.seed < HELDOUT_SEED_BASE
        assert example.task.key not in guarded


def test_mix_of_example_kinds():
    kinds = Counter(e.kind for e in _first(1000))
    assert 0.5 < kinds["repair"] / 1000 < 0.7
    assert 0.1 < kinds["multi_turn"] / 1000 < 0.2
    assert kinds["solution"] == 0  # stage 1 (the default) has none


def test_solution_examples_copy_the_shown_reference():
    examples = _first(400, CorpusConfig(seed=3, p_solution=0.25))
    solutions = [e for e in examples if e.kind == "solution"]
    assert 0.15 < len(solutions) / len(examples) < 0.35
    for example in solutions:
        assert example.code == reference_code(example.task)
        assert example.user == solution_prompt(prompt(example.task), example.answer)


def _differs_only_in_hidden_constants(example) -> bool:
    task = example.task
    answer_ops = [line.strip() for line in example.code.split("\n")]
    reference = [line.strip() for line in reference_code(task).split("\n")]
    visible = [i + 1 for i in range(len(task.ops)) if i not in task.hidden]
    return len(answer_ops) == len(reference) and all(
        answer_ops[i] == reference[i] for i in (0, *visible, len(reference) - 1)
    )


def test_answers_direct_prior_or_repaired_reference():
    for example in _first(300):
        task = example.task
        if example.kind == "direct":
            assert example.user == prompt(task)
        assert all(f in example.user for f in example.feedbacks)
        if any(f.startswith("Wrong answer") for f in example.feedbacks):
            assert example.code == reference_code(task)  # the feedback shows the constants
        else:  # no feedback, or only compile errors: the uniform prior
            assert _differs_only_in_hidden_constants(example)


def test_repair_attempts_are_wrong_in_the_hidden_constants():
    rng = random.Random(0)
    for seed in range(100):
        task = task_from_seed(seed)
        attempt = wrong_attempt(rng, task, p_extra_mistake=0.0)
        assert not passes(task, attempt.ops) and attempt.feedback.startswith("Wrong answer")
        for i, (mine, true) in enumerate(zip(attempt.ops, task.ops, strict=True)):
            assert mine.kind == true.kind
            assert mine.k == true.k or i in task.hidden
            assert mine.k in OP_KINDS[mine.kind].values or not OP_KINDS[mine.kind].parametric


def test_rows_pack_examples_with_loss_on_answers_only(tokenizer):
    batch = next(batches(CONFIG, tokenizer, 4))
    assert batch.input_ids.shape == (4, CONFIG.row_len)
    for row in range(4):
        ids, labels = batch.input_ids[row], batch.labels[row]
        positions = batch.position_ids[row]
        starts = (positions == 0).nonzero().flatten().tolist()
        assert starts[0] == 0 and len(starts) >= 2
        # every loss span is one answer: a code block then eos, at the end of its example
        spans = _runs(labels != IGNORE_INDEX)
        for begin, end in spans:
            text = tokenizer.decode(ids[begin:end])
            assert text.startswith("```python\ndef f(xs):\n") and text.endswith("```<|end|>")
            assert torch.equal(labels[begin:end], ids[begin:end])
            assert end in starts or end == CONFIG.row_len
        assert not batch.in_prompt[row][labels != IGNORE_INDEX].any()


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    runs, begin = [], None
    for i, flag in enumerate(mask.tolist() + [False]):
        if flag and begin is None:
            begin = i
        elif not flag and begin is not None:
            runs.append((begin, i))
            begin = None
    return runs


def test_teacher_prompts_use_the_shared_template():
    example = next(e for e in _first(50) if e.kind == "repair")
    assert example.user == teacher_prompt(prompt(example.task), example.feedbacks[0])


BROKEN = [
    "def f(xs):\n    xs = [x + 3 for x in xs\n    return xs",
    "def f(xs):\n    xs = xs[:3]\n  return xs",
    "def f(xs)\n    return xs",
]


def test_compile_error_feedback_equals_the_real_sandbox():
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is required for the real sandbox (make test installs it)")
    sandbox = Sandbox(SandboxSettings(max_parallel=2))
    spec = parse_spec(verifier_spec(task_from_seed(0)))

    async def judge_all():
        return await asyncio.gather(*(sandbox.judge(spec, code) for code in BROKEN))

    for code, judgement in zip(BROKEN, asyncio.run(judge_all()), strict=True):
        assert judgement.verdict == "compile_error"
        assert judgement.feedback == compile_error_feedback(code)
    assert compile_error_feedback(code_for(task_from_seed(0).ops)) is None
