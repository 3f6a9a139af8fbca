"""Model profiles: what differs from one model to the next, kept as data.

A profile says how to load a model (dtype), how to prompt it (system prompt, chat-template
keyword arguments such as Qwen3's `enable_thinking`), when an answer ends (extra stop token ids;
the model's own eos ids and its chat template's end-of-turn token are always stop tokens), and
the strategy defaults that suit it (lengths, learning rate, batch size, optimizer steps).

Every catalogue entry has a profile (`worker/catalogue.toml`). A model folder of the user's gets
`ModelProfile()`, the defaults below, which are meant for real instruct models, optionally
overridden by a `sdpo_profile.json` in that folder. Values in effect, from lowest to highest
precedence: the strategy's own field defaults, the profile, the operator's `SDPO_PARAMS`, the
request's `params`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdpo.params import PARAMS_BY_STRATEGY, SamplingParams, SDPOParams, StrategyName

DType = Literal["auto", "float32", "bfloat16", "float16"]
PROFILE_FILE = "sdpo_profile.json"  # optional, in a user's model folder


_PARAMS = SDPOParams.model_fields
SAMPLING_DEFAULTS = ("max_completion_length", "max_reprompt_len")  # every strategy that has them
SDPO_DEFAULTS = ("learning_rate", "num_generations", "num_iterations")


class ProfileError(ValueError):
    """A profile file that does not parse; the message names the file and the field."""


class ModelProfile(BaseModel):
    """How to load, prompt and stop one model, and the strategy defaults that suit it."""

    model_config = ConfigDict(extra="forbid")

    dtype: DType = Field(
        "auto", description="Weights dtype; auto is bfloat16 on CUDA and float32 on the CPU."
    )
    system_prompt: str | None = Field(
        None, description="System message before every prompt; null keeps the template's own."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments of the chat template, e.g. enable_thinking.",
    )
    stop_token_ids: list[int] = Field(
        default_factory=list,
        description="Stop tokens besides the model's eos ids and the end-of-turn token.",
    )
    # Strategy defaults: the parameters' own fields (sdpo/params.py), bounds and all.
    max_completion_length: int = _PARAMS["max_completion_length"]
    max_reprompt_len: int = _PARAMS["max_reprompt_len"]
    learning_rate: float = _PARAMS["learning_rate"]  # SDPO only
    num_generations: int = _PARAMS["num_generations"]  # SDPO only: the baselines keep theirs
    num_iterations: int = _PARAMS["num_iterations"]  # SDPO only

    def param_defaults(self, strategy: StrategyName) -> dict[str, Any]:
        """The profile's values for the fields that `strategy` has."""
        names = SAMPLING_DEFAULTS + (SDPO_DEFAULTS if strategy == "sdpo" else ())
        return only_fields(strategy, {name: getattr(self, name) for name in names})


def only_fields(strategy: StrategyName, values: dict[str, Any]) -> dict[str, Any]:
    """`values` restricted to the parameters `strategy` accepts."""
    fields = PARAMS_BY_STRATEGY[strategy].model_fields
    return {k: v for k, v in values.items() if k in fields}


def resolve_params(
    strategy: StrategyName,
    requested: dict[str, Any] | None,
    *,
    profile: ModelProfile,
    overrides: dict[str, Any] | None = None,
) -> SamplingParams:
    """The parameters in effect: profile, then the operator's overrides, then the request.

    Raises pydantic.ValidationError naming the field."""
    values = {
        **profile.param_defaults(strategy),
        **only_fields(strategy, overrides or {}),
        **(requested or {}),
    }
    return PARAMS_BY_STRATEGY[strategy].model_validate(values)


def folder_profile(folder: Path) -> ModelProfile:
    """The real-model defaults, updated by the folder's sdpo_profile.json if it has one."""
    path = folder / PROFILE_FILE
    if not path.is_file():
        return ModelProfile()
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ProfileError(f"{path}: must hold a JSON object")
        return ModelProfile.model_validate(values)
    except json.JSONDecodeError as error:
        raise ProfileError(f"{path}: line {error.lineno}: {error.msg}") from None
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(map(str, first["loc"])) or "profile"
        raise ProfileError(f"{path}: {field}: {first['msg']}") from None
