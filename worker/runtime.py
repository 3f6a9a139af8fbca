"""Building a worker's runtime (engine + model + sandbox) from a few choices."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from sandbox import Sandbox
from sdpo.settings import Settings, get_settings

from .engine import EngineUnavailable, HFEngine
from .model import load_model
from .strategies import Runtime

EngineName = Literal["hf", "vllm"]

__all__ = ["EngineName", "EngineUnavailable", "build_runtime"]


def build_runtime(
    engine: EngineName = "hf",
    model: Path | None = None,
    device: str | None = None,
    settings: Settings | None = None,
) -> Runtime:
    """The engine on `device` (default: cuda if present). `settings` carry the vllm engine's
    knobs (default: the process's SDPO_* settings); raises EngineUnavailable."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if engine == "vllm":
        from .vllm_engine import VLLMEngine, check_platform, import_vllm

        import_vllm()  # fail before loading the model when vLLM or its device is missing
        check_platform(torch.device(device))
        loaded = load_model(model, device=device)
        return Runtime(engine=VLLMEngine(loaded, settings or get_settings()), sandbox=Sandbox())
    return Runtime(engine=HFEngine(load_model(model, device=device)), sandbox=Sandbox())
