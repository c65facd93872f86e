"""Generation: the slow keys/values are projected once per prompt and reused by every decoding step; greedy and sampled
`generate` against full recomputation; batched left-padded generation; precomputed visual features (many questions
about one video); chunked vision encoding; a 1,536-frame video with bounded memory."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_slowfast_model, video_prompt
from test_modeling import activate_hybrid_layers, frames, image_prompt, pad
from torch.utils.flop_counter import FlopCounterMode

from slowfast_hf import SlowFastConfig, hybrid_attention
from slowfast_hf.hybrid_attention import decoder_layers, hybrid_layer_indices, project_slow_tokens
from slowfast_hf.transformers_compat import CACHE_KWARG

PAD_ID = 0
ATOL = 1e-5


@pytest.fixture(scope="module")
def hybrid_model():
    """A tiny model (hybrid layers 0 and 2) whose hybrid layers are active. Read-only: tests must not change it."""
    return activate_hybrid_layers(tiny_slowfast_model(seed=5))


def generate(model, input_ids, max_new_tokens=8, seed=None, **kwargs):
    """-> (new tokens as lists, raw logits of every step (steps, rows, vocab)). Sampling when `seed` is given."""
    if seed is not None:
        torch.manual_seed(seed)
    decoding = dict(do_sample=False) if seed is None else dict(do_sample=True, top_k=0)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            max_new_tokens=max_new_tokens,
            pad_token_id=PAD_ID,
            output_logits=True,
            return_dict_in_generate=True,
            **decoding,
            **kwargs,
        )
    return output.sequences[:, input_ids.shape[1] :].tolist(), torch.stack(output.logits)


@torch.no_grad()
def recompute_loop(model, prompt: list[int], max_new_tokens=8, seed=None, **visual):
    """The reference: recompute the whole sequence at every step without any cache; greedy, or multinomial sampling
    from the softmax of the float32 logits (what `generate(do_sample=True, top_k=0)` does) when `seed` is given."""
    if seed is not None:
        torch.manual_seed(seed)
    input_ids, all_logits = torch.tensor([prompt]), []
    for _ in range(max_new_tokens):
        logits = model(input_ids=input_ids, use_cache=False, **visual).logits[:, -1].float()
        if seed is None:
            next_token = logits.argmax(-1, keepdim=True)
        else:
            next_token = torch.multinomial(logits.softmax(-1), num_samples=1)
        input_ids = torch.cat([input_ids, next_token], dim=1)
        all_logits.append(logits)
    return [input_ids[0, len(prompt) :].tolist()], torch.stack(all_logits)


def assert_same_generation(actual, expected):
    (actual_tokens, actual_logits), (expected_tokens, expected_logits) = actual, expected
    assert actual_tokens == expected_tokens
    torch.testing.assert_close(actual_logits, expected_logits, atol=ATOL, rtol=0)


def image_and_video_prompt(model, num_frames: int) -> list[int]:
    return image_prompt(model, prefix=(1, 2), suffix=(3,)) + video_prompt(model, num_frames, prefix=(), suffix=(4, 5))


class CallCounter:
    """Counts the forward calls of some modules and the frames (first dimension) they received."""

    def __init__(self, modules):
        self.calls, self.rows = 0, []
        self.handles = [module.register_forward_hook(self._hook) for module in modules]

    def _hook(self, module, args, output):
        self.calls += 1
        self.rows.append(args[0].shape[0] if args else None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def kv_projections(model) -> list:
    layers = decoder_layers(model.model.language_model)
    return [layers[index].self_attn.cross_attn.kv_proj for index in hybrid_layer_indices(model.model.language_model)]


# ---------------------------------------------------------------------------------------------------------------
# cached generation == recomputing everything


def test_greedy_generate_with_cache_equals_recomputing_without_cache(hybrid_model):
    prompt = image_and_video_prompt(hybrid_model, 5)
    visual = dict(pixel_values=frames(1, seed=1), pixel_values_videos=frames(5, seed=2))
    expected = recompute_loop(hybrid_model, prompt, 12, **visual)
    assert len(set(expected[0][0])) > 2  # not a degenerate repetition
    assert_same_generation(generate(hybrid_model, torch.tensor([prompt]), 12, **visual), expected)
    assert_same_generation(generate(hybrid_model, torch.tensor([prompt]), 12, use_cache=False, **visual), expected)
    # the video matters: another one changes the logits
    other = generate(hybrid_model, torch.tensor([prompt]), 12, **{**visual, "pixel_values_videos": frames(5, seed=3)})
    assert (other[1][0] - expected[1][0]).abs().max() > 1e-3


@pytest.mark.parametrize("seed", [0, 7])
def test_sampling_with_cache_equals_a_manual_sampling_loop(hybrid_model, seed):
    prompt = video_prompt(hybrid_model, 6)
    video = frames(6, seed=4)
    expected = recompute_loop(hybrid_model, prompt, 10, seed=seed, pixel_values_videos=video)
    assert_same_generation(
        generate(hybrid_model, torch.tensor([prompt]), 10, seed, pixel_values_videos=video), expected
    )
    no_cache = generate(hybrid_model, torch.tensor([prompt]), 10, seed, use_cache=False, pixel_values_videos=video)
    assert_same_generation(no_cache, expected)


def test_batched_beam_search_with_cache_equals_recomputing_without_cache():
    """Beam search reorders the cache between steps; every beam of a sample keeps its sample's slow keys/values."""
    model = activate_hybrid_layers(tiny_slowfast_model(seed=1))
    prompts = [video_prompt(model, 3), [1, 5, 6, 7, 8], video_prompt(model, 6, prefix=(1,))]
    input_ids, attention_mask, _, _ = pad(prompts, "left")
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=torch.cat([frames(3, seed=1), frames(6, seed=2)]),
        video_num_frames=[3, 6],
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=PAD_ID,
    )
    with torch.no_grad():
        cached, recomputed = model.generate(**inputs), model.generate(**inputs, use_cache=False)
    assert cached.shape == (6, input_ids.shape[1] + 6)
    assert torch.equal(cached, recomputed)


