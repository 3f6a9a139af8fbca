"""API schemas: validation errors name the field, limits hold, comparisons expand."""

import pytest
from pydantic import ValidationError

from sdpo.schemas import MAX_TESTS, BestOfKCreate, CompareCreate, ProblemCreate

VERIFIER = {"type": "io_tests", "tests": [{"input": "1", "output": "2"}]}


def _locs(error: ValidationError) -> list[tuple]:
    return [e["loc"] for e in error.errors()]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"prompt": ""}, ("prompt",)),
        ({"budget": {"max_attempts": 0}}, ("budget", "max_attempts")),
        ({"budget": {"max_wall_s": -1}}, ("budget", "max_wall_s")),
        ({"strategy": "greedy"}, ("strategy",)),
        ({"params": {"learning_rate": 0}}, ("params", "learning_rate")),
        ({"strategy": "best_of_k", "params": {"learning_rate": 1e-3}}, ("params", "learning_rate")),
        ({"verifier": {"type": "io_tests", "tests": []}}, ("verifier", "io_tests", "tests")),
        ({"verifier": {"type": "nope"}}, ("verifier",)),
        ({"verifier": {**VERIFIER, "tests": [{"output": "x" * 200_000}]}},
         ("verifier", "tests", 0)),
        ({"verifier": {**VERIFIER, "tests": [{"output": "1"}] * (MAX_TESTS + 1)}},
         ("verifier", "tests")),
        ({"model": "../etc"}, ("model",)),
        ({"surprise": 1}, ("surprise",)),
    ],
)  # fmt: skip
def test_errors_name_the_field(body, loc):
    with pytest.raises(ValidationError) as error:
        ProblemCreate.model_validate({"prompt": "p", "verifier": VERIFIER, **body})
    assert loc in _locs(error.value)


def test_defaults_are_filled_in_and_params_keep_only_what_was_asked():
    """The worker fills in the rest from its model's profile (worker/profiles.py)."""
    problem = ProblemCreate(prompt="p", verifier=VERIFIER)
    assert problem.strategy == "sdpo" and problem.budget.max_attempts == 64
    assert problem.params == {}
    asked = ProblemCreate(prompt="p", verifier=VERIFIER, params={"learning_rate": 0.5})
    assert asked.params == {"learning_rate": 0.5}
    with pytest.raises(ValidationError) as error:
        BestOfKCreate(prompt="p", verifier=VERIFIER, params={"teacher_model_kind": "ema"})
    assert ("params", "teacher_model_kind") in _locs(error.value)


def test_the_reference_teacher_control_is_not_a_public_parameter():
    with pytest.raises(ValidationError) as error:
        ProblemCreate(prompt="p", verifier=VERIFIER, params={"teacher_context": "reference"})
    assert ("params", "teacher_context") in _locs(error.value)


def test_compare_expands_into_one_problem_per_strategy_and_seed():
    body = CompareCreate(
        prompt="p", verifier=VERIFIER, seed=7, repeats=2, params={"sdpo": {"learning_rate": 0.5}}
    )
    problems = body.problems()
    assert [(p.strategy, p.seed) for p in problems] == [
        ("sdpo", 7), ("sdpo", 8), ("best_of_k", 7), ("best_of_k", 8)
    ]  # fmt: skip
    assert problems[0].params["learning_rate"] == 0.5
    with pytest.raises(ValidationError) as error:
        CompareCreate(prompt="p", verifier=VERIFIER, strategies=["sdpo", "sdpo"])
    assert ("strategies",) in _locs(error.value)
    with pytest.raises(ValidationError) as error:
        CompareCreate(prompt="p", verifier=VERIFIER, params={"best_of_k": {"lora_rank": 4}})
    assert ("params", "best_of_k", "lora_rank") in _locs(error.value)


def test_compare_seeds_past_the_largest_seed_are_refused_naming_repeats():
    """Found by the API fuzzer: seed 2**31 - 1 with repeats 6 was a 500."""
    with pytest.raises(ValidationError) as error:
        CompareCreate(prompt="p", verifier=VERIFIER, seed=2**31 - 1, repeats=6)
    assert ("repeats",) in _locs(error.value)
    assert len(CompareCreate(prompt="p", verifier=VERIFIER, seed=2**31 - 6, repeats=6).problems())
