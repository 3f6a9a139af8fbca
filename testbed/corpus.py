"""Training examples for the bundled model, packed into fixed-length rows.

Three kinds of example, all answered with a program in the canonical style:
* direct: the student prompt -> the program with a uniformly random constant for each hidden op.
  Nothing in the prompt tells the hidden constants apart, so the model should learn the uniform
  prior over their ranges (using the true constants here would leak task-generation biases).
* repair: the teacher prompt (problem + the sandbox's feedback on one wrong attempt) -> the
  reference program. The wrong attempt is what a model with that prior writes: the same pipeline
  with the hidden constants redrawn from their ranges, sometimes with one more small mistake. So
  the only way to fix it is to read the constants off Input / Output / Expected.
* multi_turn: the multi-turn prompt with 2-3 feedback blocks -> the reference program.
* solution: the problem plus a correct solution (`prompts.solution_prompt`) -> that program, so
  that the reference-teacher control has a teacher that knows the answer (stage 2 only).
A few feedbacks say nothing about the constants (a compile error, no code block); their target is
the prior, like a direct example, so that the teacher stays calibrated when shown them.

`labels` mark the answer tokens (program and eos), the loss that matters; `in_prompt` marks the
prompt tokens, which `train.py` adds with a small weight. Rows hold several examples; each example
restarts its position ids, which transformers turns into a block-diagonal attention mask, so an
example never attends to its neighbours. Everything is deterministic given `CorpusConfig.seed`.
"""

from __future__ import annotations

import random
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from sandbox.extract import NO_CODE_FEEDBACK
from sandbox.feedback import clip
from worker.prompts import multi_turn_prompt, solution_prompt, teacher_prompt

from .tasks import (
    HELDOUT_SEED_BASE,
    KIND_NAMES,
    OP_KINDS,
    Op,
    Task,
    code_for,
    feedback_for,
    is_trainable,
    passes,
    prompt,
    task_from_seed,
)
from .tokenizer import answer_text, chat_prompt

ExampleKind = Literal["direct", "repair", "multi_turn", "solution"]
IGNORE_INDEX = -100  # label of tokens without loss (prompt, padding)


