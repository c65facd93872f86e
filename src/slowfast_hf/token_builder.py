# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Turns per-frame visual features into slow tokens (cross-attended) and fast tokens (placed in the sequence)."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def _spatial_avg_pool(frames: torch.Tensor, stride: int) -> torch.Tensor:
    """(T, h, w, D) -> (T, ceil(h / stride), ceil(w / stride), D); a border window averages the cells it covers."""
    if stride == 1:
        return frames
    pooled = F.avg_pool2d(rearrange(frames, "t h w d -> t d h w"), kernel_size=stride, stride=stride, ceil_mode=True)
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
    """

    slow_spatial_stride: int = 2
    fast_temporal_sampling_stride: int = 1
    fast_temporal_stride: int = 4
    fast_spatial_stride: int = 1
    min_fast_frames: int = 1

    def __post_init__(self):
        for name in (
            "slow_spatial_stride",
            "fast_temporal_sampling_stride",
            "fast_temporal_stride",
            "fast_spatial_stride",
            "min_fast_frames",
        ):
            _check_positive_int(name, getattr(self, name))

    @classmethod
    def from_config(cls, config) -> "SlowFastTokenBuilder":
        return cls(
            slow_spatial_stride=config.slow_spatial_stride,
            fast_temporal_sampling_stride=config.fast_temporal_sampling_stride,
            fast_temporal_stride=config.fast_temporal_stride,
            fast_spatial_stride=config.fast_spatial_stride,
            min_fast_frames=config.min_fast_frames,
        )

    def sampled_frame_indices(self, num_frames: int) -> list[int]:
        """Indices of the frames kept for the fast tokens, before temporal pooling."""
        _check_positive_int("num_frames", num_frames)
        indices = list(range(0, num_frames, self.fast_temporal_sampling_stride))
        if len(indices) < self.min_fast_frames:
            count = min(self.min_fast_frames, num_frames)
            indices = [i * num_frames // count for i in range(count)]
        return indices

    def num_fast_frames(self, num_frames: int) -> int:
        """How many frames the fast tokens of a `num_frames`-frame video cover."""
        if num_frames == 1:
            return 1
        kept = len(self.sampled_frame_indices(num_frames))
        pooled = math.ceil(kept / self.fast_temporal_stride)
        return pooled if pooled >= self.min_fast_frames else min(kept, self.min_fast_frames)

    def slow_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """The per-frame grid of the slow tokens for a feature grid `height × width`."""
        _check_positive_int("num_frames", num_frames)
        _check_positive_int("height", height)
        _check_positive_int("width", width)
        if num_frames == 1:
            return height, width
        stride = self.slow_spatial_stride
        return math.ceil(height / stride), math.ceil(width / stride)

    def num_slow_tokens(self, num_frames: int, height: int, width: int) -> int:
        slow_height, slow_width = self.slow_grid(num_frames, height, width)
        return num_frames * slow_height * slow_width

    def num_fast_tokens(self, num_frames: int, height: int, width: int) -> int:
        """How many placeholder tokens a `num_frames`-frame video (or an image, `num_frames=1`) takes in the text."""
        slow_height, slow_width = self.slow_grid(num_frames, height, width)
        stride = self.fast_spatial_stride
        return self.num_fast_frames(num_frames) * math.ceil(slow_height / stride) * math.ceil(slow_width / stride)

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
            slow_frames = _spatial_avg_pool(frame_features, self.slow_spatial_stride)
        slow_tokens = rearrange(slow_frames, "t h w d -> (t h w) d")

        fast_frames = slow_frames
        if num_frames > 1:
            fast_frames = self._temporal_pool(slow_frames[self.sampled_frame_indices(num_frames)])
        fast_frames = _spatial_avg_pool(fast_frames, self.fast_spatial_stride)
        fast_tokens = rearrange(fast_frames, "t h w d -> (t h w) d")
        return fast_tokens, slow_tokens

    def _temporal_pool(self, frames: torch.Tensor) -> torch.Tensor:
        """(kept, h, w, D) -> (num_fast_frames, h, w, D)."""
        kept, stride = frames.shape[0], self.fast_temporal_stride
        if math.ceil(kept / stride) >= self.min_fast_frames:
            padding = -kept % stride
            frames = F.pad(frames, (0, 0, 0, 0, 0, 0, 0, padding))
            return rearrange(frames, "(t s) h w d -> t s h w d", s=stride).mean(dim=1)
        target = min(kept, self.min_fast_frames)
        height, width = frames.shape[1:3]
        pooled = F.adaptive_avg_pool1d(rearrange(frames, "t h w d -> (h w) d t"), target)
        return rearrange(pooled, "(h w) d t -> t h w d", h=height, w=width)


__all__ = ["SlowFastTokenBuilder"]
