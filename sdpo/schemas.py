"""The REST API's schemas: what users send and read, and what workers store.

Free of FastAPI and torch: the gateway validates with these models, and the worker writes the
attempt and step records in the same shapes, so the gateway serves them as they are stored.
Errors name the field: `verifier.tests[3].output`, `params.learning_rate`, `budget.max_attempts`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from sandbox.spec import VerifierSpec
from sdpo.params import StrategyName, parse_params

# -- limits (422 beyond them; the body as a whole is capped by settings.max_body_bytes: 413) --
MAX_PROMPT_CHARS = 50_000
MAX_TESTS = 500
MAX_TEST_CHARS = 100_000  # one test's input + expected output, as JSON
MAX_ATTEMPTS = 10_000
MAX_WALL_S = 24 * 3600.0
MAX_REPEATS = 8
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Status = Literal["queued", "running", "solved", "exhausted", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"solved", "exhausted", "failed", "cancelled"})
EventType = Literal["status", "step", "end"]

MAX_SEED = 2**31 - 1


def _field_error(loc: tuple[str | int, ...], message: str) -> ValidationError:
    """A validation error located below the field being validated (pydantic nests it)."""
    error = PydanticCustomError("limit", message)
    return ValidationError.from_exception_data("limit", [InitErrorDetails(type=error, loc=loc)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Strict):
    """When a session stops without a pass. Checked by the worker between phases."""

    max_attempts: int = Field(64, ge=1, le=MAX_ATTEMPTS, description="Attempts at most.")
    max_wall_s: float | None = Field(
        None, gt=0, le=MAX_WALL_S, description="Seconds from the session's start, at most."
    )


class _ProblemBase(_Strict):
    prompt: str = Field(
        ..., min_length=1, max_length=MAX_PROMPT_CHARS, description="The problem text."
    )
    verifier: VerifierSpec = Field(..., description="How attempts are judged.")
    budget: Budget = Field(default_factory=Budget, description="When to give up.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the session's sampling.")
    model: str = Field(
        "default", pattern=MODEL_NAME_PATTERN, description="Model name, as the server lists it."
    )

    @field_validator("verifier")
    @classmethod
    def _tests_fit(cls, spec: Any) -> Any:
        tests = getattr(spec, "tests", [])
        if len(tests) > MAX_TESTS:
            raise _field_error(("tests",), f"at most {MAX_TESTS} tests, got {len(tests)}")
        for i, test in enumerate(tests):
            size = len(json.dumps(test.model_dump(mode="json")))
            if size > MAX_TEST_CHARS:
                raise _field_error(("tests", i), f"at most {MAX_TEST_CHARS} characters, got {size}")
        return spec


class ProblemCreate(_ProblemBase):
    """A problem to solve with one strategy."""

    strategy: StrategyName = Field("sdpo", description="sdpo, best_of_k or multi_turn.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        validate_default=True,
        description="The strategy's parameters; omitted ones take the model profile's defaults.",
    )
    # problem-set metadata (sdpo/problem_set.py), accepted so that a line of a problem-set file
    # can be POSTed as it is; the session does not keep it
    id: str | None = Field(
        None, max_length=200, description="The problem's id in its problem set (not the session's)."
    )
    reference_solution: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="A known-good program (the raw answer, for an answer-mode checker) that "
        "`sdpo problems check` judges; never shown to the model.",
    )
    source: str | None = Field(None, max_length=200, description="Where the problem comes from.")
    tags: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=32, description="Free-form labels."
    )

    @field_validator("params")
    @classmethod
    def _params_fit_strategy(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        strategy = info.data.get("strategy")
        if strategy is None:  # the strategy itself is invalid; that error is reported instead
            return params
        # only what was asked for: the worker fills in its model's profile (worker/profiles.py)
        return parse_params(strategy, params).model_dump(mode="json", exclude_unset=True)


class BestOfKCreate(_ProblemBase):
    """A problem for the best-of-k baseline alone: independent samples from the frozen model."""

    params: dict[str, Any] = Field(
        default_factory=dict, validate_default=True, description="Sampling parameters."
    )

    @field_validator("params")
    @classmethod
    def _sampling_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return parse_params("best_of_k", params).model_dump(mode="json", exclude_unset=True)

    def as_problem(self) -> ProblemCreate:
        return ProblemCreate(**self.model_dump(), strategy="best_of_k")


class CompareCreate(_ProblemBase):
    """One problem, several strategies, the same budget and seeds."""

    strategies: list[StrategyName] = Field(
        default_factory=lambda: ["sdpo", "best_of_k"],
        min_length=1,
        max_length=3,
        description="Strategies to run side by side.",
    )
    params: dict[StrategyName, dict[str, Any]] = Field(
        default_factory=dict, description='Per-strategy parameters: {"sdpo": {...}}.'
    )
    repeats: int = Field(
        1, ge=1, le=MAX_REPEATS, description="Runs per strategy, with seeds seed, seed+1, ..."
    )

    @field_validator("repeats")
    @classmethod
    def _seeds_fit(cls, repeats: int, info: ValidationInfo) -> int:
        seed = info.data.get("seed")
        if seed is not None and seed + repeats - 1 > MAX_SEED:
            raise ValueError(
                f"the runs use seeds seed..seed+repeats-1, and seed {seed} + {repeats - 1} "
                f"exceeds the largest seed {MAX_SEED}"
            )
        return repeats

    @field_validator("strategies")
    @classmethod
    def _unique(cls, strategies: list[str]) -> list[str]:
        if len(set(strategies)) != len(strategies):
            raise ValueError("each strategy at most once")
        return strategies

    @field_validator("params")
    @classmethod
    def _params_fit(cls, params: dict[str, Any]) -> dict[str, Any]:
        parsed, errors = {}, []
        for name, values in params.items():
            try:
                parsed[name] = parse_params(name, values).model_dump(
                    mode="json", exclude_unset=True
                )
            except ValidationError as error:  # name the strategy in the error's location
                errors += [{**e, "loc": (name, *e["loc"])} for e in error.errors()]
        if errors:
            raise ValidationError.from_exception_data("params", errors)
        return parsed

    def problems(self) -> list[ProblemCreate]:
        base = self.model_dump(include={"prompt", "verifier", "budget", "model"})
        return [
            ProblemCreate(
                **base, strategy=name, params=self.params.get(name, {}), seed=self.seed + r
            )
            for name in self.strategies
            for r in range(self.repeats)
        ]


# -- what the worker stores and the gateway serves ---------------------------------------------


class TestPublic(BaseModel):
    __test__ = False  # not a pytest class

    index: int
    verdict: str
    time_s: float


class AttemptPublic(BaseModel):
    """One attempt: its text, the code extracted from it, and the sandbox's verdict."""

    index: int = Field(..., description="1-based, in the order attempts were sampled.")
    step: int
    text: str
    code: str | None = Field(None, description="The code the sandbox ran; None if none found.")
    passed: bool
    verdict: str
    feedback: str = Field("", description="What the self-teacher saw (failing tests only).")
    tests: list[TestPublic] = Field(default_factory=list)
    tokens: int = 0
    elided: bool = Field(
        False,
        description="The text and code were not kept: the session's attempt records reached "
        "the server's attempt_log_bytes. The verdict and feedback were.",
    )


