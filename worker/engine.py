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


class HFEngine:
    """Batched KV-cache sampling with transformers on the model's own device."""

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
        model = adapter.model if adapter else self.loaded.model
        with torch.inference_mode():
            return sample(model, prompt_ids, n, config, generator=generator)

    def sync_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: generation reads the live adapter weights."""

    def release_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: the engine holds no copy of the adapter."""
