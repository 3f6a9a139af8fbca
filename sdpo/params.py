"""Strategy parameters: the one place each knob is named, bounded and documented.

Names follow trl's `SDPOConfig`, which users know. These models serve the REST
API, the CLI and the worker alike, so this module stays free of torch and FastAPI.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StrategyName = Literal["sdpo", "best_of_k", "multi_turn"]


class SamplingParams(BaseModel):
    """What every strategy samples with."""

    model_config = ConfigDict(extra="forbid")

    num_generations: int = Field(
        8, ge=1, le=256, description="Attempts per step (the paper uses 16 at test time)."
    )
    temperature: float = Field(1.0, gt=0, le=4.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1.0, description="Nucleus sampling mass (1 = off).")
    max_completion_length: int = Field(
        1024,
        ge=1,
        le=32768,
        description="Tokens per attempt (the model's profile sets its own default).",
    )


class BestOfKParams(SamplingParams):
    """Independent samples from the frozen model; stops at the first pass."""


class MultiTurnParams(SamplingParams):
    """One growing conversation: the problem plus all past feedback (oldest dropped first)."""

    max_prompt_length: int = Field(
        896, ge=16, le=131072, description="Prompt tokens; older feedback is dropped to fit."
    )


class SDPOParams(SamplingParams):
    """Test-time SDPO: distil the feedback-conditioned self-teacher into a per-problem LoRA.

    These defaults are for real instruct models; a model's profile may set its own (the
    bundled toy model's tuned values live in its catalogue entry). The paper's test-time
    defaults for large models are num_generations=16, learning_rate ~1e-6 (full fine-tuning),
    teacher_update_rate 0.01, distillation_topk 20 (see README, "Parameters").
    """

    num_generations: int = Field(
        8, ge=1, le=256, description="Attempts per step (the paper uses 16 at test time)."
    )
    max_reprompt_len: int = Field(
        4096,
        ge=16,
        le=131072,
        description="Tokens of the teacher's prompt (problem + feedback): longer feedback is "
        "cut to fit, and to the model's context.",
    )

    distillation_alpha: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="0 = KL(teacher||student), 1 = KL(student||teacher), else generalized JSD.",
    )
    distillation_topk: int | None = Field(
        20, ge=1, description="Distil the student's top-k tokens (+ tail bucket); null = all."
    )
    distillation_add_tail: bool = Field(
        True, description="Add the tail bucket log(1 - sum p); false renormalises the top-k."
    )
    distillation_is_clip: float | None = Field(
        2.0, gt=0, description="Clip of the importance ratio when the sampler lags the trainer."
    )
    teacher_model_kind: Literal["ema", "live", "base"] = Field(
        "ema", description="Teacher weights: EMA of the student adapter, the live student, or base."
    )
    teacher_update_rate: float = Field(
        0.01, ge=0.0, le=1.0, description="EMA rate of the teacher adapter per optimizer step."
    )
    learning_rate: float = Field(
        1e-4, gt=0, le=1.0, description="AdamW learning rate of the LoRA weights."
    )
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clip per optimizer step.")
    num_iterations: int = Field(
        1, ge=1, le=64, description="Optimizer steps on each batch of failed attempts."
    )
    lora_rank: int = Field(16, ge=1, le=512, description="Rank of the per-problem LoRA adapter.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling numerator.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get LoRA weights."
    )


PARAMS_BY_STRATEGY: dict[str, type[SamplingParams]] = {
    "sdpo": SDPOParams,
    "best_of_k": BestOfKParams,
    "multi_turn": MultiTurnParams,
}


def parse_params(strategy: StrategyName, params: dict | None) -> SamplingParams:
    """Validate a strategy's params (raises pydantic.ValidationError naming the field)."""
    return PARAMS_BY_STRATEGY[strategy].model_validate(params or {})