# ---------------------------------------------------------------------------------------------------------------
# the slow keys/values are projected once


def decode_step_flops(model, prompt: list[int], video: torch.Tensor):
    """FLOPs per module of the prefill and of one decoding step, the step fed the cache (which holds the slow K/V)."""
    with torch.no_grad(), FlopCounterMode(display=False) as prefill:
        output = model(input_ids=torch.tensor([prompt]), pixel_values_videos=video, use_cache=True)
    next_token = output.logits[:, -1:].argmax(-1)
    with torch.no_grad(), FlopCounterMode(display=False) as step:
        model(
            input_ids=next_token,
            cache=getattr(output, CACHE_KWARG),
            use_cache=True,
        )
    return prefill, step


def flops_of(counter: FlopCounterMode, suffix: str) -> int:
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items() if name.endswith(suffix))


def test_a_decoding_step_projects_no_slow_keys_values(hybrid_model):
    short_prefill, short_step = decode_step_flops(hybrid_model, video_prompt(hybrid_model, 3), frames(3, seed=5))
    long_prefill, long_step = decode_step_flops(hybrid_model, video_prompt(hybrid_model, 12), frames(12, seed=6))
    for index in hybrid_layer_indices(hybrid_model.model.language_model):
        cross_attn = f".layers.{index}.self_attn.cross_attn"
        kv_proj, gate_proj = f"{cross_attn}.kv_proj", f"{cross_attn}.gate_proj"
        # prefill: the slow tokens are projected, 4x as many for 4x the frames
        assert flops_of(short_prefill, kv_proj) > 0
        assert flops_of(long_prefill, kv_proj) == 4 * flops_of(short_prefill, kv_proj)
        # decoding step: no projection, but the new token still goes through the gated cross term
        assert flops_of(short_step, kv_proj) == flops_of(long_step, kv_proj) == 0
        assert flops_of(short_step, gate_proj) > 0
    # nothing else in a decoding step grows with the video (SDPA itself is not counted on CPU; it is linear in the
    # number of slow tokens with one query)
    assert short_step.get_total_flops() == long_step.get_total_flops()


