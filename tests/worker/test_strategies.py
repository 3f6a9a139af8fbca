"""The strategies' machinery on a tiny random model with the real sandbox: determinism,
checkpoint/resume equivalence, budgets and multi-turn context handling."""

import asyncio

import pytest
import torch
from pydantic import ValidationError

from sandbox import parse_spec
from worker.checkpoint import load_checkpoint, save_checkpoint
from worker.loop import Budget, run_session
from worker.strategies import Problem, make_strategy

PROBLEM = Problem(
    "Write f(xs): add ? to each element.",
    parse_spec(
        {"type": "function_tests", "entry_point": "f", "tests": [{"args": [[1]], "expected": [4]}]}
    ),
)
PARAMS = {"num_generations": 3, "max_completion_length": 8}


def _run(strategy, budget):
    records = []

    async def keep(record):
        records.append(record)

    result = asyncio.run(run_session(strategy, budget, on_step=keep))
    return result, records


def _texts(records):
    return [a.text for r in records for a in r.attempts]


@pytest.mark.parametrize("name", ["best_of_k", "multi_turn", "sdpo"])
def test_same_seed_same_attempts(runtime, name):
    first = make_strategy(name, PROBLEM, PARAMS, runtime, seed=5)
    result, records = _run(first, Budget(max_attempts=7))
    first.close()
    again = make_strategy(name, PROBLEM, PARAMS, runtime, seed=5)
    _, records_again = _run(again, Budget(max_attempts=7))
    again.close()
    assert result.outcome == "exhausted" and result.attempts_used == 7
    assert [len(r.attempts) for r in records] == [3, 3, 1]  # the budget holds exactly
    assert [a.index for r in records for a in r.attempts] == list(range(1, 8))
    assert _texts(records) == _texts(records_again)


@pytest.mark.parametrize("name", ["multi_turn", "sdpo"])
def test_resume_from_checkpoint_gives_the_same_attempts(runtime, tmp_path, name):
    params = {**PARAMS, "learning_rate": 0.05} if name == "sdpo" else PARAMS
    whole = make_strategy(name, PROBLEM, params, runtime, seed=11)
    _, uninterrupted = _run(whole, Budget(max_attempts=9))
    whole.close()

    first = make_strategy(name, PROBLEM, params, runtime, seed=11)
    _, before = _run(first, Budget(max_attempts=3))
    save_checkpoint(tmp_path / "ckpt.pt", first.state_dict())
    first.close()
    resumed = make_strategy(name, PROBLEM, params, runtime, seed=999)  # seed comes from state
    resumed.load_state_dict(load_checkpoint(tmp_path / "ckpt.pt"))
    _, after = _run(resumed, Budget(max_attempts=9))
    resumed.close()
    assert _texts(before + after) == _texts(uninterrupted)
    assert [a.index for r in after for a in r.attempts] == list(range(4, 10))


def test_sdpo_updates_the_student_and_records_phases(runtime):
    strategy = make_strategy("sdpo", PROBLEM, {**PARAMS, "learning_rate": 0.05}, runtime, seed=2)
    start = [p.detach().clone() for p in strategy.adapter.student_params()]
    _, records = _run(strategy, Budget(max_attempts=3))
    moved = any(
        not torch.equal(a, b.detach())
        for a, b in zip(start, strategy.adapter.student_params(), strict=True)
    )
    strategy.close()
    assert moved
    record = records[0]
    assert set(record.phase_s) == {"generate", "judge", "teacher", "train", "sync"}
    assert {"loss", "mean_divergence", "grad_norm"} <= set(record.metrics)


def test_multi_turn_drops_oldest_feedback_to_fit(runtime):
    strategy = make_strategy("multi_turn", PROBLEM, PARAMS, runtime, seed=0)
    strategy.feedbacks = [f"Wrong answer on test {i} of 5." for i in range(1, 4)]
    full = len(strategy._prompt_ids())
    strategy.params = strategy.params.model_copy(update={"max_prompt_length": full - 1})
    text = runtime.engine.loaded.tokenizer.decode(strategy._prompt_ids())
    assert "test 1 of 5" not in text and "test 3 of 5" in text
    strategy.params = strategy.params.model_copy(update={"max_prompt_length": 16})
    assert strategy._prompt_ids() == strategy.problem_ids  # the problem itself always stays


def test_wall_budget_and_cancellation(runtime):
    strategy = make_strategy("best_of_k", PROBLEM, PARAMS, runtime, seed=0)
    result = asyncio.run(run_session(strategy, Budget(100, max_wall_s=0.0)))
    assert (result.outcome, result.attempts_used) == ("exhausted", 0)

    async def after_first_step():
        return strategy.step_index >= 1

    result = asyncio.run(run_session(strategy, Budget(100), should_stop=after_first_step))
    assert (result.outcome, result.attempts_used) == ("cancelled", 3)

    async def before_judging():
        return strategy.attempts_used > 3  # true once the second batch is sampled

    result = asyncio.run(run_session(strategy, Budget(100), should_stop=before_judging))
    assert (result.outcome, result.attempts_used) == ("cancelled", 3)  # that batch is dropped


def test_params_are_validated_naming_the_field(runtime):
    with pytest.raises(ValidationError, match="distillation_alpha"):
        make_strategy("sdpo", PROBLEM, {"distillation_alpha": 1.5}, runtime, seed=0)
    with pytest.raises(ValidationError, match="max_prompt_length"):
        make_strategy("best_of_k", PROBLEM, {"max_prompt_length": 5}, runtime, seed=0)


def test_a_prompt_longer_than_the_context_is_refused_naming_it(runtime):
    context = runtime.engine.loaded.model.config.max_position_embeddings
    fits = make_strategy("best_of_k", PROBLEM, {"max_completion_length": 8}, runtime, seed=0)
    room = context - len(fits.problem_ids)
    make_strategy("best_of_k", PROBLEM, {"max_completion_length": room}, runtime, seed=0)
    with pytest.raises(ValueError, match="prompt: .* exceed the model's context"):
        make_strategy("best_of_k", PROBLEM, {"max_completion_length": room + 1}, runtime, seed=0)
