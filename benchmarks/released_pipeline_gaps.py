# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
How far each of this package's own pipeline rules is from the released pipeline, on a converted tiny checkpoint in
the released layout and a real mp4 (the fixtures of `modeling_tests/test_released_pipeline.py`): for every setting
that `convert_official` writes, the converted model/processor with that one setting switched back to this package's
default ("before") and with the released setting ("after"), both against the re-statement of the released rules.

    HF_HUB_OFFLINE=1 python benchmarks/released_pipeline_gaps.py   # ~20 s on 2 CPU cores
"""

import copy
import dataclasses
import pathlib
import sys
import tempfile

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "modeling_tests"))

import test_released_pipeline as released  # noqa: E402
from test_conversion import HIDDEN_SIZE, IMAGE_SIZE, released_tensors, write_released_checkpoint  # noqa: E402

from slowfast_hf.convert_official import convert_official  # noqa: E402
from slowfast_hf.modeling_slowfast import set_layer_norm_eps  # noqa: E402

STEPS = 16


def greedy(model, inputs):
    return released.greedy_with_logits(model, inputs, STEPS)


def with_token_rule(model, **changes):
    """A copy of `model` whose token rule (config and builder) has `changes`."""
    model = copy.deepcopy(model)
    for name, value in changes.items():
        setattr(model.config, name, value)
    model.model.token_builder = dataclasses.replace(model.model.token_builder, **changes)
    return model


def main():
    root = pathlib.Path(tempfile.mkdtemp())
    tensors = released_tensors(seed=3)
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * HIDDEN_SIZE**-0.5
    source = write_released_checkpoint(root / f"slowfast-tiny-convnext-{IMAGE_SIZE}-frame6-s1t2", tensors)
    output = convert_official(source, root / "converted")
    video = released.write_video(
        root / "clip.mp4", released.VIDEO_FRAMES, height=released.VIDEO_HEIGHT, width=released.VIDEO_WIDTH
    ).path
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    placeholder = processor.video_token_id
    inputs = released.processor_inputs(processor, video)

    _, frames = released.released_frames(video, released.NUM_FRAMES)
    pixels = released.released_pixels(frames, IMAGE_SIZE)
    fast, slow = released.released_split(released.released_projected_features(pixels, tensors), 1, 2, 1, 1)
    expected_tokens, expected_logits = released.released_greedy(
        inputs["input_ids"], fast, slow, tensors, placeholder, STEPS
    )

    def generation_gap(candidate, candidate_inputs=inputs):
        tokens, logits = greedy(candidate, candidate_inputs)
        same = int((tokens == expected_tokens).sum())
        return f"{(logits - expected_logits).abs().max().item():.1e}, {same}/{STEPS} tokens"

    rows = [("everything released (converted)", generation_gap(model))]

    own = copy.deepcopy(model)
    own.config.cross_attn_generated_tokens = True
    rows.append(("cross_attn_generated_tokens=True", generation_gap(own)))

    eps = copy.deepcopy(model)
    set_layer_norm_eps(eps.model.vision_tower, 1e-6)
    rows.append(("vision layer norm eps 1e-6", generation_gap(eps)))

    torch_processor = copy.deepcopy(processor)
    torch_processor.video_processor.resize_backend = "torch"
    torch_pixels = torch_processor.video_processor(video, return_tensors="pt")["pixel_values_videos"]
    rows.append(
        (
            f'resize_backend="torch" (pixels {(torch_pixels - pixels).abs().max().item():.2f} apart)',
            generation_gap(model, {**inputs, "pixel_values_videos": torch_pixels}),
        )
    )

    # token rules: fast/slow tokens of the same frame features, against the released split
    with torch.no_grad():
        features = model.model.get_frame_features(inputs["pixel_values_videos"])
    for label, strides in (
        ("6 frames, temporal stride 4", dict(fast_temporal_stride=4)),
        (
            "6 frames, sampling stride 2, temporal stride 4",
            dict(fast_temporal_sampling_stride=2, fast_temporal_stride=4),
        ),
        ("7 frames, temporal stride 2", dict(fast_temporal_stride=2)),
    ):
        video_features = features if label.startswith("6") else torch.cat([features, features[:1]])
        expected_fast, _ = released.released_split(
            video_features, strides.get("fast_temporal_sampling_stride", 1), strides["fast_temporal_stride"], 1, 1
        )
        for remainder in ("zero_pad", "drop"):
            builder = dataclasses.replace(model.model.token_builder, fast_frame_remainder=remainder, **strides)
            ours, _ = builder(video_features)
            gap = (
                f"{(ours - expected_fast).abs().max().item():.1e}"
                if ours.shape == expected_fast.shape
                else f"{ours.shape[0]} vs {expected_fast.shape[0]} fast tokens"
            )
            rows.append((f'{label}: fast_frame_remainder="{remainder}"', gap))
    for remainder in ("partial", "drop"):
        builder = dataclasses.replace(model.model.token_builder, spatial_pool_remainder=remainder)
        rows.append((f'5x5 grid: spatial_pool_remainder="{remainder}"', f"slow grid {builder.slow_grid(2, 5, 5)}"))

    width = max(len(name) for name, _ in rows)
    print(f"{'setting':<{width}}  gap to the released pipeline (16-step greedy logits, equal tokens)")
    for name, gap in rows:
        print(f"{name:<{width}}  {gap}")


if __name__ == "__main__":
    main()