def test_generate_encodes_and_projects_the_video_once(hybrid_model):
    """Later steps need no pixels: the vision tower and each slow K/V projection run once, in the prefill."""
    prompt, video = video_prompt(hybrid_model, 4), frames(4, seed=7)
    with CallCounter([hybrid_model.model.vision_tower]) as vision, CallCounter(kv_projections(hybrid_model)) as kv:
        tokens, _ = generate(hybrid_model, torch.tensor([prompt]), 6, pixel_values_videos=video)
    assert len(tokens[0]) == 6
    assert vision.calls == 1
    assert kv.calls == len(kv_projections(hybrid_model)) == 2


# ---------------------------------------------------------------------------------------------------------------
# batched generation


MIXED_BATCH = [  # (frames or None for a text-only sample, prefix, suffix)
    (3, (1, 2, 3, 7, 8, 9), (4, 5, 6)),
    (8, (1,), (4,)),
    (None, (1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30), ()),
    (5, (1, 2), (10, 11, 12, 13, 14)),
]


def mixed_batch(model):
    prompts = [
        video_prompt(model, count, prefix, suffix) if count else list(prefix) for count, prefix, suffix in MIXED_BATCH
    ]
    videos = {row: frames(count, seed=10 + row) for row, (count, _, _) in enumerate(MIXED_BATCH) if count}
    return prompts, videos


@pytest.mark.parametrize("visual_input", ["pixels", "features"])
def test_batched_left_padded_generate_equals_generating_each_alone(hybrid_model, visual_input):
    prompts, videos = mixed_batch(hybrid_model)
    assert len({len(p) for p in prompts}) == len(prompts)
    input_ids, attention_mask, _, _ = pad(prompts, "left")
    pixels = torch.cat(list(videos.values()))
    num_frames = [video.shape[0] for video in videos.values()]
    if visual_input == "pixels":
        visual = dict(pixel_values_videos=pixels, video_num_frames=num_frames)
    else:
        visual = dict(video_features=hybrid_model.get_video_features(pixels, num_frames))
    batched_tokens, batched_logits = generate(hybrid_model, input_ids, 8, attention_mask=attention_mask, **visual)
    for row, prompt in enumerate(prompts):
        alone_visual = {"pixel_values_videos": videos[row]} if row in videos else {}
        alone = generate(hybrid_model, torch.tensor([prompt]), 8, **alone_visual)
        assert_same_generation(([batched_tokens[row]], batched_logits[:, row : row + 1]), alone)
        if row == 0:
            assert_same_generation(alone, recompute_loop(hybrid_model, prompt, 8, **alone_visual))


def test_num_return_sequences_with_precomputed_features_of_a_batch(hybrid_model):
    """Sampling `num_return_sequences=2` for a batch (two videos, one text-only sample) given as features equals the
    same sampling run on the batch repeated by hand."""
    prompts, videos = mixed_batch(hybrid_model)
    prompts, videos = prompts[:3], {row: videos[row] for row in (0, 1)}
    input_ids, attention_mask, _, _ = pad(prompts, "left")
    features = hybrid_model.get_video_features(torch.cat([videos[0], videos[1]]), [3, 8])
    actual = generate(
        hybrid_model,
        input_ids,
        5,
        seed=11,
        attention_mask=attention_mask,
        video_features=features,
        num_return_sequences=2,
    )
    repeated = torch.cat([videos[0], videos[0], videos[1], videos[1]])
    expected = generate(
        hybrid_model,
        input_ids.repeat_interleave(2, dim=0),
        5,
        seed=11,
        attention_mask=attention_mask.repeat_interleave(2, dim=0),
        pixel_values_videos=repeated,
        video_num_frames=[3, 3, 8, 8],
    )
    assert_same_generation(actual, expected)


# ---------------------------------------------------------------------------------------------------------------
# precomputed features: many questions about one video


def test_precomputed_features_generate_like_pixels(hybrid_model):
    prompt = image_and_video_prompt(hybrid_model, 6)
    image, video = frames(1, seed=12), frames(6, seed=13)
    from_pixels = generate(hybrid_model, torch.tensor([prompt]), 10, pixel_values=image, pixel_values_videos=video)
    from_features = generate(
        hybrid_model,
        torch.tensor([prompt]),
        10,
        image_features=hybrid_model.get_image_features(image),
        video_features=hybrid_model.get_video_features(video),
    )
    assert_same_generation(from_features, from_pixels)


