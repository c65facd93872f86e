"""Bad, hostile and edge inputs across the public surface: each is refused with an error naming the argument (what
was expected, what was given), or gives the correct result; faults (a killed converter, a run killed while saving)
leave nothing broken."""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import (
    IMAGE_SIZE,
    IMAGE_TOKEN_ID,
    PATCH_SIZE,
    VIDEO_TOKEN_ID,
    activate_hybrid_layers,
    tiny_slowfast_config,
    tiny_slowfast_model,
    tiny_text_config,
    tiny_vision_config,
    video_prompt,
)
from transformers import CONFIG_MAPPING, AutoModelForImageTextToText, Qwen2ForCausalLM, SiglipVisionModel

from slowfast_hf import SlowFastForConditionalGeneration, SlowFastVisualFeatures
from slowfast_hf.convert_official import SafetensorsCheckpoint, atomic_output_dir, remove_stale_staging
from slowfast_hf.convert_official import main as official_main
from slowfast_hf.hybrid_attention import decoder_layers

GRID = IMAGE_SIZE // PATCH_SIZE


def frames(num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def fast_count(model, num_frames: int) -> int:
    return model.model.token_builder.num_fast_tokens(num_frames, GRID, GRID)


@pytest.fixture(scope="module")
def model():
    return activate_hybrid_layers(tiny_slowfast_model())


# ---------------------------------------------------------------------------------------------------------------
# Placeholder runs: every run of placeholders holds whole videos, in the videos' order
# ---------------------------------------------------------------------------------------------------------------


def two_videos(model):
    """Two videos of 2 and 4 frames (4 and 8 fast tokens) as one SlowFastVisualFeatures."""
    pixels = torch.zeros(2, 4, 3, IMAGE_SIZE, IMAGE_SIZE)
    pixels[0, :2], pixels[1] = frames(2, seed=1), frames(4, seed=2)
    features = model.get_video_features(pixels, video_num_frames=[2, 4])
    assert [fast.shape[0] for fast in features.fast_tokens] == [fast_count(model, 2), fast_count(model, 4)] == [4, 8]
    return features


@pytest.mark.parametrize(
    "runs, message",
    [
        ([8, 4], r"runs have lengths \[8, 4\] but the 2 video\(s\) give \[4, 8\].*position 10 does not start"),
        ([4, 4, 4], r"runs have lengths \[4, 4, 4\].*position 11 does not start a video"),  # the 2nd video split
        ([2, 2, 8], r"runs have lengths \[2, 2, 8\].*position 4 does not start a video"),  # the 1st video split
    ],
)
def test_swapped_or_split_placeholder_runs_are_refused(model, runs, message):
    features = two_videos(model)
    input_ids = [1]
    for run in runs:
        input_ids += [VIDEO_TOKEN_ID] * run + [2]
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(input_ids=torch.tensor([input_ids]), video_features=features)


def test_adjacent_runs_in_the_videos_order_are_accepted(model):
    """The correct text (runs of 4 then 8, or both videos in one unbroken run of 12) gives the same logits as each
    video placed alone would: the reference is the same call with the runs separated."""
    features = two_videos(model)
    separated = [1] + [VIDEO_TOKEN_ID] * 4 + [2] + [VIDEO_TOKEN_ID] * 8 + [3]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([separated]), video_features=features).logits
        pixels_logits = model(
            input_ids=torch.tensor([separated]),
            pixel_values_videos=torch.cat([frames(2, seed=1), frames(4, seed=2)]),
            video_num_frames=[2, 4],
        ).logits
    torch.testing.assert_close(logits, pixels_logits)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1] + [VIDEO_TOKEN_ID] * 12 + [3]]), video_features=features)


# ---------------------------------------------------------------------------------------------------------------
# Pixels and features the model would silently misread
# ---------------------------------------------------------------------------------------------------------------


def with_inf(pixels):
    pixels = pixels.clone()
    pixels[0, 0, 0, 0] = float("inf")
    return pixels


def with_nan(pixels):
    pixels = pixels.clone()
    pixels[-1, -1, -1, -1] = float("nan")
    return pixels


