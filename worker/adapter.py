"""A session's LoRA adapter on the shared base model, and its teacher (EMA, live or base).

Many sessions share one base model. Their adapters live side by side as named adapters of one
peft model over that base (`AdapterHost`): peft's own mechanism for several adapters, so a
session's student, teacher and optimizer are its own tensors, and no session's weights are
ever written by another. peft computes with one active adapter at a time, so a session's
`model` property activates its own before use; sessions take turns on the model (the worker's
compute lock, `strategies.base.Runtime.compute`), never computing at once. Best-of-k and
multi-turn sample from the bare base (the engine's generation twin, or `disable_adapter`).

Why peft's named adapters for training, scoring and checkpoints: they keep the adapter in the
format peft and vLLM read (vLLM serves it as a LoRARequest), and a lone session trains exactly
as it always has. Where sessions share forward passes, each session's factors
(`lora_factors`, `student_factors`, `teacher_factors`) are applied per row by hooks
(worker/row_adapters.py): on a plain copy of the base for sampling (the hf engine), and on the
peft model with its adapters switched off for a joint update (worker/joint_update.py), so
the peft model is never asked to mix adapters in one batch.

The adapter is fresh for every session and removed again with `close()`; when the last one
goes, the peft wrapping is removed too, which leaves the base model exactly as it was. The EMA
teacher is a second adapter whose weights follow the student's: teacher ← (1 - rate) ·
teacher + rate · student. Checkpoints name the weights `student` and `teacher`, whatever the
adapters' names on the host, so a session resumes on any worker.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from sdpo.params import SDPOParams

STUDENT = "student"  # the names checkpoints use
TEACHER = "teacher"
PEFT_PREFIX = "base_model.model."  # peft's module names: this, then the base model's own

# A LoRA's factors per adapted layer, by the layer's name in the base model: (A, B, scaling)
Factors = dict[str, tuple[torch.Tensor, torch.Tensor, float]]


class AdapterHost:
    """The peft model over one base model that holds every live session's adapters."""

    def __init__(self, base: PreTrainedModel) -> None:
        self.base = base
        self.peft: PeftModel | None = None
        self._numbers = itertools.count()

    def add(self, config: LoraConfig, *, seed: int) -> str:
        """A new adapter, initialised from `seed` alone; returns its name."""
        name = f"s{next(self._numbers)}"
        with torch.random.fork_rng(devices=[]):  # LoRA init is random: make it the seed's
            torch.manual_seed(seed)
            if self.peft is None:
                self.peft = get_peft_model(self.base, config, adapter_name=name)
                self.peft.eval()  # no dropout anywhere; gradients still flow to the LoRA weights
            else:
                self.peft.add_adapter(name, config)
        return name

    def activate(self, name: str) -> PeftModel:
        assert self.peft is not None
        if self.peft.active_adapter != name:
            self.peft.set_adapter(name)
        return self.peft

    def remove(self, names: list[str]) -> None:
        """Delete adapters; with the last one, unwrap the base model."""
        assert self.peft is not None
        remaining = [n for n in self.peft.peft_config if n not in names]
        if not remaining:
            self.peft.unload()
            self.peft = None
            return
        self.activate(remaining[0])  # peft warns when the active adapter is deleted
        for name in names:
            self.peft.delete_adapter(name)

    @property
    def adapters(self) -> int:
        return len(self.peft.peft_config) if self.peft is not None else 0


_hosts: weakref.WeakKeyDictionary[PreTrainedModel, AdapterHost] = weakref.WeakKeyDictionary()


