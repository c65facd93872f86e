"""
A converted released checkpoint + its processor reproduce the released pipeline end to end (issue 12): frames, pixels,
fast/slow tokens, prompt, logits and greedy generations.

Every expected value comes from a re-statement, written here, of what the released code does (SHI-Labs
Slow-Fast-Video-Multimodal-LLM: `simple_inference_demo.py` / the lmms-eval adapter for frames and prompt,
`CLIPImageProcessor` for pixels, `split_slow_fast_tokens` / `sample_fast_frames` for tokens, `generate` for the cross
term of generated tokens), applied to the raw released tensors with the plain-torch references of `test_conversion`.
"""

import copy
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_conversion import (
    HIDDEN_SIZE,
    HYBRID_LAYERS,
    IMAGE_SIZE,
    NUM_LAYERS,
    released_hybrid_layer,
    released_tensors,
    rms_norm,
    timm_convnext,
    write_released_checkpoint,
)
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig
from video_fixtures import write_video

from slowfast_hf.convert_official import convert_official
from slowfast_hf.hub import save_for_hub
from slowfast_hf.slow_key_values import cached_slow_key_values
from slowfast_hf.transformers_compat import CACHE_KWARG
from slowfast_hf.video_processing_slowfast import CLIP_MEAN, CLIP_STD

NUM_FRAMES = 6  # the folder name's "frame6": the processor samples 6 frames per video
VIDEO_FRAMES, VIDEO_HEIGHT, VIDEO_WIDTH = 23, 144, 192  # the mp4: 23 frames, shorter side 144 -> 128, 192 -> 170
QUESTION = "what happens in the video?"


# ---------------------------------------------------------------------------------------------------------------
# The released rules, re-stated
# ---------------------------------------------------------------------------------------------------------------


def released_frames(path, num_frames):
    """decord-style reading: every frame decoded in order, `np.linspace(0, n - 1, N, dtype=int)` of them."""
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    indices = np.linspace(0, len(frames) - 1, num_frames, dtype=int)
    return indices, frames[indices]


