# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Real video files for tests, encoded with PyAV, whose frames paint their own index.

Every frame paints its index as a binary code of big black and white cells (16 bits, then their complement as a
check), which survives lossy compression; `frame_indices_of(frames)` reads it back, so a test checks exactly which
frames a reader returned.

Use from a test module (pytest finds fixtures by their names in it; an assignment rather than `from ... import` keeps
ruff's F811 quiet about test arguments of the same name):

    import video_fixtures
    from video_fixtures import frame_indices_of

    video_files = video_fixtures.video_files

    def test_reader(video_files):
        video = video_files.h264_mp4  # an `EncodedVideo`
        frames = my_reader(video.path)  # (T, H, W, 3) uint8 RGB
        assert frame_indices_of(frames).tolist() == [...]

Fixtures (session-scoped, written once per test session):
    - `video_files` (`VideoFiles`, ~1 s to write): short videos in several codecs and containers, and broken files.
    - `long_video` (`EncodedVideo`, ~1 s to write): 3 minutes of H.264 with a keyframe every 5 s, for seeking.
Helpers: `write_video` (encode a video of indexed frames), `frame_indices_of` / `frame_index_of` (read the indices).
"""

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

INDEX_BITS = 16  # frame indices up to 65535
CODE_ROWS, CODE_COLUMNS = 4, 8  # 32 cells: the 16 index bits (most significant first), then their complements

# The FFmpeg decoder that reads what each encoder writes.
DECODER_OF_ENCODER = {"libx264": "h264", "mpeg4": "mpeg4", "libvpx-vp9": "vp9", "libvpx": "vp8"}
H264_ENCODER = "libx264" if "libx264" in av.codecs_available else "mpeg4"  # MPEG-4 Part 2 if no H.264 encoder

# Encoder settings: fast, and keyframes only every `gop_size` frames (no scene-cut keyframes).
_ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "sc_threshold": "0"},  # veryfast still uses B-frames
    "mpeg4": {"sc_threshold": "1000000000"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
}


@dataclass(frozen=True, eq=False)
class EncodedVideo:
    """
    A video written by `write_video`: frame `i` paints index `i`.

    Attributes:
        path (`Path`): the file.
        frame_times (`np.ndarray` of shape `(N,)`, `float64`): intended presentation time of each frame, in seconds
            (a container may round them, e.g. Matroska to 1 ms).
        duration (`float`): end of the last frame, in seconds (at a variable frame rate, the MP4 muxer stores the
            last frame with the previous frame's duration instead).
        keyframe_indices (`np.ndarray` of shape `(K,)`, `int64`): indices of the keyframes, read back from the file.
        codec (`str`): FFmpeg decoder name of the stream, e.g. `"h264"`.
        width (`int`), height (`int`): frame size.
        rotation (`int`): display rotation written to the container, degrees counter-clockwise.
    """

    path: Path
    frame_times: np.ndarray
    duration: float
    keyframe_indices: np.ndarray
    codec: str
    width: int
    height: int
    rotation: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.frame_times)


@dataclass(frozen=True)
class VideoFiles:
    """
    The files of the `video_files` fixture (all frames 64x48).

    Attributes:
        h264_mp4: H.264 (B-frames, keyframe every second) in MP4, 100 frames at 25 fps, display rotation 90.
        vp9_webm: VP9 in WebM (no frame count in the header), 100 frames at 25 fps, keyframe every second.
        mpeg4_mkv: MPEG-4 Part 2 in Matroska (timestamps rounded to 1 ms), 90 frames at 30 fps, keyframe every 0.5 s.
        vfr_mp4: H.264 in MP4 at a variable frame rate (frames last 20 to 120 ms), 100 frames.
        cut_mid_gop_ts: `h264_mp4` remuxed into MPEG-TS from its 10th packet (decoding order): it starts inside the
            first group of pictures, so frames 0-24 cannot be decoded and frame 25 (a keyframe, at 1 s) comes first.
        truncated_mp4: `h264_mp4` with its index at the front ("faststart"), cut to its first half.
        truncated_mp4_without_index: `h264_mp4` (index at the end) cut to its first half, so it has no index.
        truncated_webm: `vp9_webm` cut to its first half.
        corrupt_mp4: `h264_mp4` with 400 bytes of its frame data zeroed (its header and index are intact).
        audio_only: AAC audio in an M4A (MP4) file, no video stream.
        not_a_video: a text file named `.mp4`.
        no_frames: Matroska with an H.264 video stream holding no frames, and an audio stream.
    """

    h264_mp4: EncodedVideo
    vp9_webm: EncodedVideo
    mpeg4_mkv: EncodedVideo
    vfr_mp4: EncodedVideo
    cut_mid_gop_ts: Path
    truncated_mp4: Path
    truncated_mp4_without_index: Path
    truncated_webm: Path
    corrupt_mp4: Path
    audio_only: Path
    not_a_video: Path
    no_frames: Path


def paint_frame_index(index: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB frame painting `index` as a grid of 4 x 8 black/white cells."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"`index` must be in [0, {2**INDEX_BITS}), got {index}.")
    if height % CODE_ROWS or width % CODE_COLUMNS:
        raise ValueError(f"Frame size must be a multiple of {CODE_ROWS}x{CODE_COLUMNS}, got {height}x{width}.")
    bits = (index >> np.arange(INDEX_BITS - 1, -1, -1)) & 1  # (16,) most significant first
    cells = np.concatenate([bits, 1 - bits]).reshape(CODE_ROWS, CODE_COLUMNS).astype(np.uint8) * 255  # (4, 8)
    image = np.repeat(np.repeat(cells, height // CODE_ROWS, axis=0), width // CODE_COLUMNS, axis=1)  # (H, W)
    return np.repeat(image[:, :, None], 3, axis=2)


def frame_indices_of(frames: np.ndarray) -> np.ndarray:
    """
    (T, H, W, 3) uint8 frames painted by `paint_frame_index` -> (T,) int64 frame indices.

    Reads the mean brightness of the inner half of each cell. Raises `ValueError` if a frame's check cells do not
    complement its index cells (not an indexed frame, or decoded wrong).
    """
    num_frames, height, width, _ = frames.shape
    cell_height, cell_width = height // CODE_ROWS, width // CODE_COLUMNS
    cells = frames[:, : CODE_ROWS * cell_height, : CODE_COLUMNS * cell_width].mean(axis=-1)  # (T, H', W')
    cells = cells.reshape(num_frames, CODE_ROWS, cell_height, CODE_COLUMNS, cell_width)
    rows = slice(cell_height // 4, cell_height - cell_height // 4)
    columns = slice(cell_width // 4, cell_width - cell_width // 4)
    inner = cells[:, :, rows, :, columns]  # (T, 4, h, 8, w): the inner half of each cell
    bits = (inner.mean(axis=(2, 4)) > 128).reshape(num_frames, 2, INDEX_BITS)  # (T, 2, 16): index bits, complement
    damaged = np.flatnonzero((bits[:, 0] == bits[:, 1]).any(axis=1))
    if len(damaged):
        raise ValueError(f"Frames {damaged.tolist()} do not carry a readable frame index.")
    return bits[:, 0].astype(np.int64) @ (1 << np.arange(INDEX_BITS - 1, -1, -1))


def frame_index_of(frame: np.ndarray) -> int:
    """(H, W, 3) uint8 frame painted by `paint_frame_index` -> its frame index."""
    return int(frame_indices_of(frame[None])[0])


def write_video(
    path: Path,
    num_frames: int,
    fps: int = 25,
    *,
    frame_durations_ms: list[int] | None = None,
    encoder: str = H264_ENCODER,
    gop_size: int = 25,
    height: int = 48,
    width: int = 64,
    rotation: int = 0,
    faststart: bool = False,
) -> EncodedVideo:
    """
    Encodes `num_frames` frames painting their index into `path` (the container follows its extension).

    Args:
        num_frames: frame count.
        fps: constant frame rate; ignored when `frame_durations_ms` is given.
        frame_durations_ms: (num_frames,) duration of each frame in milliseconds, for a variable frame rate.
        encoder: a PyAV encoder from `DECODER_OF_ENCODER`.
        gop_size: frames between keyframes.
        height, width: frame size, multiples of 4 and 8.
        rotation: display rotation to write (degrees counter-clockwise, a multiple of 90); MP4 only.
        faststart: MP4 only: put the index at the front of the file.
    """
    if rotation and Path(path).suffix != ".mp4":
        raise ValueError(f"`rotation` is written to MP4 files only, got {path}.")
    if frame_durations_ms is None:
        time_base = Fraction(1, fps)
        frame_pts = np.arange(num_frames)
        end_pts = num_frames
    else:
        time_base = Fraction(1, 1000)
        frame_pts = np.concatenate([[0], np.cumsum(frame_durations_ms)[:-1]])
        end_pts = int(np.sum(frame_durations_ms))
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(encoder, rate=fps if frame_durations_ms is None else 25)  # nominal if VFR
        stream.codec_context.time_base = time_base
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {**_ENCODER_OPTIONS[encoder], "g": str(gop_size), "keyint_min": str(gop_size)}
        for index, pts in enumerate(frame_pts):
            frame = av.VideoFrame.from_ndarray(paint_frame_index(index, height, width), format="rgb24")
            frame.pts, frame.time_base = int(pts), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    if rotation:
        set_mp4_display_rotation(path, rotation)
    return EncodedVideo(
        path=Path(path),
        frame_times=frame_pts * float(time_base),
        duration=float(end_pts * time_base),
        keyframe_indices=_keyframe_indices(path),
        codec=DECODER_OF_ENCODER[encoder],
        width=width,
        height=height,
        rotation=rotation,
    )


def _mp4_boxes(data: bytearray, start: int, end: int):
    """Yields `(type, payload start, box end)` of the ISO-BMFF boxes in `data[start:end]`."""
    while start + 8 <= end:
        size, kind, header = int.from_bytes(data[start : start + 4], "big"), bytes(data[start + 4 : start + 8]), 8
        if size == 1:  # a 64-bit size follows the type
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:  # the box runs to the end
            size = end - start
        yield kind, start + header, start + size
        start += size


def set_mp4_display_rotation(path, rotation: int) -> None:
    """
    Writes a display rotation into the MP4 file at `path`, in place: the transformation matrix of its track header
    (`moov/trak/tkhd`, ISO/IEC 14496-12 8.3.2) becomes the one FFmpeg's muxer writes for a display rotation of
    `rotation` degrees counter-clockwise, as phones store portrait video: the bytes PyAV 18's
    `VideoStream.set_display_rotation` gives. Earlier PyAV cannot write it, and the package supports PyAV 15
    (lmms-eval requires av<16).
    """
    if rotation % 90:
        raise ValueError(f"`rotation` must be a multiple of 90 degrees, got {rotation}.")
    # (a, b, u, c, d, v, x, y, w): 16.16 fixed point, except u, v, w (2.30)
    cosine, sine = [(1, 0), (0, 1), (-1, 0), (0, -1)][rotation // 90 % 4]  # of `rotation`
    matrix = [cosine << 16, -sine << 16, 0, sine << 16, cosine << 16, 0, 0, 0, 1 << 30]
    data = bytearray(Path(path).read_bytes())
    track_headers = [
        (payload, end)
        for kind, payload, end in _mp4_boxes(data, 0, len(data))
        if kind == b"moov"
        for kind, payload, end in _mp4_boxes(data, payload, end)
        if kind == b"trak"
        for kind, payload, end in _mp4_boxes(data, payload, end)
        if kind == b"tkhd"
    ]
    if len(track_headers) != 1:
        raise ValueError(f"{path} must have one track to rotate, found {len(track_headers)}.")
    ((payload, _),) = track_headers
    # after version and flags: times, track id, reserved, duration (32-bit fields in version 0, 64-bit times and
    # duration in version 1), then 8 reserved bytes, layer, alternate group, volume and 2 reserved bytes
    matrix_start = payload + (40 if data[payload] == 0 else 52)
    data[matrix_start : matrix_start + 36] = b"".join(value.to_bytes(4, "big", signed=True) for value in matrix)
    Path(path).write_bytes(data)


def _keyframe_indices(path: Path) -> np.ndarray:
    """(K,) presentation-order indices of the keyframes of the video stream of `path`, from its packets."""
    with av.open(str(path)) as container:
        packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(video=0) if packet.size]
    pts = np.array(sorted(pts for pts, _ in packets))
    return np.searchsorted(pts, sorted(pts for pts, is_keyframe in packets if is_keyframe))


def _write_audio(path: Path) -> None:
    """An M4A file of AAC audio (a sine tone), no video."""
    with av.open(str(path), mode="w") as container:
        _mux_sine(container, seconds=1.0, sample_rate=16000)


def _mux_sine(container, seconds: float, sample_rate: int) -> None:
    """Adds a mono AAC stream to `container` and writes a 440 Hz tone into it."""
    stream = container.add_stream("aac", rate=sample_rate, layout="mono")
    frame_size = 1024
    for start in range(0, int(seconds * sample_rate), frame_size):
        time = (start + np.arange(frame_size)) / sample_rate
        frame = av.AudioFrame.from_ndarray(
            np.sin(2 * np.pi * 440 * time).astype(np.float32)[None], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _write_video_without_frames(path: Path) -> None:
    """Matroska with a video stream that holds no frames, and an audio stream (a file needs some packets)."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream(H264_ENCODER, rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _mux_sine(container, seconds=1.0, sample_rate=16000)
        container.mux(video.encode())


def _remux_from_packet(source: Path, destination: Path, first_packet: int) -> Path:
    """Copies the video packets of `source` from its `first_packet`-th (decoding order) into `destination`."""
    with av.open(str(source)) as input_container, av.open(str(destination), mode="w") as output_container:
        input_stream = input_container.streams.video[0]
        output_stream = output_container.add_stream_from_template(input_stream)
        for number, packet in enumerate(input_container.demux(input_stream)):
            if packet.size and number >= first_packet:
                packet.stream = output_stream
                output_container.mux(packet)
    return destination


def _zero_frame_data(source: Path, destination: Path, num_bytes: int = 400) -> Path:
    """Copies the MP4 `source` (index at the end) to `destination` with `num_bytes` of its frame data zeroed."""
    data = bytearray(source.read_bytes())
    frame_data_start, index_start = data.find(b"mdat") + 4, data.find(b"moov")
    start = frame_data_start + (index_start - frame_data_start) // 3
    data[start : start + num_bytes] = bytes(num_bytes)
    destination.write_bytes(data)
    return destination


def _first_half(source: Path, destination: Path) -> Path:
    data = source.read_bytes()
    destination.write_bytes(data[: len(data) // 2])
    return destination


@pytest.fixture(scope="session")
def video_files(tmp_path_factory) -> VideoFiles:
    """Short videos in several codecs and containers, and broken files (see `VideoFiles`)."""
    directory = tmp_path_factory.mktemp("videos")
    h264_mp4 = write_video(directory / "h264.mp4", 100, fps=25, rotation=90)
    vp9_webm = write_video(directory / "vp9.webm", 100, fps=25, encoder="libvpx-vp9")
    faststart_mp4 = write_video(directory / "h264_faststart.mp4", 100, fps=25, faststart=True)
    (directory / "not_a_video.mp4").write_text("These are notes, not a video.\n" * 20)
    _write_audio(directory / "audio_only.m4a")
    _write_video_without_frames(directory / "no_frames.mkv")
    return VideoFiles(
        h264_mp4=h264_mp4,
        vp9_webm=vp9_webm,
        mpeg4_mkv=write_video(directory / "mpeg4.mkv", 90, fps=30, encoder="mpeg4", gop_size=15),
        vfr_mp4=write_video(directory / "vfr.mp4", 100, frame_durations_ms=[40, 40, 120, 20, 80] * 20),
        cut_mid_gop_ts=_remux_from_packet(h264_mp4.path, directory / "cut_mid_gop.ts", first_packet=10),
        truncated_mp4=_first_half(faststart_mp4.path, directory / "truncated.mp4"),
        truncated_mp4_without_index=_first_half(h264_mp4.path, directory / "truncated_without_index.mp4"),
        truncated_webm=_first_half(vp9_webm.path, directory / "truncated.webm"),
        corrupt_mp4=_zero_frame_data(h264_mp4.path, directory / "corrupt.mp4"),
        audio_only=directory / "audio_only.m4a",
        not_a_video=directory / "not_a_video.mp4",
        no_frames=directory / "no_frames.mkv",
    )


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> EncodedVideo:
    """3 minutes of 64x48 H.264 at 25 fps (4500 frames) with a keyframe every 5 s (125 frames), in MP4."""
    return write_video(tmp_path_factory.mktemp("long_video") / "long.mp4", 4500, fps=25, gop_size=125)
