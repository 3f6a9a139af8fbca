"""Scoring attempts: the model's next-token logits at each token of an attempt, after a context.

Student and teacher are scored the same way; only the context differs (the problem alone, or
the problem plus feedback). Rows are right-padded: under causal attention a real token never
sees the padding after it, so no attention mask is needed.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def attempt_logits(
    model: PreTrainedModel, contexts: list[list[int]], attempts: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each attempt token, and the mask of real tokens.

    Returns (logits (B, T, V), mask (B, T)) with T the longest attempt. Row i's logits at t are
    the model's prediction of attempts[i][t] given contexts[i] + attempts[i][:t]. The output
    layer runs only over the positions that predict attempt tokens (`logits_to_keep`), not over
    the contexts, which are most of every row.
    """
    rows = [c + a for c, a in zip(contexts, attempts, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    starts = torch.tensor([len(c) - 1 for c in contexts])[:, None]  # (B, 1)
    first = int(starts.min())
    last = max(len(r) - 1 for r in rows)  # the last position that predicts a token
    keep = torch.arange(first, last, device=model.device)
    logits = model(input_ids=ids.to(model.device), logits_to_keep=keep).logits  # (B, K, V)
    longest = max(len(a) for a in attempts)
    offsets = torch.arange(longest)[None, :]  # (1, T)
    lengths = torch.tensor([len(a) for a in attempts])[:, None]
    mask = offsets < lengths  # (B, T)
    index = (starts - first + offsets).clamp(max=logits.shape[1] - 1).to(logits.device)  # (B, T)
    picked = logits.gather(1, index[..., None].expand(-1, -1, logits.shape[-1]))  # (B, T, V)
    return picked, mask.to(logits.device)
