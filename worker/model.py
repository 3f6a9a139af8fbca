"""Loading a causal LM and its tokenizer from a local folder (never from a hub)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

BUNDLED_MODEL_DIR = Path(__file__).with_name("bundled_model")


class ModelNotFound(FileNotFoundError):
    """The model folder does not exist or lacks config/tokenizer files."""


@dataclass
class LoadedModel:
    """A base model and its tokenizer. The base weights are never modified."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def context_length(self) -> int | None:
        """Longest prompt + completion the model handles (its `max_position_embeddings`)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def chat_ids(self, user_text: str) -> list[int]:
        """Token ids of a one-turn chat prompt, ready for the assistant's answer."""
        messages = [{"role": "user", "content": user_text}]
        # return_dict=False: transformers 5 (which vllm needs) returns a BatchEncoding otherwise
        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=False
        )
        return list(ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def load_model(
    path: str | Path | None = None, *, device: str = "cpu", dtype: str = "float32"
) -> LoadedModel:
    """Load from a local folder (default: the bundled CPU model). No download ever happens."""
    folder = Path(path) if path else BUNDLED_MODEL_DIR
    if not (folder / "config.json").is_file():
        raise ModelNotFound(
            f"no model at {folder} (expected a Hugging Face folder with config.json)"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=getattr(torch, dtype)
    )
    model.to(device).eval()
    model.requires_grad_(False)  # only a session's LoRA weights ever train
    return LoadedModel(model=model, tokenizer=tokenizer, path=folder)
