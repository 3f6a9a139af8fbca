"""Generation engines behind one interface: `hf` (transformers, CPU or GPU) here, `vllm` in
vllm_engine.py.

An engine samples attempts from the base model or from a session's current adapter. After an
update the strategy calls `sync_adapter` so that the next batch comes from the new weights, and
`release_adapter` when the session ends: both no-ops for `hf`, which generates from the live
peft model itself.
"""

from __future__ import annotations

from typing import Protocol

import torch

from .adapter import SessionAdapter
from .generation import Sample, SamplingConfig, sample
from .model import LoadedModel


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (missing package or device, model too large)."""


class Engine(Protocol):
    name: str
    loaded: LoadedModel

    def generate(
        self,
        prompt_ids: list[int],
        n: int,
        config: SamplingConfig,
        *,
        generator: torch.Generator,
        adapter: SessionAdapter | None = None,
    ) -> list[Sample]: ...

    def sync_adapter(self, adapter: SessionAdapter) -> None: ...

    def release_adapter(self, adapter: SessionAdapter) -> None: ...


class MergedView:
    """The base model computing with a session's merged weights W + s * B @ A, passed to
    `torch.func.functional_call` per forward, with the LoRA branch switched off.

    peft runs two extra matmuls and Python dispatch in every adapted layer at every decoded
    token (+23-31% per decode step at batch 1-8 for SmolLM2 on the CPU); merged weights cost
    one (out x r) @ (r x in) product per layer per batch instead. Nothing of the base model
    is written: the merged tensors are new, and freed after the batch."""

    def __init__(self, adapter: SessionAdapter) -> None:
        self.model = adapter.model
        self.weights = adapter.merged_weights()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def config(self):
        return self.model.config

    def __call__(self, **inputs):
        return torch.func.functional_call(self.model, self.weights, args=(), kwargs=inputs)


def merged_fits(adapter: SessionAdapter) -> bool:
    """A merged copy is worth its memory: on the CPU, or when it takes under a quarter of the
    GPU's free memory (many sessions at once on a GPU is the vllm engine's job)."""
    device = adapter.model.device
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    adapted = sum(
        p.numel() * p.element_size()
        for n, p in adapter.model.named_parameters()
        if n.endswith("base_layer.weight")
    )
    return adapted < free / 4


class HFEngine:
    """Batched KV-cache sampling with transformers on the model's own device. A session's
    adapter samples through merged weights where they fit (MergedView), else through peft."""

    name = "hf"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def generate(
        self,
        prompt_ids: list[int],
        n: int,
        config: SamplingConfig,
        *,
        generator: torch.Generator,
        adapter: SessionAdapter | None = None,
    ) -> list[Sample]:
        if adapter is None:
            with torch.inference_mode():
                return sample(self.loaded.model, prompt_ids, n, config, generator=generator)
        if not merged_fits(adapter):
            with torch.inference_mode():
                return sample(adapter.model, prompt_ids, n, config, generator=generator)
        with torch.inference_mode(), adapter.model.disable_adapter():
            view = MergedView(adapter)
            return sample(view, prompt_ids, n, config, generator=generator)

    def sync_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: generation reads the live adapter weights."""

    def release_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: the engine holds no copy of the adapter."""
