"""Forward-pass behaviour of SlowFastForConditionalGeneration: batching and padding, images, precomputed features,
generation, the loss, input validation, `inputs_embeds` and gradient checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    IMAGE_SIZE,
    IMAGE_TOKEN_ID,
    PATCH_SIZE,
    VIDEO_TOKEN_ID,
    activate_hybrid_layers,
    tiny_slowfast_model,
    video_prompt,
)

from slowfast_hf.hybrid_attention import decoder_layers

GRID = IMAGE_SIZE // PATCH_SIZE
PAD_ID = 0
ATOL = 1e-5


def frames(num_frames: int, seed: int, size: int = IMAGE_SIZE, channels: int = 3) -> torch.Tensor:
    return torch.randn(num_frames, channels, size, size, generator=torch.Generator().manual_seed(seed))


def image_prompt(model, prefix=(1, 2), suffix=(3, 4, 5)) -> list[int]:
    count = model.model.token_builder.num_fast_tokens(1, GRID, GRID)
    return list(prefix) + [IMAGE_TOKEN_ID] * count + list(suffix)


def pad(sequences: list[list[int]], side: str):
    """-> input_ids, attention_mask, position_ids (None for right padding), and each sample's real-position slice."""
    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    slices = []
    for row, sequence in enumerate(sequences):
        start = 0 if side == "right" else length - len(sequence)
        input_ids[row, start : start + len(sequence)] = torch.tensor(sequence)
        attention_mask[row, start : start + len(sequence)] = 1
        slices.append(slice(start, start + len(sequence)))
    position_ids = None
    if side == "left":
        position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask, position_ids, slices


@pytest.fixture(scope="module")
def hybrid_model():
    """A tiny model (hybrid layers 0 and 2) whose hybrid layers are active. Read-only: tests must not change it."""
    return activate_hybrid_layers(tiny_slowfast_model(seed=0))


@torch.no_grad()
def logits_of(model, **inputs) -> torch.Tensor:
    return model(**inputs).logits


# ---------------------------------------------------------------------------------------------------------------
# batching


def test_hybrid_layers_change_the_logits(hybrid_model):
    """Guard for the tests below: with alpha = 0.7 the cross term moves the logits well above their tolerance."""
    input_ids = torch.tensor([video_prompt(hybrid_model, 3)])
    video = frames(3, seed=1)
    active = logits_of(hybrid_model, input_ids=input_ids, pixel_values_videos=video)
    inactive_model = tiny_slowfast_model(seed=0)
    inactive = logits_of(inactive_model, input_ids=input_ids, pixel_values_videos=video)
    text = input_ids[0] != VIDEO_TOKEN_ID
    assert (active - inactive)[0, text].abs().max() > 1e-3
    # placeholder positions get no cross term; in layer 0 they are untouched, so the first token's logits (text, but
    # before any video) still differ: every text token of a video sample receives the cross term
    assert (active - inactive)[0, 0].abs().max() > 1e-4


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_of_videos_with_different_frame_counts_matches_each_alone(hybrid_model, side):
    prompts = [
        video_prompt(hybrid_model, 3, prefix=(1, 2, 3), suffix=(4, 5, 6)),
        video_prompt(hybrid_model, 6, prefix=(1, 2, 3, 7, 8, 9, 10), suffix=(4, 5)),
    ]
    videos = [frames(3, seed=1), frames(6, seed=2)]
    assert len(prompts[0]) != len(prompts[1])
    input_ids, attention_mask, position_ids, slices = pad(prompts, side)
    batched = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values_videos=torch.cat(videos),
        video_num_frames=torch.tensor([3, 6]),
    )
    for row, (prompt, video) in enumerate(zip(prompts, videos)):
        alone = logits_of(hybrid_model, input_ids=torch.tensor([prompt]), pixel_values_videos=video)
        torch.testing.assert_close(batched[row, slices[row]], alone[0], atol=ATOL, rtol=0)


