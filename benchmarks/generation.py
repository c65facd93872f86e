# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Generation benchmark of the slow-fast model on CPU: decode latency, prefill time and peak memory against frames.

(a) per-token decode latency vs frames, at a fixed context: slow-fast with the slow K/V projected once and cached (what
    `generate` does), slow-fast re-projecting the slow K/V at every step (the released code's behaviour: each step runs
    `project_slow_tokens` on the slow tokens, then the same forward), and the text-only decoder (a plain
    `Qwen2ForCausalLM`) at the same context length (prompt + fast tokens).
(b) LLM prefill time of slow-fast vs a self-attention-only baseline (`Qwen2ForCausalLM` with every frame's 81 tokens in
    its context), at equal frames and at equal context length.
(c) peak memory vs frames: how much `generate` (8 new tokens) raises the peak memory of a fresh process (peak RSS less
    shared-library pages), from precomputed features or from pixels (`get_video_features` inside `generate`: vision
    encoder + projector in chunks of `vision_batch_size` = 32 frames, or all frames at once).

Videos have 81 slow tokens per frame (an 18x18 feature grid pooled 2x2, as the released ConvNeXt-576 models), the
prompt 100 text tokens. Fast tokens: temporal stride 4 and sampling stride max(1, frames // 64), so min(frames / 4, 16)
fast frames (at most 1,296 fast tokens; 128 frames is the paper's s2t4 recipe). (a) and (b) start from precomputed
visual features (the vision encoder costs the same for both models); times are the best of N interleaved runs.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/generation.py              # tiny and small (~100M) configs, ~7 min on 2 cores
    HF_HUB_OFFLINE=1 python benchmarks/generation.py --cpu-time   # one thread timed by its CPU time, ~11 min
    HF_HUB_OFFLINE=1 python benchmarks/generation.py --quick      # tiny config, fewer frames (smoke run, ~1 min)
`--cpu-time` is for a machine shared with other jobs, where wall-clock times of two threads are unreliable.
The plot goes to benchmarks/out/generation.png (needs matplotlib: `pip install -e ".[bench]"`).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig
from transformers.cache_utils import DynamicCache

from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration, SlowFastTokenBuilder, SlowFastVisualFeatures
from slowfast_hf.hybrid_attention import decoder_layers, project_slow_tokens
from slowfast_hf.slow_key_values import store_slow_key_values
from slowfast_hf.transformers_compat import CACHE_KWARG

GRID = 18  # per-frame feature grid: 9x9 = 81 slow tokens per frame
IMAGE_SIZE, PATCH_SIZE = 36, 2  # a tiny SigLIP with this 18x18 patch grid, for the runs from pixels
PROMPT_TOKENS = 100
NEW_TOKENS = 8  # memory runs


@dataclass
class Setting:
    name: str
    text_config: dict
    hybrid_layers: list[int]
    decode_frames: tuple[int, ...]
    prefill_frames: tuple[int, ...]
    baseline_frames: tuple[int, ...]  # the self-attention-only baseline at equal frames (context 81 per frame)
    memory_frames: tuple[int, ...]
    memory_sources: tuple[str, ...]
    decode_repeats: int = 10
    reproject_repeats: int = 3
    prefill_repeats: int = 3


# fmt: off
TINY = Setting(
    name="tiny",
    text_config=dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=1024,
    ),
    hybrid_layers=[0, 2],
    decode_frames=(16, 32, 64, 128, 256, 512, 1024, 1536),
    prefill_frames=(16, 32, 64, 128),
    baseline_frames=(16, 32, 64, 128),
    memory_frames=(16, 128, 512, 1536),
    memory_sources=("features", "pixels", "pixels-unchunked"),
    decode_repeats=30,
    reproject_repeats=5,
    prefill_repeats=5,
)
SMALL = Setting(  # Qwen2-shaped, ~100M parameters (tied embeddings); hybrid every 8th layer from 0 as released
    name="small",
    text_config=dict(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
        vocab_size=32000, tie_word_embeddings=True,
    ),
    hybrid_layers=[0, 8],
    decode_frames=(16, 32, 64, 128, 256, 512, 1024, 1536),
    prefill_frames=(16, 32, 64, 128),
    baseline_frames=(16, 32, 64, 128),
    memory_frames=(16, 128, 512, 1536),
    memory_sources=("features", "pixels"),
    reproject_repeats=2,
)
QUICK = Setting(
    name="tiny (quick)",
    text_config=TINY.text_config,
    hybrid_layers=TINY.hybrid_layers,
    decode_frames=(16, 128, 1536),
    prefill_frames=(16, 128),
    baseline_frames=(16, 128),
    memory_frames=(128, 1536),
    memory_sources=("pixels", "pixels-unchunked"),
)
# fmt: on
SETTINGS = {"tiny": TINY, "small": SMALL, "quick": QUICK}


def sampling_stride(num_frames: int) -> int:
    return max(1, num_frames // 64)


def token_builder(num_frames: int) -> SlowFastTokenBuilder:
    return SlowFastTokenBuilder(
        slow_spatial_stride=2, fast_temporal_stride=4, fast_temporal_sampling_stride=sampling_stride(num_frames)
    )


def build_slowfast(setting: Setting, num_frames: int = 16, vision_batch_size: int | None = 32):
    vocab_size = setting.text_config["vocab_size"]
    config = SlowFastConfig(
        text_config=Qwen2Config(**setting.text_config),
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        ),
        hybrid_layers=setting.hybrid_layers,
        fast_temporal_stride=4,
        fast_temporal_sampling_stride=sampling_stride(num_frames),
        vision_batch_size=vision_batch_size,
        image_token_id=vocab_size - 2,
        video_token_id=vocab_size - 1,
        tie_word_embeddings=setting.text_config.get("tie_word_embeddings", False),
    )
    torch.manual_seed(0)
    return SlowFastForConditionalGeneration(config).eval()


def build_text_model(setting: Setting) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**setting.text_config)).eval()


