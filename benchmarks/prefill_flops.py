# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
LLM prefill FLOPs of a self-attention-only video LLM vs the slow-fast model, on Qwen2-7B-shaped configs.

Everything is counted with `torch.utils.flop_counter.FlopCounterMode` on models built on the meta device (no weights,
no memory, only shapes), through the project's own classes:

- baseline: a plain `Qwen2ForCausalLM` whose sequence holds every frame's visual tokens (81 per frame) plus the
  prompt; counted: decoder + LM head.
- slow-fast: `SlowFastForConditionalGeneration` (released configuration: hybrid layers 0/8/16/24, fast temporal
  stride 4, sampling stride 1, or 2 for 128 frames) fed precomputed `SlowFastVisualFeatures` (LLM width) built by
  the model's own `SlowFastTokenBuilder`; counted: slow-token K/V projection of the hybrid layers + decoder (with
  the hybrid cross-attention and gates) + LM head.
- vision: the model's own `get_frame_features` (ConvNeXt-XXL-shaped encoder at 576 px + `mlp2x_gelu` projector on
  the 18x18 = 324 tokens of a frame), counted for one frame and multiplied by the number of frames; the same for
  both models (the baseline pools the same features to 81 tokens per frame).

`SlowFastForConditionalGeneration.forward` cannot run on meta tensors (it reads tensor values: `mask.any()` and
`placeholder_mask.nonzero().tolist()` in the placeholder handling). The script tries it first; when it fails, it
runs the same forward step by step with the model's own pieces (embeddings, placeholder masks, `masked_scatter`
of the fast tokens, `project_slow_tokens`, `SlowFastModel._query_mask`, the hybrid decoder with its
`SlowFastAttentionContext`, the LM head). The skipped bookkeeping (`_place_fast_tokens`, `_gather_slow_tokens`)
does no floating-point work. A check on a tiny CPU model (real weights, SDPA math backend so attention is counted)
asserts that the step-by-step count equals the real forward's count op by op, and equals the same count on meta.

Notes on what FlopCounterMode counts: matmuls and convolutions only (2 FLOPs per multiply-add); norms,
activations, softmax and pooling are not counted. Attention is counted as dense (a causal mask does not halve it),
in both models alike. On CPU, FlopCounterMode counts SDPA as 0 (the CPU flash kernel has no formula); on meta SDPA
runs its math decomposition and is counted, which is why everything here runs on meta.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/prefill_flops.py          # Qwen2-7B / ConvNeXt-XXL shapes
    HF_HUB_OFFLINE=1 python benchmarks/prefill_flops.py --tiny   # tiny shapes, smoke run
"""

import argparse
import re
import time
from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import ConvNextConfig, Qwen2Config, Qwen2ForCausalLM
from transformers.modeling_utils import slice_logits_to_keep

from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration, SlowFastTokenBuilder, SlowFastVisualFeatures
from slowfast_hf.hybrid_attention import (
    SLOW_FAST_CONTEXT_KWARG,
    SlowFastAttentionContext,
    decoder_layers,
    project_slow_tokens,
)

TERA = 1e12
CROSS_ATTN_MODULE = re.compile(r"layers\.\d+\.self_attn\.cross_attn$")


@dataclass
class Setting:
    text_config: dict
    vision_config: dict
    image_size: int
    prompt_tokens: int = 100
    frames: tuple[int, ...] = (16, 32, 64, 128)
    hybrid_layers: tuple[int, ...] = (0, 8, 16, 24)
    fast_temporal_stride: int = 4
    sampling_stride: dict[int, int] = field(default_factory=lambda: {128: 2})  # frames -> stride, default 1


RELEASED = Setting(
    # Qwen2-7B(-Instruct)
    text_config=dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    # CLIP ConvNeXt-XXL; 576 px -> last stage 18x18x3072
    vision_config=dict(depths=[3, 4, 30, 3], hidden_sizes=[384, 768, 1536, 3072]),
    image_size=576,
)

TINY = Setting(
    text_config=dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=False,
    ),
    vision_config=dict(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64]),
    image_size=128,  # -> 4x4 grid -> 2x2 slow tokens per frame
    prompt_tokens=10,
    hybrid_layers=(0, 4),
)


def vision_config(setting: Setting) -> ConvNextConfig:
    # `image_size` must match the frames: `SlowFastModel.get_frame_features` checks it whenever the vision config
    # has both `patch_size` and `image_size`, which ConvNextConfig has (defaults 4 and 224).
    return ConvNextConfig(**setting.vision_config, image_size=setting.image_size)


def slowfast_config(setting: Setting, sampling_stride: int) -> SlowFastConfig:
    text_config = Qwen2Config(**setting.text_config)
    return SlowFastConfig(
        text_config=text_config,
        vision_config=vision_config(setting),
        projector_type="mlp2x_gelu",
        hybrid_layers=list(setting.hybrid_layers),
        cross_attn_gate="dynamic_tanh_warmup",
        cross_attn_query_positions="text",
        slow_spatial_stride=2,
        fast_spatial_stride=1,
        fast_temporal_stride=setting.fast_temporal_stride,
        fast_temporal_sampling_stride=sampling_stride,
        video_token_id=text_config.vocab_size - 1,
    )


def count(fn, *args, **kwargs):
    """(result, FlopCounterMode) of `fn(*args, **kwargs)`."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return result, counter