def test_batch_of_videos_in_5d_layout_matches_4d(hybrid_model):
    prompts = [video_prompt(hybrid_model, 3), video_prompt(hybrid_model, 6, prefix=(1,))]
    videos = [frames(3, seed=1), frames(6, seed=2)]
    input_ids, attention_mask, _, _ = pad(prompts, "right")
    five_d = torch.zeros(2, 6, 3, IMAGE_SIZE, IMAGE_SIZE)
    five_d[0, :3], five_d[1] = videos
    expected = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=torch.cat(videos),
        video_num_frames=[3, 6],
    )
    actual = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=five_d,
        video_num_frames=[3, 6],
    )
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_mixing_text_only_and_video_matches_each_alone(hybrid_model, side):
    text_prompt = [1, 9, 10, 11, 12]
    prompt = video_prompt(hybrid_model, 6, prefix=(1, 2), suffix=(3, 4, 5, 6))
    video = frames(6, seed=3)
    for prompts in ([text_prompt, prompt], [prompt, text_prompt]):
        input_ids, attention_mask, position_ids, slices = pad(prompts, side)
        batched = logits_of(
            hybrid_model,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values_videos=video,
            video_num_frames=[6],
        )
        for row, sample in enumerate(prompts):
            inputs = dict(input_ids=torch.tensor([sample]))
            if sample is prompt:
                inputs["pixel_values_videos"] = video
            alone = logits_of(hybrid_model, **inputs)
            torch.testing.assert_close(batched[row, slices[row]], alone[0], atol=ATOL, rtol=0)


def test_text_only_batch_is_the_plain_decoder(hybrid_model):
    """Without any image or video the hybrid layers add nothing, whatever alpha is."""
    input_ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    inactive_model = tiny_slowfast_model(seed=0)
    assert torch.equal(logits_of(hybrid_model, input_ids=input_ids), logits_of(inactive_model, input_ids=input_ids))


VARIANTS = {
    "llama-tanh_warmup": dict(text_model_type="llama", cross_attn_gate="tanh_warmup"),
    "qwen2-text_after_first_visual": dict(cross_attn_query_positions="text_after_first_visual"),
    "qwen3-stride1-eager": dict(text_model_type="qwen3", fast_temporal_stride=1, fast_spatial_stride=2),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_batch_invariance_and_generate(variant):
    kwargs = dict(VARIANTS[variant])
    model = activate_hybrid_layers(tiny_slowfast_model(kwargs.pop("text_model_type", "qwen2"), seed=6, **kwargs))
    if variant.endswith("eager"):
        model.set_attn_implementation("eager")
        assert model.model.language_model.config._attn_implementation == "eager"
        assert model.model.language_model.layers[0].self_attn.config._attn_implementation == "slowfast_eager"
    prompts = [
        video_prompt(model, 3, prefix=(1, 2, 3), suffix=(4, 5, 6)),
        video_prompt(model, 6, prefix=(1, 2, 3, 7, 8, 9, 10), suffix=(4, 5)),
        [1, 2, 3, 4],
    ]
    videos = [frames(3, seed=1), frames(6, seed=2)]
    input_ids, attention_mask, position_ids, slices = pad(prompts, "left")
    batched = logits_of(
        model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values_videos=torch.cat(videos),
        video_num_frames=[3, 6],
    )
    alone = [
        logits_of(model, input_ids=torch.tensor([prompts[0]]), pixel_values_videos=videos[0]),
        logits_of(model, input_ids=torch.tensor([prompts[1]]), pixel_values_videos=videos[1]),
        logits_of(model, input_ids=torch.tensor([prompts[2]])),
    ]
    for row in range(3):
        torch.testing.assert_close(batched[row, slices[row]], alone[row][0], atol=ATOL, rtol=0)
    inactive = tiny_slowfast_model(VARIANTS[variant].get("text_model_type", "qwen2"), seed=6, **kwargs)
    inactive_logits = logits_of(inactive, input_ids=torch.tensor([prompts[0]]), pixel_values_videos=videos[0])
    assert (inactive_logits - alone[0]).abs().max() > 1e-3
    generated = generate_new_tokens(model, torch.tensor([prompts[0]]), pixel_values_videos=videos[0])
    expected = greedy_without_cache(model, prompts[0], 6, pixel_values_videos=videos[0])
    assert generated[0].tolist() == expected
    batched_generated = generate_new_tokens(
        model, input_ids, attention_mask=attention_mask, pixel_values_videos=torch.cat(videos), video_num_frames=[3, 6]
    )
    assert batched_generated[0].tolist() == expected


# ---------------------------------------------------------------------------------------------------------------
# images


@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_of_images_matches_each_alone(hybrid_model, side):
    prompts = [image_prompt(hybrid_model), image_prompt(hybrid_model, prefix=(1, 2, 3, 9), suffix=(4,))]
    assert prompts[0].count(IMAGE_TOKEN_ID) == hybrid_model.model.token_builder.num_fast_tokens(1, GRID, GRID) == 16
    images = frames(2, seed=4)
    input_ids, attention_mask, position_ids, slices = pad(prompts, side)
    batched = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values=images,
    )
    for row, prompt in enumerate(prompts):
        alone = logits_of(hybrid_model, input_ids=torch.tensor([prompt]), pixel_values=images[row : row + 1])
        torch.testing.assert_close(batched[row, slices[row]], alone[0], atol=ATOL, rtol=0)
    # the image reaches the text: another image changes the logits after it
    other = logits_of(hybrid_model, input_ids=torch.tensor([prompts[0]]), pixel_values=frames(1, seed=5))
    assert (other[0, -1] - batched[0, slices[0]][-1]).abs().max() > 1e-4