def test_many_questions_about_one_video_encode_it_once(hybrid_model):
    video = frames(8, seed=14)
    questions = [((1, 2), (3, 4, 5)), ((1, 30, 31, 32), (6,)), ((1,), (40, 41, 42, 43, 44))]
    with CallCounter([hybrid_model.model.vision_tower]) as vision:
        features = hybrid_model.get_video_features(video)
        answers = [
            generate(hybrid_model, torch.tensor([video_prompt(hybrid_model, 8, *q)]), 6, video_features=features)
            for q in questions
        ]
    assert vision.calls == 1
    for question, answer in zip(questions, answers):
        prompt = torch.tensor([video_prompt(hybrid_model, 8, *question)])
        assert_same_generation(answer, generate(hybrid_model, prompt, 6, pixel_values_videos=video))
    assert len({tuple(tokens[0]) for tokens, _ in answers}) > 1  # different questions, different answers
    # the features are not changed by being used
    again = hybrid_model.get_video_features(video)
    for used, fresh in zip(features.slow_tokens + features.fast_tokens, again.slow_tokens + again.fast_tokens):
        assert torch.equal(used, fresh)


# ---------------------------------------------------------------------------------------------------------------
# chunked vision encoding


@pytest.mark.parametrize("vision_batch_size", [1, 4, 7, 64])
def test_vision_batch_size_encodes_in_chunks_with_the_same_result(vision_batch_size):
    model = activate_hybrid_layers(tiny_slowfast_model(seed=5))
    videos, num_frames = torch.cat([frames(7, seed=15), frames(10, seed=16)]), [7, 10]
    expected = model.get_video_features(videos, num_frames)
    model.config.vision_batch_size = vision_batch_size
    with CallCounter([model.model.vision_tower]) as vision:
        actual = model.get_video_features(videos, num_frames)
    assert vision.calls == -(-17 // vision_batch_size)
    assert max(vision.rows) == min(vision_batch_size, 17)
    for name in ("fast_tokens", "slow_tokens"):
        for chunked, whole in zip(getattr(actual, name), getattr(expected, name)):
            torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    # gradients flow through the chunks as through the whole
    parameters = list(model.model.vision_tower.embeddings.parameters()) + list(
        model.model.multi_modal_projector.parameters()
    )
    chunked_grad = torch.autograd.grad(model.model.get_frame_features(videos).square().sum(), parameters)
    model.config.vision_batch_size = None
    whole_grad = torch.autograd.grad(model.model.get_frame_features(videos).square().sum(), parameters)
    for chunked, whole in zip(chunked_grad, whole_grad):
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    model.config.vision_batch_size = vision_batch_size
    prompt = video_prompt(model, 7)
    chunked_generation = generate(model, torch.tensor([prompt]), 6, pixel_values_videos=videos[:7])
    model.config.vision_batch_size = None
    assert_same_generation(
        chunked_generation, generate(model, torch.tensor([prompt]), 6, pixel_values_videos=videos[:7])
    )


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "8"])
def test_bad_vision_batch_size_raises(value):
    with pytest.raises(ValueError, match="`vision_batch_size` must be an integer >= 1 or None"):
        SlowFastConfig(vision_batch_size=value)


# ---------------------------------------------------------------------------------------------------------------
# long videos