@pytest.mark.parametrize(
    "argument, pixels, message",
    [
        ("pixel_values_videos", (frames(4) * 50 + 128).clamp(0, 255).to(torch.uint8), r"dtype torch.uint8.*processor"),
        ("pixel_values_videos", frames(4).to(torch.int64), r"dtype torch.int64.*processor"),
        ("pixel_values", (frames(1) * 50 + 128).clamp(0, 255).to(torch.uint8), r"dtype torch.uint8.*processor"),
        ("pixel_values_videos", with_inf(frames(4)), "1 non-finite values"),
        ("pixel_values_videos", with_nan(frames(4)), "1 non-finite values"),
        ("pixel_values", with_inf(frames(1)), "1 non-finite values"),
        ("pixel_values_videos", torch.zeros(1, 0, 3, IMAGE_SIZE, IMAGE_SIZE), r"at least one video of at least one"),
        ("pixel_values_videos", torch.zeros(0, 4, 3, IMAGE_SIZE, IMAGE_SIZE), r"at least one video of at least one"),
        ("pixel_values_videos", torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE), r"at least one video of at least one"),
        ("pixel_values", torch.zeros(0, 3, IMAGE_SIZE, IMAGE_SIZE), r"num_images >= 1"),
        ("pixel_values_videos", frames(4).numpy(), "must be a torch.Tensor, got ndarray"),
    ],
)
def test_bad_pixels_are_refused(model, argument, pixels, message):
    num_frames = 1 if argument == "pixel_values" else 4
    token = IMAGE_TOKEN_ID if argument == "pixel_values" else VIDEO_TOKEN_ID
    input_ids = torch.tensor([[1] + [token] * fast_count(model, num_frames) + [2]])
    with pytest.raises(ValueError, match=rf"`{argument}`.*{message}|{message}.*`{argument}`"), torch.no_grad():
        model(input_ids=input_ids, **{argument: pixels})


def test_inf_pixel_no_longer_gives_nan_logits_and_token_zero(model):
    """Before: one `inf` pixel made every logit NaN and `generate` returned token 0 forever."""
    input_ids = torch.tensor([video_prompt(model, 4)])
    with pytest.raises(ValueError, match="`pixel_values_videos` holds 1 non-finite"):
        model.generate(input_ids=input_ids, pixel_values_videos=with_inf(frames(4)), max_new_tokens=3)


def features_of(model, num_frames=4) -> SlowFastVisualFeatures:
    return model.get_video_features(frames(num_frames), [num_frames])


def replace(features, part, index, tensor):
    parts = {"fast_tokens": list(features.fast_tokens), "slow_tokens": list(features.slow_tokens)}
    parts[part][index] = tensor
    return SlowFastVisualFeatures(**parts)


def bad_features(model, case):
    features = features_of(model)
    fast, slow = features.fast_tokens[0], features.slow_tokens[0]
    return {
        "narrow_fast": replace(features, "fast_tokens", 0, fast[:, :32]),
        "narrow_slow": replace(features, "slow_tokens", 0, slow[:, :32]),
        "nan_fast": replace(features, "fast_tokens", 0, fast.clone().fill_(float("nan"))),
        "inf_slow": replace(features, "slow_tokens", 0, slow.clone().fill_(float("inf"))),
        "empty": SlowFastVisualFeatures(fast_tokens=[], slow_tokens=[]),
        "no_slow_tokens": replace(features, "slow_tokens", 0, slow[:0]),
        "flat": replace(features, "fast_tokens", 0, fast.flatten()),
        "integer": replace(features, "fast_tokens", 0, fast.long()),
        "tuple": (features.fast_tokens, features.slow_tokens),
    }[case]


