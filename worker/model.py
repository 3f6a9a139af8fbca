"""Loading a causal LM and its tokenizer from a local folder (never from a hub).

What a real model needs besides its weights comes from its profile (worker/profiles.py): the
dtype, the system prompt and chat-template arguments, and the stop tokens. A model that cannot
serve, for want of a chat template or of memory, fails here at start-up, naming the model and
what is missing, rather than mid-session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from sdpo.settings import get_settings

from .catalogue import ModelNotFound, ModelSource, resolve_model
from .profiles import DType, ModelProfile, folder_profile

__all__ = ["LoadedModel", "ModelNotFound", "ModelUnavailable", "load_model", "resolve_dtype"]

MEMORY_HEADROOM = 1.2  # weights plus activations, the KV cache and a session's adapter
_TURN_MARK = "\u2063sdpo-end-of-turn-probe\u2063"  # text no template produces by itself


class ModelUnavailable(RuntimeError):
    """The model cannot serve here: no chat template, no stop token, or too large."""


@dataclass
class LoadedModel:
    """A base model, its tokenizer and profile. The base weights are never modified."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path
    profile: ModelProfile
    name: str
    stop_token_ids: tuple[int, ...]

    @property
    def eos_token_id(self) -> int:
        """The first stop token: what a finished answer ends with."""
        return self.stop_token_ids[0]

    @property
    def context_length(self) -> int | None:
        """Longest prompt + completion the model handles (its `max_position_embeddings`)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def chat_ids(self, user_text: str) -> list[int]:
        """Token ids of a one-turn chat prompt (after the profile's system prompt), ready for
        the assistant's answer."""
        return chat_ids(self.tokenizer, self.profile, user_text)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def chat_ids(
    tokenizer: PreTrainedTokenizerBase, profile: ModelProfile, user_text: str
) -> list[int]:
    messages = [{"role": "user", "content": user_text}]
    if profile.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": profile.system_prompt})
    # return_dict=False: transformers 5 returns a BatchEncoding otherwise
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=False, **profile.chat_template_kwargs
    )
    return list(ids)


def resolve_dtype(requested: DType | None, profile: ModelProfile, device: str) -> torch.dtype:
    """SDPO_DTYPE if set, else the profile's; auto is bfloat16 on CUDA and float32 on the CPU."""
    name = requested or profile.dtype
    if name == "auto":
        name = "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return getattr(torch, name)


def load_model(
    source: ModelSource | str | Path | None = None,
    *,
    device: str = "cpu",
    dtype: DType | None = None,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load a catalogue model or a local folder (default: the settings' model, SDPO_MODEL).

    Raises ModelNotFound (nothing there, or a package to install) and ModelUnavailable."""
    source = _source(source, cache_dir)
    folder, profile = source.folder, source.profile
    if not (folder / "config.json").is_file():
        raise ModelNotFound(
            f"model {source.name!r}: no config.json in {folder} (expected a Hugging Face folder)"
        )
    torch_dtype = resolve_dtype(dtype, profile, device)
    _check_fits(source, torch_dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tokenizer.chat_template:
        raise ModelUnavailable(
            f"model {source.name!r} has no chat template (tokenizer_config.json 'chat_template' "
            "or chat_template.jinja): sdpo-serve prompts instruct models through it"
        )
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch_dtype)
    model.to(device).eval()
    model.requires_grad_(False)  # only a session's LoRA weights ever train
    stops = stop_token_ids(model, tokenizer, profile)
    if not stops:
        raise ModelUnavailable(
            f"model {source.name!r} names no eos token (generation_config.json, config.json or "
            "the tokenizer) and its chat template no end-of-turn token: set stop_token_ids in "
            "its sdpo_profile.json"
        )
    try:
        chat_ids(tokenizer, profile, "ping")
    except Exception as error:  # e.g. a template that refuses a system message
        raise ModelUnavailable(
            f"model {source.name!r}: its chat template failed: {error}"
        ) from None
    return LoadedModel(model, tokenizer, folder, profile, source.name, stops)


def _source(source: ModelSource | str | Path | None, cache_dir: Path | None) -> ModelSource:
    if isinstance(source, ModelSource):
        return source
    if isinstance(source, Path):
        return ModelSource(str(source), source, folder_profile(source))
    settings = get_settings()
    return resolve_model(source or settings.model, cache_dir or settings.model_cache)


def stop_token_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, profile: ModelProfile
) -> tuple[int, ...]:
    """Every id that ends an answer: the generation config's eos ids (else the model config's,
    else the tokenizer's), the chat template's end-of-turn token, and the profile's extras."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if (turn := end_of_turn_id(tokenizer)) is not None:
        ids.append(turn)
    ids += profile.stop_token_ids
    return tuple(dict.fromkeys(int(i) for i in ids))


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the chat template puts right after an assistant message, if any."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _TURN_MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template without an assistant turn: no such token
        return None
    after = text.split(_TURN_MARK, 1)[-1] if _TURN_MARK in text else ""
    ids = tokenizer.encode(after, add_special_tokens=False)
    if ids and ids[0] in tokenizer.all_special_ids:
        return ids[0]
    return None


def _check_fits(source: ModelSource, dtype: torch.dtype, device: str) -> None:
    """Refuse a model whose weights alone would not fit the device's free memory."""
    stored = sum(f.stat().st_size for f in source.folder.glob("*.safetensors"))
    stored += sum(f.stat().st_size for f in source.folder.glob("*.bin"))
    if stored == 0:
        return
    bytes_per_param = _stored_bytes_per_param(source.folder)
    need = stored / bytes_per_param * torch.finfo(dtype).bits / 8 * MEMORY_HEADROOM
    free = _free_bytes(device)
    if free is not None and need > free:
        raise ModelUnavailable(
            f"model {source.name!r} needs about {need / 2**30:.1f} GiB on {device} in {dtype} "
            f"(weights and headroom), and {free / 2**30:.1f} GiB are free: pick a smaller "
            "model, another device, or SDPO_DTYPE=bfloat16"
        )


def _stored_bytes_per_param(folder: Path) -> float:
    config = json.loads((folder / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(name), 4)


def _free_bytes(device: str) -> int | None:
    kind = torch.device(device)
    if kind.type == "cuda":
        free, _ = torch.cuda.mem_get_info(kind)
        return free
    if kind.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None
