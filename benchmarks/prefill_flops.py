# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
LLM prefill FLOPs of a self-attention-only video LLM vs the slow-fast model, on Qwen2-7B-shaped configs.

Counted with `torch.utils.flop_counter.FlopCounterMode` on models built on the meta device (shapes only, no weights):

- baseline: a plain `Qwen2ForCausalLM` whose context holds every frame's 81 visual tokens plus a 100-token prompt.
- slow-fast: `SlowFastForConditionalGeneration.forward` (released configuration: hybrid layers 0/8/16/24, fast temporal
  stride 4, sampling stride 1, or 2 for 128 frames) on CPU token ids and meta `SlowFastVisualFeatures`.
- vision: the model's `get_frame_features` (ConvNeXt-XXL-shaped encoder + `mlp2x_gelu` projector) on one 576 px frame,
  times the number of frames; the same for both models.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/prefill_flops.py          # Qwen2-7B / ConvNeXt-XXL shapes
    HF_HUB_OFFLINE=1 python benchmarks/prefill_flops.py --tiny   # tiny shapes, smoke run
"""

import argparse
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ConvNextConfig, Qwen2Config, Qwen2ForCausalLM

from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration, SlowFastTokenBuilder, SlowFastVisualFeatures


@dataclass
class Setting:
    text_config: dict
    vision_config: dict
    image_size: int
    prompt_tokens: int = 100
    frames: tuple[int, ...] = (16, 32, 64, 128)
    hybrid_layers: tuple[int, ...] = (0, 8, 16, 24)
    fast_temporal_stride: int = 4
    sampling_stride: dict[int, int] = field(default_factory=lambda: {128: 2})  # frames -> stride; default 1


# fmt: off
RELEASED = Setting(
    text_config=dict(  # Qwen2-7B
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
    ),
    vision_config=dict(depths=[3, 4, 30, 3], hidden_sizes=[384, 768, 1536, 3072]),  # CLIP ConvNeXt-XXL
    image_size=576,  # -> 18x18 feature grid
)
TINY = Setting(
    text_config=dict(
        hidden_size=64, intermediate_size=176, num_hidden_layers=8, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False,
    ),
    vision_config=dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64]),
    image_size=128,  # -> 4x4 feature grid
    prompt_tokens=10,
    hybrid_layers=(0, 4),
)
# fmt: on


def slowfast_config(setting: Setting, sampling_stride: int = 1) -> SlowFastConfig:
    vocab_size = setting.text_config["vocab_size"]
    return SlowFastConfig(
        text_config=Qwen2Config(**setting.text_config),
        vision_config=ConvNextConfig(**setting.vision_config),
        projector_type="mlp2x_gelu",
        hybrid_layers=list(setting.hybrid_layers),
        cross_attn_gate="dynamic_tanh_warmup",
        cross_attn_query_positions="text",
        slow_spatial_stride=2,
        fast_spatial_stride=1,
        fast_temporal_stride=setting.fast_temporal_stride,
        fast_temporal_sampling_stride=sampling_stride,
        image_token_id=vocab_size - 2,
        video_token_id=vocab_size - 1,
    )


def count(fn, **kwargs) -> FlopCounterMode:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(**kwargs)
    return counter


def module_flops(counter: FlopCounterMode, suffix: str) -> int:
    """FLOPs counted inside the modules whose qualified names end with `suffix`."""
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith(suffix))


def count_vision(setting: Setting) -> tuple[int, tuple[int, int]]:
    """FLOPs of `get_frame_features` (vision encoder + projector) on one frame, and the frame's feature grid."""
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(slowfast_config(setting)).eval()
        pixels = torch.empty(1, 3, setting.image_size, setting.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        features = model.model.get_frame_features(pixels)
    return counter.get_total_flops(), tuple(features.shape[1:3])


def count_baseline(setting: Setting, num_visual: int) -> dict:
    """Qwen2ForCausalLM prefill on `num_visual` visual tokens + the prompt (embeddings on meta)."""
    config = Qwen2Config(**setting.text_config)
    context = num_visual + setting.prompt_tokens
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config).eval()
        inputs_embeds = torch.empty(1, context, config.hidden_size)
    counter = count(model, inputs_embeds=inputs_embeds, use_cache=True)
    return dict(context=context, slow=0, total=counter.get_total_flops())