def test_slow_tokens_are_projected_in_chunks_with_the_same_result(hybrid_model, monkeypatch):
    language_model = hybrid_model.model.language_model
    slow_tokens = torch.randn(2, 23, language_model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    slow_token_mask = torch.arange(23)[None, :] < torch.tensor([[23], [17]])
    layers = decoder_layers(language_model)
    with torch.no_grad():
        expected = {
            index: layers[index].self_attn.cross_attn.project_slow_tokens(layers[index].input_layernorm(slow_tokens))
            for index in hybrid_layer_indices(language_model)
        }
        whole = project_slow_tokens(language_model, slow_tokens, slow_token_mask)
        monkeypatch.setattr(hybrid_attention, "SLOW_TOKEN_CHUNK_SIZE", 5)  # 5 chunks, the last one of 3 tokens
        chunked = project_slow_tokens(language_model, slow_tokens, slow_token_mask)
    assert set(chunked.key_values) == set(whole.key_values) == set(expected) == {0, 2}
    for index, (key, value) in expected.items():
        for projected in (whole, chunked):
            assert all(tensor.is_contiguous() for tensor in projected.key_values[index])
            torch.testing.assert_close(projected.key_values[index][0], key, atol=1e-6, rtol=0)
            torch.testing.assert_close(projected.key_values[index][1], value, atol=1e-6, rtol=0)
    # and through generate
    prompt, video = video_prompt(hybrid_model, 6), frames(6, seed=17)
    assert_same_generation(
        generate(hybrid_model, torch.tensor([prompt]), 6, pixel_values_videos=video),
        recompute_loop(hybrid_model, prompt, 6, pixel_values_videos=video),
    )


LONG_VIDEO_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from conftest import VIDEO_TOKEN_ID, tiny_slowfast_model, tiny_vision_config

    num_frames, image_size = int(sys.argv[1]), 36  # 36 px, patch 2: an 18x18 grid, 81 slow tokens per frame
    model = tiny_slowfast_model(
        seed=0,
        vision_config=tiny_vision_config(image_size=image_size, patch_size=2).to_dict(),
        vision_batch_size=32,
        fast_temporal_sampling_stride=8,
        fast_temporal_stride=4,
        fast_spatial_stride=3,
    )
    builder = model.model.token_builder

    def run(frames):
        prompt = [1, 2, 3] + [VIDEO_TOKEN_ID] * builder.num_fast_tokens(frames, 18, 18) + [4, 5, 6, 7]
        video = torch.randn(frames, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return model.generate(
                input_ids=torch.tensor([prompt]), pixel_values_videos=video, max_new_tokens=8, do_sample=False,
                pad_token_id=0,
            )[0, len(prompt):]

    def memory_mib():
        # VmHWM (peak RSS), RssAnon and RssFile of this process, from /proc/self/status (in kB)
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "RssAnon", "RssFile")}

    run(8)  # warm up (lazy initialisations)
    before, start = memory_mib(), time.perf_counter()
    new_tokens = run(num_frames)
    after = memory_mib()
    print(json.dumps(dict(
        seconds=time.perf_counter() - start,
        new_tokens=len(new_tokens),
        slow_tokens=builder.num_slow_tokens(num_frames, 18, 18),
        # the peak less the pages of shared libraries (which other processes' load can evict and bring back)
        peak_growth_mib=after["VmHWM"] - after["RssFile"] - before["RssAnon"],
    )))
    """
)


def run_long_video(num_frames: int) -> dict:
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]),
        # glibc: serve allocations of 1 MiB and more with mmap, so freed tensors leave the RSS at once and its peak
        # is the peak of live memory (without it, heap reuse makes the peak vary by +-20% from run to run)
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
    result = subprocess.run(
        [sys.executable, "-c", LONG_VIDEO_SCRIPT, str(num_frames)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB, as on Linux")
def test_a_1536_frame_video_generates_with_memory_linear_in_frames():
    """1,536 frames with 81 slow tokens each (124,416 slow tokens), from pixels, on a tiny model: generating 8 tokens
    (vision in chunks of 32 frames, prefill, decoding) raises the process's peak memory (peak RSS less shared-library
    pages) by at most 320 MiB (182 MiB measured on the development machine, 48 MiB for 384 frames; without
    `vision_batch_size`: 630 MiB), and 4x the frames takes at most 4.4x the memory."""
    long, short = run_long_video(1536), run_long_video(384)
    assert long["slow_tokens"] == 1536 * 81 == 124_416
    assert long["new_tokens"] == short["new_tokens"] == 8
    assert long["peak_growth_mib"] <= 320, long
    assert long["peak_growth_mib"] <= 4.4 * short["peak_growth_mib"], (long, short)
