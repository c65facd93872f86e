# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Turns per-frame visual features into slow tokens (cross-attended) and fast tokens (placed in the sequence)."""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

from .configuration_slowfast import FAST_FRAME_REMAINDERS, SPATIAL_POOL_REMAINDERS


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def _pooled_size(size: int, stride: int, remainder: str) -> int:
    return math.ceil(size / stride) if remainder == "partial" else size // stride


def _spatial_avg_pool(frames: torch.Tensor, stride: int, remainder: str) -> torch.Tensor:
    """(T, h, w, D) -> (T, h', w', D): `"partial"` rounds up (a border window averages the cells it covers),
    `"drop"` rounds down (border cells that fill no whole window are dropped, PyTorch's default)."""
    if stride == 1:
        return frames
    pooled = F.avg_pool2d(
        rearrange(frames, "t h w d -> t d h w"), kernel_size=stride, stride=stride, ceil_mode=remainder == "partial"
    )
    return rearrange(pooled, "t d h w -> t h w d")


@dataclass(frozen=True)
class SlowFastTokenBuilder:
    """
    The slow/fast token rule of DESIGN §2, shared by the model (which builds the tokens) and the processor (which
    expands each placeholder into as many tokens as the model will produce).

    For a video of `T > 1` frames with a per-frame feature grid `h × w`:
      - slow tokens: each frame average-pooled `slow_spatial_stride × slow_spatial_stride`, flattened over frames;
      - fast tokens, from the pooled frames: every `fast_temporal_sampling_stride`-th frame (if that leaves fewer than
        `min_fast_frames`, that many evenly spaced frames instead, at most `T`); then zero frames are appended up to a
        multiple of `fast_temporal_stride` and windows of that many frames are averaged, unless that would leave
        fewer than `min_fast_frames`, in which case the kept frames are adaptively averaged down to
        `min(kept, min_fast_frames)`; finally `fast_spatial_stride` spatial pooling.
    Zero-padding then sampling is the same as padding the video to a multiple of both strides first.
    A single image (`T == 1`) is a one-frame video whose slow tokens are its unpooled features and whose fast tokens
    are only spatially pooled. Spatial pooling rounds up: a border window averages the cells it covers.

    The released models' rule differs where the frame count or the grid is not a multiple of the strides; it is
    selected with `fast_frame_remainder="drop"` and `spatial_pool_remainder="drop"` (what `convert_official` writes):
      - fast frames: with sampling stride `s == 1` every frame; with `s > 1`, `kept = max(T // s, min_fast_frames)`
        frames at `min(int(i * T / kept), T - 1)` (every frame when `T < min_fast_frames`); windows of
        `fast_temporal_stride` frames are averaged and trailing frames that fill no window are dropped, when that
        leaves at least `min_fast_frames`, else the adaptive pooling above;
      - spatial pooling (slow and fast) rounds down: border cells that fill no whole window are dropped.
    """

    slow_spatial_stride: int = 2
    fast_temporal_sampling_stride: int = 1
    fast_temporal_stride: int = 4
    fast_spatial_stride: int = 1
    min_fast_frames: int = 1
    fast_frame_remainder: Literal["zero_pad", "drop"] = "zero_pad"
    spatial_pool_remainder: Literal["partial", "drop"] = "partial"

    def __post_init__(self):
        for name in (
            "slow_spatial_stride",
            "fast_temporal_sampling_stride",
            "fast_temporal_stride",
            "fast_spatial_stride",
            "min_fast_frames",
        ):
            _check_positive_int(name, getattr(self, name))
        if self.fast_frame_remainder not in FAST_FRAME_REMAINDERS:
            raise ValueError(
                f"`fast_frame_remainder` must be one of {FAST_FRAME_REMAINDERS}, got {self.fast_frame_remainder!r}."
            )
        if self.spatial_pool_remainder not in SPATIAL_POOL_REMAINDERS:
            raise ValueError(
                f"`spatial_pool_remainder` must be one of {SPATIAL_POOL_REMAINDERS}, "
                f"got {self.spatial_pool_remainder!r}."
            )

    @classmethod
    def from_config(cls, config) -> "SlowFastTokenBuilder":
        return cls(
            slow_spatial_stride=config.slow_spatial_stride,
            fast_temporal_sampling_stride=config.fast_temporal_sampling_stride,
            fast_temporal_stride=config.fast_temporal_stride,
            fast_spatial_stride=config.fast_spatial_stride,
            min_fast_frames=config.min_fast_frames,
            fast_frame_remainder=config.fast_frame_remainder,
            spatial_pool_remainder=config.spatial_pool_remainder,
        )

    def sampled_frame_indices(self, num_frames: int) -> list[int]:
        """Indices of the frames kept for the fast tokens, before temporal pooling."""
        _check_positive_int("num_frames", num_frames)
        stride = self.fast_temporal_sampling_stride
        if self.fast_frame_remainder == "drop":
            if stride == 1 or num_frames < self.min_fast_frames:
                return list(range(num_frames))
            kept = max(num_frames // stride, self.min_fast_frames)
            return [min(int(i * (num_frames / kept)), num_frames - 1) for i in range(kept)]
        indices = list(range(0, num_frames, stride))
        if len(indices) < self.min_fast_frames:
            count = min(self.min_fast_frames, num_frames)
            indices = [i * num_frames // count for i in range(count)]
        return indices

    def num_fast_frames(self, num_frames: int) -> int:
        """How many frames the fast tokens of a `num_frames`-frame video cover."""
        if num_frames == 1:
            return 1
        kept = len(self.sampled_frame_indices(num_frames))
        pooled = self._num_temporal_windows(kept)
        return pooled if pooled >= self.min_fast_frames else min(kept, self.min_fast_frames)

    def slow_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """The per-frame grid of the slow tokens for a feature grid `height × width`."""
        _check_positive_int("num_frames", num_frames)
        _check_positive_int("height", height)
        _check_positive_int("width", width)
        if num_frames == 1:
            return height, width
        stride, remainder = self.slow_spatial_stride, self.spatial_pool_remainder
        slow_grid = _pooled_size(height, stride, remainder), _pooled_size(width, stride, remainder)
        if min(slow_grid) < 1:
            raise ValueError(
                f"A {height}x{width} feature grid is smaller than `slow_spatial_stride` {stride}: no slow token left."
            )
        return slow_grid

    def num_slow_tokens(self, num_frames: int, height: int, width: int) -> int:
        slow_height, slow_width = self.slow_grid(num_frames, height, width)
        return num_frames * slow_height * slow_width

    def num_fast_tokens(self, num_frames: int, height: int, width: int) -> int:
        """How many placeholder tokens a `num_frames`-frame video (or an image, `num_frames=1`) takes in the text."""
        slow_height, slow_width = self.slow_grid(num_frames, height, width)
        stride, remainder = self.fast_spatial_stride, self.spatial_pool_remainder
        fast_height, fast_width = (
            _pooled_size(slow_height, stride, remainder),
            _pooled_size(slow_width, stride, remainder),
        )
        return self.num_fast_frames(num_frames) * fast_height * fast_width

    def __call__(self, frame_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            frame_features (`torch.Tensor` of shape `(num_frames, height, width, hidden_size)`):
                Projected per-frame features of one video, or of one image with `num_frames == 1`.

        Returns:
            `(fast_tokens, slow_tokens)` of shapes `(num_fast_tokens, hidden_size)` and
            `(num_slow_tokens, hidden_size)`.
        """
        if frame_features.ndim != 4:
            raise ValueError(
                "`frame_features` must have shape (num_frames, height, width, hidden_size), "
                f"got {tuple(frame_features.shape)}."
            )
        num_frames = frame_features.shape[0]
        if num_frames == 1:
            slow_frames = frame_features
        else:
            self.slow_grid(num_frames, *frame_features.shape[1:3])  # refuses grids too small to pool
            slow_frames = _spatial_avg_pool(frame_features, self.slow_spatial_stride, self.spatial_pool_remainder)
        slow_tokens = rearrange(slow_frames, "t h w d -> (t h w) d")

        fast_frames = slow_frames
        if num_frames > 1:
            fast_frames = self._temporal_pool(slow_frames[self.sampled_frame_indices(num_frames)])
        fast_frames = _spatial_avg_pool(fast_frames, self.fast_spatial_stride, self.spatial_pool_remainder)
        fast_tokens = rearrange(fast_frames, "t h w d -> (t h w) d")
        return fast_tokens, slow_tokens

    def _temporal_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """(kept, h, w, D) -> (num_fast_frames, h, w, D)."""
        kept, stride = frames.shape[0], self.fast_temporal_stride
        if self._num_temporal_windows(kept) >= self.min_fast_frames:
            if self.fast_frame_remainder == "drop":
                frames = frames[: kept - kept % stride]
                return rearrange(frames, "(t s) h w d -> t s h w d", s=stride).mean(dim=1)
            padding = -kept % stride
            frames = F.pad(frames, (0, 0, 0, 0, 0, 0, 0, padding))
            return rearrange(frames, "(t s) h w d -> t s h w d", s=stride).mean(dim=1)
        target = min(kept, self.min_fast_frames)
        height, width = frames.shape[1:3]
        pooled = F.adaptive_avg_pool1d(rearrange(frames, "t h w d -> (h w) d t"), target)
        return rearrange(pooled, "(h w) d t -> t h w d", h=height, w=width)

    def _num_temporal_windows(self, kept: int) -> int:
        """Windows of `fast_temporal_stride` frames over `kept` frames: a partial last window is zero-padded or
        dropped."""
        if self.fast_frame_remainder == "drop":
            return kept // self.fast_temporal_stride
        return math.ceil(kept / self.fast_temporal_stride)


__all__ = ["SlowFastTokenBuilder"]