@pytest.mark.parametrize(
    "case, message",
    [
        ("narrow_fast", r"`video_features`.fast_tokens\[0\] has width 32 but this model's decoder has hidden_size 64"),
        ("narrow_slow", r"`video_features`.slow_tokens\[0\] has width 32 but .* hidden_size 64"),
        ("nan_fast", r"`video_features`.fast_tokens\[0\] must hold finite"),
        ("inf_slow", r"`video_features`.slow_tokens\[0\] must hold finite"),
        ("empty", r"`video_features` holds no video"),
        ("no_slow_tokens", r"`video_features`.slow_tokens\[0\] must be a \(num_tokens >= 1, hidden_size\) tensor"),
        ("flat", r"`video_features`.fast_tokens\[0\] must be a \(num_tokens >= 1, hidden_size\) tensor, got \(512,\)"),
        ("integer", r"`video_features`.fast_tokens\[0\] must hold finite floating-point values \(dtype torch.int64\)"),
        ("tuple", r"`video_features` must be a SlowFastVisualFeatures"),
    ],
)
@pytest.mark.parametrize("hybrid", [True, False], ids=["hybrid_layers", "no_hybrid_layers"])
def test_bad_visual_features_are_refused(model, case, message, hybrid):
    """Before: features of another width were scattered as wrong values when no hybrid layer complained (or gave an
    RMSNorm size error when one did); empty features an IndexError."""
    target = model if hybrid else tiny_slowfast_model(hybrid_layers=[])
    input_ids = torch.tensor([video_prompt(target, 4)])
    with pytest.raises(ValueError, match=message), torch.no_grad():
        target(input_ids=input_ids, video_features=bad_features(model, case))


def test_bad_image_features_name_image_features(model):
    features = model.get_image_features(frames(1))
    narrow = SlowFastVisualFeatures(fast_tokens=[features.fast_tokens[0][:, :8]], slow_tokens=features.slow_tokens)
    input_ids = torch.tensor([[1] + [IMAGE_TOKEN_ID] * fast_count(model, 1) + [2]])
    with pytest.raises(ValueError, match=r"`image_features`.fast_tokens\[0\] has width 8"), torch.no_grad():
        model(input_ids=input_ids, image_features=narrow)


def test_bad_features_are_refused_by_beam_search(model):
    input_ids = torch.tensor([video_prompt(model, 4)])
    with pytest.raises(ValueError, match=r"`video_features` must be a SlowFastVisualFeatures"):
        model.generate(input_ids=input_ids, video_features=[1, 2], num_beams=2, max_new_tokens=2)