def module_flops(counter: FlopCounterMode, pattern: re.Pattern) -> int:
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if pattern.search(name))


def op_counts(counter: FlopCounterMode) -> dict[str, int]:
    return {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}


# ---------------------------------------------------------------------------------------------------------------------
# Slow-fast prefill


def slowfast_prefill_steps(model, input_ids, video_features: SlowFastVisualFeatures, logits_to_keep: int = 0):
    """
    `model(input_ids=..., video_features=..., logits_to_keep=...)` for one sample, step by step with the model's own
    pieces, avoiding the value reads (`.any()`, `.nonzero().tolist()`) that meta tensors cannot do. Each stage is
    counted separately. Returns {stage: FlopCounterMode}.
    """
    inner = model.model
    config = inner.config
    counters = {}
    with torch.no_grad():
        inputs_embeds = inner.get_input_embeddings()(input_ids)
        image_mask = inner.get_placeholder_mask(input_ids, inputs_embeds, config.image_token_id)
        video_mask = inner.get_placeholder_mask(input_ids, inputs_embeds, config.video_token_id)
        # `_place_fast_tokens` minus its position bookkeeping: the fast tokens fill the placeholders in order
        fast = torch.cat(video_features.fast_tokens).to(inputs_embeds.device, inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(video_mask[..., None], fast)
        # `_gather_slow_tokens` for one sample: no padding
        slow_tokens = torch.cat(video_features.slow_tokens)[None]
        slow_token_mask = torch.ones(slow_tokens.shape[:2], dtype=torch.bool, device=slow_tokens.device)
    slow_key_values, counters["slow_kv"] = count(
        project_slow_tokens, inner.language_model, slow_tokens, slow_token_mask
    )
    with torch.no_grad():
        query_mask = inner._query_mask(image_mask | video_mask, None, slow_key_values, True)
    outputs, counters["decoder"] = count(
        inner.language_model,
        inputs_embeds=inputs_embeds,
        use_cache=True,  # as in `model(...)` / `generate`: `config.use_cache` is True
        **{SLOW_FAST_CONTEXT_KWARG: SlowFastAttentionContext(slow_key_values, query_mask)},
    )
    _, counters["lm_head"] = count(
        lambda hidden: model.lm_head(slice_logits_to_keep(hidden, logits_to_keep)), outputs.last_hidden_state
    )
    return counters


def merged_op_counts(counters: dict[str, FlopCounterMode]) -> dict[str, int]:
    merged = {}
    for counter in counters.values():
        for op, flops in op_counts(counter).items():
            merged[op] = merged.get(op, 0) + flops
    return merged


def slowfast_inputs(model, num_frames: int, grid: tuple[int, int], prompt_tokens: int, device, dtype=None):
    """Prompt ids with the video's fast-token placeholders, and the video's `SlowFastVisualFeatures` (LLM width)
    built by the model's own token builder from per-frame features of the projector's shape."""
    config = model.config
    hidden_size = config.text_config.hidden_size
    builder = model.model.token_builder
    num_fast = SlowFastTokenBuilder.from_config(config).num_fast_tokens(num_frames, *grid)
    generator = torch.Generator().manual_seed(0) if device != "meta" else None
    with torch.device(device):
        if device == "meta":
            frame_features = torch.empty(num_frames, *grid, hidden_size, dtype=dtype)
        else:
            frame_features = torch.randn(num_frames, *grid, hidden_size, generator=generator, dtype=dtype)
        fast, slow = builder(frame_features)
        if fast.shape[0] != num_fast:
            raise AssertionError(f"token builder gave {fast.shape[0]} fast tokens, num_fast_tokens says {num_fast}")
        # text ids that are never the placeholder: 0, 1, 2, ...; the video sits after the first half of the prompt
        before = prompt_tokens // 2
        text = torch.arange(prompt_tokens) % (config.text_config.vocab_size - 1)
        video = torch.full((num_fast,), config.video_token_id)
        input_ids = torch.cat([text[:before], video, text[before:]])[None]
    return input_ids, SlowFastVisualFeatures(fast_tokens=[fast], slow_tokens=[slow])


def count_cross_attention_on_text_only(model, num_text: int, num_slow: int) -> int:
    """What-if, not what the model does: FLOPs of the hybrid layers' own `cross_attn` modules (cross-attention and
    gate) if they ran on the `num_text` query positions that receive the cross term instead of on every position."""
    language_model = model.model.language_model
    text_config = model.config.text_config
    with torch.device("meta"), torch.no_grad():
        slow = torch.empty(1, num_slow, text_config.hidden_size)
        key_mask = torch.ones(1, num_slow, dtype=torch.bool)
        slow_key_values = project_slow_tokens(language_model, slow, key_mask)
        query_mask = torch.ones(1, num_text, dtype=torch.bool)
    total = 0
    for index, (slow_key, slow_value) in slow_key_values.key_values.items():
        attention = decoder_layers(language_model)[index].self_attn
        heads = attention.q_proj.out_features // attention.head_dim
        with torch.device("meta"):
            query = torch.empty(1, heads, num_text, attention.head_dim)
            attn_output = torch.empty(1, num_text, heads, attention.head_dim)
        _, counter = count(
            attention.cross_attn, query, attn_output, slow_key, slow_value, key_mask, query_mask, attention.scaling
        )
        total += counter.get_total_flops()
    return total


_REAL_FORWARD_FAILURE = {}


def count_slowfast(setting: Setting, num_frames: int, grid, logits_to_keep_variants=(0, 1)):
    stride = setting.sampling_stride.get(num_frames, 1)
    config = slowfast_config(setting, stride)
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(config).eval()
    input_ids, features = slowfast_inputs(model, num_frames, grid, setting.prompt_tokens, "meta")

    if "reason" not in _REAL_FORWARD_FAILURE:  # try the real forward once
        try:
            _, counter = count(model, input_ids=input_ids, video_features=features)
            _REAL_FORWARD_FAILURE["reason"] = None
            steps = merged_op_counts(slowfast_prefill_steps(model, input_ids, features))
            if op_counts(counter) != steps:
                raise AssertionError(f"forward on meta counts {op_counts(counter)}, the steps count {steps}")
        except (RuntimeError, NotImplementedError) as error:
            _REAL_FORWARD_FAILURE["reason"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"

    results = {}
    for logits_to_keep in logits_to_keep_variants:
        counters = slowfast_prefill_steps(model, input_ids, features, logits_to_keep)
        results[logits_to_keep] = dict(
            total=sum(c.get_total_flops() for c in counters.values()),
            slow_kv=counters["slow_kv"].get_total_flops(),
            cross_attn=module_flops(counters["decoder"], CROSS_ATTN_MODULE),
            lm_head=counters["lm_head"].get_total_flops(),
        )
    num_fast, num_slow = features.fast_tokens[0].shape[0], features.slow_tokens[0].shape[0]
    text_only = count_cross_attention_on_text_only(model, input_ids.shape[1] - num_fast, num_slow)
    for result in results.values():
        result["text_only_total"] = result["total"] - result["cross_attn"] + text_only
    return dict(
        sampling_stride=stride,
        context=input_ids.shape[1],
        fast=features.fast_tokens[0].shape[0],
        slow=features.slow_tokens[0].shape[0],
        flops=results,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Baseline and vision


def count_baseline(setting: Setting, num_frames: int, visual_tokens: int, logits_to_keep_variants=(0, 1)):
    text_config = Qwen2Config(**setting.text_config)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(text_config).eval()
        # a LLaVA-style sequence: projected visual tokens and prompt embeddings, all in the context
        context = visual_tokens + setting.prompt_tokens
        inputs_embeds = torch.empty(1, context, text_config.hidden_size)
    results = {}
    for logits_to_keep in logits_to_keep_variants:
        _, counter = count(model, inputs_embeds=inputs_embeds, use_cache=True, logits_to_keep=logits_to_keep)
        results[logits_to_keep] = dict(
            total=counter.get_total_flops(),
            lm_head=module_flops(counter, re.compile(r"(^|\.)lm_head$")),
        )
    return dict(context=context, flops=results)


def count_vision_per_frame(setting: Setting):
    """FLOPs of the model's `get_frame_features` (vision tower + projector) on one frame, and its feature grid."""
    config = slowfast_config(setting, 1)
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(config).eval()
        pixels = torch.empty(1, config.vision_config.num_channels, setting.image_size, setting.image_size)
    features, counter = count(model.model.get_frame_features, pixels)
    projector = module_flops(counter, re.compile(r"(^|\.)SlowFastMultiModalProjector$"))
    grid = tuple(features.shape[1:3])
    return counter.get_total_flops(), projector, grid


# ---------------------------------------------------------------------------------------------------------------------
# Check: the step-by-step count is the real forward's count


def check_steps_match_forward(setting: Setting) -> str:
    """On a tiny CPU model with random weights (SDPA math backend, so attention is counted on CPU too): the
    step-by-step slow-fast count equals `model(...)`'s count op by op, and the same steps on meta count the same."""
    tiny = Setting(**{**TINY.__dict__, "frames": (8,)})
    torch.manual_seed(0)
    config = slowfast_config(tiny, 1)
    model = SlowFastForConditionalGeneration(config).eval()
    grid = (4, 4)
    input_ids, features = slowfast_inputs(model, 8, grid, tiny.prompt_tokens, "cpu")
    with sdpa_kernel([SDPBackend.MATH]):
        _, real = count(model, input_ids=input_ids, video_features=features)
        steps_cpu = merged_op_counts(slowfast_prefill_steps(model, input_ids, features))
    with torch.device("meta"):
        meta_model = SlowFastForConditionalGeneration(config).eval()
    meta_ids, meta_features = slowfast_inputs(meta_model, 8, grid, tiny.prompt_tokens, "meta")
    steps_meta = merged_op_counts(slowfast_prefill_steps(meta_model, meta_ids, meta_features))
    real = op_counts(real)
    if not (real == steps_cpu == steps_meta) or not real:
        raise AssertionError(f"step-by-step count differs: forward {real}, steps cpu {steps_cpu}, meta {steps_meta}")
    return f"OK ({sum(real.values())} FLOPs, {', '.join(f'{k}={v}' for k, v in sorted(real.items()))})"


# ---------------------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke run)")
    args = parser.parse_args()
    setting = TINY if args.tiny else RELEASED
    unit, scale = ("MFLOPs", 1e6) if args.tiny else ("TFLOPs", TERA)
    start = time.perf_counter()

    check = check_steps_match_forward(setting)

    vision_frame, projector_frame, grid = count_vision_per_frame(setting)
    # the baseline's context holds every frame's pooled tokens: exactly the slow tokens of the same video
    pooling = SlowFastTokenBuilder.from_config(slowfast_config(setting, 1))
    slow_per_frame = pooling.num_slow_tokens(2, *grid) // 2
    rows = []
    for frames in setting.frames:
        base = count_baseline(setting, frames, pooling.num_slow_tokens(frames, *grid))
        rows.append(dict(frames=frames, model="baseline", context=base["context"], slow=0, flops=base["flops"]))
    for frames in setting.frames:
        sf = count_slowfast(setting, frames, grid)
        label = f"slow-fast s{sf['sampling_stride']}t{setting.fast_temporal_stride}"
        rows.append(
            dict(
                frames=frames, model=label, context=sf["context"], slow=sf["slow"], fast=sf["fast"], flops=sf["flops"]
            )
        )

    reference = next(r for r in rows if r["model"] == "baseline" and r["frames"] == setting.frames[0])
    ref_total = {k: reference["flops"][k]["total"] for k in (0, 1)}

    text = Qwen2Config(**setting.text_config)
    print(
        f"LLM: Qwen2-shaped, hidden {text.hidden_size}, intermediate {text.intermediate_size}, "
        f"{text.num_hidden_layers} layers, {text.num_attention_heads} heads, {text.num_key_value_heads} KV heads, "
        f"vocab {text.vocab_size}; hybrid layers {list(setting.hybrid_layers)}; prompt {setting.prompt_tokens} tokens"
    )
    print(
        f"vision: ConvNeXt depths {setting.vision_config['depths']} widths {setting.vision_config['hidden_sizes']} "
        f"at {setting.image_size} px -> {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens/frame; "
        f"{vision_frame / scale:.4f} {unit}/frame (projector {projector_frame / scale:.4f}); "
        f"{slow_per_frame} tokens/frame after 2x2 pooling"
    )
    print("counted with FlopCounterMode on the meta device; LLM prefill = decoder (+ hybrid layers) + LM head on all")
    print(
        "context positions (plain forward, logits_to_keep=0); "
        f"ratio = LLM prefill / baseline@{setting.frames[0]}f LLM prefill"
    )
    reason = _REAL_FORWARD_FAILURE.get("reason")
    if reason is None:
        print("slow-fast: SlowFastForConditionalGeneration.forward ran on meta; its count equals the step-by-step one")
    else:
        print(f"slow-fast: SlowFastForConditionalGeneration.forward fails on meta ({reason});")
        print("           counted the same forward step by step with the model's own pieces instead")
    print(f"check: step-by-step count == real forward count (tiny CPU model, op by op) and == meta count: {check}")
    print()

    header = (
        f"{'frames':>6} | {'model':<17} | {'context length':>14} | {'slow tokens':>11} | "
        f"{'LLM prefill ' + unit:>18} | {'vision ' + unit:>13} | {'ratio vs baseline@%df' % setting.frames[0]:>21}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        total = row["flops"][0]["total"]
        print(
            f"{row['frames']:>6} | {row['model']:<17} | {row['context']:>14} | {row['slow']:>11} | "
            f"{total / scale:>18.3f} | {row['frames'] * vision_frame / scale:>13.2f} | {total / ref_total[0]:>21.3f}"
        )
    print()

    print(
        f"slow-fast breakdown ({unit}): "
        "fast tokens in context | slow K/V projection | cross-attention (+gate) | LM head"
    )
    for row in rows:
        if row["model"] == "baseline":
            continue
        f0 = row["flops"][0]
        print(
            f"  {row['frames']:>4} frames: {row['fast']:>5} fast | {f0['slow_kv'] / scale:.3f} | "
            f"{f0['cross_attn'] / scale:.3f} | {f0['lm_head'] / scale:.3f}"
        )
    sf128 = next(r for r in rows if r["model"] != "baseline" and r["frames"] == setting.frames[-1])
    last = setting.frames[-1]
    print(
        f"with logits only for the last position (logits_to_keep=1, as generate's prefill): "
        f"ratio slow-fast({last}f)/baseline({setting.frames[0]}f) = "
        f"{sf128['flops'][1]['total'] / ref_total[1]:.3f}"
    )
    print(
        "what-if, not the current model: cross-attention (+gate) only on the text positions that receive it "
        f"(the {sf128['context'] - sf128['fast']} prompt tokens, not all {sf128['context']}): "
        f"ratio slow-fast({last}f)/baseline({setting.frames[0]}f) = "
        f"{sf128['flops'][0]['text_only_total'] / ref_total[0]:.3f}"
    )
    print(f"runtime: {time.perf_counter() - start:.1f} s")
    print(f"ratio slow-fast({last}f)/baseline({setting.frames[0]}f): {sf128['flops'][0]['total'] / ref_total[0]:.3f}")


if __name__ == "__main__":
    main()
