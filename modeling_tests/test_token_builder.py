"""Exact-value tests of the slow/fast token rule (`SlowFastTokenBuilder`, DESIGN §2 "Token building")."""

import itertools
import math

import pytest
import torch
from conftest import IMAGE_SIZE, PATCH_SIZE, tiny_slowfast_config, tiny_slowfast_model

from slowfast_hf import SlowFastTokenBuilder

DTYPE = torch.float64


@pytest.fixture
def single_thread():
    """Thousands of tiny ops: intra-op threads only add contention (10-50x slower on a busy 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def constant_frames(num_frames: int, height: int = 4, width: int = 4, dim: int = 3) -> torch.Tensor:
    """(T, h, w, D) where every value of frame k is k."""
    return torch.arange(num_frames, dtype=DTYPE).view(-1, 1, 1, 1).expand(num_frames, height, width, dim).clone()


def ramp_frames(num_frames: int, height: int, width: int, dim: int = 2) -> torch.Tensor:
    """(T, h, w, D) where the value at (row, col) is row * width + col, plus 1000 * frame index."""
    grid = torch.arange(height * width, dtype=DTYPE).view(1, height, width, 1)
    offset = 1000 * torch.arange(num_frames, dtype=DTYPE).view(-1, 1, 1, 1)
    return (grid + offset).expand(num_frames, height, width, dim).clone()


def reference_spatial_pool(frame: torch.Tensor, stride: int) -> torch.Tensor:
    """(h, w, D) -> (ceil(h/s), ceil(w/s), D) by explicit loops; border windows average the cells they cover."""
    height, width, dim = frame.shape
    out = torch.zeros(math.ceil(height / stride), math.ceil(width / stride), dim, dtype=frame.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = frame[i * stride : (i + 1) * stride, j * stride : (j + 1) * stride].mean(dim=(0, 1))
    return out


def per_frame_values(tokens: torch.Tensor, num_frames: int) -> list[float]:
    """For tokens of constant frames: one value per frame, checking every token of a frame holds it."""
    frames = tokens.view(num_frames, -1)
    assert torch.equal(frames, frames[:, :1].expand_as(frames)), "a frame's tokens should all be equal"
    return frames[:, 0].tolist()


# --------------------------------------------------------------------------------------------------------------
# Temporal pooling on constant frames
# --------------------------------------------------------------------------------------------------------------


def test_constant_frames_slow_tokens_keep_frame_value():
    builder = SlowFastTokenBuilder(slow_spatial_stride=2, fast_temporal_stride=4)
    fast, slow = builder(constant_frames(8, 4, 4, 3))
    assert slow.shape == (8 * 2 * 2, 3)
    assert per_frame_values(slow, 8) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert fast.shape == (2 * 2 * 2, 3)
    assert per_frame_values(fast, 2) == [1.5, 5.5]


def test_constant_frames_slow_tokens_are_frame_major():
    builder = SlowFastTokenBuilder()
    _, slow = builder(constant_frames(3, 4, 6, 1))
    # 3 frames of a 2x3 pooled grid, flattened frame by frame.
    assert torch.equal(slow[:, 0], torch.tensor([0.0] * 6 + [1.0] * 6 + [2.0] * 6, dtype=DTYPE))


def test_temporal_stride_with_zero_padding_dilutes_last_window():
    builder = SlowFastTokenBuilder(fast_temporal_stride=4)
    fast, slow = builder(constant_frames(10))
    assert per_frame_values(slow, 10) == [float(k) for k in range(10)]
    # windows {0..3}, {4..7}, {8, 9, 0pad, 0pad}
    assert per_frame_values(fast, 3) == [1.5, 5.5, (8 + 9) / 4]
    assert per_frame_values(fast, 3)[2] == 4.25


@pytest.mark.parametrize(
    "num_frames, stride, expected",
    [
        (2, 2, [0.5]),
        (3, 2, [0.5, 1.0]),  # {0,1}, {2,pad}
        (5, 3, [1.0, 7 / 3]),  # {0,1,2}, {3,4,pad}
        (6, 6, [2.5]),
        (7, 1, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    ],
)
def test_temporal_windows(num_frames, stride, expected):
    fast, _ = SlowFastTokenBuilder(fast_temporal_stride=stride)(constant_frames(num_frames))
    assert per_frame_values(fast, len(expected)) == expected


# --------------------------------------------------------------------------------------------------------------
# Spatial pooling on ramps
# --------------------------------------------------------------------------------------------------------------


def test_slow_pooling_2x2_exact_values_even_grid():
    builder = SlowFastTokenBuilder(fast_temporal_stride=1)
    frames = ramp_frames(2, 4, 4)
    fast, slow = builder(frames)
    # grid 0..15 on 4x4 -> 2x2 means: (0+1+4+5)/4, (2+3+6+7)/4, (8+9+12+13)/4, (10+11+14+15)/4
    expected_frame0 = torch.tensor([2.5, 4.5, 10.5, 12.5], dtype=DTYPE)
    expected = torch.cat([expected_frame0, expected_frame0 + 1000])
    assert torch.equal(slow[:, 0], expected)
    assert torch.equal(slow[:, 1], expected)
    # temporal stride 1, spatial stride 1: fast tokens == slow tokens
    assert torch.equal(fast, slow)


def test_slow_pooling_ceil_mode_odd_grid():
    builder = SlowFastTokenBuilder(fast_temporal_stride=1)
    frame = ramp_frames(2, 5, 5, dim=1)
    _, slow = builder(frame)
    assert slow.shape == (2 * 3 * 3, 1)
    # grid values r*5+c on 5x5
    expected = torch.tensor(
        [
            (0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2,
            (10 + 11 + 15 + 16) / 4, (12 + 13 + 17 + 18) / 4, (14 + 19) / 2,
            (20 + 21) / 2, (22 + 23) / 2, 24.0,
        ],
        dtype=DTYPE,
    )  # fmt: skip
    assert torch.equal(slow[:9, 0], expected)
    assert torch.equal(slow[9:, 0], expected + 1000)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 3), (2, 5), (3, 3), (5, 4), (7, 7), (6, 9)])
@pytest.mark.parametrize("slow_stride", [1, 2, 3])
@pytest.mark.parametrize("fast_stride", [1, 2, 3])
def test_spatial_pooling_matches_loop_reference(height, width, slow_stride, fast_stride):
    builder = SlowFastTokenBuilder(
        slow_spatial_stride=slow_stride, fast_spatial_stride=fast_stride, fast_temporal_stride=1
    )
    frames = ramp_frames(2, height, width, dim=2) * torch.tensor([1.0, -0.5], dtype=DTYPE)
    fast, slow = builder(frames)
    slow_ref = torch.stack([reference_spatial_pool(f, slow_stride) for f in frames])
    fast_ref = torch.stack([reference_spatial_pool(f, fast_stride) for f in slow_ref])
    torch.testing.assert_close(slow, slow_ref.reshape(-1, 2), atol=1e-12, rtol=0)
    torch.testing.assert_close(fast, fast_ref.reshape(-1, 2), atol=1e-12, rtol=0)


def test_fast_spatial_stride_exact_values():
    # 8x8 ramp -> slow 4x4 -> fast 2x2 (stride 2): a 4x4 block mean of the ramp
    builder = SlowFastTokenBuilder(fast_temporal_stride=1, fast_spatial_stride=2)
    fast, slow = builder(ramp_frames(2, 8, 8, dim=1))
    assert slow.shape == (2 * 16, 1)
    assert fast.shape == (2 * 4, 1)
    grid = torch.arange(64, dtype=DTYPE).view(8, 8)
    block_means = torch.tensor([grid[i : i + 4, j : j + 4].mean().item() for i in (0, 4) for j in (0, 4)], dtype=DTYPE)
    assert block_means.tolist() == [13.5, 17.5, 45.5, 49.5]
    assert torch.equal(fast[:4, 0], block_means)
    assert torch.equal(fast[4:, 0], block_means + 1000)


def test_fast_spatial_stride_ceil_mode_on_odd_slow_grid():
    # 6x6 ramp -> slow 3x3 -> fast stride 2 -> 2x2 with border windows over covered cells only
    builder = SlowFastTokenBuilder(fast_temporal_stride=1, fast_spatial_stride=2)
    fast, slow = builder(ramp_frames(2, 6, 6, dim=1))
    s = slow[:9, 0].view(3, 3)
    expected = torch.stack([s[:2, :2].mean(), s[:2, 2].mean(), s[2, :2].mean(), s[2, 2]])
    assert fast.shape == (8, 1)
    assert torch.equal(fast[:4, 0], expected)


def test_spatial_and_temporal_pooling_combined():
    builder = SlowFastTokenBuilder(fast_temporal_stride=2, fast_spatial_stride=2)
    frames = ramp_frames(4, 4, 4, dim=1)
    fast, _ = builder(frames)
    # slow per frame: [2.5, 4.5, 10.5, 12.5] + 1000k; fast spatial: mean 7.5 + 1000k; temporal windows {0,1}, {2,3}
    assert torch.equal(fast[:, 0], torch.tensor([7.5 + 500, 7.5 + 2500], dtype=DTYPE))


# --------------------------------------------------------------------------------------------------------------
# Temporal sampling stride
# --------------------------------------------------------------------------------------------------------------


def test_sampling_stride_keeps_every_other_frame():
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=2, fast_temporal_stride=1)
    assert builder.sampled_frame_indices(10) == [0, 2, 4, 6, 8]
    fast, slow = builder(constant_frames(10))
    assert per_frame_values(fast, 5) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert per_frame_values(slow, 10) == [float(k) for k in range(10)]  # slow tokens are never sampled


def test_sampling_stride_then_temporal_stride_pads_after_sampling():
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=2, fast_temporal_stride=2)
    assert builder.sampled_frame_indices(10) == [0, 2, 4, 6, 8]
    fast, _ = builder(constant_frames(10))
    assert per_frame_values(fast, 3) == [(0 + 2) / 2, (4 + 6) / 2, (8 + 0) / 2]


@pytest.mark.parametrize("num_frames", [1, 2, 7, 9, 16, 17])
def test_sampled_frame_indices_plain_sampling(num_frames):
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=3)
    assert builder.sampled_frame_indices(num_frames) == list(range(0, num_frames, 3))


def test_sampling_equals_padding_to_both_strides_first(single_thread):
    """The docstring's claim: zero-padding then sampling is the same as padding the video to a multiple of
    `sampling_stride * temporal_stride` first, then sampling and pooling (DESIGN §2)."""
    for sampling, temporal, num_frames in itertools.product([1, 2, 3], [1, 2, 3, 4], range(2, 14)):
        builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=sampling, fast_temporal_stride=temporal)
        frames = constant_frames(num_frames, 2, 2, 1) + 1  # values 1..T, so zero padding is visible
        fast, _ = builder(frames)
        multiple = sampling * temporal
        padded_len = -(-num_frames // multiple) * multiple
        padded = torch.cat([frames[:, 0, 0, 0], torch.zeros(padded_len - num_frames, dtype=DTYPE)])
        expected = padded[::sampling].view(-1, temporal).mean(dim=1)
        assert per_frame_values(fast, expected.numel()) == expected.tolist(), (sampling, temporal, num_frames)


# --------------------------------------------------------------------------------------------------------------
# min_fast_frames
# --------------------------------------------------------------------------------------------------------------


def test_min_fast_frames_short_video_keeps_every_frame():
    builder = SlowFastTokenBuilder(fast_temporal_stride=2, min_fast_frames=4)
    assert builder.sampled_frame_indices(3) == [0, 1, 2]
    assert builder.num_fast_frames(3) == 3
    fast, _ = builder(constant_frames(3))
    assert per_frame_values(fast, 3) == [0.0, 1.0, 2.0]


def test_min_fast_frames_evenly_spaced_indices_when_sampling_leaves_too_few():
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=4, fast_temporal_stride=1, min_fast_frames=3)
    assert builder.sampled_frame_indices(6) == [0, 2, 4]
    fast, _ = builder(constant_frames(6))
    assert per_frame_values(fast, 3) == [0.0, 2.0, 4.0]
    # same with a temporal stride that would pool too much: adaptive pooling 3 -> 3 keeps them
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=4, fast_temporal_stride=4, min_fast_frames=3)
    fast, _ = builder(constant_frames(6))
    assert per_frame_values(fast, 3) == [0.0, 2.0, 4.0]


def test_min_fast_frames_evenly_spaced_indices_values():
    builder = SlowFastTokenBuilder(fast_temporal_sampling_stride=8, min_fast_frames=4)
    assert builder.sampled_frame_indices(10) == [0, 2, 5, 7]
    assert builder.sampled_frame_indices(16) == [0, 4, 8, 12]
    assert builder.sampled_frame_indices(3) == [0, 1, 2]
    # sampling alone leaves enough: no fallback
    assert SlowFastTokenBuilder(fast_temporal_sampling_stride=2, min_fast_frames=4).sampled_frame_indices(8) == [
        0,
        2,
        4,
        6,
    ]


def test_min_fast_frames_adaptive_pooling_pairwise_means():
    builder = SlowFastTokenBuilder(fast_temporal_stride=4, min_fast_frames=4)
    assert builder.num_fast_frames(8) == 4
    fast, _ = builder(constant_frames(8))
    assert per_frame_values(fast, 4) == [0.5, 2.5, 4.5, 6.5]


def test_min_fast_frames_adaptive_pooling_uneven():
    # 5 frames into 4 adaptive windows: [0,2), [1,3), [2,4), [3,5)
    builder = SlowFastTokenBuilder(fast_temporal_stride=4, min_fast_frames=4)
    fast, _ = builder(constant_frames(5))
    assert per_frame_values(fast, 4) == [0.5, 1.5, 2.5, 3.5]


def test_min_fast_frames_not_triggered_when_windows_suffice():
    builder = SlowFastTokenBuilder(fast_temporal_stride=4, min_fast_frames=2)
    fast, _ = builder(constant_frames(8))
    assert per_frame_values(fast, 2) == [1.5, 5.5]
    fast, _ = builder(constant_frames(6))  # {0..3}, {4, 5, pad, pad}
    assert per_frame_values(fast, 2) == [1.5, 9 / 4]


def test_min_fast_frames_adaptive_pooling_is_per_position():
    builder = SlowFastTokenBuilder(fast_temporal_stride=4, min_fast_frames=4)
    frames = ramp_frames(8, 4, 4, dim=2)
    fast, slow = builder(frames)
    slow = slow.view(8, 4, 2)
    expected = slow.view(4, 2, 4, 2).mean(dim=1).reshape(-1, 2)
    torch.testing.assert_close(fast, expected, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Images (T == 1)
# --------------------------------------------------------------------------------------------------------------


def test_image_slow_tokens_are_unpooled():
    builder = SlowFastTokenBuilder(slow_spatial_stride=2, fast_temporal_stride=4, min_fast_frames=4)
    image = ramp_frames(1, 5, 5, dim=3)
    fast, slow = builder(image)
    assert torch.equal(slow, image.reshape(25, 3))
    assert torch.equal(fast, image.reshape(25, 3))  # fast spatial stride 1: unchanged, no temporal pooling
    assert builder.num_slow_tokens(1, 5, 5) == 25
    assert builder.num_fast_tokens(1, 5, 5) == 25


def test_image_fast_tokens_only_fast_spatial_pooling():
    builder = SlowFastTokenBuilder(slow_spatial_stride=2, fast_spatial_stride=2, fast_temporal_stride=4)
    image = ramp_frames(1, 5, 5, dim=1)
    fast, slow = builder(image)
    assert torch.equal(slow, image.reshape(25, 1))
    expected = reference_spatial_pool(image[0], 2).reshape(-1, 1)
    assert fast.shape == (9, 1)
    assert torch.equal(fast, expected)
    assert fast[0, 0].item() == (0 + 1 + 5 + 6) / 4  # not pooled by the slow stride first
    assert builder.num_fast_tokens(1, 5, 5) == 9


def test_two_frame_video_is_pooled_unlike_an_image():
    builder = SlowFastTokenBuilder(fast_temporal_stride=1)
    _, slow = builder(ramp_frames(2, 4, 4))
    assert slow.shape[0] == 2 * 4


# --------------------------------------------------------------------------------------------------------------
# Token counts agree with __call__
# --------------------------------------------------------------------------------------------------------------


def test_token_counts_match_call_property(single_thread):
    grids = [(1, 1), (1, 2), (2, 2), (3, 3), (4, 4), (5, 3), (7, 6)]
    checked = 0
    combos = itertools.product([1, 2, 3], [1, 2, 3], [1, 2, 4], [1, 2], [1, 3, 5])
    for slow_s, sampling, temporal, fast_s, min_fast in combos:
        builder = SlowFastTokenBuilder(
            slow_spatial_stride=slow_s,
            fast_temporal_sampling_stride=sampling,
            fast_temporal_stride=temporal,
            fast_spatial_stride=fast_s,
            min_fast_frames=min_fast,
        )
        for num_frames in range(1, 18):
            for height, width in grids:
                fast, slow = builder(torch.zeros(num_frames, height, width, 1, dtype=DTYPE))
                context = (builder, num_frames, height, width)
                assert fast.shape[0] == builder.num_fast_tokens(num_frames, height, width), context
                assert slow.shape[0] == builder.num_slow_tokens(num_frames, height, width), context
                if num_frames > 1:
                    slow_h, slow_w = builder.slow_grid(num_frames, height, width)
                    per_frame = math.ceil(slow_h / fast_s) * math.ceil(slow_w / fast_s)
                    assert fast.shape[0] == builder.num_fast_frames(num_frames) * per_frame, context
                    # at least min_fast_frames fast frames, or every frame of a shorter video
                    assert builder.num_fast_frames(num_frames) >= min(min_fast, num_frames), context
                    assert builder.num_fast_frames(num_frames) <= num_frames, context
                checked += 1
    assert checked == 162 * 17 * len(grids)


def test_token_counts_released_setting():
    # 18x18 ConvNeXt grid -> 81 slow tokens per frame; 64 frames, temporal stride 4 -> 16 fast frames
    builder = SlowFastTokenBuilder(slow_spatial_stride=2, fast_temporal_stride=4, fast_spatial_stride=1)
    assert builder.num_slow_tokens(64, 18, 18) == 64 * 81
    assert builder.num_fast_tokens(64, 18, 18) == 16 * 81
    builder = SlowFastTokenBuilder(slow_spatial_stride=2, fast_temporal_stride=6)
    assert builder.num_fast_tokens(96, 18, 18) == 16 * 81


# --------------------------------------------------------------------------------------------------------------
# Invalid inputs
# --------------------------------------------------------------------------------------------------------------

FIELDS = [
    "slow_spatial_stride",
    "fast_temporal_sampling_stride",
    "fast_temporal_stride",
    "fast_spatial_stride",
    "min_fast_frames",
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, "2", None, True, False])
def test_invalid_strides_raise_naming_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SlowFastTokenBuilder(**{field: value})


def test_from_config_reads_the_strides():
    config = tiny_slowfast_config(
        slow_spatial_stride=3,
        fast_temporal_sampling_stride=2,
        fast_temporal_stride=5,
        fast_spatial_stride=2,
        min_fast_frames=7,
    )
    assert SlowFastTokenBuilder.from_config(config) == SlowFastTokenBuilder(3, 2, 5, 2, 7)


@pytest.mark.parametrize("shape", [(4, 4, 8), (8,), (2, 3, 4, 4, 8), ()])
def test_call_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match="frame_features"):
        SlowFastTokenBuilder()(torch.zeros(shape))


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_count_helpers_reject_bad_sizes(bad):
    builder = SlowFastTokenBuilder()
    with pytest.raises(ValueError):
        builder.sampled_frame_indices(bad)
    with pytest.raises(ValueError):
        builder.num_slow_tokens(4, bad, 4)
    with pytest.raises(ValueError):
        builder.num_fast_tokens(4, 4, bad)


# --------------------------------------------------------------------------------------------------------------
# Mixed frame counts in a batch, through the model
# --------------------------------------------------------------------------------------------------------------

GRID = IMAGE_SIZE // PATCH_SIZE


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_slowfast_model()


@pytest.fixture(scope="module")
def two_videos():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) for n in (3, 6)]


def _alone(model, video):
    with torch.no_grad():
        features = model.model.get_video_features(video, [video.shape[0]])
    return features.fast_tokens[0], features.slow_tokens[0]


def _check_against_alone(model, features, videos):
    builder = model.model.token_builder
    hidden = model.config.text_config.hidden_size
    assert len(features.fast_tokens) == len(features.slow_tokens) == len(videos)
    for fast, slow, video in zip(features.fast_tokens, features.slow_tokens, videos):
        num_frames = video.shape[0]
        assert fast.shape == (builder.num_fast_tokens(num_frames, GRID, GRID), hidden)
        assert slow.shape == (builder.num_slow_tokens(num_frames, GRID, GRID), hidden)
        fast_alone, slow_alone = _alone(model, video)
        assert torch.allclose(fast, fast_alone, atol=1e-6)
        assert torch.allclose(slow, slow_alone, atol=1e-6)


def test_mixed_frame_counts_concatenated_layout(tiny_model, two_videos, single_thread):
    pixels = torch.cat(two_videos)
    assert pixels.shape == (9, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        features = tiny_model.model.get_video_features(pixels, [3, 6])
    _check_against_alone(tiny_model, features, two_videos)
    # and a tensor of counts behaves the same
    with torch.no_grad():
        features_t = tiny_model.model.get_video_features(pixels, torch.tensor([3, 6]))
    for a, b in zip(features.fast_tokens + features.slow_tokens, features_t.fast_tokens + features_t.slow_tokens):
        assert torch.equal(a, b)


def test_mixed_frame_counts_padded_layout(tiny_model, two_videos, single_thread):
    pixels = torch.zeros(2, 6, 3, IMAGE_SIZE, IMAGE_SIZE)
    pixels[0, :3] = two_videos[0]
    pixels[0, 3:] = 123.0  # padding frames must be ignored
    pixels[1] = two_videos[1]
    with torch.no_grad():
        features = tiny_model.model.get_video_features(pixels, [3, 6])
    _check_against_alone(tiny_model, features, two_videos)


def test_mixed_frame_counts_token_counts(tiny_model):
    builder = tiny_model.model.token_builder
    # tiny config: slow stride 2, fast temporal stride 2 -> 4x4 grid gives 4 tokens per frame
    assert builder.num_slow_tokens(3, GRID, GRID) == 12
    assert builder.num_fast_tokens(3, GRID, GRID) == 8
    assert builder.num_slow_tokens(6, GRID, GRID) == 24
    assert builder.num_fast_tokens(6, GRID, GRID) == 12


def test_padded_layout_without_counts_uses_every_frame(tiny_model, two_videos, single_thread):
    pixels = torch.stack([two_videos[1], two_videos[1].flip(0)])
    with torch.no_grad():
        features = tiny_model.model.get_video_features(pixels)
    assert len(features.fast_tokens) == 2
    assert features.slow_tokens[0].shape[0] == tiny_model.model.token_builder.num_slow_tokens(6, GRID, GRID)


@pytest.mark.parametrize(
    "layout, counts",
    [
        ("concat", [3, 5]),  # adds up to 8, tensor holds 9
        ("concat", [3, 7]),  # adds up to 10
        ("concat", [9, 0]),  # zero count
        ("concat", [0]),
        ("concat", []),
        ("concat", [-1, 10]),
        ("padded", [3, 7]),  # larger than the padded length
        ("padded", [0, 6]),  # zero count
        ("padded", [3]),  # wrong number of videos
        ("padded", [3, 6, 1]),
    ],
)
def test_bad_video_num_frames(tiny_model, two_videos, layout, counts):
    if layout == "concat":
        pixels = torch.cat(two_videos)
    else:
        pixels = torch.zeros(2, 6, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="video_num_frames"):
        tiny_model.model.get_video_features(pixels, counts)
    with pytest.raises(ValueError, match="video_num_frames"):
        tiny_model.model.get_video_features(pixels, torch.tensor(counts, dtype=torch.long))


def test_non_integer_video_num_frames_rejected(tiny_model, two_videos):
    pixels = torch.cat(two_videos)
    with pytest.raises(ValueError, match="video_num_frames"):
        tiny_model.model.get_video_features(pixels, [3.9, 6.0])  # silently read as [3, 6]


@pytest.mark.parametrize("num_frames", [0, -2])
def test_num_slow_tokens_rejects_bad_frame_count(num_frames):
    with pytest.raises(ValueError, match="num_frames"):
        SlowFastTokenBuilder().num_slow_tokens(num_frames, 4, 4)