# ---------------------------------------------------------------------------------------------------------------
# Placeholder ids, labels, generation without a cache
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["video", "image"])
def test_missing_placeholder_id_is_named(kind):
    """Before: 'the text holds 0 video placeholder tokens' when it held eight."""
    model = tiny_slowfast_model(**{f"{kind}_token_id": None})
    num_frames = 4 if kind == "video" else 1
    token = VIDEO_TOKEN_ID if kind == "video" else IMAGE_TOKEN_ID
    input_ids = torch.tensor([[1] + [token] * fast_count(model, num_frames) + [2]])
    argument = "pixel_values_videos" if kind == "video" else "pixel_values"
    with pytest.raises(ValueError, match=rf"`config.{kind}_token_id` is not set"), torch.no_grad():
        model(input_ids=input_ids, **{argument: frames(num_frames)})


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.zeros(1, 5, dtype=torch.long), r"`labels` must have the input's shape .* = \(1, 14\), got \(1, 5\)"),
        (torch.zeros(14, dtype=torch.long), r"`labels` must have the input's shape .* got \(14,\)"),
        (torch.full((1, 14), 128), r"`labels` must be token ids in \[0, 128\) or -100 \(no loss\), got \[128\]"),
        (torch.full((1, 14), -5), r"`labels` must be token ids in \[0, 128\) or -100 \(no loss\), got \[-5\]"),
        (torch.zeros(1, 14), r"`labels` must be an integer \(torch.long\) tensor, got torch.float32"),
        ([[0] * 14], r"`labels` must be an integer \(torch.long\) tensor, got list"),
    ],
)
def test_bad_labels_are_refused(model, labels, message):
    input_ids = torch.tensor([video_prompt(model, 4)])
    assert input_ids.shape == (1, 14)
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(input_ids=input_ids, pixel_values_videos=frames(4), labels=labels)


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(input_ids=torch.ones(1, 5)), r"`input_ids` must be an integer tensor .* got torch.float32 of shape"),
        (dict(input_ids=torch.ones(5, dtype=torch.long)), r"`input_ids` must be .* got torch.int64 of shape \(5,\)"),
        (
            dict(input_ids=torch.tensor([[1, 500, 128]])),
            r"`input_ids` must be token ids in \[0, 128\), got \[128, 500\]",
        ),
        (dict(input_ids=torch.tensor([[1, -3]])), r"`input_ids` must be token ids in \[0, 128\), got \[-3\]"),
        (
            dict(inputs_embeds=torch.randn(1, 5, 32)),
            r"`inputs_embeds` has width 32 but the decoder's hidden_size is 64",
        ),
        (dict(inputs_embeds=torch.full((1, 5, 64), float("inf"))), r"`inputs_embeds` holds non-finite values"),
        (dict(inputs_embeds=torch.randn(5, 64)), r"`inputs_embeds` must be a floating-point tensor of shape"),
        (
            dict(input_ids=torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(1, 5)),
            r"`attention_mask` of shape \(1, 5\) does not fit the 2 sequences of 5 tokens",
        ),
        (
            dict(input_ids=torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 3)),
            r"`attention_mask` of shape \(1, 3\) does not fit the 1 sequences of 5 tokens",
        ),
    ],
)
def test_bad_text_inputs_are_refused(model, inputs, message):
    """Before: a float/1-D/out-of-range `input_ids` ended in torch's embedding (an IndexError on CPU, a device-side
    assert on GPUs) or an unpacking error; a narrow or infinite `inputs_embeds` in a size error or NaN logits."""
    with pytest.raises(ValueError, match=message), torch.no_grad():
        model(**inputs)


def test_bad_vision_batch_size_set_after_building_is_refused():
    """Before: a negative `vision_batch_size` left the last frames' features uninitialised memory."""
    model = tiny_slowfast_model()
    model.config.vision_batch_size = -1
    with pytest.raises(ValueError, match=r"`config.vision_batch_size` must be an integer >= 1 or None, got -1"):
        model.get_video_features(frames(4))


def test_lora_rank_must_be_positive(model):
    pytest.importorskip("peft")
    from slowfast_hf.training import decoder_lora_config

    with pytest.raises(ValueError, match=r"`r` \(the LoRA rank\) must be an integer >= 1, got 0"):
        decoder_lora_config(model, r=0)


def test_good_labels_give_the_loss(model):
    input_ids = torch.tensor([video_prompt(model, 4)])
    labels = input_ids.clone()
    labels[input_ids == VIDEO_TOKEN_ID] = -100
    with torch.no_grad():
        outputs = model(input_ids=input_ids, pixel_values_videos=frames(4), labels=labels)
    logits = outputs.logits[0, :-1]
    expected = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(outputs.loss, expected)


def test_generated_placeholder_without_cache_is_explained():
    """Before: with `use_cache=False`, a generated placeholder crashed the next step with a placeholder-count error."""
    model = activate_hybrid_layers(tiny_slowfast_model())
    input_ids = torch.tensor([video_prompt(model, 4)])
    likeliest = {(VIDEO_TOKEN_ID,): 100.0}  # the placeholder becomes the likeliest next token
    with pytest.raises(ValueError, match=rf"produced the video placeholder token \(id {VIDEO_TOKEN_ID}\).*use_cache"):
        model.generate(
            input_ids=input_ids,
            pixel_values_videos=frames(4),
            max_new_tokens=3,
            use_cache=False,
            sequence_bias=likeliest,
        )
    # the remedy the message names works, and matches the cached generation
    settings = dict(max_new_tokens=3, do_sample=False, suppress_tokens=[VIDEO_TOKEN_ID])
    uncached = model.generate(input_ids=input_ids, pixel_values_videos=frames(4), use_cache=False, **settings)
    cached = model.generate(input_ids=input_ids, pixel_values_videos=frames(4), **settings)
    assert uncached.shape == (1, 17) and torch.equal(uncached, cached)


