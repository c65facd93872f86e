"""SlowFastProcessor and SlowFastVideoProcessor: placeholders, chat template, labels, save/load, end to end."""

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, PATCH_SIZE, tiny_slowfast_model
from transformers import AutoProcessor

from slowfast_hf import SlowFastProcessor, SlowFastVideoProcessor
from slowfast_hf.processing_slowfast import IGNORE_INDEX
from slowfast_hf.video_processing_slowfast import DEFAULT_NUM_FRAMES

GRID = IMAGE_SIZE // PATCH_SIZE
RAW_PIXELS = dict(rescale_factor=1.0, image_mean=(0, 0, 0), image_std=(1, 1, 1))


def random_video(num_frames: int, height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def make_processor(tokenizer, **overrides) -> SlowFastProcessor:
    video_processor = SlowFastVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    kwargs = dict(patch_size=PATCH_SIZE, fast_temporal_stride=2)
    kwargs.update(overrides)
    return SlowFastProcessor(video_processor, tokenizer, **kwargs)


def model_for(tokenizer, **overrides):
    return tiny_slowfast_model(
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        **overrides,
    )


def video_chat(frames, question="what happens in the video?", answer=None):
    messages = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize(
    "strides",
    [
        dict(fast_temporal_stride=2),
        dict(fast_temporal_stride=4, min_fast_frames=3),
        dict(fast_temporal_sampling_stride=2, fast_temporal_stride=2, fast_spatial_stride=2),
    ],
)
def test_placeholder_count_equals_fast_token_count(tiny_tokenizer, num_frames, strides):
    processor = make_processor(tiny_tokenizer, **strides)
    model = model_for(tiny_tokenizer, **{"fast_temporal_stride": 2, **strides})
    batch = processor(text=["look: <video> now"], videos=[random_video(num_frames)], return_tensors="pt")
    placeholders = int((batch["input_ids"] == processor.video_token_id).sum())
    features = model.get_video_features(batch["pixel_values_videos"], batch["video_num_frames"])
    assert placeholders == features.fast_tokens[0].shape[0]
    assert placeholders == model.model.token_builder.num_fast_tokens(num_frames, GRID, GRID)
    assert batch["pixel_values_videos"].shape == (num_frames, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["video_num_frames"].tolist() == [num_frames]


def test_video_processor_normalises_exactly():
    video_processor = SlowFastVideoProcessor(size={"height": 4, "width": 4})
    frames = np.full((2, 4, 4, 3), 51, dtype=np.uint8)  # no resize needed: values pass straight through
    out = video_processor(frames, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(out, torch.full((2, 3, 4, 4), (51 / 255 - 0.5) / 0.5), rtol=0, atol=1e-6)


def test_clip_style_resize_and_center_crop():
    video_processor = SlowFastVideoProcessor(
        size={"shortest_edge": 8},
        crop_size={"height": 8, "width": 8},
        image_mean=(0.0, 0.0, 0.0),
        image_std=(1.0, 1.0, 1.0),
        rescale_factor=1.0,
    )
    frame = np.zeros((1, 16, 32, 3), dtype=np.uint8)
    frame[0, :, 12:20] = 200  # a vertical band in the middle survives the center crop
    out = video_processor(frame, return_tensors="pt")["pixel_values_videos"]
    assert out.shape == (1, 3, 8, 8)  # 16x32 -> 8x16 -> crop 8x8 (columns 4..11 of the resized frame)
    assert out[0, 0, :, 2:6].min() > 150 and out[0, 0, :, 0].max() < 50


def indexed_frames(num_frames: int) -> np.ndarray:
    """(T, 2, 2, 3) uint8 frames whose value is their index."""
    return np.stack([np.full((2, 2, 3), index, dtype=np.uint8) for index in range(num_frames)])


def identity_processor(**kwargs) -> SlowFastVideoProcessor:
    """Pixels pass through unchanged (no resize of 2x2 frames, no rescale, no normalisation)."""
    return SlowFastVideoProcessor(
        size={"height": 2, "width": 2}, rescale_factor=1.0, image_mean=(0, 0, 0), image_std=(1, 1, 1), **kwargs
    )


def test_num_frames_sampling_of_arrays_is_even(tiny_tokenizer):
    video_processor = identity_processor(num_frames=4)
    frames = indexed_frames(16)
    out = video_processor(frames, return_tensors="pt")["pixel_values_videos"]
    assert out[:, 0, 0, 0].tolist() == [0, 4, 8, 12]  # the start of each quarter, as `read_video` picks in files
    assert video_processor(frames[:3], return_tensors="pt")["video_num_frames"].tolist() == [3]  # fewer: each once
    released = identity_processor(num_frames=8, frame_sampling="linspace")
    out = released(indexed_frames(100), return_tensors="pt")["pixel_values_videos"]
    assert out[:, 0, 0, 0].tolist() == np.linspace(0, 99, 8, dtype=int).tolist() == [0, 14, 28, 42, 56, 70, 84, 99]
    out = released(indexed_frames(5), return_tensors="pt")["pixel_values_videos"]  # shorter: frames repeated up to 8
    assert out[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 4]


def test_do_sample_frames_false_keeps_every_frame():
    frames = indexed_frames(11)
    video_processor = identity_processor(num_frames=4)
    assert video_processor(frames, return_tensors="pt")["video_num_frames"].tolist() == [4]
    out = video_processor(frames, do_sample_frames=False, return_tensors="pt")
    assert out["video_num_frames"].tolist() == [11]
    assert out["pixel_values_videos"][:, 0, 0, 0].tolist() == list(range(11))
    assert identity_processor(do_sample_frames=False)(frames, return_tensors="pt")["video_num_frames"].tolist() == [11]
    with pytest.raises(ValueError, match="`do_sample_frames` must be True or False"):
        video_processor(frames, do_sample_frames="no")


def test_default_frame_budget(video_files):
    """Neither `num_frames` nor `fps`: `DEFAULT_NUM_FRAMES` frames, not the whole video."""
    frames = indexed_frames(200)
    assert identity_processor()(frames, return_tensors="pt")["video_num_frames"].tolist() == [DEFAULT_NUM_FRAMES]
    assert DEFAULT_NUM_FRAMES == 64
    encoded = video_files.h264_mp4
    video_processor = SlowFastVideoProcessor(size={"height": encoded.height, "width": encoded.width})
    expected = min(encoded.num_frames, DEFAULT_NUM_FRAMES)
    assert video_processor(str(encoded.path), return_tensors="pt")["video_num_frames"].tolist() == [expected]


def test_per_call_rescale_and_already_scaled_frames(caplog):
    video_processor = SlowFastVideoProcessor(size={"height": 4, "width": 4})
    uint8_frames = np.full((2, 4, 4, 3), 51, dtype=np.uint8)
    expected = video_processor(uint8_frames, return_tensors="pt")["pixel_values_videos"]
    scaled = uint8_frames.astype(np.float32) / 255
    with caplog.at_level("WARNING"):
        twice = video_processor(scaled, return_tensors="pt")["pixel_values_videos"]
    assert "already rescaled" in caplog.text and "do_rescale=False" in caplog.text
    assert twice.max() < -0.99  # what rescaling [0, 1] values by 1/255 again gives
    caplog.clear()
    with caplog.at_level("WARNING"):
        once = video_processor(scaled, do_rescale=False, return_tensors="pt")["pixel_values_videos"]
    assert not caplog.text
    torch.testing.assert_close(once, expected, rtol=0, atol=1e-6)
    halved = video_processor(uint8_frames, rescale_factor=1 / 510, return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(halved, torch.full_like(halved, (51 / 510 - 0.5) / 0.5), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        SlowFastVideoProcessor(size={"height": 4, "width": 4}, do_rescale=False)(scaled, return_tensors="pt")[
            "pixel_values_videos"
        ],
        expected,
        rtol=0,
        atol=1e-6,
    )
    for bad_factor in (0, float("inf"), "1/255"):
        with pytest.raises(ValueError, match="`rescale_factor` must be a finite, non-zero number"):
            video_processor(uint8_frames, rescale_factor=bad_factor)


def test_processor_passes_sampling_and_rescale_arguments_on(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    scaled = np.full((11, IMAGE_SIZE, IMAGE_SIZE, 3), 0.2, dtype=np.float32)
    batch = processor(text=["<video>"], videos=[scaled], do_rescale=False, do_sample_frames=False, return_tensors="pt")
    assert batch["video_num_frames"].tolist() == [11]
    torch.testing.assert_close(batch["pixel_values_videos"], torch.full_like(batch["pixel_values_videos"], -0.6))
    batch = processor(text=["<image>"], images=[scaled[0]], do_rescale=False, return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values"], torch.full_like(batch["pixel_values"], -0.6))


def test_processor_accepts_paths_bytes_and_file_objects(tiny_tokenizer, video_files):
    from video_fixtures import frame_indices_of

    encoded = video_files.h264_mp4
    video_processor = SlowFastVideoProcessor(
        size={"height": encoded.height, "width": encoded.width}, **RAW_PIXELS, num_frames=4, apply_rotation=False
    )
    processor = SlowFastProcessor(video_processor, tiny_tokenizer, patch_size=PATCH_SIZE, fast_temporal_stride=2)
    expected = [i * encoded.num_frames // 4 for i in range(4)]
    with open(encoded.path, "rb") as file_object:
        for source in (encoded.path, str(encoded.path), encoded.path.read_bytes(), file_object):
            batch = processor(text=["look: <video> now"], videos=[source], return_tensors="pt")
            frames = batch["pixel_values_videos"].round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            assert frame_indices_of(frames).tolist() == expected, type(source)
    with pytest.raises(ValueError, match="1 <video> placeholders but 2 videos"):
        processor(text=["look: <video> now"], videos=[encoded.path, encoded.path])


def test_apply_rotation_false_keeps_the_stored_orientation(video_files):
    encoded = video_files.h264_mp4
    assert encoded.rotation == 90
    upright = SlowFastVideoProcessor(
        size={"height": encoded.width, "width": encoded.height}, **RAW_PIXELS, num_frames=3
    )
    stored = SlowFastVideoProcessor(
        size={"height": encoded.height, "width": encoded.width}, **RAW_PIXELS, num_frames=3, apply_rotation=False
    )
    upright_frames = upright(encoded.path, return_tensors="pt")["pixel_values_videos"]
    stored_frames = stored(encoded.path, return_tensors="pt")["pixel_values_videos"]
    assert torch.equal(torch.rot90(stored_frames, 1, dims=(2, 3)), upright_frames)
    with pytest.raises(ValueError, match="`apply_rotation` must be True or False"):
        SlowFastVideoProcessor(apply_rotation="no")


def test_linspace_sampling_of_files_is_the_arrays_rule(video_files):
    """`frame_sampling="linspace"` picks the same frames from a file as from its decoded frames, repeating frames of
    a clip shorter than `num_frames`."""
    from video_fixtures import frame_indices_of

    encoded = video_files.h264_mp4
    for num_frames in (5, encoded.num_frames + 3):
        video_processor = SlowFastVideoProcessor(
            size={"height": encoded.height, "width": encoded.width},
            **RAW_PIXELS,
            num_frames=num_frames,
            frame_sampling="linspace",
            apply_rotation=False,  # the stored orientation (the fixture is displayed rotated by 90 degrees)
        )
        out = video_processor(encoded.path, return_tensors="pt")["pixel_values_videos"]
        frames = out.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        expected = np.linspace(0, encoded.num_frames - 1, num_frames, dtype=int)
        assert frame_indices_of(frames).tolist() == expected.tolist()


def test_from_model_config_takes_the_frame_size_from_the_vision_config(tiny_tokenizer):
    model = model_for(tiny_tokenizer)
    processor = SlowFastProcessor.from_model_config(model.config, tokenizer=tiny_tokenizer)
    assert processor.video_processor.output_size == (IMAGE_SIZE, IMAGE_SIZE)
    batch = processor(text=["look: <video> now"], videos=[random_video(3)], return_tensors="pt")
    with torch.no_grad():
        assert model.generate(**batch, max_new_tokens=2, do_sample=False).shape[1] == batch["input_ids"].shape[1] + 2
    with pytest.raises(ValueError, match=r"makes frames of \(384, 384\) pixels but the vision encoder takes"):
        SlowFastProcessor.from_model_config(model.config, SlowFastVideoProcessor(), tiny_tokenizer)


def test_bad_video_processor_arguments():
    with pytest.raises(ValueError, match="size"):
        SlowFastVideoProcessor(size={"height": 4})
    with pytest.raises(ValueError, match="resample"):
        SlowFastVideoProcessor(resample="lanczos9")
    with pytest.raises(ValueError, match="num_frames"):
        SlowFastVideoProcessor(num_frames=0)
    with pytest.raises(ValueError, match="either `num_frames` or `fps`"):
        SlowFastVideoProcessor(num_frames=4, fps=1.0)
    video_processor = SlowFastVideoProcessor(size={"height": 4, "width": 4})
    with pytest.raises(ValueError, match="shape"):
        video_processor(np.zeros((4, 4, 3), dtype=np.uint8)[None, None])
    with pytest.raises(ValueError, match="fps"):
        video_processor(random_video(4), fps=2.0)
    with pytest.raises(ValueError, match="Unknown video processing arguments"):
        video_processor(random_video(4), frames_per_second=2)


def test_chat_template_end_to_end_forward(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    model = model_for(tiny_tokenizer)
    batch = processor.apply_chat_template(
        video_chat(random_video(5)), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    text = tiny_tokenizer.decode(batch["input_ids"][0])
    assert text.count("<video>") == model.model.token_builder.num_fast_tokens(5, GRID, GRID)
    assert "<|im_start|>assistant" in text.replace(" ", "")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_batch_mixing_video_and_text_only_samples(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    processor.tokenizer.padding_side = "left"
    model = model_for(tiny_tokenizer)
    for cross_attn in (layer.self_attn.cross_attn for layer in model.model.language_model.layers[::2]):
        torch.nn.init.constant_(cross_attn.gate_alpha, 0.7)
    conversations = [
        video_chat(random_video(6)),
        [{"role": "user", "content": [{"type": "text", "text": "a question without video"}]}],
    ]
    batch = processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )
    assert batch["video_num_frames"].tolist() == [6]
    assert (batch["attention_mask"][:, 0] == torch.tensor([1, 0])).all()  # left padding on the shorter sample
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
        alone = model.generate(
            **processor.apply_chat_template(
                conversations[1], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            ),
            max_new_tokens=3,
            do_sample=False,
        )
    assert generated[1, -3:].tolist() == alone[0, -3:].tolist()


def test_images_and_videos_in_one_conversation(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    model = model_for(tiny_tokenizer)
    image = random_video(1, seed=3)[0]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "video", "video": random_video(4, seed=4)},
                {"type": "text", "text": "compare them"},
            ],
        }
    ]
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == GRID * GRID
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_labels_keep_only_the_assistant_replies(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    conversation = video_chat(random_video(3), question="which frame?", answer="near the end") + [
        {"role": "user", "content": [{"type": "text", "text": "what colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    batch = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True
    )
    labels = processor.build_labels(batch)
    kept = labels[0][labels[0] != IGNORE_INDEX]
    replies = tiny_tokenizer.decode(kept).replace(" ", "").replace("▁", "")
    assert replies == "neartheend<|im_end|>red<|im_end|>"
    assert (labels[batch["input_ids"] == processor.video_token_id] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="return_assistant_tokens_mask"):
        processor.build_labels({"input_ids": batch["input_ids"]})


def test_placeholder_and_video_counts_must_match(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    with pytest.raises(ValueError, match="<video>"):
        processor(text=["<video> and <video>"], videos=[random_video(2)])
    with pytest.raises(ValueError, match="no videos"):
        processor(text=["<video> only text"])


def test_unknown_placeholder_token_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="video_token"):
        make_processor(tiny_tokenizer, video_token="<clip>")


def test_from_model_config_copies_the_token_rule(tiny_tokenizer):
    model = model_for(tiny_tokenizer, fast_temporal_stride=3, min_fast_frames=2)
    video_processor = SlowFastVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = SlowFastProcessor.from_model_config(model.config, video_processor, tiny_tokenizer)
    assert processor.token_builder == model.model.token_builder
    assert processor.patch_size == PATCH_SIZE
    bad = tiny_slowfast_model()  # placeholder ids that are not the tokenizer's
    with pytest.raises(ValueError, match="video_token_id"):
        SlowFastProcessor.from_model_config(bad.config, video_processor, tiny_tokenizer)


def test_save_and_load_round_trip(tiny_tokenizer, tmp_path):
    processor = make_processor(tiny_tokenizer, fast_temporal_stride=3, min_fast_frames=2)
    processor.video_processor.num_frames = 6
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SlowFastProcessor)
    assert isinstance(SlowFastVideoProcessor.from_pretrained(tmp_path), SlowFastVideoProcessor)
    assert loaded.token_builder == processor.token_builder
    assert loaded.video_processor.to_dict() == processor.video_processor.to_dict()
    assert loaded.chat_template == processor.chat_template
    video = random_video(9)
    a = processor(text=["<video>"], videos=[video], return_tensors="pt")
    b = loaded(text=["<video>"], videos=[video], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
        a["pixel_values_videos"], b["pixel_values_videos"]
    )


def test_model_and_processor_saved_together_load_with_auto_classes(tiny_tokenizer, tmp_path):
    from transformers import AutoModelForImageTextToText

    processor = make_processor(tiny_tokenizer)
    model = model_for(tiny_tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded_model = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    batch = loaded_processor.apply_chat_template(
        video_chat(random_video(4)), tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.equal(loaded_model(**batch).logits, model(**batch).logits)


def test_video_paths_in_a_chat_decode_the_intended_frames(tiny_tokenizer, video_files):
    """A `{"type": "video", "path": ...}` part is read with PyAV at `num_frames` evenly spaced frames, upright."""
    from video_fixtures import frame_indices_of

    encoded = video_files.h264_mp4  # 64x48 stored, displayed rotated by 90 degrees: 48 wide, 64 high
    video_processor = SlowFastVideoProcessor(
        size={"height": encoded.width, "width": encoded.height},
        rescale_factor=1.0,
        image_mean=(0, 0, 0),
        image_std=(1, 1, 1),
        num_frames=8,
    )
    processor = SlowFastProcessor(video_processor, tiny_tokenizer, patch_size=PATCH_SIZE, fast_temporal_stride=2)
    messages = [
        {"role": "user", "content": [{"type": "video", "path": str(encoded.path)}, {"type": "text", "text": "?"}]}
    ]
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    frames = batch["pixel_values_videos"].round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, 64, 48, 3)
    stored = np.rot90(frames, -encoded.rotation // 90, axes=(1, 2))  # back to the encoded orientation
    assert frame_indices_of(stored).tolist() == [i * encoded.num_frames // 8 for i in range(8)]
    grid = (encoded.width // PATCH_SIZE, encoded.height // PATCH_SIZE)
    assert int((batch["input_ids"] == processor.video_token_id).sum()) == processor.token_builder.num_fast_tokens(
        8, *grid
    )


def test_fps_sampling_with_a_cap(tiny_tokenizer, long_video):
    from video_fixtures import frame_indices_of

    video_processor = SlowFastVideoProcessor(
        size={"height": long_video.height, "width": long_video.width},
        rescale_factor=1.0,
        image_mean=(0, 0, 0),
        image_std=(1, 1, 1),
        fps=1.0,
        max_frames=16,
    )
    out = video_processor(str(long_video.path), return_tensors="pt")
    assert out["video_num_frames"].tolist() == [16]  # 180 s at 1 fps, capped and spread over the whole video
    indices = frame_indices_of(out["pixel_values_videos"].round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert indices[0] == 0 and indices[-1] > 0.9 * long_video.num_frames and (np.diff(indices) > 0).all()
    with pytest.raises(ValueError, match="max_frames"):
        SlowFastVideoProcessor(max_frames=4)
