# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Bookkeeping of visual inputs: video layouts, placing fast tokens at their placeholders, per-sample slow tokens."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import ModelOutput


@dataclass
class SlowFastVisualFeatures(ModelOutput):
    """
    Slow and fast tokens of a list of videos (or images), in LLM width. Compute them once with
    `get_video_features` / `get_image_features` and pass them as `video_features` / `image_features` to ask
    several questions without re-encoding.

    fast_tokens (`list[torch.Tensor]`): one `(num_fast_tokens, hidden_size)` tensor per video.
    slow_tokens (`list[torch.Tensor]`): one `(num_slow_tokens, hidden_size)` tensor per video.
    """

    fast_tokens: list[torch.Tensor] | None = None
    slow_tokens: list[torch.Tensor] | None = None


def flatten_videos(pixel_values_videos: torch.Tensor, video_num_frames) -> tuple[torch.Tensor, list[int]]:
    """Video pixels in either accepted layout -> ((total_frames, C, H, W), frames per video)."""
    if video_num_frames is not None:
        num_frames = video_num_frames.tolist() if torch.is_tensor(video_num_frames) else list(video_num_frames)
        if not num_frames or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in num_frames):
            raise ValueError(f"`video_num_frames` must be a non-empty list of integer counts >= 1, got {num_frames}.")
    if pixel_values_videos.ndim == 5:
        num_videos, max_frames = pixel_values_videos.shape[:2]
        if video_num_frames is None:
            num_frames = [max_frames] * num_videos
        elif len(num_frames) != num_videos or max(num_frames) > max_frames:
            raise ValueError(
                f"`video_num_frames` {num_frames} does not fit `pixel_values_videos` of {num_videos} videos "
                f"with {max_frames} frames each."
            )
        frames = torch.cat([video[:count] for video, count in zip(pixel_values_videos, num_frames)])
        return frames, num_frames
    if pixel_values_videos.ndim == 4:
        total_frames = pixel_values_videos.shape[0]
        if video_num_frames is None:
            num_frames = [total_frames]
        elif sum(num_frames) != total_frames:
            raise ValueError(
                f"`video_num_frames` {num_frames} adds up to {sum(num_frames)} frames but `pixel_values_videos` "
                f"holds {total_frames}."
            )
        return pixel_values_videos, num_frames
    raise ValueError(
        "`pixel_values_videos` must have shape (num_videos, frames, C, H, W) or (total_frames, C, H, W), "
        f"got {tuple(pixel_values_videos.shape)}."
    )


def place_fast_tokens(inputs_embeds, placeholder_mask, features: SlowFastVisualFeatures, kind: str):
    """Scatter each item's fast tokens into its run of placeholders; return the embeddings and, per item,
    (sample index, first placeholder position, slow tokens)."""
    if (
        not isinstance(features, SlowFastVisualFeatures)
        or features.fast_tokens is None
        or features.slow_tokens is None
    ):
        raise ValueError(f"`{kind}_features` must be a SlowFastVisualFeatures from `get_{kind}_features`.")
    if len(features.fast_tokens) != len(features.slow_tokens):
        raise ValueError(
            f"`{kind}_features` has {len(features.fast_tokens)} fast and {len(features.slow_tokens)} slow entries."
        )
    counts = [fast.shape[0] for fast in features.fast_tokens]
    positions = placeholder_mask.nonzero().tolist()  # [(sample, position)] in reading order
    if len(positions) != sum(counts):
        raise ValueError(
            f"The text holds {len(positions)} {kind} placeholder tokens but the {len(counts)} {kind}(s) give "
            f"{sum(counts)} fast tokens ({counts} per {kind}); build the text with the processor so each {kind} "
            "placeholder is expanded to its fast-token count."
        )
    items, start = [], 0
    for count, slow in zip(counts, features.slow_tokens):
        (sample, first), (last_sample, _) = positions[start], positions[start + count - 1]
        if sample != last_sample:
            raise ValueError(
                f"A {kind}'s {count} placeholder tokens are split between samples {sample} and {last_sample}."
            )
        items.append((sample, first, slow))
        start += count
    fast = torch.cat(features.fast_tokens).to(inputs_embeds.device, inputs_embeds.dtype)
    inputs_embeds = inputs_embeds.masked_scatter(placeholder_mask[..., None].to(inputs_embeds.device), fast)
    return inputs_embeds, items


def gather_slow_tokens(items, batch_size: int, mask_device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, its items' slow tokens in text order, padded: ((B, N, D) tokens, (B, N) bool mask on
    `mask_device`, the device of the token ids, like every other mask)."""
    per_sample = [[] for _ in range(batch_size)]
    for sample, first, slow in sorted(items, key=lambda item: item[:2]):
        per_sample[sample].append(slow)
    reference = items[0][2]
    rows = [torch.cat(row) if row else reference.new_zeros(0, reference.shape[-1]) for row in per_sample]
    slow_tokens = nn.utils.rnn.pad_sequence(rows, batch_first=True)
    lengths = torch.tensor([row.shape[0] for row in rows], device=mask_device)
    slow_token_mask = torch.arange(slow_tokens.shape[1], device=mask_device)[None, :] < lengths[:, None]
    return slow_tokens, slow_token_mask


def repeat_per_sample(features: SlowFastVisualFeatures, placeholder_mask, expand_size: int, kind: str):
    """Repeat each sample's items (found from its placeholder count) `expand_size` times, keeping reading order."""
    remaining = placeholder_mask.sum(dim=1).tolist()
    items = list(zip(features.fast_tokens, features.slow_tokens))
    fast_tokens, slow_tokens, index = [], [], 0
    for sample, count in enumerate(remaining):
        start = index
        while count > 0 and index < len(items):
            count -= items[index][0].shape[0]
            index += 1
        if count != 0:
            raise ValueError(
                f"Sample {sample}'s {kind} placeholder tokens do not match the fast-token counts of its {kind}s; "
                f"build the text with the processor so each {kind} placeholder is expanded to its fast-token count."
            )
        for _ in range(expand_size):
            fast_tokens += [fast for fast, _ in items[start:index]]
            slow_tokens += [slow for _, slow in items[start:index]]
    if index != len(items):
        raise ValueError(f"{len(items) - index} {kind}(s) have no placeholder tokens left in the text.")
    return SlowFastVisualFeatures(fast_tokens=fast_tokens, slow_tokens=slow_tokens)


__all__ = ["SlowFastVisualFeatures", "flatten_videos", "gather_slow_tokens", "place_fast_tokens", "repeat_per_sample"]
