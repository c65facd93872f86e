# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Many questions about one video on CPU: prefix reuse vs from scratch, and compiled static-cache decoding.

(a) 8 questions (10 to 31 tokens) about one 128-frame video, 16 new tokens each, greedy, small config of
    benchmarks/generation.py (Qwen2-shaped, hidden 768, 12 layers, hybrid 0/8; 81 slow tokens per frame, 16 fast
    frames = 1,296 fast tokens; a 100-token prompt before the questions). From the video's precomputed features
    (`get_video_features`, what users do today; the vision encoder would cost the same in every row):
    - from scratch: one `generate` per question with `video_features` (each prefills the whole prompt and projects
      the slow K/V again);
    - prefix reuse, one by one: Transformers' recipe, the prefix run once into a cache, then per question
      `generate(prefix + question, cache=copy.deepcopy(prefix_cache))`;
    - prefix reuse, batched: `slowfast_hf.sessions.generate_with_shared_prefix`, the 8 questions in one batch.
    Times include the prefix; each is the best of N interleaved runs. Prefill tokens = decoder positions computed
    before the first new token (padding included).
(b) one decoding step with a static cache, eager vs `torch.compile(model.forward, fullgraph=True)` (inductor), at
    128 and 1,536 frames (context = prompt + fast tokens; the slow tokens only in the hybrid layers' cross term).

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/sessions.py           # ~6 min on 2 cores (compilation included)
    HF_HUB_OFFLINE=1 python benchmarks/sessions.py --cpu-time   # one thread timed by its CPU time (shared machine)
    HF_HUB_OFFLINE=1 python benchmarks/sessions.py --quick   # tiny config, smoke run
Compilation times (`compile s`) are wall clock in every mode.
"""

import argparse
import copy
import os
import sys
import time

import torch
from transformers.cache_utils import DynamicCache, StaticCache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generation
from generation import SETTINGS, best_of, build_slowfast, print_table, prompt_ids, random_features

from slowfast_hf.sessions import generate_with_shared_prefix
from slowfast_hf.transformers_compat import CACHE_KWARG

NUM_QUESTIONS, NEW_TOKENS, SESSION_FRAMES = 8, 16, 128
COMPILE_FRAMES = (128, 1536)


def questions(vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randint(3, vocab_size - 2, (10 + 3 * i,), generator=generator).tolist() for i in range(NUM_QUESTIONS)
    ]


@torch.no_grad()
def session_rows(setting_key: str, repeats: int) -> tuple[list, float]:
    setting = SETTINGS[setting_key]
    model = build_slowfast(setting, SESSION_FRAMES)
    features = random_features(model, SESSION_FRAMES)
    prefix = prompt_ids(model, features.fast_tokens[0].shape[0])  # (1, P): the video's placeholders inside
    asked = questions(model.config.text_config.vocab_size)
    decoding = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    answers = {}

    def from_scratch():
        answers["from scratch"] = [
            model.generate(input_ids=torch.cat([prefix, torch.tensor([q])], 1), video_features=features, **decoding)[
                0, prefix.shape[1] + len(q) :
            ].tolist()
            for q in asked
        ]

    def reuse_one_by_one():
        cache = DynamicCache(config=model.config.text_config)
        model(input_ids=prefix, video_features=features, logits_to_keep=1, **{CACHE_KWARG: cache})
        answers["prefix reuse, one by one"] = [
            model.generate(
                input_ids=torch.cat([prefix, torch.tensor([q])], 1), **{CACHE_KWARG: copy.deepcopy(cache)}, **decoding
            )[0, prefix.shape[1] + len(q) :].tolist()
            for q in asked
        ]

    def reuse_batched():
        tokens = generate_with_shared_prefix(model, dict(input_ids=prefix, video_features=features), asked, **decoding)
        answers["prefix reuse, batched"] = tokens.tolist()

    runs = {
        "from scratch": (from_scratch, None),
        "prefix reuse, one by one": (reuse_one_by_one, None),
        "prefix reuse, batched": (reuse_batched, None),
    }
    times = best_of(repeats, runs)
    assert answers["prefix reuse, one by one"] == answers["from scratch"], "prefix reuse changed the answers"
    matches = sum(a == b for a, b in zip(answers["prefix reuse, batched"], answers["from scratch"]))
    prefix_length, longest = prefix.shape[1], max(len(q) for q in asked)
    prefill_tokens = {
        "from scratch": sum(prefix_length + len(q) for q in asked),
        "prefix reuse, one by one": prefix_length + sum(len(q) for q in asked),
        "prefix reuse, batched": prefix_length + NUM_QUESTIONS * longest,
    }
    rows = [
        [name, f"{times[name]:.2f}", prefill_tokens[name], f"{times['from scratch'] / times[name]:.1f}x"]
        for name in runs
    ]
    print(f"  batched answers equal to from scratch, token for token: {matches}/{NUM_QUESTIONS}")
    return rows, times["from scratch"] / times["prefix reuse, batched"]


@torch.no_grad()
def decode_step_row(setting_key: str, num_frames: int, repeats: int) -> list:
    model = build_slowfast(SETTINGS[setting_key], num_frames)
    features = random_features(model, num_frames)
    input_ids = prompt_ids(model, features.fast_tokens[0].shape[0])
    cache = StaticCache(config=model.config.text_config, max_cache_len=input_ids.shape[1] + 1)
    output = model(input_ids=input_ids, video_features=features, logits_to_keep=1, **{CACHE_KWARG: cache})
    token, position_ids = output.logits[:, -1:].argmax(-1), torch.tensor([[input_ids.shape[1]]])
    step_inputs = dict(input_ids=token, position_ids=position_ids, logits_to_keep=1, **{CACHE_KWARG: cache})

    def rewind():  # the step's token is overwritten by the next run
        cache.crop(-1)

    torch._dynamo.reset()
    compiled = torch.compile(model.forward, fullgraph=True)
    start = time.perf_counter()
    compiled(**step_inputs)
    rewind()
    compile_seconds = time.perf_counter() - start
    eager_logits = model(**step_inputs).logits
    rewind()
    compiled_logits = compiled(**step_inputs).logits
    rewind()
    difference = (eager_logits - compiled_logits).abs().max().item()
    times = best_of(
        repeats,
        {"eager": (lambda: model(**step_inputs), rewind), "compiled": (lambda: compiled(**step_inputs), rewind)},
    )
    return [
        num_frames, input_ids.shape[1], features.slow_tokens[0].shape[0], f"{times['eager'] * 1e3:.2f}",
        f"{times['compiled'] * 1e3:.2f}", f"{times['eager'] / times['compiled']:.2f}x", f"{compile_seconds:.0f}",
        f"{difference:.1e}",
    ]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny config (smoke run)")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by its CPU time: robust to other jobs sharing the machine (wall clock otherwise)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        generation.CLOCK = time.thread_time  # what `best_of` times with
        torch.set_num_threads(1)
    setting_key = "tiny" if args.quick else "small"
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{'CPU time of the one thread' if args.cpu_time else 'wall clock'}; config {setting_key}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    rows, speed_up = session_rows(setting_key, repeats=1 if args.quick else 2)
    print_table(
        f"(a) {NUM_QUESTIONS} questions about one {SESSION_FRAMES}-frame video, {NEW_TOKENS} new tokens each, "
        "seconds (best of runs)",
        ["", "total s", "prefill tokens", "speed-up"],
        rows,
    )
    decode = [decode_step_row(setting_key, frames, repeats=10 if args.quick else 20) for frames in COMPILE_FRAMES]
    print_table(
        "(b) one decoding step with a static cache, ms (best of runs); compiled: torch.compile(model.forward, "
        "fullgraph=True), inductor",
        ["frames", "context", "slow tokens", "eager", "compiled", "speed-up", "compile s", "max |logit diff|"],
        decode,
    )
    print(f"\ntotal runtime: {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print(f"session speed-up @{NUM_QUESTIONS} questions: {speed_up:.1f}x")


if __name__ == "__main__":
    main()
