# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Bookkeeping of visual inputs: video layouts, placing fast tokens at their placeholders, per-sample slow tokens."""

from dataclasses import dataclass
from itertools import accumulate, pairwise

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling


@dataclass
class SlowFastVisualFeatures(BaseModelOutputWithPooling):
    """
    The slow and fast tokens of a list of videos (or images), in LLM width, and the vision encoder's outputs they came
    from (Transformers' `BaseModelOutputWithPooling` convention). Compute them once with `get_video_features` /
    `get_image_features` and pass them as `video_features` / `image_features` to ask several questions without
    re-encoding.

    last_hidden_state (`torch.FloatTensor` of shape `(total_frames, ...)`, *optional*):
        The vision encoder's last hidden state of every frame (every video's frames one after another).
    pooler_output (`list[torch.Tensor]`, *optional*):
        What each video places in the sequence: its fast tokens (the same tensors as `fast_tokens`).
    hidden_states / attentions (`tuple(torch.FloatTensor)`, *optional*):
        The vision encoder's, over every frame, when `output_hidden_states` / `output_attentions` is set.
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
    if not torch.is_tensor(pixel_values_videos):
        raise ValueError(f"`pixel_values_videos` must be a torch.Tensor, got {type(pixel_values_videos).__name__}.")
    if pixel_values_videos.ndim in (4, 5) and 0 in pixel_values_videos.shape[:-3]:
        raise ValueError(
            "`pixel_values_videos` must hold at least one video of at least one frame, got shape "
            f"{tuple(pixel_values_videos.shape)}."
        )
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


def check_pixels(pixels: torch.Tensor, argument: str) -> None:
    """Refuse pixels the vision encoder would silently misread: not floating point (raw `uint8` frames) or not
    finite (one `inf` turns every logit into NaN)."""
    if not torch.is_tensor(pixels):
        raise ValueError(f"`{argument}` must be a torch.Tensor, got {type(pixels).__name__}.")
    if not pixels.is_floating_point():
        raise ValueError(
            f"`{argument}` must be floating-point pixels, rescaled and normalised as the processor makes them, got "
            f"dtype {pixels.dtype}; pass raw frames through the processor (`SlowFastProcessor` / "
            "`SlowFastVideoProcessor`) first."
        )
    if not is_finite(pixels):
        raise ValueError(f"`{argument}` holds {int((~torch.isfinite(pixels)).sum())} non-finite values (inf or NaN).")


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, without a tensor-sized temporary (the min and max propagate inf and NaN)."""
    return tensor.numel() == 0 or bool(torch.isfinite(torch.stack(torch.aminmax(tensor))).all())


def check_visual_features(features, kind: str, hidden_size: int) -> None:
    """Refuse `image_features` / `video_features` that are not what `get_{kind}_features` returns for this model."""
    argument = f"`{kind}_features`"
    if (
        not isinstance(features, SlowFastVisualFeatures)
        or features.fast_tokens is None
        or features.slow_tokens is None
    ):
        raise ValueError(f"{argument} must be a SlowFastVisualFeatures from `get_{kind}_features`.")
    if len(features.fast_tokens) != len(features.slow_tokens):
        raise ValueError(
            f"{argument} has {len(features.fast_tokens)} fast and {len(features.slow_tokens)} slow entries."
        )
    if not features.fast_tokens:
        raise ValueError(f"{argument} holds no {kind}: its `fast_tokens` and `slow_tokens` are empty lists.")
    for part in ("fast_tokens", "slow_tokens"):
        for index, tokens in enumerate(getattr(features, part)):
            where = f"{argument}.{part}[{index}]"
            if not torch.is_tensor(tokens) or tokens.ndim != 2 or tokens.shape[0] == 0:
                shape = tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__
                raise ValueError(f"{where} must be a (num_tokens >= 1, hidden_size) tensor, got {shape}.")
            if tokens.shape[1] != hidden_size:
                raise ValueError(
                    f"{where} has width {tokens.shape[1]} but this model's decoder has hidden_size {hidden_size}; "
                    f"compute the features with this model's `get_{kind}_features`."
                )
            if not tokens.is_floating_point() or not is_finite(tokens):
                raise ValueError(f"{where} must hold finite floating-point values (dtype {tokens.dtype}).")


def _placeholder_runs(positions: list[list[int]]) -> list[int]:
    """Indices into `positions` ((sample, position) pairs in reading order) where a run of consecutive placeholders
    starts."""
    return [
        index
        for index, (sample, position) in enumerate(positions)
        if index == 0 or positions[index - 1] != [sample, position - 1]
    ]


def _run_lengths(positions: list[list[int]]) -> list[int]:
    starts = _placeholder_runs(positions) + [len(positions)]
    return [end - start for start, end in pairwise(starts)]


def place_fast_tokens(inputs_embeds, placeholder_mask, features: SlowFastVisualFeatures, kind: str):
    """Scatter each item's fast tokens into its run of placeholders; return the embeddings and, per item,
    (sample index, first placeholder position, slow tokens)."""
    check_visual_features(features, kind, inputs_embeds.shape[-1])
    counts = [fast.shape[0] for fast in features.fast_tokens]
    positions = placeholder_mask.nonzero().tolist()  # [(sample, position)] in reading order
    if len(positions) != sum(counts):
        raise ValueError(
            f"The text holds {len(positions)} {kind} placeholder tokens but the {len(counts)} {kind}(s) give "
            f"{sum(counts)} fast tokens ({counts} per {kind}); build the text with the processor so each {kind} "
            "placeholder is expanded to its fast-token count."
        )
    # Every run of consecutive placeholders must hold whole items (several adjacent items may share one run): an
    # item split by text, or runs whose lengths do not follow the items' counts (swapped videos), is refused.
    item_starts = [0, *accumulate(counts[:-1])]
    stray_runs = sorted(set(_placeholder_runs(positions)) - set(item_starts))
    if stray_runs:
        sample, position = positions[stray_runs[0]]
        runs = _run_lengths(positions)
        raise ValueError(
            f"The text's {kind} placeholder runs have lengths {runs} but the {len(counts)} {kind}(s) give {counts} "
            f"fast tokens, in that order: the run at sample {sample}, position {position} does not start a {kind}. "
            f"Each {kind}'s placeholders must be one unbroken run, in the order of the {kind}s."
        )
    items = [(*positions[start], slow) for start, slow in zip(item_starts, features.slow_tokens)]
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


__all__ = [
    "SlowFastVisualFeatures",
    "check_pixels",
    "check_visual_features",
    "flatten_videos",
    "gather_slow_tokens",
    "place_fast_tokens",
    "repeat_per_sample",
]
