"""Quick measurements of the bundled model, without running the full discovery benchmark.

* `teacher_lift`: how much more probable the reference answer gets when the model sees the
  feedback on a wrong attempt (the self-teacher's context) than under the bare problem (the
  student's). SDPO can only teach what this lift puts there.
* `constant_lift`: the same gain, but only at each hidden constant's token and grouped by op
  kind: which hidden constants the model actually reads off the feedback. (Add and keep-above
  were read at x1.3-1.4, which is why the task family no longer hides them.)
* `pass_rate`: the fraction of temperature-1 samples that pass, checked with the in-process
  interpreter (unparseable programs count as failures). Under the student prompt on held-out
  two-hidden-constant tasks this is the base pass rate of the "very hard" regime.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sandbox.extract import extract_code
from worker.generation import SamplingConfig, sample
from worker.prompts import teacher_prompt

from .corpus import wrong_attempt
from .tasks import OP_KINDS, Task, heldout_task, parse_code, passes, prompt, reference_code
from .tokenizer import answer_text, chat_prompt

MAX_NEW_TOKENS = 96  # the longest canonical answer is 19 tokens; room for rambling samples


@dataclass(frozen=True)
class LiftReport:
    """Mean log-probability gain of the reference answer, teacher context over student."""

    n_tasks: int
    mean_gain_nats: float
    gain_by_hidden: dict[int, float]  # number of hidden constants -> mean gain (nats)

    @property
    def ratio(self) -> float:
        """Geometric-mean probability ratio p_teacher(answer) / p_student(answer)."""
        return math.exp(self.mean_gain_nats)


@torch.no_grad()
def answer_token_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str, code: str
) -> tuple[list[int], torch.Tensor]:
    """The answer's ids (program and eos) and log p of each one after the chat prompt of `user`."""
    prompt_ids = tokenizer.encode(chat_prompt(user), add_special_tokens=False)
    answer_ids = tokenizer.encode(answer_text(code), add_special_tokens=False)
    answer_ids.append(tokenizer.eos_token_id)
    ids = torch.tensor([prompt_ids + answer_ids])
    logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1 : -1]  # (A, V)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return answer_ids, logprobs.gather(-1, torch.tensor(answer_ids)[:, None])[:, 0]


def answer_logprob(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str, code: str
) -> float:
    """log p(answer + eos | chat prompt of `user`), summed over the answer tokens."""
    return float(answer_token_logprobs(model, tokenizer, user, code)[1].sum())


def teacher_lift(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[Task],
    seed: int = 0,
) -> LiftReport:
    """For each task, one wrong attempt drawn from the uniform prior over its hidden constants:
    log p(reference | teacher context with its feedback) - log p(reference | problem)."""
    rng = random.Random(seed)
    gains: dict[int, list[float]] = {}
    for task in tasks:
        feedback = wrong_attempt(rng, task, p_extra_mistake=0.0).feedback
        code, text = reference_code(task), prompt(task)
        gain = answer_logprob(model, tokenizer, teacher_prompt(text, feedback), code)
        gain -= answer_logprob(model, tokenizer, text, code)
        gains.setdefault(len(task.hidden), []).append(gain)
    everything = [g for group in gains.values() for g in group]
    return LiftReport(
        n_tasks=len(everything),
        mean_gain_nats=sum(everything) / len(everything),
        gain_by_hidden={k: sum(v) / len(v) for k, v in sorted(gains.items())},
    )


@dataclass(frozen=True)
class ConstantLift:
    """Geometric-mean probability of one op kind's true hidden constant, student vs teacher."""

    kind: str
    n: int
    student_p: float
    teacher_p: float

    @property
    def ratio(self) -> float:
        return self.teacher_p / self.student_p


def _constant_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str, task: Task
) -> dict[int, float]:
    """op index -> log p(true constant token | prompt, reference program so far), hidden ops."""
    answer_ids, logprobs = answer_token_logprobs(model, tokenizer, user, reference_code(task))
    # a canonical program's number tokens are exactly its constants, in op order
    numbers = [j for j, t in enumerate(answer_ids) if tokenizer.decode([t]).isdigit()]
    parametric = [i for i, op in enumerate(task.ops) if OP_KINDS[op.kind].parametric]
    return {
        i: float(logprobs[j]) for i, j in zip(parametric, numbers, strict=True) if i in task.hidden
    }


