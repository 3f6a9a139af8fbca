"""Building a worker's runtime (engine + model + sandbox) from a few choices."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from sandbox import Sandbox

from .engine import HFEngine
from .model import load_model
from .strategies import Runtime

EngineName = Literal["hf", "vllm"]


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (missing package or device)."""


def build_runtime(
    engine: EngineName = "hf", model: Path | None = None, device: str | None = None
) -> Runtime:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if engine == "vllm":
        raise EngineUnavailable("the vllm engine is not built yet; use --engine hf")
    return Runtime(engine=HFEngine(load_model(model, device=device)), sandbox=Sandbox())