def prompt_ids(model, num_fast: int) -> torch.Tensor:
    """(1, PROMPT_TOKENS + num_fast): half the prompt, the video's placeholders, the other half."""
    text = (torch.arange(PROMPT_TOKENS) % (model.config.text_config.vocab_size - 2) + 1).tolist()
    half = PROMPT_TOKENS // 2
    return torch.tensor([text[:half] + [model.config.video_token_id] * num_fast + text[half:]])


def random_features(model, num_frames: int) -> SlowFastVisualFeatures:
    builder, hidden_size = token_builder(num_frames), model.config.text_config.hidden_size
    generator = torch.Generator().manual_seed(num_frames)
    return SlowFastVisualFeatures(
        fast_tokens=[torch.randn(builder.num_fast_tokens(num_frames, GRID, GRID), hidden_size, generator=generator)],
        slow_tokens=[torch.randn(builder.num_slow_tokens(num_frames, GRID, GRID), hidden_size, generator=generator)],
    )


CLOCK = time.perf_counter  # `--cpu-time`: time.thread_time, with one thread


def best_of(repeats: int, runs: dict) -> dict:
    """
    Seconds of the fastest of `repeats` calls of each of `runs` (name -> (function, untimed clean-up or None)). The
    runs take turns, so that a burst of load from other processes on the machine hits all of them alike.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, (function, clean_up) in runs.items():
            start = CLOCK()
            function()
            best[name] = min(best[name], CLOCK() - start)
            if clean_up is not None:
                clean_up()
    return best


# ---------------------------------------------------------------------------------------------------------------
# (a) decode latency


@torch.no_grad()
def decode_row(setting: Setting, model, text_model, num_frames: int) -> dict:
    """One decoding step at the context of the prompt (the step's token is dropped from the caches after each run)."""
    features = random_features(model, num_frames)
    input_ids = prompt_ids(model, features.fast_tokens[0].shape[0])
    output = model(input_ids=input_ids, video_features=features, use_cache=True, logits_to_keep=1)
    cache = getattr(output, CACHE_KWARG)  # it holds the slow K/V too
    token = output.logits[:, -1:].argmax(-1)
    slow_tokens = features.slow_tokens[0][None]  # (1, N, D)
    slow_token_mask = torch.ones(slow_tokens.shape[:2], dtype=torch.bool)
    text_cache = DynamicCache(config=text_model.config)
    text_model(input_ids=torch.randint(1, 100, input_ids.shape), logits_to_keep=1, **{CACHE_KWARG: text_cache})

    def cached_step():
        model(input_ids=token, cache=cache, logits_to_keep=1)

    def reprojecting_step():
        reprojected = project_slow_tokens(model.model.language_model, slow_tokens, slow_token_mask)
        store_slow_key_values(cache, reprojected, len(decoder_layers(model.model.language_model)))
        model(input_ids=token, cache=cache, logits_to_keep=1)

    def text_step():
        text_model(input_ids=token, logits_to_keep=1, **{CACHE_KWARG: text_cache})

    drop_step, drop_text_step = (lambda: cache.crop(-1)), (lambda: text_cache.crop(-1))
    best_of(1, dict(cached=(cached_step, drop_step), text_only=(text_step, drop_text_step)))  # warm up
    times = best_of(
        setting.decode_repeats, dict(cached=(cached_step, drop_step), text_only=(text_step, drop_text_step))
    )
    times |= best_of(setting.reproject_repeats, dict(reprojecting=(reprojecting_step, drop_step)))
    assert cache.get_seq_length() == text_cache.get_seq_length() == input_ids.shape[1]
    return dict(frames=num_frames, context=input_ids.shape[1], slow=slow_tokens.shape[1], **times)


# ---------------------------------------------------------------------------------------------------------------
# (b) prefill


@torch.no_grad()
def prefill_row(setting: Setting, model, text_model, num_frames: int) -> dict:
    """LLM prefill (`use_cache=True`, logits of the last position) of slow-fast and of the baseline."""
    features = random_features(model, num_frames)
    input_ids = prompt_ids(model, features.fast_tokens[0].shape[0])
    context, full_context = input_ids.shape[1], num_frames * (GRID // 2) ** 2 + PROMPT_TOKENS
    hidden_size = model.config.text_config.hidden_size

    def slowfast():
        model(input_ids=input_ids, video_features=features, use_cache=True, logits_to_keep=1)

    def baseline(length: int):
        embeds = torch.randn(1, length, hidden_size)
        return lambda: text_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)

    runs = dict(slowfast=(slowfast, None), same_context=(baseline(context), None))
    best_of(1, runs)  # warm up
    times = best_of(setting.prefill_repeats, runs)
    times["same_frames"] = None
    if num_frames in setting.baseline_frames:  # long contexts: one run
        repeats = setting.prefill_repeats if full_context <= 1500 else 1
        times["same_frames"] = best_of(repeats, dict(same_frames=(baseline(full_context), None)))["same_frames"]
    return dict(frames=num_frames, context=context, full_context=full_context, **times)


# ---------------------------------------------------------------------------------------------------------------
# (c) peak memory, one fresh process per point


def memory_mib() -> dict:
    """VmHWM (peak RSS), RssAnon and RssFile of this process, from /proc/self/status (Linux, kB)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "RssAnon", "RssFile")}


@torch.no_grad()
def memory_point(setting: Setting, num_frames: int, source: str) -> dict:
    """Peak RSS growth over `generate` (from pixels: including `get_video_features`), in a fresh process."""
    model = build_slowfast(setting, num_frames, vision_batch_size=None if source == "pixels-unchunked" else 32)
    builder = model.model.token_builder

    def visual_inputs(frames: int) -> dict:
        generator = torch.Generator().manual_seed(frames)
        if source == "features":
            return dict(video_features=random_features(model, frames))
        return dict(pixel_values_videos=torch.randn(frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator))

    def run(frames: int, inputs: dict):
        features = inputs.get("video_features")
        num_fast = builder.num_fast_tokens(frames, GRID, GRID) if features is None else len(features.fast_tokens[0])
        ids = prompt_ids(model, num_fast)
        model.generate(input_ids=ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0, **inputs)

    run(4, visual_inputs(4))  # warm up
    inputs = visual_inputs(num_frames)  # the caller's data: not counted
    before = memory_mib()
    run(num_frames, inputs)
    after = memory_mib()
    # the peak less the pages of shared libraries (which other processes' load can evict and bring back)
    peak_growth = after["VmHWM"] - after["RssFile"] - before["RssAnon"]
    return dict(frames=num_frames, source=source, peak_growth_mib=peak_growth)


def measure_memory(setting_key: str, num_frames: int, source: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--memory-point", setting_key, str(num_frames), source]
    # glibc: serve allocations of 1 MiB and more with mmap, so that freed tensors leave the RSS at once and its peak
    # is the peak of live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory run {setting_key} {num_frames} {source} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def linear_terms_mib(setting: Setting, num_frames: int) -> dict:
    """Sizes (float32) of what grows with the frames: unpooled projected features, slow tokens, slow K/V."""
    text = setting.text_config
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    slow = num_frames * (GRID // 2) ** 2
    return dict(
        frame_features=num_frames * GRID * GRID * text["hidden_size"] * 4 / 2**20,
        slow_tokens=slow * text["hidden_size"] * 4 / 2**20,
        slow_kv=len(setting.hybrid_layers) * slow * 2 * text["num_key_value_heads"] * head_dim * 4 / 2**20,
    )


# ---------------------------------------------------------------------------------------------------------------
# report


def print_table(title: str, header: list[str], rows: list[list]):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = " | ".join(f"{cell:>{width}}" for cell, width in zip(header, widths))
    print(f"\n{title}\n{line}\n{'-' * len(line)}")
    for row in rows:
        print(" | ".join(f"{cell:>{width}}" for cell, width in zip(row, widths)))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def run_setting(setting_key: str) -> dict:
    setting = SETTINGS[setting_key]
    model, text_model = build_slowfast(setting), build_text_model(setting)
    parameters = sum(p.numel() for p in text_model.parameters())
    text = setting.text_config
    print(
        f"\n=== {setting.name}: Qwen2-shaped decoder, hidden {text['hidden_size']}, "
        f"{text['num_hidden_layers']} layers, {text['num_attention_heads']}/{text['num_key_value_heads']} heads, "
        f"vocab {text['vocab_size']}, {parameters / 1e6:.1f}M parameters; hybrid layers {setting.hybrid_layers} ==="
    )
    start = time.perf_counter()
    decode = [decode_row(setting, model, text_model, frames) for frames in setting.decode_frames]
    print_table(
        f"(a) decode step latency, ms (best of {setting.decode_repeats}; re-projecting: best of "
        f"{setting.reproject_repeats})",
        ["frames", "context", "slow tokens", "cached K/V", "re-projecting", "text-only", "cached/text", "speed-up"],
        [
            [
                r["frames"], r["context"], r["slow"], ms(r["cached"]), ms(r["reprojecting"]), ms(r["text_only"]),
                f"{r['cached'] / r['text_only']:.3f}", f"{r['reprojecting'] / r['cached']:.1f}x",
            ]
            for r in decode
        ],
    )  # fmt: skip
    prefill = [prefill_row(setting, model, text_model, frames) for frames in setting.prefill_frames]
    reference = prefill[0]["same_frames"]
    print_table(
        f"(b) LLM prefill, ms (best of {setting.prefill_repeats}; equal frames past 1,500 tokens: one run)",
        ["frames", "context", "slow-fast", "baseline same context", "baseline same frames (context)",
         f"slow-fast / baseline@{prefill[0]['frames']}f"],
        [
            [
                r["frames"], r["context"], ms(r["slowfast"]), ms(r["same_context"]),
                "-" if r["same_frames"] is None else f"{ms(r['same_frames'])} ({r['full_context']})",
                f"{r['slowfast'] / reference:.3f}",
            ]
            for r in prefill
        ],
    )  # fmt: skip
    memory = [
        measure_memory(setting_key, frames, source)
        for source in setting.memory_sources
        for frames in setting.memory_frames
    ]
    print_table(
        f"(c) peak RSS growth over generate ({NEW_TOKENS} new tokens), MiB; float32 sizes that grow with frames, MiB",
        ["frames", *setting.memory_sources, "frame features", "slow tokens", "slow K/V"],
        [
            [
                frames,
                *(f"{m['peak_growth_mib']:.0f}" for m in memory if m["frames"] == frames),
                *(f"{size:.0f}" for size in linear_terms_mib(setting, frames).values()),
            ]
            for frames in setting.memory_frames
        ],
    )
    print(
        "  features: from precomputed features (not counted); pixels: get_video_features with vision_batch_size=32, "
        "then generate;\n  pixels-unchunked: vision_batch_size=None. frame features = unpooled projected features "
        "(T x 18 x 18 x hidden)."
    )
    print(f"\n{setting.name} runtime: {time.perf_counter() - start:.0f} s")
    return dict(name=setting.name, decode=decode, prefill=prefill, memory=memory, sources=setting.memory_sources)


def plot(results: list[dict], path: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f'\nmatplotlib is not installed: no plot (pip install -e ".[bench]" to get {path}).')
        return
    figure, axes = plt.subplots(len(results), 3, figsize=(16, 4.5 * len(results)), squeeze=False)
    for row, result in zip(axes, results):
        frames = [r["frames"] for r in result["decode"]]
        for key, label in (
            ("cached", "cached slow K/V"),
            ("reprojecting", "re-projecting"),
            ("text_only", "text-only"),
        ):
            row[0].plot(frames, [r[key] * 1e3 for r in result["decode"]], marker="o", label=label)
        row[0].set(
            xscale="log", yscale="log", xlabel="frames", ylabel="ms per token", title=f"{result['name']}: decode step"
        )
        frames = [r["frames"] for r in result["prefill"]]
        row[1].plot(frames, [r["slowfast"] * 1e3 for r in result["prefill"]], marker="o", label="slow-fast")
        row[1].plot(
            frames, [r["same_context"] * 1e3 for r in result["prefill"]], marker="s", label="baseline, same context"
        )
        same_frames = [
            (r["frames"], r["same_frames"] * 1e3) for r in result["prefill"] if r["same_frames"] is not None
        ]
        row[1].plot(*zip(*same_frames), marker="^", label="baseline, same frames")
        row[1].set(xscale="log", yscale="log", xlabel="frames", ylabel="ms", title=f"{result['name']}: LLM prefill")
        for source in result["sources"]:
            points = [(m["frames"], m["peak_growth_mib"]) for m in result["memory"] if m["source"] == source]
            row[2].plot(*zip(*points), marker="o", label=source)
        row[2].set(xlabel="frames", ylabel="MiB", title=f"{result['name']}: peak RSS growth of generate")
        for axis in row:
            axis.grid(True, which="both", alpha=0.3)
            axis.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config, fewer frames (smoke run)")
    parser.add_argument("--configs", nargs="+", choices=["tiny", "small"], default=["tiny", "small"])
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by its CPU time: robust to other jobs sharing the machine (wall clock otherwise)",
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    parser.add_argument("--memory-point", nargs=3, metavar=("SETTING", "FRAMES", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_point:
        setting_key, frames, source = args.memory_point
        print(json.dumps(memory_point(SETTINGS[setting_key], int(frames), source)))
        return

    if args.cpu_time:
        global CLOCK
        CLOCK = time.thread_time
        torch.set_num_threads(1)
    start = time.perf_counter()
    clock = "CPU time of the one thread" if args.cpu_time else "wall clock"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {clock}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    results = [run_setting(key) for key in (["quick"] if args.quick else args.configs)]
    plot(results, os.path.join(args.out, "generation.png"))
    summary = results[-1]
    decode = {r["frames"]: r for r in summary["decode"]}
    prefill = {r["frames"]: r for r in summary["prefill"]}
    print(f"\ntotal runtime: {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print(f"summary on the {summary['name']} config:")
    print(f"decode ratio @128 frames: {decode[128]['cached'] / decode[128]['text_only']:.3f}")
    print(f"cached speed-up @1536 frames: {decode[1536]['reprojecting'] / decode[1536]['cached']:.1f}x")
    # At 128 frames slow-fast's context (16 fast frames + prompt) is the baseline's at 16 frames: the baseline run
    # interleaved with slow-fast at 128 frames is that baseline, measured under the same load.
    assert prefill[128]["context"] == prefill[16]["full_context"]
    print(
        f"prefill ratio slow-fast(128f)/baseline(16f): {prefill[128]['slowfast'] / prefill[128]['same_context']:.3f}"
    )


if __name__ == "__main__":
    main()
