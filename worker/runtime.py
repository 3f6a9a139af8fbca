"""Building a worker's runtime (engine + model + sandbox) from a few choices."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from sandbox import Sandbox
from sdpo.settings import Settings, get_settings

from .catalogue import resolve_model
from .engine import Engine, EngineUnavailable, HFEngine
from .model import load_model
from .strategies import Runtime

EngineName = Literal["hf", "vllm"]

__all__ = ["EngineName", "EngineUnavailable", "build_runtime"]


def build_runtime(
    engine: EngineName = "hf",
    model: str | Path | None = None,
    device: str | None = None,
    settings: Settings | None = None,
) -> Runtime:
    """The engine on `device` (default: cuda if present) with `model`, a catalogue name or a
    folder (default: the settings' model). `settings` (default: the process's SDPO_* settings)
    carry the dtype, the model cache, parameter defaults and the vllm engine's knobs.

    Raises EngineUnavailable, ModelNotFound and ModelUnavailable."""
    settings = settings or get_settings()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = resolve_model(str(model or settings.model), settings.model_cache)
    if engine == "vllm":
        from .vllm_engine import VLLMEngine, check_platform, import_vllm

        import_vllm()  # fail before loading the model when vLLM or its device is missing
        check_platform(torch.device(device))
        loaded = load_model(source, device=device, dtype=settings.dtype)
        generator: Engine = VLLMEngine(loaded, settings)
    else:
        generator = HFEngine(load_model(source, device=device, dtype=settings.dtype))
    return Runtime(
        engine=generator,
        sandbox=Sandbox(),
        param_overrides=dict(settings.params),
        batch_generation=settings.worker_batch_generation,
        batch_update=(
            settings.worker_batch_update
            if settings.worker_batch_update is not None
            else torch.device(device).type == "cuda"
        ),
    )