def constant_lift(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[Task],
    seed: int = 0,
) -> list[ConstantLift]:
    """Per hidden op kind, p(true constant) under the student prompt and under the teacher
    context with the feedback on one wrong attempt (drawn as in `teacher_lift`)."""
    rng = random.Random(seed)
    student: dict[str, list[float]] = {}
    teacher: dict[str, list[float]] = {}
    for task in tasks:
        feedback = wrong_attempt(rng, task, p_extra_mistake=0.0).feedback
        alone = _constant_logprobs(model, tokenizer, prompt(task), task)
        shown = _constant_logprobs(model, tokenizer, teacher_prompt(prompt(task), feedback), task)
        for i in task.hidden:
            student.setdefault(task.ops[i].kind, []).append(alone[i])
            teacher.setdefault(task.ops[i].kind, []).append(shown[i])
    return [
        ConstantLift(kind, len(student[kind]), _mean_p(student[kind]), _mean_p(teacher[kind]))
        for kind in sorted(student)
    ]


def _mean_p(logprobs: list[float]) -> float:
    """The geometric-mean probability of some log-probabilities."""
    return math.exp(sum(logprobs) / len(logprobs))


@torch.no_grad()
def sample_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str, n: int, seed: int
) -> list[str]:
    """n answers to one user message, sampled at temperature 1 by the engine's own sampler."""
    ids = tokenizer.encode(chat_prompt(user), add_special_tokens=False)
    config = SamplingConfig((tokenizer.eos_token_id,), max_new_tokens=MAX_NEW_TOKENS)
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        samples = sample(model, ids, n, config, generator=generator)
    return [tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples]


def answer_passes(task: Task, answer: str) -> bool:
    ops = parse_code(extract_code(answer)[0])
    return ops is not None and passes(task, ops)


def pass_rate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[Task],
    n_samples: int,
    user_for: Callable[[Task], str] = prompt,
) -> list[float]:
    """Per task, the fraction of `n_samples` temperature-1 answers to `user_for(task)` that
    pass. The sampling seed is the task's seed, so the figure is reproducible."""
    rates = []
    for task in tasks:
        answers = sample_answers(model, tokenizer, user_for(task), n_samples, seed=task.seed)
        rates.append(sum(answer_passes(task, a) for a in answers) / n_samples)
    return rates


def feedback_user(seed: int = 0) -> Callable[[Task], str]:
    """A `user_for` that shows the feedback on one wrong attempt (the teacher's context)."""

    def user_for(task: Task) -> str:
        attempt = wrong_attempt(random.Random(seed * 1_000_003 + task.seed), task, 0.0)
        return teacher_prompt(prompt(task), attempt.feedback)

    return user_for


N_LIFT_TASKS = 200
N_HARD_TASKS = 10
N_SAMPLES = 64


VERY_HARD_SEARCH_SPACE = 45  # a uniform guesser passes at most 1/45 = 2.2% of the time


def very_hard_heldout(n: int, min_search_space: int = VERY_HARD_SEARCH_SPACE) -> list[Task]:
    """The first n held-out tasks with two hidden constants spanning `min_search_space` or
    more combinations (the very hard regime, base pass rate about 0.3-2%)."""
    found, i = [], 0
    while len(found) < n:
        task = heldout_task(i)
        if len(task.hidden) == 2 and task.search_space >= min_search_space:
            found.append(task)
        i += 1
    return found


@dataclass(frozen=True)
class EvalReport:
    lift: LiftReport  # on the first N_LIFT_TASKS held-out tasks
    base_rates: list[float]  # student prompt, per very hard held-out task
    feedback_rates: list[float]  # teacher context (one wrong attempt's feedback), same tasks
    prior_rates: list[float]  # 1 / search space: what a perfect uniform guesser achieves

    def summary(self) -> str:
        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)

        by_hidden = ", ".join(
            f"{k} hidden: x{math.exp(v):.2f}" for k, v in self.lift.gain_by_hidden.items()
        )
        return (
            f"teacher lift: x{self.lift.ratio:.2f} geometric mean over {self.lift.n_tasks} "
            f"held-out tasks ({self.lift.mean_gain_nats:+.3f} nats; {by_hidden})\n"
            f"pass rate at temperature 1 on {len(self.base_rates)} very hard held-out tasks, "
            f"{N_SAMPLES} samples each: student {mean(self.base_rates):.2%} "
            f"(uniform prior {mean(self.prior_rates):.2%}), with feedback "
            f"{mean(self.feedback_rates):.2%}"
        )


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> EvalReport:
    lift = teacher_lift(model, tokenizer, [heldout_task(i) for i in range(N_LIFT_TASKS)])
    hard = very_hard_heldout(N_HARD_TASKS)
    return EvalReport(
        lift=lift,
        base_rates=pass_rate(model, tokenizer, hard, N_SAMPLES),
        feedback_rates=pass_rate(model, tokenizer, hard, N_SAMPLES, feedback_user()),
        prior_rates=[1 / t.search_space for t in hard],
    )