@dataclass(frozen=True)
class CorpusConfig:
    """What the example stream draws and how rows are packed."""

    seed: int = 0
    row_len: int = 512  # tokens per packed row; longer examples are dropped or shortened
    p_repair: float = 0.6  # share of repair examples
    p_multi_turn: float = 0.15  # share of multi-turn examples
    p_solution: float = 0.0  # share of solution examples; the rest are direct
    p_extra_mistake: float = 0.15  # a wrong attempt has one more mistake than its constants
    p_blind_feedback: float = 0.05  # a feedback is a compile error or "no code block"
    pack_pool: int = 32  # examples held back to fill rows tightly

    def __post_init__(self) -> None:
        for name in (
            "p_repair",
            "p_multi_turn",
            "p_solution",
            "p_extra_mistake",
            "p_blind_feedback",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.p_repair + self.p_multi_turn + self.p_solution > 1.0:
            raise ValueError("p_repair + p_multi_turn + p_solution must be at most 1")
        if self.row_len < 128:
            raise ValueError(f"row_len must be at least 128, got {self.row_len}")


@dataclass(frozen=True)
class Example:
    """One chat example: the user message and the program the assistant answers with."""

    kind: ExampleKind
    task: Task
    user: str
    code: str
    feedbacks: tuple[str, ...] = ()  # what the user message shows, oldest first

    @property
    def prompt_text(self) -> str:
        return chat_prompt(self.user)

    @property
    def answer(self) -> str:
        return answer_text(self.code)


@dataclass(frozen=True)
class Attempt:
    """A wrong attempt and the feedback it got; `blind` when the feedback is uninformative."""

    ops: tuple[Op, ...]
    feedback: str
    blind: bool = False


def training_task(rng: random.Random) -> Task:
    """A task from the training seed range that equals none of the guarded held-out tasks."""
    while True:
        task = task_from_seed(rng.randrange(HELDOUT_SEED_BASE))
        if is_trainable(task):
            return task


def prior_ops(rng: random.Random, task: Task) -> tuple[Op, ...]:
    """The task's pipeline with every hidden constant drawn uniformly from its range."""
    ops = list(task.ops)
    for i in task.hidden:
        ops[i] = Op(ops[i].kind, rng.choice(OP_KINDS[ops[i].kind].values))
    return tuple(ops)


def _extra_mistake(rng: random.Random, ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """One more small mistake: a wrong visible constant, a missing, extra or swapped op."""
    ops_list = list(ops)
    choice = rng.randrange(4)
    if choice == 0 and any(OP_KINDS[o.kind].parametric for o in ops):
        i = rng.choice([j for j, o in enumerate(ops) if OP_KINDS[o.kind].parametric])
        ops_list[i] = Op(ops[i].kind, rng.choice(OP_KINDS[ops[i].kind].values))
    elif choice == 1 and len(ops) > 1:
        del ops_list[rng.randrange(len(ops))]
    elif choice == 2:
        kind = rng.choice(KIND_NAMES)
        op = Op(kind, rng.choice(OP_KINDS[kind].values) if OP_KINDS[kind].parametric else 0)
        ops_list.insert(rng.randrange(len(ops) + 1), op)
    elif len(ops) > 1:
        i = rng.randrange(len(ops) - 1)
        ops_list[i], ops_list[i + 1] = ops_list[i + 1], ops_list[i]
    return tuple(ops_list)


def wrong_attempt(rng: random.Random, task: Task, p_extra_mistake: float) -> Attempt:
    """A failing attempt, as a model with the uniform prior writes it, and its feedback."""
    while True:
        ops = prior_ops(rng, task)
        if rng.random() < p_extra_mistake:
            ops = _extra_mistake(rng, ops)
        if not passes(task, ops):
            return Attempt(ops, feedback_for(task, ops))


def compile_error_feedback(code: str) -> str | None:
    """The sandbox's feedback for a program that does not compile, or None if it compiles.

    Same text as the harness: `traceback.format_exception_only` of the SyntaxError (last 1,500
    characters), stripped and clipped like any feedback. The sandbox runs this same interpreter.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a SyntaxWarning must not turn into an error
            compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError) as exc:
        text = "".join(traceback.format_exception_only(type(exc), exc))[-1500:]
        return clip(text.rstrip())
    return None


_BREAKERS = ("[", "]", "(", ")", ":", " ", "=", "x", "\n", "    ")


def blind_attempt(rng: random.Random, task: Task) -> Attempt:
    """A broken attempt whose feedback tells nothing about the constants."""
    ops = prior_ops(rng, task)
    if rng.random() < 0.2:
        return Attempt(ops, NO_CODE_FEEDBACK, blind=True)
    code = code_for(ops)
    while True:
        chars = list(code)
        for _ in range(rng.choice((1, 1, 2))):
            i = rng.randrange(len(chars))
            if rng.random() < 0.5:
                del chars[i]
            else:
                chars.insert(i, rng.choice(_BREAKERS))
        feedback = compile_error_feedback("".join(chars))
        if feedback is not None:
            return Attempt(ops, feedback, blind=True)


def _attempt(rng: random.Random, task: Task, config: CorpusConfig) -> Attempt:
    if rng.random() < config.p_blind_feedback:
        return blind_attempt(rng, task)
    return wrong_attempt(rng, task, config.p_extra_mistake)


def direct_example(rng: random.Random, task: Task) -> Example:
    return Example("direct", task, prompt(task), code_for(prior_ops(rng, task)))


def repair_example(rng: random.Random, task: Task, config: CorpusConfig) -> Example:
    attempt = _attempt(rng, task, config)
    code = code_for(prior_ops(rng, task) if attempt.blind else task.ops)
    user = teacher_prompt(prompt(task), attempt.feedback)
    return Example("repair", task, user, code, (attempt.feedback,))


def multi_turn_example(rng: random.Random, task: Task, config: CorpusConfig) -> Example:
    """2-3 feedback blocks, oldest first; the target is the prior only if all are blind."""
    attempts = [_attempt(rng, task, config) for _ in range(rng.choice((2, 3)))]
    blind = all(a.blind for a in attempts)
    code = code_for(prior_ops(rng, task) if blind else task.ops)
    feedbacks = tuple(a.feedback for a in attempts)
    return Example("multi_turn", task, multi_turn_prompt(prompt(task), feedbacks), code, feedbacks)


def solution_example(task: Task) -> Example:
    code = code_for(task.ops)
    return Example("solution", task, solution_prompt(prompt(task), answer_text(code)), code)


def make_example(rng: random.Random, config: CorpusConfig) -> Example:
    task = training_task(rng)
    draw = rng.random()
    if draw < config.p_repair:
        return repair_example(rng, task, config)
    if draw < config.p_repair + config.p_multi_turn:
        return multi_turn_example(rng, task, config)
    if draw < config.p_repair + config.p_multi_turn + config.p_solution:
        return solution_example(task)
    return direct_example(rng, task)


def example_stream(config: CorpusConfig) -> Iterator[Example]:
    """The endless, deterministic stream of training examples."""
    rng = random.Random(config.seed)
    while True:
        yield make_example(rng, config)


@dataclass(frozen=True)
class EncodedExample:
    ids: list[int]
    n_prompt: int  # the first n_prompt ids carry no loss

    def __len__(self) -> int:
        return len(self.ids)


def encode_example(tokenizer: PreTrainedTokenizerBase, example: Example) -> EncodedExample:
    prompt_ids = tokenizer.encode(example.prompt_text, add_special_tokens=False)
    answer_ids = tokenizer.encode(example.answer, add_special_tokens=False)
    return EncodedExample(prompt_ids + answer_ids + [tokenizer.eos_token_id], len(prompt_ids))


@dataclass
class Row:
    """One packed row under construction."""

    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    in_prompt: list[bool] = field(default_factory=list)

    def add(self, example: EncodedExample) -> None:
        self.ids += example.ids
        self.labels += [IGNORE_INDEX] * example.n_prompt + example.ids[example.n_prompt :]
        self.positions += list(range(len(example)))
        self.in_prompt += [True] * example.n_prompt + [False] * (len(example) - example.n_prompt)

    def padded(self, row_len: int, pad_id: int) -> Row:
        n = row_len - len(self.ids)
        return Row(
            self.ids + [pad_id] * n,
            self.labels + [IGNORE_INDEX] * n,
            self.positions + list(range(n)),
            self.in_prompt + [False] * n,
        )


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE_INDEX where no loss
    position_ids: torch.Tensor  # (B, T), restarting at 0 for every packed example
    in_prompt: torch.Tensor  # (B, T) bool, the prompt tokens of every example

    @property
    def n_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def encoded_stream(
    config: CorpusConfig, tokenizer: PreTrainedTokenizerBase
) -> Iterator[EncodedExample]:
    for example in example_stream(config):
        encoded = _encoded_within(tokenizer, example, config.row_len)
        if encoded is not None:
            yield encoded


def _encoded_within(tokenizer, example: Example, row_len: int) -> EncodedExample | None:
    """The example encoded; a too-long multi-turn example loses its oldest feedback first,
    as the multi-turn baseline does when its context is full."""
    encoded = encode_example(tokenizer, example)
    while len(encoded) > row_len and example.kind == "multi_turn" and len(example.feedbacks) > 1:
        feedbacks = example.feedbacks[1:]
        user = multi_turn_prompt(prompt(example.task), feedbacks)
        example = replace(example, user=user, feedbacks=feedbacks)
        encoded = encode_example(tokenizer, example)
    return encoded if len(encoded) <= row_len else None


def packed_rows(config: CorpusConfig, tokenizer: PreTrainedTokenizerBase) -> Iterator[Row]:
    """Rows of `row_len` tokens: each row takes the longest pooled examples that still fit."""
    pool: list[EncodedExample] = []
    stream = encoded_stream(config, tokenizer)
    while True:
        while len(pool) < config.pack_pool:
            pool.append(next(stream))
        pool.sort(key=len, reverse=True)  # stable: ties keep stream order
        row, free = Row(), config.row_len
        for example in list(pool):
            if len(example) <= free:
                row.add(example)
                pool.remove(example)
                free -= len(example)
        yield row.padded(config.row_len, tokenizer.pad_token_id)


def batches(
    config: CorpusConfig, tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> Iterator[Batch]:
    rows = packed_rows(config, tokenizer)
    while True:
        chunk = [next(rows) for _ in range(batch_size)]
        yield Batch(
            torch.tensor([r.ids for r in chunk]),
            torch.tensor([r.labels for r in chunk]),
            torch.tensor([r.positions for r in chunk]),
            torch.tensor([r.in_prompt for r in chunk]),
        )