def released_pixels(frames, size):
    """CLIPImageProcessor (size = shortest edge, crop_size, resample 3): PIL bicubic resize of the shorter side, center
    crop, rescale 1/255 (float64, then float32), CLIP mean/std. (T, H, W, 3) uint8 -> (T, 3, size, size)."""
    out = []
    for frame in frames:
        height, width = frame.shape[:2]
        short, long = min(height, width), max(height, width)
        new_long = int(size * long / short)
        new_height, new_width = (size, new_long) if height <= width else (new_long, size)
        resized = np.asarray(Image.fromarray(frame).resize((new_width, new_height), Image.BICUBIC))
        top, left = (new_height - size) // 2, (new_width - size) // 2
        crop = resized[top : top + size, left : left + size]
        scaled = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
        out.append((scaled - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def released_projected_features(pixels, tensors):
    """(T, 3, H, W) -> (T, h, w, D): the timm ConvNeXt (eps 1e-5) and the mlp2x_gelu projector."""
    features = timm_convnext(pixels, tensors).permute(0, 2, 3, 1)
    hidden = F.gelu(features @ tensors["model.mm_projector.0.weight"].T + tensors["model.mm_projector.0.bias"])
    return hidden @ tensors["model.mm_projector.2.weight"].T + tensors["model.mm_projector.2.bias"]


def released_split(features, sampling_stride, temporal_stride, spatial_stride, min_fast_frames, pooling_stride=2):
    """
    The released slow/fast split of one video's projected features (T, h, w, D) -> (fast (n, D), slow (N, D)):
    videos are first average-pooled `pooling_stride` in space (PyTorch's floor), giving the slow tokens. Fast: the
    video is zero-padded to a multiple of both strides but only its original T frames are indexed: all of them with
    sampling stride 1, else `max(T // s, min_fast_frames)` at `min(int(i * T / kept), T - 1)` (all when
    T < min_fast_frames); `avg_pool3d` over `temporal_stride` frames when `kept // temporal_stride >= min_fast_frames`,
    else adaptive pooling to `min(kept, min_fast_frames)`; then `spatial_stride` pooling. A 1-frame video: no pooling
    for the slow tokens, only the spatial one for the fast tokens.
    """
    num_frames, dim = features.shape[0], features.shape[-1]
    x = features.permute(0, 3, 1, 2)  # (T, D, h, w)
    if num_frames > 1 and pooling_stride > 1:
        x = F.avg_pool2d(x, pooling_stride)
    slow = x.permute(0, 2, 3, 1).reshape(-1, dim)
    if num_frames > 1:
        padded = F.pad(x, (0, 0, 0, 0, 0, 0, 0, -num_frames % (sampling_stride * temporal_stride)))
        if sampling_stride > 1 and num_frames >= min_fast_frames:
            kept = max(num_frames // sampling_stride, min_fast_frames)
            indices = [min(int(i * (num_frames / kept)), num_frames - 1) for i in range(kept)]
        else:
            indices = list(range(num_frames))
        x = padded[indices]
        if temporal_stride > 1:
            if len(indices) // temporal_stride >= min_fast_frames:
                x = F.avg_pool3d(x.transpose(0, 1), kernel_size=(temporal_stride, 1, 1)).transpose(0, 1)
            else:
                size = (min(len(indices), min_fast_frames), *x.shape[-2:])
                x = F.adaptive_avg_pool3d(x.transpose(0, 1), output_size=size).transpose(0, 1)
    if spatial_stride > 1:
        x = F.avg_pool2d(x, spatial_stride)
    return x.permute(0, 2, 3, 1).reshape(-1, dim), slow


def released_prompt(question):
    """conv_templates["qwen_1_5"] (CHATML) with `<image>\\n{question}` as the user turn and an open assistant turn."""
    system = "<|im_start|>system\nYou are a helpful assistant."
    return f"{system}<|im_end|>\n<|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"


def released_input_ids(prompt, tokenizer, num_fast_tokens, placeholder_id):
    """`tokenizer_image_token`: the text around `<image>` tokenized piece by piece; the `<image>` becomes the video's
    fast tokens (here a run of placeholders, as the released code splices the tokens in at that position)."""
    before, after = prompt.split("<image>")
    return tokenizer(before)["input_ids"] + [placeholder_id] * num_fast_tokens + tokenizer(after)["input_ids"]


def released_logits(input_ids, fast_tokens, slow_tokens, cross_positions, tensors, placeholder_id):
    """(1, L) ids -> (1, L, V) logits of the released decoder; `cross_positions` (1, L) receive the cross term."""
    h = tensors["model.embed_tokens.weight"][input_ids].clone()
    h[input_ids == placeholder_id] = fast_tokens
    for layer in range(NUM_LAYERS):
        h = released_hybrid_layer(h, slow_tokens[None], cross_positions, tensors, layer)
    return rms_norm(h, tensors["model.norm.weight"]) @ tensors["lm_head.weight"].T


def released_greedy(prompt_ids, fast_tokens, slow_tokens, tensors, placeholder_id, steps):
    """The released `generate`, greedy: only the prompt's text tokens get the cross term (every later step resets the
    token types, so the new token carries no video). Full recomputation each step, no cache."""
    ids, step_logits = prompt_ids, []
    text = prompt_ids != placeholder_id
    for _ in range(steps):
        cross = torch.cat([text, torch.zeros(1, ids.shape[1] - text.shape[1], dtype=torch.bool)], dim=1)
        logits = released_logits(ids, fast_tokens, slow_tokens, cross, tensors, placeholder_id)[:, -1]
        step_logits.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[:, prompt_ids.shape[1] :], torch.stack(step_logits, dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("released_pipeline")
    tensors = released_tensors(seed=3)
    # the LM head scaled like the other projections (1/sqrt(D)), so that logits are O(1-10) as in a trained model and
    # a 1e-5 tolerance is about 10x float32's rounding on them (with unscaled random rows they reach ~30)
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * HIDDEN_SIZE**-0.5
    source = write_released_checkpoint(root / f"slowfast-tiny-convnext-{IMAGE_SIZE}-frame{NUM_FRAMES}-s1t2", tensors)
    output = convert_official(source, root / "converted")
    video = write_video(root / "clip.mp4", VIDEO_FRAMES, height=VIDEO_HEIGHT, width=VIDEO_WIDTH)
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    return dict(root=root, output=output, tensors=tensors, model=model, processor=processor, video=video.path)


def chat(video_path, question=QUESTION):
    return [
        {"role": "user", "content": [{"type": "video", "path": str(video_path)}, {"type": "text", "text": question}]}
    ]


def processor_inputs(processor, video_path):
    return processor.apply_chat_template(
        chat(video_path), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


def test_converted_settings_are_the_released_ones(converted):
    config, video_processor = converted["model"].config, converted["processor"].video_processor
    assert config.hybrid_layers == HYBRID_LAYERS and config.text_config.num_key_value_heads > 1
    assert config.cross_attn_generated_tokens is False
    assert (config.fast_frame_remainder, config.spatial_pool_remainder) == ("drop", "drop")
    assert config.vision_layer_norm_eps == 1e-5
    norms = [m for m in converted["model"].model.vision_tower.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and {norm.eps for norm in norms} == {1e-5}
    assert (video_processor.frame_sampling, video_processor.resize_backend) == ("linspace", "pil")
    saved = json.loads((converted["output"] / "config.json").read_text())
    assert saved["cross_attn_generated_tokens"] is False and saved["vision_layer_norm_eps"] == 1e-5


def test_frames_and_pixels_are_the_released_ones(converted):
    processor = converted["processor"]
    inputs = processor_inputs(processor, converted["video"])
    indices, frames = released_frames(converted["video"], NUM_FRAMES)
    assert indices.tolist() == [0, 4, 8, 13, 17, 22]
    expected = released_pixels(frames, IMAGE_SIZE)
    assert inputs["pixel_values_videos"].shape == expected.shape == (NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(inputs["pixel_values_videos"], expected, rtol=0, atol=1e-6)
    # a clip shorter than the frame budget: frames repeated up to it, as the released linspace does
    long_processor = copy.deepcopy(processor)
    long_processor.video_processor.num_frames = 30
    pixels = long_processor.video_processor(converted["video"], return_tensors="pt")["pixel_values_videos"]
    indices, frames = released_frames(converted["video"], 30)
    assert len(set(indices.tolist())) == VIDEO_FRAMES < len(indices)
    torch.testing.assert_close(pixels, released_pixels(frames, IMAGE_SIZE), rtol=0, atol=1e-6)


def test_prompt_is_the_released_one(converted):
    processor = converted["processor"]
    text = processor.apply_chat_template(chat(converted["video"]), add_generation_prompt=True, tokenize=False)
    assert text == released_prompt(QUESTION).replace("<image>", processor.video_token)
    inputs = processor_inputs(processor, converted["video"])
    num_fast = int((inputs["input_ids"] == processor.video_token_id).sum())
    expected = released_input_ids(released_prompt(QUESTION), processor.tokenizer, num_fast, processor.video_token_id)
    assert inputs["input_ids"][0].tolist() == expected


@pytest.mark.parametrize("num_frames, grid_pixels", [(6, IMAGE_SIZE), (7, IMAGE_SIZE), (1, IMAGE_SIZE), (7, 160)])
def test_fast_and_slow_tokens_are_the_released_ones(converted, num_frames, grid_pixels):
    """6 and 7 frames (7 is no multiple of the temporal stride 2), a 1-frame video, and a 5x5 feature grid (160 px)."""
    model, processor, tensors = converted["model"], converted["processor"], converted["tensors"]
    video_processor = copy.deepcopy(processor.video_processor)
    video_processor.num_frames = num_frames
    video_processor.size = {"shortest_edge": grid_pixels}
    video_processor.crop_size = {"height": grid_pixels, "width": grid_pixels}
    pixels = video_processor(converted["video"], return_tensors="pt")["pixel_values_videos"]
    _, frames = released_frames(converted["video"], num_frames)
    torch.testing.assert_close(pixels, released_pixels(frames, grid_pixels), rtol=0, atol=1e-6)
    with torch.no_grad():
        features = model.get_video_features(pixels)
    config = model.config
    fast, slow = released_split(
        released_projected_features(pixels, tensors),
        config.fast_temporal_sampling_stride,
        config.fast_temporal_stride,
        config.fast_spatial_stride,
        config.min_fast_frames,
    )
    grid = grid_pixels // 32
    assert features.fast_tokens[0].shape == fast.shape and features.slow_tokens[0].shape == slow.shape
    assert fast.shape[0] == processor.token_builder.num_fast_tokens(num_frames, grid, grid)
    torch.testing.assert_close(features.fast_tokens[0], fast, rtol=0, atol=1e-5)
    torch.testing.assert_close(features.slow_tokens[0], slow, rtol=0, atol=1e-5)


@pytest.mark.parametrize("min_fast_frames", [1, 3])
def test_token_rule_with_sampling_stride_2(converted, min_fast_frames):
    """The converted token rule with the 128-frame recipe's sampling stride 2 (and temporal stride 4), every frame
    count from 1 to 13, odd and even grids, against the released split."""
    builder = dataclasses.replace(
        converted["model"].model.token_builder,
        fast_temporal_sampling_stride=2,
        fast_temporal_stride=4,
        fast_spatial_stride=2,
        min_fast_frames=min_fast_frames,
    )
    generator = torch.Generator().manual_seed(0)
    for grid in (4, 5, 7):
        for num_frames in range(1, 14):
            features = torch.randn(num_frames, grid, grid, 8, generator=generator)
            fast, slow = builder(features)
            expected_fast, expected_slow = released_split(features, 2, 4, 2, min_fast_frames)
            assert fast.shape == expected_fast.shape, (grid, num_frames)
            assert builder.num_fast_tokens(num_frames, grid, grid) == expected_fast.shape[0]
            assert builder.num_slow_tokens(num_frames, grid, grid) == expected_slow.shape[0]
            torch.testing.assert_close(fast, expected_fast, rtol=0, atol=1e-6)
            torch.testing.assert_close(slow, expected_slow, rtol=0, atol=1e-6)


def test_logits_and_greedy_generation_are_the_released_ones(converted):
    model, processor, tensors = converted["model"], converted["processor"], converted["tensors"]
    placeholder = processor.video_token_id
    inputs = processor_inputs(processor, converted["video"])
    _, frames = released_frames(converted["video"], NUM_FRAMES)
    fast, slow = released_split(released_projected_features(released_pixels(frames, IMAGE_SIZE), tensors), 1, 2, 1, 1)
    prompt_ids = inputs["input_ids"]
    text = prompt_ids != placeholder

    with torch.no_grad():
        logits = model(**inputs).logits
    expected = released_logits(prompt_ids, fast, slow, text, tensors, placeholder)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)

    steps = 16
    expected_tokens, expected_logits = released_greedy(prompt_ids, fast, slow, tensors, placeholder, steps)
    tokens, logits = greedy_with_logits(model, inputs, steps)
    assert tokens.shape[1] == steps and torch.equal(tokens, expected_tokens)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)

    # the cross term on generated tokens (this package's default) would have given other logits
    every_text_token = torch.cat([text, torch.ones_like(expected_tokens, dtype=torch.bool)], dim=1)
    ids = torch.cat([prompt_ids, expected_tokens], dim=1)
    cross_everywhere = released_logits(ids, fast, slow, every_text_token, tensors, placeholder)
    later_steps = cross_everywhere[:, prompt_ids.shape[1] : -1]  # the logits of steps 2..16
    assert (later_steps - expected_logits[:, 1:]).abs().max() > 1e-2


def test_generated_tokens_neither_read_nor_keep_the_slow_key_values(converted):
    """With `cross_attn_generated_tokens=False` the prefill stores no slow keys/values in the cache, so decoding never
    reads them and nothing keeps them alive; a cache holding some anyway is refused."""
    model, processor = converted["model"], converted["processor"]
    inputs = processor_inputs(processor, converted["video"])
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
    assert cached_slow_key_values(getattr(prefill, CACHE_KWARG)) is None
    cross_calls = []
    handles = [
        model.model.language_model.layers[i].self_attn.cross_attn.register_forward_hook(
            lambda *args: cross_calls.append(1)
        )
        for i in HYBRID_LAYERS
    ]
    generation_config = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        model.generate(**inputs, generation_config=generation_config)
    for handle in handles:
        handle.remove()
    assert len(cross_calls) == len(HYBRID_LAYERS)  # the prefill only
    own = copy.deepcopy(model)
    own.config.cross_attn_generated_tokens = True
    with torch.no_grad():
        cache = getattr(own(**inputs, use_cache=True), CACHE_KWARG)
        assert cached_slow_key_values(cache) is not None
        with pytest.raises(ValueError, match="cross_attn_generated_tokens=False"):
            model(input_ids=inputs["input_ids"][:, -1:], **{CACHE_KWARG: cache})


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)
    tower = model.model.vision_tower
    eps = sorted({m.eps for m in tower.modules() if isinstance(m, torch.nn.LayerNorm)})
    print(json.dumps({"module": type(model).__module__, "eps": eps}))
    """
)


def test_layer_norm_eps_also_under_remote_code(converted, tmp_path):
    folder = tmp_path / "hub"
    save_for_hub(converted["model"], converted["processor"], folder, license="apache-2.0")
    script = tmp_path / "script.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(folder)], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.") and report["eps"] == [1e-5]


def test_released_settings_are_validated():
    from conftest import tiny_slowfast_config

    from slowfast_hf import SlowFastTokenBuilder, SlowFastVideoProcessor

    for name, value in (
        ("fast_frame_remainder", "truncate"),
        ("spatial_pool_remainder", "ceil"),
        ("cross_attn_generated_tokens", "no"),
        ("vision_layer_norm_eps", 0),
    ):
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            tiny_slowfast_config(**{name: value})
    with pytest.raises(ValueError, match="`fast_frame_remainder` must be one of"):
        SlowFastTokenBuilder(fast_frame_remainder="truncate")
    with pytest.raises(ValueError, match="smaller than `slow_spatial_stride` 2"):
        SlowFastTokenBuilder(spatial_pool_remainder="drop").num_fast_tokens(4, 1, 1)
    for name, value in (("frame_sampling", "middle"), ("resize_backend", "cv2"), ("do_rescale", 1)):
        with pytest.raises(ValueError, match=f"`{name}` must be"):
            SlowFastVideoProcessor(**{name: value})


def released_lmms_eval_indices(path, num_frames):
    """`read_video_pyav2` of the released lmms-eval adapter, as its evaluation scripts call it (`target_fps=2`):
    `get_frame_indices(stream.frames, stream.average_rate, 2, N)`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total, fps = stream.frames, stream.average_rate
    sample_fps = max(round(fps / 2), 1)
    frame_idx = list(range(0, total, sample_fps))
    if len(frame_idx) < num_frames:
        return frame_idx
    scale = 1.0 * len(frame_idx) / num_frames
    return [frame_idx[round((i + 1) * scale - 1)] for i in range(num_frames)]


def test_lmms_eval_frame_sampling(converted, long_video):
    """`frame_sampling="lmms_eval_pyav"`: the frames of the released evaluation scripts (a 3-minute clip and the
    23-frame one, which has fewer 2-fps frames than asked for)."""
    from video_fixtures import frame_indices_of

    video_processor = copy.deepcopy(converted["processor"].video_processor)
    video_processor.frame_sampling = "lmms_eval_pyav"
    video_processor.size = {"height": long_video.height, "width": long_video.width}
    video_processor.crop_size = None
    video_processor.resize_backend = "torch"
    video_processor.do_rescale, video_processor.image_mean, video_processor.image_std = False, [0] * 3, [1] * 3
    for path, num_frames in ((long_video.path, 16), (converted["video"], NUM_FRAMES)):
        if path == converted["video"]:
            video_processor.size = {"height": VIDEO_HEIGHT, "width": VIDEO_WIDTH}
        video_processor.num_frames = num_frames
        pixels = video_processor(path, return_tensors="pt")["pixel_values_videos"]
        frames = pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert frame_indices_of(frames).tolist() == released_lmms_eval_indices(path, num_frames)
    with pytest.raises(ValueError, match="needs the frame rate"):
        video_processor(np.zeros((4, 8, 8, 3), dtype=np.uint8))


def greedy_with_logits(model, inputs: dict, steps: int):
    """`steps` greedy tokens after the prompt and their logits `(B, steps, V)`; no end-of-sequence stop, so that
    every step is compared."""
    generation_config = GenerationConfig(
        max_new_tokens=steps,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, generation_config=generation_config)
    return out.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(out.logits, dim=1)


def test_session_helpers_refuse_a_model_whose_later_tokens_do_not_cross_attend(converted):
    from slowfast_hf.sessions import generate_with_shared_prefix

    model, processor = converted["model"], converted["processor"]
    inputs = processor_inputs(processor, converted["video"])
    with pytest.raises(ValueError, match="cross_attn_generated_tokens=False"):
        generate_with_shared_prefix(model, dict(inputs), [[5, 6]], max_new_tokens=2)