def count_slowfast(setting: Setting, num_frames: int, grid: tuple[int, int]) -> dict:
    """`SlowFastForConditionalGeneration.forward` prefill on one video and the prompt."""
    stride = setting.sampling_stride.get(num_frames, 1)
    config = slowfast_config(setting, stride)
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(config).eval()
    builder = SlowFastTokenBuilder.from_config(config)
    num_fast, num_slow = builder.num_fast_tokens(num_frames, *grid), builder.num_slow_tokens(num_frames, *grid)
    # CPU ids: half the prompt, the video's fast-token placeholders, the other half (text ids avoid the placeholders)
    text = (torch.arange(setting.prompt_tokens) % (config.text_config.vocab_size - 2)).tolist()
    half = len(text) // 2
    input_ids = torch.tensor([text[:half] + [config.video_token_id] * num_fast + text[half:]])
    hidden_size = config.text_config.hidden_size
    features = SlowFastVisualFeatures(
        fast_tokens=[torch.empty(num_fast, hidden_size, device="meta")],
        slow_tokens=[torch.empty(num_slow, hidden_size, device="meta")],
    )
    counter = count(model, input_ids=input_ids, video_features=features, use_cache=True)
    return dict(
        model=f"slow-fast s{stride}t{setting.fast_temporal_stride}",
        context=input_ids.shape[1],
        fast=num_fast,
        slow=num_slow,
        total=counter.get_total_flops(),
        slow_kv=module_flops(counter, ".cross_attn.kv_proj"),  # in each hybrid layer, before `cross_attn`'s forward
        cross_attn=module_flops(counter, ".cross_attn"),  # cross-attention + gate, at the text positions
        lm_head=module_flops(counter, ".lm_head"),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke run)")
    setting = TINY if parser.parse_args().tiny else RELEASED
    unit, scale = ("MFLOPs", 1e6) if setting is TINY else ("TFLOPs", 1e12)
    start = time.perf_counter()

    vision_frame, grid = count_vision(setting)
    pooling = SlowFastTokenBuilder.from_config(slowfast_config(setting))  # the baseline keeps the 2x2-pooled tokens
    rows = [
        dict(frames=t, model="baseline", **count_baseline(setting, pooling.num_slow_tokens(t, *grid)))
        for t in setting.frames
    ]
    rows += [dict(frames=t, **count_slowfast(setting, t, grid)) for t in setting.frames]
    first, last = setting.frames[0], setting.frames[-1]
    reference = rows[0]["total"]  # baseline at the fewest frames

    text = setting.text_config
    print(
        f"LLM: Qwen2-shaped, hidden {text['hidden_size']}, {text['num_hidden_layers']} layers, vocab "
        f"{text['vocab_size']}; hybrid layers {list(setting.hybrid_layers)}; prompt {setting.prompt_tokens} tokens"
    )
    print(
        f"vision: ConvNeXt depths {setting.vision_config['depths']} at {setting.image_size} px -> "
        f"{grid[0]}x{grid[1]} features/frame, {vision_frame / scale:.3f} {unit}/frame (encoder + projector)"
    )
    print("Counted: FlopCounterMode on meta-device models, matmuls and convolutions only (2 FLOPs per multiply-add).")
    print("LLM prefill = one forward (use_cache=True): decoder incl. hybrid layers (slow K/V, cross-attention, gates)")
    print("  + LM head on all positions; attention = its SDPA matmuls on meta, dense (causal mask not halving it).")
    print()
    header = (
        f"{'frames':>6} | {'model':<17} | {'context length':>14} | {'slow tokens':>11} | "
        f"{'LLM prefill ' + unit:>18} | {'vision ' + unit:>13} | {f'ratio vs baseline@{first}f':>21}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['frames']:>6} | {row['model']:<17} | {row['context']:>14} | {row['slow']:>11} | "
            f"{row['total'] / scale:>18.3f} | {row['frames'] * vision_frame / scale:>13.2f} | "
            f"{row['total'] / reference:>21.3f}"
        )
    print()
    print(f"slow-fast breakdown ({unit}): fast tokens | slow K/V projection | cross-attention + gate | LM head")
    for row in rows[len(setting.frames) :]:
        print(
            f"  {row['frames']:>4} frames: {row['fast']:>5} | {row['slow_kv'] / scale:.3f} | "
            f"{row['cross_attn'] / scale:.3f} | {row['lm_head'] / scale:.3f}"
        )
    print(f"runtime: {time.perf_counter() - start:.1f} s")
    print(f"ratio slow-fast({last}f)/baseline({first}f): {rows[-1]['total'] / reference:.3f}")


if __name__ == "__main__":
    main()