# ---------------------------------------------------------------------------------------------------------------
# Configurations that built but crashed later
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vision_config, layer, message",
    [
        (
            tiny_vision_config(),
            3,
            r"`vision_feature_layer` must index one of the vision encoder's 3 hidden states.*"
            r"\[-3, 2\], got 3",
        ),
        (tiny_vision_config(), -4, r"`vision_feature_layer` .* got -4"),
        (CONFIG_MAPPING["convnext"](hidden_sizes=[8, 16], depths=[1, 1]), 3, r"3 hidden states .* got 3"),
        (CONFIG_MAPPING["mobilenet_v2"](), -1, r"\(mobilenet_v2\) has neither `hidden_size` nor `hidden_sizes`"),
    ],
)
def test_configs_that_would_crash_later_are_refused(vision_config, layer, message):
    with pytest.raises(ValueError, match=message):
        tiny_slowfast_config(vision_config=vision_config.to_dict(), vision_feature_layer=layer)


@pytest.mark.parametrize("layer", [-3, 0, 2])
def test_every_valid_vision_feature_layer_runs(layer):
    model = tiny_slowfast_model(vision_feature_layer=layer)
    with torch.no_grad():
        features = model.get_video_features(frames(2))
    hidden = model.model.vision_tower(frames(2), output_hidden_states=True).hidden_states[layer]
    expected = model.model.multi_modal_projector(hidden.reshape(2, GRID, GRID, -1))
    torch.testing.assert_close(
        features.slow_tokens[0],
        torch.nn.functional.avg_pool2d(expected.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(-1, 64),
    )


# ---------------------------------------------------------------------------------------------------------------
# Loading a checkpoint whose hybrid layers its config does not name
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_without_hybrid_layers(tmp_path_factory):
    """A model with hybrid layers 1 and 3 (trained: alpha != 0), saved, then its config.json stripped of
    `hybrid_layers` (the default would be every 8th layer from 0: layer 0 only)."""
    model = activate_hybrid_layers(tiny_slowfast_model(hybrid_layers=[1, 3]))
    path = tmp_path_factory.mktemp("no_hybrid_layers")
    model.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    assert config.pop("hybrid_layers") == [1, 3]
    (path / "config.json").write_text(json.dumps(config))
    return model, path


@pytest.mark.parametrize("loader", [SlowFastForConditionalGeneration, AutoModelForImageTextToText])
def test_checkpoint_cross_attention_is_never_dropped(saved_without_hybrid_layers, loader):
    """Before: it loaded with hybrid layer 0 only, dropping the trained cross-attention of layers 1 and 3 with one
    load-report line. Now loading refuses, naming the layers; with `hybrid_layers` passed it loads them all."""
    model, path = saved_without_hybrid_layers
    with pytest.raises(
        ValueError,
        match=r"decoder layers \[1, 3\], which `hybrid_layers` \[0\] does not make hybrid \(the checkpoint's config\).*"
        r"hybrid_layers=\[1, 3\]",
    ):
        loader.from_pretrained(path)
    loaded, info = loader.from_pretrained(path, hybrid_layers=[1, 3], output_loading_info=True)
    assert loaded.config.hybrid_layers == [1, 3] and not info["missing_keys"] and not info["unexpected_keys"]
    input_ids = torch.tensor([video_prompt(model, 4)])
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values_videos=frames(4)).logits
        actual = loaded.eval()(input_ids=input_ids, pixel_values_videos=frames(4)).logits
    assert torch.equal(actual, expected)


def test_cross_attention_is_left_out_only_when_hybrid_layers_are_passed(saved_without_hybrid_layers, caplog):
    model, path = saved_without_hybrid_layers
    with caplog.at_level(logging.WARNING):
        loaded = SlowFastForConditionalGeneration.from_pretrained(path, hybrid_layers=[3])
    assert loaded.config.hybrid_layers == [3]
    assert "decoder layers [1], which `hybrid_layers` [3] does not make hybrid" in caplog.text
    trained = decoder_layers(model.model.language_model)[3].self_attn.cross_attn.state_dict()
    kept = decoder_layers(loaded.model.language_model)[3].self_attn.cross_attn.state_dict()
    assert all(torch.equal(kept[name], trained[name]) for name in trained)