class StepPublic(BaseModel):
    """One step of the loop: a batch of attempts, its verdicts and the update it caused."""

    step: int
    attempts: int = Field(..., description="Attempts sampled in this step.")
    attempts_used: int = Field(..., description="Attempts used up to and including this step.")
    pass_count: int
    phase_s: dict[str, float] = Field(
        default_factory=dict, description="Seconds per phase: generate, judge, teacher, ..."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Update metrics: loss, mean_divergence, grad_norm."
    )
    elapsed_s: float = Field(
        ..., description="Seconds from the session's start to this step's end."
    )
    resumed_without_checkpoint: bool = Field(
        False,
        description="This step follows a resume that found no checkpoint (no shared checkpoint "
        "folder): the adapter and optimizer started afresh while the counters carried on.",
    )


class Solution(BaseModel):
    attempt: int
    text: str
    code: str | None = None


class ProblemPublic(BaseModel):
    """A session as its owner sees it."""

    id: str
    status: Status
    strategy: StrategyName
    model: str
    seed: int
    budget: Budget
    params: dict[str, Any] = Field(
        description="The parameters in effect once a worker has started the session (its "
        "model's profile filled in); before that, the ones requested."
    )
    attempts_used: int
    first_success_attempt: int | None = None
    first_success_s: float | None = Field(
        None, description="Seconds from the session's start to the first passing attempt."
    )
    solution: Solution | None = None
    steps: list[StepPublic] = Field(default_factory=list)
    error: str | None = None
    cancel_requested: bool = False
    compare_id: str | None = None
    resumed: int = Field(
        0, description="Times the session moved to another worker (handed back, or reclaimed)."
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProblemSummary(BaseModel):
    id: str
    status: Status
    strategy: StrategyName
    attempts_used: int
    max_attempts: int = Field(..., description="The session's attempt budget.")
    first_success_attempt: int | None = None
    compare_id: str | None = Field(None, description="The comparison this run belongs to.")
    created_at: datetime
    finished_at: datetime | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class CompareRun(BaseModel):
    session_id: str
    seed: int
    status: Status
    solved: bool
    attempts_used: int
    first_success_attempt: int | None = None
    first_success_s: float | None = None


class DiscoveryPoint(BaseModel):
    k: int = Field(..., description="Attempts.")
    rate: float = Field(..., description="Fraction of runs whose first pass came by attempt k.")


class StrategyResult(BaseModel):
    strategy: StrategyName
    runs: list[CompareRun]
    solved_rate: float
    mean_attempts_to_success: float | None = None
    mean_seconds_to_success: float | None = None
    discovery: list[DiscoveryPoint] = Field(
        default_factory=list, description="discovery@k wherever it changes, and at the budget."
    )


class ComparePublic(BaseModel):
    id: str
    status: Literal["queued", "running", "done"]
    budget: Budget
    seed: int
    repeats: int
    created_at: datetime
    strategies: list[StrategyResult]


class FieldError(BaseModel):
    field: str = Field(
        ..., description="Dotted path of the offending field, e.g. budget.max_attempts."
    )
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(..., description="Machine-readable code, e.g. validation_error.")
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    redis: bool
    workers: int = Field(..., description="Workers that sent a heartbeat recently.")
    sessions_running: int = Field(0, description="Sessions those workers are running now.")
    free_slots: int = Field(
        0,
        description="Sessions those workers could start now: SDPO_WORKER_MAX_SESSIONS each, "
        "fewer where a worker's memory admits fewer.",
    )
    memory_reserved_bytes: int = Field(
        0, description="Memory those workers' sessions reserved (adapters, optimizers, steps)."
    )
    memory_budget_bytes: int = Field(
        0, description="Memory those workers may give sessions (SDPO_WORKER_MEMORY_GB each)."
    )
