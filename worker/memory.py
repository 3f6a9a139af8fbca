"""What a session costs in memory, and the worker's admission by it.

Many sessions share one base model, but each brings its own state: the student LoRA, the EMA
teacher (a second copy), AdamW's two moments and the gradients (three more), and the
activations of its largest step. The largest step is the SDPO update's student pass, which
keeps every decoder layer's activations for at most SDPO_UPDATE_TOKENS_PER_PASS tokens, or
the generation's KV cache (num_generations rows of prompt plus answer), whichever is larger.
Best-of-k and multi-turn sessions hold only the cache.

Activations per token are estimated as (20 H + 8 I) values per layer (H the hidden size, I the
MLP width), in the model's dtype: calibrated on bench/update_memory.py, where SmolLM2-135M
(H 576, I 1536, 30 layers, float32) grew by 2.89 GB for 1024 tokens per pass, 2.8 MB a token;
the formula gives 2.86 MB. It is an estimate for admission, not an allocator.

The worker's budget is SDPO_WORKER_MEMORY_GB, else 80% of the memory available on its device
once the model is loaded. It reads a new job only while one more session of the profile's
default size fits beside the sessions it runs (`MemoryBudget.fits`); a session asking for
more (more attempts per step, longer answers) reserves what it asks once started, so the
worker overcommits by at most that one session and admits nobody new until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from sdpo.params import SamplingParams, SDPOParams

ACTIVATIONS_PER_LAYER = (20, 8)  # values per token per layer: x hidden size, x MLP width
BUDGET_FRACTION = 0.8  # of the memory available after loading the model
TYPICAL_PROMPT_TOKENS = 256  # the prompt admission assumes before it sees the session's own
LORA_BYTES_PER_VALUE = 4  # peft keeps adapter weights in float32, whatever the base's dtype


@dataclass(frozen=True)
class Footprint:
    """Bytes one session holds beyond the shared base model."""

    adapter: int = 0  # student LoRA weights
    teacher: int = 0  # the EMA teacher's copy
    optimizer: int = 0  # AdamW moments and gradients
    activations: int = 0  # its largest step's

    @property
    def total(self) -> int:
        return self.adapter + self.teacher + self.optimizer + self.activations


def activation_bytes_per_token(model: PreTrainedModel) -> int:
    config = model.config
    width = getattr(config, "intermediate_size", 4 * config.hidden_size)
    per_layer = ACTIVATIONS_PER_LAYER[0] * config.hidden_size + ACTIVATIONS_PER_LAYER[1] * width
    return per_layer * config.num_hidden_layers * model.dtype.itemsize


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def lora_bytes(model: PreTrainedModel, params: SDPOParams) -> int:
    """The student LoRA's size: rank x (in + out) values for every linear layer it adapts (by
    the last part of the layer's name, as peft matches target modules; all-linear: all but the
    output layer)."""
    targets = params.lora_target_modules
    values = 0
    for name, module in model.named_modules():
        name = name.removesuffix(".base_layer")  # the base may already hold sessions' adapters
        if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head") or ".lora_" in name:
            continue
        if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets:
            values += params.lora_rank * (module.in_features + module.out_features)
    return values * LORA_BYTES_PER_VALUE


def params_footprint(
    model: PreTrainedModel, params: SamplingParams, prompt_tokens: int, tokens_per_pass: int
) -> Footprint:
    """The footprint of a session with these (resolved) parameters and prompt: it samples
    num_generations answers of up to prompt + max_completion_length positions; an SDPO session
    also trains, in passes of at most `tokens_per_pass` tokens."""
    rows, positions = params.num_generations, prompt_tokens + params.max_completion_length
    cache = rows * positions * kv_bytes_per_token(model)
    if not isinstance(params, SDPOParams):
        return Footprint(activations=cache)
    adapter = lora_bytes(model, params)
    update = min(tokens_per_pass, rows * positions) * activation_bytes_per_token(model)
    return Footprint(
        adapter=adapter,
        teacher=adapter if params.teacher_model_kind == "ema" else 0,
        optimizer=3 * adapter,
        activations=max(cache, update),
    )


def available_bytes(device: torch.device) -> int:
    """Memory the device has free now: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class MemoryBudget:
    """The bytes a worker may give its sessions, and those its running sessions reserved."""

    def __init__(self, budget: int, typical: Footprint) -> None:
        self.budget = budget
        self.typical = typical  # a session with the profile's defaults: what admission assumes
        self.reserved = 0
        self.changed = asyncio.Event()  # set when a reservation shrinks or ends

    async def wait_for_change(self, timeout_s: float) -> None:
        """Until a reservation is resized or released (or `timeout_s` passes)."""
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    @classmethod
    def for_device(
        cls, device: torch.device, budget_gb: float | None, typical: Footprint
    ) -> MemoryBudget:
        budget = budget_gb * 1e9 if budget_gb else BUDGET_FRACTION * available_bytes(device)
        return cls(int(budget), typical)

    def fits(self) -> bool:
        """One more typical session fits beside the reserved ones."""
        return self.reserved + self.typical.total <= self.budget

    def sessions_that_fit(self) -> int:
        """How many more typical sessions fit now."""
        return max(0, (self.budget - self.reserved) // max(self.typical.total, 1))

    def reserve(self, footprint: Footprint) -> Reservation:
        self.reserved += footprint.total
        return Reservation(self, footprint.total)


@dataclass
class Reservation:
    """One session's share of a budget: resized once its parameters are known, released when
    it ends (twice is harmless)."""

    budget: MemoryBudget
    bytes: int

    def resize(self, footprint: Footprint) -> None:
        self.budget.reserved += footprint.total - self.bytes
        self.bytes = footprint.total
        self.budget.changed.set()

    def release(self) -> None:
        self.budget.reserved -= self.bytes
        self.bytes = 0
        self.budget.changed.set()