def test_truncated_weights_file_is_named(tmp_path):
    model = tiny_slowfast_model()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=rf"Cannot load {tmp_path}: {weights} is truncated or corrupt"):
        SlowFastForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(OSError, match=rf"{weights} is truncated or corrupt"):
        AutoModelForImageTextToText.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# from_vision_text_pretrained: placeholder ids are required or come from the tokenizer
# ---------------------------------------------------------------------------------------------------------------


def base_parts():
    """A fresh vision tower and causal LM (`from_vision_text_pretrained` turns the LM's layers hybrid in place)."""
    torch.manual_seed(0)
    return SiglipVisionModel(tiny_vision_config()), Qwen2ForCausalLM(tiny_text_config())


def test_from_vision_text_pretrained_requires_the_video_token_id():
    with pytest.raises(ValueError, match=r"`video_token_id` is required.*`tokenizer=`"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(*base_parts(), hybrid_layers=[1])


def test_from_vision_text_pretrained_takes_the_ids_from_a_tokenizer(tiny_tokenizer):
    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        *base_parts(), tokenizer=tiny_tokenizer, hybrid_layers=[1]
    )
    assert model.config.video_token_id == tiny_tokenizer.convert_tokens_to_ids("<video>")
    assert model.config.image_token_id == tiny_tokenizer.convert_tokens_to_ids("<image>")
    explicit = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        *base_parts(), tokenizer=tiny_tokenizer, video_token_id=7, hybrid_layers=[1]
    )
    assert explicit.config.video_token_id == 7


def test_from_vision_text_pretrained_refuses_a_tokenizer_without_video():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")

    with pytest.raises(ValueError, match=r"`tokenizer` has no <video> token.*add_special_tokens"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(
            *base_parts(), tokenizer=tokenizer, hybrid_layers=[1]
        )


# ---------------------------------------------------------------------------------------------------------------
# Converters: truncated shards, one-line errors, staging folders of killed conversions
# ---------------------------------------------------------------------------------------------------------------


def test_truncated_shard_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(64, 64)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{tmp_path}/model.safetensors is not a readable safetensors file"):
        SafetensorsCheckpoint(tmp_path)


def test_converter_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        official_main(["--input", str(tmp_path / "absent"), "--output", str(tmp_path / "out")])
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    assert "absent has no config.json" in message
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "slowfast_hf.convert_official",
            "--input",
            str(tmp_path / "absent"),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [message]


def test_truncated_shard_ends_the_conversion_with_one_line_naming_it(tmp_path):
    from test_conversion import write_released_checkpoint

    source = write_released_checkpoint(tmp_path / "slowfast-frame8")
    shard = source / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(SystemExit) as exit_info:
        official_main(["--input", str(source), "--output", str(tmp_path / "out")])
    message = exit_info.value.code
    assert message.startswith(f"error: {shard} is not a readable safetensors file (truncated or corrupt?): ")
    assert "\n" not in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["slowfast-frame8"]  # nothing written


def test_truncated_llava_onevision_weights_end_the_conversion_with_one_line_naming_them(tmp_path, tiny_tokenizer):
    from test_conversion import write_llava_onevision

    from slowfast_hf.convert_llava_onevision import main as llava_onevision_main

    source = write_llava_onevision(tmp_path / "llava-onevision-tiny", tiny_tokenizer)
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(SystemExit) as exit_info:
        llava_onevision_main(["--input", str(source), "--output", str(tmp_path / "out")])
    message = exit_info.value.code
    assert message.startswith(f"error: {weights} is not a readable safetensors file (truncated or corrupt?): ")
    assert "\n" not in message and not (tmp_path / "out").exists()


KILLED_CONVERTER = """
import sys, time
from pathlib import Path
from slowfast_hf.convert_official import atomic_output_dir
with atomic_output_dir(Path(sys.argv[1])) as staging:
    (staging / "model-00001-of-00004.safetensors").write_bytes(b"x" * 1000)
    print(staging, flush=True)
    time.sleep(600)
"""


def start_converter(output):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_CONVERTER, str(output)], stdout=subprocess.PIPE, text=True
    )
    staging = process.stdout.readline().strip()
    assert staging, "the converter did not start"
    return process, staging


