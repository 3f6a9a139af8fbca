"""A session's LoRA adapter on the shared base model, and its teacher (EMA, live or base).

The adapter is fresh for every session (peft wraps the base model in place) and removed again
with `close()`, which leaves the base model exactly as it was. The EMA teacher is a second peft
adapter whose weights follow the student's: teacher ← (1 - rate) · teacher + rate · student.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from sdpo.params import SDPOParams

STUDENT = "student"
PEFT_PREFIX = "base_model.model."  # peft's module names: this, then the base model's own
TEACHER = "teacher"


class SessionAdapter:
    """The student LoRA (trained), plus the teacher's view of the same model."""

    def __init__(self, base: PreTrainedModel, params: SDPOParams, *, seed: int) -> None:
        config = LoraConfig(
            r=params.lora_rank,
            lora_alpha=params.lora_alpha,
            target_modules=params.lora_target_modules,
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]):  # LoRA init is random: make it the seed's
            torch.manual_seed(seed)
            self.model: PeftModel = get_peft_model(base, config, adapter_name=STUDENT)
        self.teacher_kind = params.teacher_model_kind
        if self.teacher_kind == "ema":
            self.model.add_adapter(TEACHER, config)
            with torch.no_grad():
                for t, s in zip(self._teacher_params(), self.student_params(), strict=True):
                    t.copy_(s)
        self.model.set_adapter(STUDENT)
        self.model.eval()  # no dropout anywhere; gradients still flow to the LoRA weights

    def _named(self, adapter: str) -> list[tuple[str, torch.nn.Parameter]]:
        marker = f".{adapter}."
        return [(n, p) for n, p in self.model.named_parameters() if "lora_" in n and marker in n]

    def student_params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named(STUDENT)]

    def _teacher_params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named(TEACHER)]

    @contextmanager
    def teacher(self) -> Iterator[None]:
        """Within the block, the model computes with the teacher's weights."""
        if self.teacher_kind == "base":
            with self.model.disable_adapter():
                yield
        elif self.teacher_kind == "ema":
            self.model.set_adapter(TEACHER)
            try:
                yield
            finally:
                self.model.set_adapter(STUDENT)
        else:  # live: the student itself, without gradients (the caller uses no_grad)
            yield

    @torch.no_grad()
    def update_teacher(self, rate: float) -> None:
        if self.teacher_kind != "ema":
            return
        for t, s in zip(self._teacher_params(), self.student_params(), strict=True):
            t.lerp_(s, rate)

    @torch.no_grad()
    def merged_weights(self) -> dict[str, torch.Tensor]:
        """W + scaling * B @ A for every layer the student adapts, by the layer's name in the
        base model: new tensors (the base's own weights are never written), in their dtype."""
        merged = {}
        for name, module in self.model.named_modules():
            if not isinstance(module, LoraLayer) or STUDENT not in module.lora_A:
                continue
            base = module.get_base_layer().weight
            a, b = module.lora_A[STUDENT].weight, module.lora_B[STUDENT].weight  # (r, in), (out, r)
            delta = (b.float() @ a.float()) * module.scaling[STUDENT]  # (out, in)
            merged[name.removeprefix(PEFT_PREFIX)] = (base.float() + delta).to(base.dtype)
        return merged

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = self._named(STUDENT) + (self._named(TEACHER) if self.teacher_kind == "ema" else [])
        return {n: p.detach().clone() for n, p in names}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self._named(STUDENT) + self._named(TEACHER))
        if set(state) != set(params):
            raise ValueError("adapter checkpoint does not match this session's LoRA layout")
        for name, value in state.items():
            params[name].copy_(value)

    def close(self) -> PreTrainedModel:
        """Remove every LoRA layer; returns the untouched base model."""
        return self.model.unload()
