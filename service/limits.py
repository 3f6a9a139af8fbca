"""The server's own limits on what one session may use, beyond the schema's: wall time,
attempts per step and tokens per attempt (settings *_limit). A request over one is a 422 that
names the field and the limit; a session without a wall budget gets the server's."""

from __future__ import annotations

from sdpo.schemas import CompareCreate, ProblemCreate
from sdpo.settings import Settings

from .errors import FieldInvalid


def _param_limits(settings: Settings) -> dict[str, int]:
    return {
        "num_generations": settings.num_generations_limit,
        "max_completion_length": settings.max_completion_length_limit,
    }


def _check_wall(max_wall_s: float | None, settings: Settings) -> None:
    limit = settings.max_wall_s_limit
    if max_wall_s is not None and max_wall_s > limit:
        raise FieldInvalid("budget.max_wall_s", f"at most {limit:g} s on this server")


def _check_params(params: dict, settings: Settings, prefix: str) -> None:
    for name, limit in _param_limits(settings).items():
        value = params.get(name)
        if value is not None and value > limit:
            raise FieldInvalid(f"{prefix}{name}", f"at most {limit} on this server, got {value}")


def _with_wall(problem: ProblemCreate, settings: Settings) -> ProblemCreate:
    if problem.budget.max_wall_s is not None:
        return problem
    budget = problem.budget.model_copy(update={"max_wall_s": settings.max_wall_s_limit})
    return problem.model_copy(update={"budget": budget})


def limit_problem(problem: ProblemCreate, settings: Settings) -> ProblemCreate:
    """The problem within the server's limits (raises FieldInvalid)."""
    _check_wall(problem.budget.max_wall_s, settings)
    _check_params(problem.params, settings, "params.")
    return _with_wall(problem, settings)


def limit_compare(compare: CompareCreate, settings: Settings) -> CompareCreate:
    """The comparison within the server's limits (raises FieldInvalid)."""
    _check_wall(compare.budget.max_wall_s, settings)
    for problem in compare.problems():
        _check_params(problem.params, settings, f"params.{problem.strategy}.")
    if compare.budget.max_wall_s is not None:
        return compare
    budget = compare.budget.model_copy(update={"max_wall_s": settings.max_wall_s_limit})
    return compare.model_copy(update={"budget": budget})