def test_staging_folder_of_a_killed_converter_is_cleaned_by_the_next_run(tmp_path):
    """Before: a converter killed mid-write left its hidden staging folder (the full weights) behind forever."""
    output = tmp_path / "converted"
    killed, killed_staging = start_converter(output)
    os.kill(killed.pid, signal.SIGKILL)  # no chance to clean up
    killed.wait(timeout=60)
    old_format = tmp_path / f".{output.name}.partial-1a2b3c4d"  # written by an earlier version, no pid
    old_format.mkdir()
    unrelated = tmp_path / ".other.partial-1-1a2b3c4d"
    unrelated.mkdir()
    assert os.path.isdir(killed_staging)
    with atomic_output_dir(output) as staging:
        (staging / "config.json").write_text("{}")
    assert not os.path.exists(killed_staging) and not old_format.exists() and unrelated.is_dir()
    assert sorted(path.name for path in output.iterdir()) == ["config.json"]

    # a conversion to the same output that is still running keeps its staging folder, until it is killed
    live, live_staging = start_converter(tmp_path / "third")
    try:
        assert remove_stale_staging(tmp_path / "third") == [] and os.path.isdir(live_staging)
    finally:
        live.kill()
        live.wait(timeout=60)
    assert [str(path) for path in remove_stale_staging(tmp_path / "third")] == [live_staging]


# ---------------------------------------------------------------------------------------------------------------
# Training: annotations, resuming after a kill, train.py
# ---------------------------------------------------------------------------------------------------------------


def test_llava_style_annotations_refuse_a_video_placeholder_in_the_text(tmp_path):
    from training_fixtures import video_entry, write_annotations, write_clips

    from slowfast_hf.training import VideoConversationDataset

    write_clips(tmp_path / "clips", [4])
    entries = [video_entry("clips/clip0.mp4", "<image>\nwhat?", "this"), video_entry(None, "a <video>?", "no")]
    annotation_file = write_annotations(tmp_path / "train.json", entries)
    with pytest.raises(ValueError, match=r"entry 1: `conversations\[0\]` holds '<video>'.*only '<image>' marks"):
        VideoConversationDataset(annotation_file, video_placeholder="<image>")


@pytest.fixture(scope="module")
def finished_run(tiny_tokenizer, tmp_path_factory):
    """A 4-step run saving checkpoints 2 and 4, from `test_training`'s trainer of the tiny model."""
    from test_training import QUESTION, make_trainer
    from training_fixtures import video_entry, write_annotations, write_clips

    root = tmp_path_factory.mktemp("resume")
    write_clips(root / "clips", [4, 6])
    annotation_file = write_annotations(
        root / "train.json",
        [video_entry("clips/clip0.mp4", QUESTION, "red"), video_entry("clips/clip1.mp4", QUESTION, "blue")],
    )
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=1)
    trainer = make_trainer(tiny_tokenizer, annotation_file, root / "straight", **settings)
    trainer.train()
    return dict(root=root, annotation_file=annotation_file, settings=settings, trainer=trainer)


def killed_while_saving(run, name):
    """A copy of the run's output folder as a run killed while saving checkpoint-4 leaves it: checkpoint-4 holds the
    weights and a truncated optimizer.pt, but no trainer_state.json."""
    import shutil

    output = run["root"] / name
    shutil.copytree(run["root"] / "straight", output)
    checkpoint = output / "checkpoint-4"
    (checkpoint / "trainer_state.json").unlink()
    optimizer = checkpoint / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    return output


