"""Batched sampling with a KV cache: the `hf` engine's generation phase.

One prompt, `n` samples: the prompt is encoded once and its cache repeated n times, then all
samples decode together. A row leaves the batch as soon as it emits a stop token, so short
answers stop costing compute (the cache drops its rows too). Returns token ids and the sampling
log-probabilities (under the temperature-scaled, top-p-truncated distribution that drew them),
which the SDPO loss needs for its importance ratio.

Sampling is by inverse CDF from one uniform number per row and step, all n drawn every step
from the torch.Generator: a row's tokens depend only on its own logits and its own random
numbers, not on when the other rows finished. The same generator state gives the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .kv_cache import new_cache


@dataclass(frozen=True)
class Sample:
    """One sampled completion. `token_ids` include the stop token when one was produced."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


@dataclass(frozen=True)
class SamplingConfig:
    stop_token_ids: tuple[int, ...]  # any of them ends an answer (and is kept as its last token)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if not self.stop_token_ids:
            raise ValueError("stop_token_ids: at least one stop token is needed")


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Mask (to -inf) the tokens outside the smallest set whose probability reaches top_p."""
    sorted_logits, order = torch.sort(logits, descending=True)  # (B, V)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first to cross
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sampling_logprobs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Log-probs of the distribution that samples are drawn from. (B, V) -> (B, V) float32."""
    scaled = logits.float() / config.temperature
    if config.top_p < 1.0:
        scaled = _top_p_filter(scaled, config.top_p)
    return scaled.log_softmax(-1)


def draw(logprobs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative probability passes u * total.

    (B, V) log-probs and (B, 1) uniforms in [0, 1) -> (B, 1) token ids. The CDF is summed in
    float64, and u is scaled by its last value, so rounding never selects a zero-probability
    token."""
    cdf = logprobs.double().exp().cumsum(-1)  # (B, V)
    target = uniforms.double() * cdf[:, -1:]
    ids = torch.searchsorted(cdf, target, right=True)
    return ids.clamp(max=logprobs.shape[-1] - 1)


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
    limit = config.max_new_tokens
    prompt = torch.tensor([prompt_ids], device=device)  # (1, P)
    cache = new_cache(model.config, prompt.shape[1] + limit)
    # only the last position's logits: multi-turn prompts run to hundreds of tokens
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1, :].expand(n, -1)  # (n, V)
    stops = torch.tensor(config.stop_token_ids, device=device)
    tokens = torch.zeros((n, limit), dtype=torch.long, device=device)
    logprobs = torch.zeros((n, limit), device=device)
    lengths = torch.full((n,), limit, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)
    active = torch.arange(n, device=device)  # original rows still decoding
    position = prompt.shape[1]
    for t in range(limit):
        step_logprobs = sampling_logprobs(logits, config)  # (a, V)
        uniforms = torch.rand((n, 1), generator=generator, device=generator.device)
        next_ids = draw(step_logprobs, uniforms.to(device)[active])  # (a, 1)
        tokens[active, t] = next_ids[:, 0]
        logprobs[active, t] = step_logprobs.gather(1, next_ids)[:, 0]
        stopped = torch.isin(next_ids[:, 0], stops)
        if bool(stopped.any()):
            ended = active[stopped].cpu()
            lengths[ended], finished[ended] = t + 1, True
            keep = (~stopped).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            active, next_ids = active[keep], next_ids[keep]
            cache.batch_select_indices(keep)
        if t + 1 == limit:
            break
        positions = torch.full((active.numel(), 1), position, device=device)
        out = model(
            input_ids=next_ids, past_key_values=cache, use_cache=True, position_ids=positions
        )
        logits = out.logits[:, -1, :]
        position += 1
    tokens, logprobs = tokens.cpu(), logprobs.cpu()
    return [
        Sample(
            tokens[i, : lengths[i]].tolist(),
            logprobs[i, : lengths[i]].tolist(),
            finished=bool(finished[i]),
        )
        for i in range(n)
    ]
