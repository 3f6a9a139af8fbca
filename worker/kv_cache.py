"""A KV cache that writes each new token in place instead of concatenating.

transformers' DynamicCache appends with `torch.cat`, which copies every layer's whole cache at
every decoded token: on the CPU that was about half of a decode step (measured with SmolLM2 at
batch 8). This cache reserves room for the prompt plus the longest answer up front and returns
views of the filled part, so attention sees exactly what DynamicCache would show it (same
lengths, same masks), without the copies. Dropping finished rows (`batch_select_indices`)
compacts the buffers once per finished row, not per token.

Models with sliding-window or chunked attention layers keep DynamicCache (`new_cache`): their
layers store a window, not the whole past.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in buffers of `capacity` positions (grown if exceeded)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._keys: torch.Tensor | None = None  # (B, H, capacity, D)
        self._values: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, *_: Any) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        cache_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self._keys is None:
            self.lazy_initialization(key_states)
            self._keys = self._allocate(key_states, max(self.capacity, new))
            self._values = self._allocate(value_states, max(self.capacity, new))
        elif self.length + new > self._keys.shape[-2]:  # past the reservation: double it
            self._keys = self._grow(self._keys, self.length + new)
            self._values = self._grow(self._values, self.length + new)
        self._keys[..., self.length : self.length + new, :] = key_states
        self._values[..., self.length : self.length + new, :] = value_states
        self.length += new
        self._refresh()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length - abs(max_length)
        self.length = min(self.length, max_length)
        self._refresh()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._keys is not None:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._refresh()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._keys is not None:
            self._keys = self._keys[indices.to(self._keys.device)]
            self._values = self._values[indices.to(self._values.device)]
            self._refresh()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def _refresh(self) -> None:
        if self._keys is not None:
            self.keys = self._keys[..., : self.length, :]
            self.values = self._values[..., : self.length, :]

    @staticmethod
    def _allocate(like: torch.Tensor, positions: int) -> torch.Tensor:
        shape = (*like.shape[:-2], positions, like.shape[-1])
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def _grow(self, buffer: torch.Tensor, needed: int) -> torch.Tensor:
        grown = self._allocate(buffer, max(needed, 2 * buffer.shape[-2]))
        grown[..., : self.length, :] = buffer[..., : self.length, :]
        return grown


class PreallocatedCache(DynamicCache):
    """DynamicCache semantics with PreallocatedLayer layers."""

    def __init__(self, capacity: int) -> None:
        Cache.__init__(self, layer_class_to_replicate=partial(PreallocatedLayer, capacity))


def new_cache(config: PretrainedConfig, capacity: int) -> DynamicCache:
    """The cache for a generation of at most `capacity` positions with this model: transformers'
    own DynamicCache decides which layers keep a window; with none, ours replaces it."""
    dynamic = DynamicCache(config=config)
    if any(dynamic.is_sliding):
        return dynamic
    return PreallocatedCache(capacity)