def test_resume_true_skips_a_half_written_checkpoint(finished_run, tiny_tokenizer):
    """Before: `resume_from_checkpoint=True` picked the half-written checkpoint-4 and failed. Now it resumes from
    checkpoint-2 and ends where the uninterrupted run ended."""
    from test_training import make_trainer

    from slowfast_hf.training import last_complete_checkpoint

    output = killed_while_saving(finished_run, "killed")
    assert last_complete_checkpoint(output) == str(output / "checkpoint-2")
    resumed = make_trainer(tiny_tokenizer, finished_run["annotation_file"], output, **finished_run["settings"])
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert [entry["step"] for entry in resumed.state.log_history if "loss" in entry][-2:] == [3, 4]
    final = dict(finished_run["trainer"].model.named_parameters())
    for name, parameter in resumed.model.named_parameters():
        torch.testing.assert_close(parameter, final[name], rtol=0, atol=1e-6, msg=name)


def test_unreadable_checkpoints_are_named(finished_run, tiny_tokenizer, tmp_path):
    import shutil

    from test_training import make_trainer

    def trainer():
        return make_trainer(
            tiny_tokenizer, finished_run["annotation_file"], tmp_path / "out", **finished_run["settings"]
        )

    output = killed_while_saving(finished_run, "unreadable")
    with pytest.raises(ValueError, match=r"checkpoint-4' is not a complete checkpoint: it has no trainer_state.json"):
        trainer().train(resume_from_checkpoint=str(output / "checkpoint-4"))

    corrupt_optimizer = tmp_path / "corrupt_optimizer"
    shutil.copytree(finished_run["root"] / "straight" / "checkpoint-2", corrupt_optimizer)
    (corrupt_optimizer / "optimizer.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=rf"Cannot resume from {corrupt_optimizer}: its optimizer or scheduler state"):
        trainer().train(resume_from_checkpoint=str(corrupt_optimizer))

    truncated_weights = tmp_path / "truncated_weights"
    shutil.copytree(finished_run["root"] / "straight" / "checkpoint-2", truncated_weights)
    weights = truncated_weights / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"Cannot resume from {truncated_weights}: its model weights cannot be read"):
        trainer().train(resume_from_checkpoint=str(truncated_weights))

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"`resume_from_checkpoint=True` but `output_dir` .*empty' holds no complete"):
        make_trainer(tiny_tokenizer, finished_run["annotation_file"], empty, **finished_run["settings"]).train(
            resume_from_checkpoint=True
        )


def test_train_script_resumes_with_resume_from_checkpoint_true(finished_run, tiny_tokenizer, tmp_path):
    """`examples/train.py --resume_from_checkpoint True`, as in Transformers' own examples: the newest complete
    checkpoint of `--output_dir` (checkpoint-2; checkpoint-4 was half-written when the run was killed)."""
    from training_fixtures import run_train_script, save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path / "model", tiny_tokenizer)
    output = killed_while_saving(finished_run, "script")
    result = run_train_script(
        [
            f"--model_name_or_path={checkpoint}",
            f"--annotation_file={finished_run['annotation_file']}",
            f"--output_dir={output}",
            "--freeze=decoder",
            "--max_steps=4",
            "--save_strategy=no",
            "--per_device_train_batch_size=1",
            "--use_cpu",
            "--report_to=none",
            "--resume_from_checkpoint=True",
        ]
    )
    assert "Not resuming from" in result.stderr and "checkpoint-4" in result.stderr
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (output / "model.safetensors").is_file()  # the run went on to step 4 and saved


def test_train_script_without_the_training_extra_names_it(tmp_path):
    """Before: an ImportError deep inside Transformers' Trainer. Now one line naming the missing packages and the
    extra to install. (`accelerate` and `peft` are shadowed by packages whose import fails.)"""
    from training_fixtures import TRAIN_SCRIPT

    for name in ("accelerate", "peft"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError({name!r})\n")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--help"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: train.py needs accelerate and peft, which are not installed; install the package's training extra: "
        'pip install -e ".[train]" (from the source checkout).'
    ]