def test_image_and_video_in_one_sample(hybrid_model):
    image_count = hybrid_model.model.token_builder.num_fast_tokens(1, GRID, GRID)
    both = [1, 2] + [IMAGE_TOKEN_ID] * image_count + [3] + video_prompt(hybrid_model, 3, prefix=(), suffix=(4, 5))
    video_only = video_prompt(hybrid_model, 6, prefix=(1, 8), suffix=(9,))
    image, video, other_video = frames(1, seed=6), frames(3, seed=7), frames(6, seed=8)

    alone = logits_of(hybrid_model, input_ids=torch.tensor([both]), pixel_values=image, pixel_values_videos=video)
    # precomputed features give the same logits
    features = logits_of(
        hybrid_model,
        input_ids=torch.tensor([both]),
        image_features=hybrid_model.get_image_features(image),
        video_features=hybrid_model.get_video_features(video),
    )
    assert torch.equal(features, alone)
    # both the image and the video matter (fast tokens in the sequence and slow tokens in the hybrid layers)
    for changed in (
        dict(pixel_values=frames(1, seed=9), pixel_values_videos=video),
        dict(pixel_values=image, pixel_values_videos=frames(3, seed=10)),
    ):
        other = logits_of(hybrid_model, input_ids=torch.tensor([both]), **changed)
        assert (other[0, -1] - alone[0, -1]).abs().max() > 1e-4

    # batched with a video-only sample, each row equals running it alone
    input_ids, attention_mask, _, slices = pad([both, video_only], "right")
    batched = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=image,
        pixel_values_videos=torch.cat([video, other_video]),
        video_num_frames=[3, 6],
    )
    torch.testing.assert_close(batched[0, slices[0]], alone[0], atol=ATOL, rtol=0)
    second = logits_of(hybrid_model, input_ids=torch.tensor([video_only]), pixel_values_videos=other_video)
    torch.testing.assert_close(batched[1, slices[1]], second[0], atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# precomputed features


def test_precomputed_video_features_equal_pixel_input(hybrid_model):
    prompts = [video_prompt(hybrid_model, 3), video_prompt(hybrid_model, 6, prefix=(1, 2, 3, 4))]
    pixel_values_videos = torch.cat([frames(3, seed=11), frames(6, seed=12)])
    input_ids, attention_mask, _, _ = pad(prompts, "right")
    features = hybrid_model.get_video_features(pixel_values_videos, [3, 6])
    grid = hybrid_model.model.token_builder
    assert [f.shape[0] for f in features.fast_tokens] == [grid.num_fast_tokens(n, GRID, GRID) for n in (3, 6)]
    assert [s.shape[0] for s in features.slow_tokens] == [grid.num_slow_tokens(n, GRID, GRID) for n in (3, 6)]
    expected = logits_of(
        hybrid_model,
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=pixel_values_videos,
        video_num_frames=[3, 6],
    )
    actual = logits_of(hybrid_model, input_ids=input_ids, attention_mask=attention_mask, video_features=features)
    assert torch.equal(actual, expected)


# ---------------------------------------------------------------------------------------------------------------
# generation


@torch.no_grad()
def greedy_without_cache(model, prompt: list[int], max_new_tokens: int, **visual) -> list[int]:
    """Recompute the whole sequence at every step, no cache: the reference for `generate`."""
    input_ids = torch.tensor([prompt])
    for _ in range(max_new_tokens):
        logits = model(input_ids=input_ids, use_cache=False, **visual).logits
        input_ids = torch.cat([input_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return input_ids[0, len(prompt) :].tolist()


def generate_new_tokens(model, input_ids, max_new_tokens=6, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=PAD_ID, **kwargs
        )
    return output[:, input_ids.shape[1] :]


@pytest.mark.parametrize("num_frames", [3, 6])
def test_greedy_generate_equals_recomputing_without_cache(hybrid_model, num_frames):
    prompt = video_prompt(hybrid_model, num_frames)
    video = frames(num_frames, seed=13)
    expected = greedy_without_cache(hybrid_model, prompt, 6, pixel_values_videos=video)
    generated = generate_new_tokens(hybrid_model, torch.tensor([prompt]), pixel_values_videos=video)
    assert generated[0].tolist() == expected
    # the cross term acts on the generated positions (alpha = 0.7 vs the same weights with alpha = 0)
    with torch.no_grad():
        sequence = torch.tensor([prompt + expected])
        active = hybrid_model(input_ids=sequence, pixel_values_videos=video).logits
        inactive = tiny_slowfast_model(seed=0)(input_ids=sequence, pixel_values_videos=video).logits
    assert (active[0, len(prompt) :] - inactive[0, len(prompt) :]).abs().max() > 1e-3


def test_generate_with_images(hybrid_model):
    prompt = image_prompt(hybrid_model)
    image = frames(1, seed=14)
    expected = greedy_without_cache(hybrid_model, prompt, 5, pixel_values=image)
    generated = generate_new_tokens(hybrid_model, torch.tensor([prompt]), max_new_tokens=5, pixel_values=image)
    assert generated[0].tolist() == expected


@pytest.mark.parametrize("second", ["video", "text"])
def test_batched_left_padded_generate_equals_generating_each_alone(hybrid_model, second):
    first_prompt = video_prompt(hybrid_model, 3, prefix=(1, 2, 3, 7, 8, 9))
    first_video = frames(3, seed=15)
    if second == "video":
        second_prompt = video_prompt(hybrid_model, 6, prefix=(1,), suffix=(4,))
        second_video = frames(6, seed=16)
        videos, num_frames = torch.cat([first_video, second_video]), [3, 6]
    else:
        second_prompt = [1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]
        second_video = None
        videos, num_frames = first_video, [3]
    assert len(first_prompt) != len(second_prompt)
    input_ids, attention_mask, _, _ = pad([first_prompt, second_prompt], "left")
    batched = generate_new_tokens(
        hybrid_model,
        input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=videos,
        video_num_frames=num_frames,
    )
    first = generate_new_tokens(hybrid_model, torch.tensor([first_prompt]), pixel_values_videos=first_video)
    second_inputs = {} if second_video is None else {"pixel_values_videos": second_video}
    second_alone = generate_new_tokens(hybrid_model, torch.tensor([second_prompt]), **second_inputs)
    assert batched[0].tolist() == first[0].tolist()
    assert batched[1].tolist() == second_alone[0].tolist()
    # and generating alone matches the no-cache reference
    assert first[0].tolist() == greedy_without_cache(hybrid_model, first_prompt, 6, pixel_values_videos=first_video)


def _sample_with_seed(model, input_ids, **kwargs) -> tuple[list[list[int]], torch.Tensor]:
    """Sampled new tokens and the raw logits of every step, (steps, rows, vocab)."""
    torch.manual_seed(1234)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            max_new_tokens=4,
            do_sample=True,
            top_k=0,
            pad_token_id=PAD_ID,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    return output.sequences[:, input_ids.shape[1] :].tolist(), torch.stack(output.logits)


def _assert_same_samples(actual, expected):
    (actual_tokens, actual_logits), (expected_tokens, expected_logits) = actual, expected
    assert actual_tokens == expected_tokens
    torch.testing.assert_close(actual_logits, expected_logits, atol=ATOL, rtol=0)


VIDEO_LAYOUTS = ["5d", "5d_num_frames", "4d", "4d_num_frames_list", "4d_num_frames_tensor", "video_features"]


def _video_inputs(model, layout: str, video: torch.Tensor) -> dict:
    if layout == "5d":
        return dict(pixel_values_videos=video[None])
    if layout == "5d_num_frames":
        return dict(pixel_values_videos=video[None], video_num_frames=[video.shape[0]])
    if layout == "4d":
        return dict(pixel_values_videos=video)
    if layout == "4d_num_frames_list":
        return dict(pixel_values_videos=video, video_num_frames=[video.shape[0]])
    if layout == "4d_num_frames_tensor":
        return dict(pixel_values_videos=video, video_num_frames=torch.tensor([video.shape[0]]))
    return dict(video_features=model.get_video_features(video))


@pytest.mark.parametrize("layout", VIDEO_LAYOUTS)
def test_num_return_sequences_expands_the_video(hybrid_model, layout):
    """`generate` repeats each prompt `num_return_sequences` times (also `num_beams`); its video must follow. The
    reference is the same sampling run on a batch where the prompt and its video were repeated by hand."""
    prompt, video = video_prompt(hybrid_model, 3), frames(3, seed=40)
    expected = _sample_with_seed(
        hybrid_model,
        torch.tensor([prompt, prompt]),
        pixel_values_videos=torch.cat([video, video]),
        video_num_frames=[3, 3],
    )
    actual = _sample_with_seed(
        hybrid_model, torch.tensor([prompt]), num_return_sequences=2, **_video_inputs(hybrid_model, layout, video)
    )
    _assert_same_samples(actual, expected)


def test_num_return_sequences_expands_a_batch_with_several_images_per_sample(hybrid_model):
    """Sample 0 holds two images, sample 1 none: images must be repeated per sample, not one by one."""
    count = hybrid_model.model.token_builder.num_fast_tokens(1, GRID, GRID)
    two_images = [1] + [IMAGE_TOKEN_ID] * count + [2] + [IMAGE_TOKEN_ID] * count + [3]
    text_only = [1, 5, 6, 7]
    images = frames(2, seed=41)
    input_ids, attention_mask, _, _ = pad([two_images, text_only], "left")
    expected = _sample_with_seed(
        hybrid_model,
        input_ids.repeat_interleave(2, dim=0),
        attention_mask=attention_mask.repeat_interleave(2, dim=0),
        pixel_values=torch.cat([images, images]),
    )
    actual = _sample_with_seed(
        hybrid_model, input_ids, attention_mask=attention_mask, pixel_values=images, num_return_sequences=2
    )
    _assert_same_samples(actual, expected)


# ---------------------------------------------------------------------------------------------------------------
# loss


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(hybrid_model):
    prompts = [video_prompt(hybrid_model, 3, suffix=(4, 5, 6, 7, 8)), video_prompt(hybrid_model, 6, suffix=(9, 10))]
    input_ids, attention_mask, _, _ = pad(prompts, "right")
    labels = input_ids.clone()
    labels[input_ids == VIDEO_TOKEN_ID] = -100
    labels[attention_mask == 0] = -100
    labels[:, :2] = -100
    with torch.no_grad():
        output = hybrid_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values_videos=torch.cat([frames(3, seed=17), frames(6, seed=18)]),
            video_num_frames=[3, 6],
            labels=labels,
        )
    logits = output.logits
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(output.loss, expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# bad inputs


def _video_call(model, prompt, video, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt]), pixel_values_videos=video, **kwargs)


def test_wrong_placeholder_count_raises(hybrid_model):
    prompt = video_prompt(hybrid_model, 3)
    first = prompt.index(VIDEO_TOKEN_ID)
    video = frames(3, seed=19)
    too_many = prompt[:first] + [VIDEO_TOKEN_ID] + prompt[first:]
    too_few = prompt[:first] + prompt[first + 1 :]
    with pytest.raises(ValueError, match=r"9 video placeholder tokens.*8 fast tokens"):
        _video_call(hybrid_model, too_many, video)
    with pytest.raises(ValueError, match=r"7 video placeholder tokens.*8 fast tokens"):
        _video_call(hybrid_model, too_few, video)
    image_prompt_ids = image_prompt(hybrid_model)
    with pytest.raises(ValueError, match=r"17 image placeholder tokens.*16 fast tokens"):
        with torch.no_grad():
            hybrid_model(input_ids=torch.tensor([[IMAGE_TOKEN_ID] + image_prompt_ids]), pixel_values=frames(1, 0))


def test_placeholders_without_visual_input_raise(hybrid_model):
    with pytest.raises(ValueError, match="video placeholder tokens but no video was given"):
        _video_call(hybrid_model, video_prompt(hybrid_model, 3), None)
    with pytest.raises(ValueError, match="image placeholder tokens but no image was given"):
        _video_call(hybrid_model, image_prompt(hybrid_model), None)


def test_visual_input_without_placeholders_raises(hybrid_model):
    with pytest.raises(ValueError, match="holds 0 video placeholder tokens"):
        _video_call(hybrid_model, [1, 2, 3, 4], frames(3, seed=20))
    with pytest.raises(ValueError, match="holds 0 image placeholder tokens"):
        with torch.no_grad():
            hybrid_model(input_ids=torch.tensor([[1, 2, 3]]), pixel_values=frames(1, seed=20))
    # a video's placeholders do not stand in for an image's
    with pytest.raises(ValueError, match="image placeholder tokens"):
        with torch.no_grad():
            hybrid_model(input_ids=torch.tensor([video_prompt(hybrid_model, 3)]), pixel_values=frames(1, seed=20))


def test_bad_frames_raise(hybrid_model):
    prompt = video_prompt(hybrid_model, 3)
    with pytest.raises(ValueError, match=r"48x48 pixels.*32x32"):
        _video_call(hybrid_model, prompt, frames(3, seed=21, size=48))
    with pytest.raises(ValueError, match="3 channels, got 1"):
        _video_call(hybrid_model, prompt, frames(3, seed=21, channels=1))
    with pytest.raises(ValueError, match=r"must have shape \(num_videos, frames, C, H, W\) or \(total_frames"):
        _video_call(hybrid_model, prompt, torch.randn(3, IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(ValueError, match=r"pixel_values.*must have shape \(num_images"):
        with torch.no_grad():
            hybrid_model(input_ids=torch.tensor([image_prompt(hybrid_model)]), pixel_values=frames(1, 0)[0])


def test_video_num_frames_mismatch_raises(hybrid_model):
    prompt = video_prompt(hybrid_model, 3)
    with pytest.raises(ValueError, match="adds up to 4 frames"):
        _video_call(hybrid_model, prompt, frames(3, seed=22), video_num_frames=[2, 2])
    with pytest.raises(ValueError, match="does not fit"):
        _video_call(hybrid_model, prompt, frames(3, seed=22)[None], video_num_frames=[4])
    with pytest.raises(ValueError, match="does not fit"):
        _video_call(hybrid_model, prompt, frames(3, seed=22)[None], video_num_frames=[3, 3])
    with pytest.raises(ValueError, match="counts >= 1"):
        _video_call(hybrid_model, prompt, frames(3, seed=22), video_num_frames=[3, 0])
    with pytest.raises(ValueError, match="without `pixel_values_videos`"):
        _video_call(hybrid_model, prompt, None, video_num_frames=[3])


def test_pixels_and_features_together_raise(hybrid_model):
    prompt = video_prompt(hybrid_model, 3)
    video = frames(3, seed=23)
    with pytest.raises(ValueError, match="either `pixel_values_videos` or `video_features`, not both"):
        _video_call(hybrid_model, prompt, video, video_features=hybrid_model.get_video_features(video))
    image = frames(1, seed=23)
    with pytest.raises(ValueError, match="either `pixel_values` or `image_features`, not both"):
        with torch.no_grad():
            hybrid_model(
                input_ids=torch.tensor([image_prompt(hybrid_model)]),
                pixel_values=image,
                image_features=hybrid_model.get_image_features(image),
            )
    with pytest.raises(ValueError, match="SlowFastVisualFeatures"):
        _video_call(hybrid_model, prompt, None, video_features=hybrid_model.get_video_features(video).fast_tokens)


def test_placeholder_run_split_across_samples_raises(hybrid_model):
    count = hybrid_model.model.token_builder.num_fast_tokens(3, GRID, GRID)
    assert count == 8
    half = count // 2
    input_ids = torch.tensor([[1, 2] + [VIDEO_TOKEN_ID] * half + [3], [1] + [VIDEO_TOKEN_ID] * half + [2, 3]])
    with pytest.raises(ValueError, match="runs have lengths \\[4, 4\\].*sample 1, position 1 does not start a video"):
        with torch.no_grad():
            hybrid_model(input_ids=input_ids, pixel_values_videos=frames(3, seed=24))


def test_input_ids_and_inputs_embeds_exactly_one(hybrid_model):
    input_ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        with torch.no_grad():
            hybrid_model(input_ids=input_ids, inputs_embeds=hybrid_model.get_input_embeddings()(input_ids))
    with pytest.raises(ValueError, match="exactly one of `input_ids` or `inputs_embeds`"):
        with torch.no_grad():
            hybrid_model()


# ---------------------------------------------------------------------------------------------------------------
# inputs_embeds


def test_inputs_embeds_path_equals_input_ids_path(hybrid_model):
    prompts = [video_prompt(hybrid_model, 3), [1, 2, 3, 4, 5], image_prompt(hybrid_model)]
    video, image = frames(3, seed=25), frames(1, seed=26)
    input_ids, attention_mask, _, _ = pad(prompts, "right")
    inputs = dict(attention_mask=attention_mask, pixel_values_videos=video, pixel_values=image)
    expected = logits_of(hybrid_model, input_ids=input_ids, **inputs)
    with torch.no_grad():
        embeds = hybrid_model.get_input_embeddings()(input_ids)
    actual = logits_of(hybrid_model, inputs_embeds=embeds, **inputs)
    assert torch.equal(actual, expected)
    # placeholder detection through the embeddings: the placeholders must be counted, so a missing video is caught
    with pytest.raises(ValueError, match="no video was given"):
        with torch.no_grad():
            hybrid_model(inputs_embeds=embeds, attention_mask=attention_mask, pixel_values=image)


# ---------------------------------------------------------------------------------------------------------------
# gradient checkpointing


def _hybrid_gradients(model, checkpointing: bool, **checkpointing_kwargs) -> dict:
    model.zero_grad(set_to_none=True)
    if checkpointing:
        model.gradient_checkpointing_enable(**checkpointing_kwargs)
    else:
        model.gradient_checkpointing_disable()
    model.train()
    prompts = [video_prompt(model, 3, suffix=(4, 5, 6, 7)), video_prompt(model, 6, prefix=(1,), suffix=(9, 10, 11))]
    input_ids, attention_mask, _, _ = pad(prompts, "right")
    labels = input_ids.masked_fill((input_ids == VIDEO_TOKEN_ID) | (attention_mask == 0), -100)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=torch.cat([frames(3, seed=27), frames(6, seed=28)]),
        video_num_frames=[3, 6],
        labels=labels,
        use_cache=False,
    )
    output.loss.backward()
    if checkpointing:
        layers = decoder_layers(model.model.language_model)
        assert model.is_gradient_checkpointing and all(layer.gradient_checkpointing for layer in layers)
    return {
        name: parameter.grad.detach().clone()
        for name, parameter in model.named_parameters()
        if "cross_attn" in name or "multi_modal_projector" in name or "embed_tokens" in name
    }


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize(
    "checkpointing_kwargs",
    [{}, {"gradient_checkpointing_kwargs": {"use_reentrant": False}}],
    ids=["default", "non-reentrant"],
)
def test_gradient_checkpointing_gives_the_same_gradients(checkpointing_kwargs):
    model = activate_hybrid_layers(tiny_slowfast_model(seed=5))
    assert all(p.requires_grad for p in model.parameters())
    reference = _hybrid_gradients(model, checkpointing=False)
    checkpointed = _hybrid_gradients(model, checkpointing=True, **checkpointing_kwargs)
    for name in ("gate_alpha", "kv_proj.weight", "kv_proj.bias", "gate_proj.weight"):
        names = [n for n in reference if n.endswith(name)]
        assert len(names) == 2, names
        for n in names:
            assert reference[n].abs().max() > 0, n
    assert set(reference) == set(checkpointed)
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=0, msg=name)


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_reentrant_checkpointing_is_refused_with_a_clear_error():
    """The slow keys/values reach the checkpointed layers as kwargs, which reentrant checkpointing cannot replay."""
    model = tiny_slowfast_model()
    with pytest.raises(ValueError, match="use_reentrant=False"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
