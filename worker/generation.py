"""Batched sampling with a KV cache: the `hf` engine's generation phase.

One prompt, `n` samples: the prompt is encoded once and its cache repeated n times, then all
samples decode together. Returns token ids and the sampling log-probabilities (under the
temperature-scaled, top-p-truncated distribution that drew them), which the SDPO loss needs
for its importance ratio. Deterministic for a given torch.Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class Sample:
    """One sampled completion. `token_ids` include the eos token when one was produced."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


@dataclass(frozen=True)
class SamplingConfig:
    eos_token_id: int
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the smallest set whose probability reaches top_p."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first to cross
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    prompt_ids: list[int],
    n: int,
    config: SamplingConfig,
    *,
    generator: torch.Generator,
) -> list[Sample]:
    """Draw n completions of one prompt from `model` (with whatever adapter is active)."""
    device = model.device
    prompt = torch.tensor([prompt_ids], device=device)  # (1, P)
    cache = DynamicCache()
    # only the last position's logits: multi-turn prompts run to hundreds of tokens
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1, :].float().expand(n, -1)  # (n, V)
    tokens = torch.empty((n, 0), dtype=torch.long, device=device)
    logprobs = torch.empty((n, 0), device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    position = prompt.shape[1]
    for _ in range(config.max_new_tokens):
        scaled = logits / config.temperature
        if config.top_p < 1.0:
            scaled = _top_p_filter(scaled, config.top_p)
        step_logprobs = scaled.log_softmax(-1)  # (n, V)
        probs = step_logprobs.exp().to(generator.device)
        next_ids = torch.multinomial(probs, 1, generator=generator).to(device)  # (n, 1)
        next_ids = next_ids.masked_fill(finished[:, None], config.eos_token_id)
        tokens = torch.cat([tokens, next_ids], dim=1)
        logprobs = torch.cat([logprobs, step_logprobs.gather(1, next_ids)], dim=1)
        finished |= next_ids[:, 0] == config.eos_token_id
        if bool(finished.all()):
            break
        positions = torch.full((n, 1), position, device=device)
        out = model(
            input_ids=next_ids, past_key_values=cache, use_cache=True, position_ids=positions
        )
        logits = out.logits[:, -1, :].float()
        position += 1
    return [_trim(tokens[i], logprobs[i], config.eos_token_id) for i in range(n)]


def _trim(tokens: torch.Tensor, logprobs: torch.Tensor, eos_token_id: int) -> Sample:
    ids = tokens.tolist()
    if eos_token_id in ids:
        end = ids.index(eos_token_id) + 1
        return Sample(ids[:end], logprobs[:end].tolist(), finished=True)
    return Sample(ids, logprobs.tolist(), finished=False)
