"""Generation engines behind one interface: `hf` (transformers, CPU or GPU) here, `vllm` in
vllm_engine.py.

An engine samples attempts from the base model or from a session's current adapter, for one
session (`generate`) or for several sessions in one batch (`generate_batch`: what the worker's
scheduler, worker/batching.py, calls). After an
update the strategy calls `sync_adapter` so that the next batch comes from the new weights, and
`release_adapter` when the session ends: both no-ops for `hf`, which generates from the live
peft model itself.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import PreTrainedModel

from .adapter import SessionAdapter
from .generation import Draws, Sample, SamplingConfig, sample, sample_many
from .model import LoadedModel
from .row_adapters import RowAdapters


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (missing package or device, model too large)."""


@dataclass(frozen=True)
class BatchRequest:
    """One prompt's n samples, drawn with `adapter` (None: the base model)."""

    prompt_ids: list[int]
    n: int
    config: SamplingConfig
    generator: torch.Generator
    adapter: SessionAdapter | None = None


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

    def generate_batch(self, requests: list[BatchRequest]) -> list[list[Sample]]: ...

    def sync_adapter(self, adapter: SessionAdapter) -> None: ...

    def release_adapter(self, adapter: SessionAdapter) -> None: ...


class GenerationTwin:
    """A second module tree over the base model's own parameter tensors (nothing copied), in
    which a session's adapted layers hold merged weights W + s * B @ A while it samples.

    Sampling through peft's LoRA layers costs two extra matmuls and Python dispatch in every
    adapted layer at every decoded token (+10-30% per decode step at batch 1-8 for SmolLM2 on
    the CPU), and a functional_call over merged weights still pays the wrappers and a
    re-parametrisation per forward. The twin is a plain transformers model: with merged
    weights it decodes at the base model's own speed, for one (out x r) @ (r x in) product per
    layer per batch. The base model's modules and tensors are never written: the twin's
    modules are its own, and its merged weights are new tensors, dropped after the batch.
    One session samples through it at a time (the engine serves one session per call). Without
    merged weights it is the bare base model, whatever adapters sessions hold on the base."""

    def __init__(self, model: PreTrainedModel) -> None:
        if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
            raise ValueError("the generation twin needs the bare base model: no adapter on it")
        shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
        self.model = copy.deepcopy(model, shared)

    @contextmanager
    def merged(self, adapter: SessionAdapter) -> Iterator[PreTrainedModel]:
        modules = dict(self.model.named_modules())
        originals = {}
        try:
            for name, weight in adapter.merged_weights().items():
                module = modules[name]
                originals[name] = module.weight
                module.weight = torch.nn.Parameter(weight, requires_grad=False)
            yield self.model
        finally:
            for name, weight in originals.items():
                modules[name].weight = weight


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
    adapter samples through merged weights where they fit (GenerationTwin), else through
    peft's LoRA layers."""

    name = "hf"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.twin = GenerationTwin(loaded.model)  # before any adapter wraps the base

    def generate(
        self,
        prompt_ids: list[int],
        n: int,
        config: SamplingConfig,
        *,
        generator: torch.Generator,
        adapter: SessionAdapter | None = None,
    ) -> list[Sample]:
        if adapter is None:  # the twin: the base model itself may hold sessions' LoRA layers
            with torch.inference_mode():
                return sample(self.twin.model, prompt_ids, n, config, generator=generator)
        if not merged_fits(adapter):
            with torch.inference_mode():
                return sample(adapter.model, prompt_ids, n, config, generator=generator)
        with torch.inference_mode(), self.twin.merged(adapter) as model:
            return sample(model, prompt_ids, n, config, generator=generator)

    def generate_batch(self, requests: list[BatchRequest]) -> list[list[Sample]]:
        """Several sessions' requests decoded together, one forward pass per token for all
        their rows (adapters applied per row, RowAdapters). Requests with different sampling
        settings decode as separate batches; a lone request is `generate` itself, exactly."""
        by_config: dict[SamplingConfig, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            by_config[r.config].append(i)
        results: list[list[Sample]] = [[] for _ in requests]
        for config, indices in by_config.items():
            group = [requests[i] for i in indices]
            if len(group) == 1:
                r = group[0]
                results[indices[0]] = self.generate(
                    r.prompt_ids, r.n, r.config, generator=r.generator, adapter=r.adapter
                )
                continue
            factors = [r.adapter.lora_factors() if r.adapter else None for r in group]
            rows = RowAdapters(self.twin.model, factors)
            with torch.inference_mode(), rows:
                drawn = sample_many(
                    self.twin.model,
                    [Draws(r.prompt_ids, r.n, r.generator) for r in group],
                    config,
                    rows_kept=rows.rows_kept,
                )
            for i, samples in zip(indices, drawn, strict=True):
                results[i] = samples
        return results

    def sync_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: generation reads the live adapter weights."""

    def release_adapter(self, adapter: SessionAdapter) -> None:
        """Nothing to do: the engine holds no copy of the adapter."""
