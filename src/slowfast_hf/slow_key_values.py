# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
The slow tokens' keys/values, carried by Transformers' decoder cache.

A prompt's slow K/V are projected once, when its video is read, and every later forward pass over the same cache
reads them: each decoding step, a question appended to a cached prefix, the next turn of a chat. They live in the
decoder `Cache` itself, as one extra cache layer after the decoder's own ([`SlowKeyValuesLayer`]), so whatever
Transformers does to a cache it does to them: `copy.deepcopy` (prompt reuse), `reorder_cache` (beam search),
`batch_repeat_interleave` and `batch_select_indices`, `reset`. Slow K/V of batch size 1 are shared by every row
of the cache: one video's prefix, repeated for a batch of questions, keeps a single copy of them.
"""

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class SlowKeyValues:
    """The slow tokens' keys/values of every hybrid layer. Batch size 1 means: shared by every row of a batch."""

    key_values: dict[int, tuple[torch.Tensor, torch.Tensor]]  # layer_idx -> key, value, each (B, Hkv, N, d)
    key_mask: torch.Tensor  # (B, N) bool, True for real slow tokens (rows without any are all False)
    has_slow_tokens: torch.Tensor  # (B,) bool
    attention_key_mask: torch.Tensor = field(init=False)  # (B, N) bool, what the cross-attention attends

    def __post_init__(self):
        # A row with no slow token attends its first (zero) slot so softmax stays finite; it has no query position,
        # so the result is never used.
        first_slot = torch.arange(self.key_mask.shape[1], device=self.key_mask.device) == 0
        self.attention_key_mask = self.key_mask | (~self.has_slow_tokens[:, None] & first_slot)

    @property
    def num_rows(self) -> int:
        return self.key_mask.shape[0]

    def _map_rows(self, function) -> "SlowKeyValues":
        return SlowKeyValues(
            {index: (function(key), function(value)) for index, (key, value) in self.key_values.items()},
            function(self.key_mask),
            function(self.has_slow_tokens),
        )

    def select_rows(self, indices: torch.Tensor) -> "SlowKeyValues":
        if self.num_rows == 1:  # shared by every row
            return self
        return self._map_rows(lambda tensor: tensor.index_select(0, indices.to(tensor.device)))

    def repeat_rows(self, repeats: int) -> "SlowKeyValues":
        if self.num_rows == 1:
            return self
        return self._map_rows(lambda tensor: tensor.repeat_interleave(repeats, dim=0))


class SlowKeyValuesLayer(CacheLayerMixin):
    """
    A cache "layer" holding the slow K/V of every hybrid layer; it sits after the decoder's layers in a `Cache`.
    It holds no self-attention states: its sequence length is 0 and it never takes an `update`. Its tensors never
    change shape while decoding (static cache and `torch.compile` friendly).
    """

    is_compileable = True
    is_croppable = True
    is_sliding = False
    supports_early_init = False

    def __init__(self, slow_key_values: SlowKeyValues):
        super().__init__()
        self.slow_key_values: SlowKeyValues | None = slow_key_values

    def lazy_initialization(self, key_states, value_states) -> None:
        raise TypeError("A SlowKeyValuesLayer holds no self-attention states.")

    def update(self, key_states, value_states, *args, **kwargs):
        raise TypeError("A SlowKeyValuesLayer holds no self-attention states; it is not a decoder layer's cache.")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1

    def offload(self):
        pass  # read by every step of every hybrid layer: kept where it is

    def prefetch(self):
        pass

    def reset(self) -> None:
        self.slow_key_values = None

    def crop(self, tokens_to_remove: int) -> None:
        pass  # the slow tokens are not part of the sequence

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.slow_key_values is not None:
            self.slow_key_values = self.slow_key_values.select_rows(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.slow_key_values is not None:
            self.slow_key_values = self.slow_key_values.repeat_rows(repeats)


def cached_slow_key_values(cache: Cache | None) -> SlowKeyValues | None:
    """The slow K/V a decoder cache carries, if any."""
    layers = getattr(cache, "layers", None)
    if layers and isinstance(layers[-1], SlowKeyValuesLayer):
        return layers[-1].slow_key_values
    return None


def store_slow_key_values(cache: Cache, slow_key_values: SlowKeyValues, num_decoder_layers: int) -> None:
    """Put `slow_key_values` into `cache`, in place, as its last layer (after the decoder's `num_decoder_layers`)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(cache, Cache) or layers is None:
        raise ValueError(
            f"The decoder cache must be a transformers `Cache` (DynamicCache, StaticCache, ...), got {type(cache)}."
        )
    if layers and isinstance(layers[-1], SlowKeyValuesLayer):
        layers[-1].slow_key_values = slow_key_values
        return
    if len(layers) < num_decoder_layers:
        if cache.layer_class_to_replicate is None:
            raise ValueError(f"The cache has {len(layers)} layers, the decoder {num_decoder_layers}.")
        # a lazily built cache (`DynamicCache()` without a config): create the decoder's layers now, as its
        # `update` would, so that the slow K/V stay after them
        layers.extend(cache.layer_class_to_replicate() for _ in range(num_decoder_layers - len(layers)))
    layers.append(SlowKeyValuesLayer(slow_key_values))


__all__ = ["SlowKeyValues", "SlowKeyValuesLayer", "cached_slow_key_values", "store_slow_key_values"]
