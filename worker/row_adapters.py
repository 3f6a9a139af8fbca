"""Per-row LoRA: the rows of one batch each computed with their own session's adapter.

The S-LoRA/Punica idea in plain torch. Every layer that some request's adapter adapts gets a
forward hook that adds (x A_i^T)(B_i^T) s_i to the rows of request i, on top of the layer's
base output. A batch keeps each request's rows together and in order (sampling only ever drops
rows), so request i's rows are one slice of the batch: two small matmuls on a view per adapted
request and layer, nothing for rows on the base model. Several sessions thus share every
forward pass, and the base weights are read once for all of them.

Why hooks rather than peft's mixed-adapter batches (`adapter_names=`): peft gathers the rows of
each adapter with boolean masks and index copies in every layer, for every forward, and needs
the batch's rows named per call; a slice per request is a view. The hooks work on a plain model
(the hf engine's generation twin) and on the peft model with its adapters disabled (the joint
update, worker/joint_update.py), where they are differentiable: the factors are then the live
LoRA parameters, and each session's gradients flow to its own adapter only.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .adapter import Factors


class RowAdapters:
    """Hooks adding per-request LoRA deltas to a model's adapted layers; a context manager.

    `adapters[i]` is request i's factors (None: the base model). `prefix` is what the model's
    module names put before the base model's (peft's, or nothing). `live` keeps the factors as
    given and computes as peft does, ((x A^T) B^T) s in the factors' dtype, so gradients reach
    them; otherwise they are detached and cast to each layer's dtype once, for sampling.
    `rows_kept(index)` follows the batch as its rows become `index` of the previous ones; the
    batch starts with one row per request."""

    def __init__(
        self,
        model: torch.nn.Module,
        adapters: list[Factors | None],
        *,
        prefix: str = "",
        live: bool = False,
    ) -> None:
        self.model, self.prefix, self.live = model, prefix, live
        # layer -> request -> (A, B, scaling) live, or (A^T, s B^T, 1.0) cast for sampling
        self.factors: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor, float]]]
        self.factors = defaultdict(dict)
        modules = dict(model.named_modules())
        for request, factors in enumerate(adapters):
            for name, (a, b, scaling) in (factors or {}).items():
                if live:
                    self.factors[name][request] = (a, b, scaling)
                    continue
                dtype = modules[prefix + name].weight.dtype
                self.factors[name][request] = (a.T.to(dtype), (b * scaling).T.to(dtype), 1.0)
        self.rows = torch.arange(len(adapters))  # the request of each row (on the host)
        self.slices = self._slices()
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def rows_kept(self, index: torch.Tensor) -> None:
        self.rows = self.rows[index.cpu()]
        self.slices = self._slices()

    def _slices(self) -> list[tuple[int, slice]]:
        requests, counts = torch.unique_consecutive(self.rows, return_counts=True)
        ends = counts.cumsum(0).tolist()
        starts = [0, *ends[:-1]]
        return [(r, slice(a, b)) for r, a, b in zip(requests.tolist(), starts, ends, strict=True)]

    def __enter__(self) -> RowAdapters:
        modules = dict(self.model.named_modules())
        for name, per_request in self.factors.items():
            hook = self._hook(per_request)
            self._hooks.append(modules[self.prefix + name].register_forward_hook(hook))
        return self

    def __exit__(self, *_: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _hook(self, per_request: dict[int, tuple[torch.Tensor, torch.Tensor, float]]):  # noqa: ANN202
        def add_delta(_: torch.nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor):  # noqa: ANN202
            x = inputs[0]  # (rows, T, in)
            for request, rows in self.slices:
                if request not in per_request:
                    continue
                a, b, scaling = per_request[request]
                if self.live:  # as peft's LoRA layer computes it
                    out[rows] += (((x[rows].to(a.dtype) @ a.T) @ b.T) * scaling).to(out.dtype)
                else:
                    out[rows] += (x[rows] @ a) @ b
            return out

        return add_delta