def host_of(base: PreTrainedModel) -> AdapterHost:
    """The one adapter host of a base model."""
    if base not in _hosts:
        _hosts[base] = AdapterHost(base)
    return _hosts[base]


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
        self.host = host_of(base)
        self.student = self.host.add(config, seed=seed)
        self.teacher_kind = params.teacher_model_kind
        self.teacher_name: str | None = None
        self._in_teacher = False
        if self.teacher_kind == "ema":
            self.teacher_name = self.host.add(config, seed=seed)
            with torch.no_grad():
                for t, s in zip(self._teacher_params(), self.student_params(), strict=True):
                    t.copy_(s)
        self.host.activate(self.student)

    @property
    def model(self) -> PeftModel:
        """The shared peft model, computing with this session's student (inside `teacher()`,
        with its teacher)."""
        if self._in_teacher and self.teacher_name is not None:
            return self.host.activate(self.teacher_name)
        return self.host.activate(self.student)

    def _named(self, adapter: str | None) -> list[tuple[str, torch.nn.Parameter]]:
        if adapter is None or self.host.peft is None:
            return []
        marker = f".{adapter}."
        named = self.host.peft.named_parameters()
        return [(n, p) for n, p in named if "lora_" in n and marker in n]

    def student_params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named(self.student)]

    def _teacher_params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named(self.teacher_name)]

    @contextmanager
    def teacher(self) -> Iterator[None]:
        """Within the block, the model computes with the teacher's weights."""
        if self.teacher_kind == "base":
            with self.model.disable_adapter():
                yield
        elif self.teacher_kind == "ema":
            self._in_teacher = True
            try:
                yield
            finally:
                self._in_teacher = False
                self.host.activate(self.student)
        else:  # live: the student itself, without gradients (the caller uses no_grad)
            yield

    @torch.no_grad()
    def update_teacher(self, rate: float) -> None:
        if self.teacher_kind != "ema":
            return
        for t, s in zip(self._teacher_params(), self.student_params(), strict=True):
            t.lerp_(s, rate)

    @torch.no_grad()
    def lora_factors(self) -> Factors:
        """(A, B, scaling) of every layer the student adapts, by the layer's name in the base
        model: the layer computes W x + scaling * B A x. A (r, in) and B (out, r), in float32,
        detached (for sampling)."""
        return {n: (a.float(), b.float(), s) for n, (a, b, s) in self.student_factors().items()}

    def student_factors(self) -> Factors:
        """The student's (A, B, scaling) per adapted layer: its live parameters, which a
        forward pass through them trains (worker/joint_update.py)."""
        return self._factors(self.student)

    def teacher_factors(self) -> Factors | None:
        """The teacher's (A, B, scaling): the EMA adapter's, the student's own for a live
        teacher, None for the bare base model."""
        if self.teacher_kind == "base":
            return None
        return self._factors(self.teacher_name or self.student)

    def _factors(self, adapter: str) -> Factors:
        if self.host.peft is None or adapter not in self.host.peft.peft_config:
            raise ValueError(f"adapter {adapter} was closed")
        factors = {}
        for name, module in self.host.peft.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                factors[name.removeprefix(PEFT_PREFIX)] = (a, b, module.scaling[adapter])
        return factors

    @torch.no_grad()
    def merged_weights(self) -> dict[str, torch.Tensor]:
        """W + scaling * B @ A for every layer the student adapts, by the layer's name in the
        base model: new tensors (the base's own weights are never written), in their dtype."""
        modules = dict(self.host.base.named_modules())
        merged = {}
        for name, (a, b, scaling) in self.lora_factors().items():
            base = modules[name].get_base_layer().weight
            merged[name] = (base.float() + (b @ a) * scaling).to(base.dtype)
        return merged

    def _by_checkpoint_name(self) -> dict[str, torch.nn.Parameter]:
        """The session's LoRA weights under names that do not depend on this host."""
        return {
            n.replace(f".{adapter}.", f".{stored}."): p
            for adapter, stored in ((self.student, STUDENT), (self.teacher_name, TEACHER))
            for n, p in self._named(adapter)
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self._by_checkpoint_name().items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = self._by_checkpoint_name()
        if set(state) != set(params):
            raise ValueError("adapter checkpoint does not match this session's LoRA layout")
        for name, value in state.items():
            params[name].copy_(value)

    def close(self) -> PreTrainedModel:
        """Remove this session's adapters (with the last session's, every LoRA layer); returns
        the base model, whose weights were never written."""
        self.host.remove([n for n in (self.student, self.teacher_name) if n is not None])
        return self.host.base
