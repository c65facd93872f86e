# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Video reading with PyAV: stream metadata, and frames sampled by presentation time.

Both `probe_video` and `read_video` first read the packet headers of the video stream (demuxing only, no decoding:
a few microseconds per frame, ~50 ms for 10 minutes at 30 fps). That gives every frame a place in presentation order
and every keyframe a place in decoding order, whatever the container's header claims: frame counts of Matroska/WebM,
variable frame rates, MP4 edit lists (stream-copy cuts) and timestamp resets of joined MPEG-TS/PS come out as a
player shows them.

`read_video` then decodes only what the requested frames need. Each run of requested frames that share a keyframe
costs one seek to that keyframe and one forward decode to the last of them, in which frames that no other frame
references (H.264/HEVC non-reference frames) are skipped unless requested, and so are H.264 reference B-frames that
no frame leading to a requested one references (found from the slice headers by `h264_references`; B-pyramids whose
P-frames reference P-frames only, as x264's faster presets and strict pyramids write). Runs are spread over threads,
each with its own demuxer and decoder (PyAV releases the GIL while decoding). Every packet fed to a decoder carries
its place in the scan (`Packet.opaque`, copied to the frame it produces), so a frame is identified by the packet it
came from, never by a timestamp the demuxer gives after a seek or by the order the decoder emits frames in.

Decoding errors are errors: the decoders run with FFmpeg's `err_detect=explode`, and a frame flagged corrupt raises.
"""

import io
import itertools
import math
import numbers
import os
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from threading import Event, Lock
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from packaging import version
from transformers.video_utils import VideoMetadata

from .h264_references import H264ReferencePlanner

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

__all__ = ["DecodedVideo", "VideoInfo", "VideoSource", "probe_video", "read_video"]

# Decoders whose `skip_frame="NONREF"` skips only frames no other frame references, so that skipping the unrequested
# ones leaves every other frame bit-identical (checked against full decodes in the tests).
_CODECS_SKIPPING_NON_REFERENCE_FRAMES = frozenset({"h264", "hevc"})
# A jump of decoding timestamps larger than this (or backwards) in an MPEG-TS/PS stream is a discontinuity (joined
# files, a muxer restart), as FFmpeg's command-line tool treats it (`-dts_delta_threshold`).
_DISCONTINUITY_SECONDS = 10.0
# Containers whose frames FFmpeg cuts out of the byte stream with a parser (MPEG-PS, raw elementary streams).
_FORMATS_CUT_BY_PARSERS = frozenset({"mpeg", "mpegvideo", "h264", "hevc", "m4v", "vc1", "cavsvideo"})
# The most compressed bytes of a run held to plan its skips (`H264ReferencePlanner`); longer runs decode every
# reference frame. A bound on the memory a read takes beyond its frames.
_MAX_PLANNED_RUN_BYTES = 32 * 2**20
_TRANSPORT_STREAM_PACKET_SIZES = (188, 192, 204)  # MPEG-TS, M2TS (timecode prefix), TS with Reed-Solomon parity
# PyAV 17 and later convert colours on every core by default (`threads=0`); the decoding threads already use them.
_REFORMAT_OPTIONS = {"threads": 1} if version.parse(av.__version__) >= version.parse("17") else {}


@dataclass(frozen=True)
class VideoInfo:
    """
    Metadata of a video stream, measured from the timestamps of its packets.

    Attributes:
        duration (`float`):
            Seconds from the presentation time of the first frame to the end of the last one.
        average_fps (`float`):
            `num_frames / duration`.
        num_frames (`int`):
            Number of frames a player shows, counted from the packets (also for containers that do not store it, such
            as Matroska/WebM; frames an MP4 edit list hides are not counted).
        width (`int`), height (`int`):
            Frame size in pixels, as stored (before `rotation`). Frames of another size (a stream whose resolution
            changes) are scaled to this size.
        rotation (`int`):
            Degrees (0, 90, 180 or 270) by which a player rotates the frames counter-clockwise for display, from the
            stream's display matrix; 0 when it has none. `read_video` applies it unless `apply_rotation=False`.
        codec (`str`):
            Name of the FFmpeg decoder, e.g. `"h264"`, `"vp9"`, `"mpeg4"`.
        start_time (`float`):
            Presentation time of the first frame, in seconds: the origin of sampling. `DecodedVideo.timestamps` are on
            the same clock (a container may start it at a value other than 0).
    """

    duration: float
    average_fps: float
    num_frames: int
    width: int
    height: int
    rotation: int
    codec: str
    start_time: float


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """
    Frames read by `read_video`.

    Attributes:
        frames (`np.ndarray` of shape `(T, H, W, 3)`, `uint8`):
            The frames in RGB, in presentation order, each at most once; upright (`info.rotation` applied, so a 90 or
            270 degree rotation swaps `H` and `W`) unless `read_video` was called with `apply_rotation=False`.
        timestamps (`np.ndarray` of shape `(T,)`, `float64`):
            Presentation time of each frame in seconds, on the clock of `info.start_time`.
        frame_indices (`np.ndarray` of shape `(T,)`, `int64`):
            Position of each frame in the stream, in presentation order, counted from 0.
        info (`VideoInfo`):
            Metadata of the video stream.
        num_decoded_frames (`int`):
            How many frames the decoders produced to return these: the cost of the read (a full decode produces
            `info.num_frames`; skipped frames are not produced).
    """

    frames: np.ndarray
    timestamps: np.ndarray
    frame_indices: np.ndarray
    info: VideoInfo
    num_decoded_frames: int

    def to_video_metadata(self) -> VideoMetadata:
        """
        The Transformers `VideoMetadata` of these frames, for video processors that take `video_metadata`.

        Transformers derives `VideoMetadata.timestamps` as `frames_indices / fps`, which is exact only at a constant
        frame rate starting at 0; `self.timestamps` are the real presentation times.
        """
        return VideoMetadata(
            total_num_frames=self.info.num_frames,
            fps=self.info.average_fps,
            width=self.frames.shape[2],
            height=self.frames.shape[1],
            duration=self.info.duration,
            video_backend="pyav",
            frames_indices=self.frame_indices.tolist(),
        )


@dataclass(frozen=True)
class _StreamIndex:
    """
    The packets of a video stream (decoding order) and the frames a player shows (presentation order), from a scan of
    the packet headers.
    """

    packet_keys: list  # (P,) what identifies each packet after a seek, from `_packet_key`
    keys_by_content: bool  # whether `packet_keys` are checksums
    has_open_gops: bool  # whether a keyframe after the first has leading pictures (shown before it, decoded after)
    packet_pts: np.ndarray  # (P,) int64: presentation time of each packet's frame, in ticks (discontinuities removed)
    seek_pts: np.ndarray  # (P,) int64: presentation timestamps as the demuxer gives them, for seeking
    seek_dts: np.ndarray  # (P,) int64: decoding timestamps as the demuxer gives them, for seeking
    keyframe_packets: np.ndarray  # (K >= 1,) int64 ascending: packets of the keyframes, from the first decodable one
    frame_packets: np.ndarray  # (N,) int64: the packet of each shown frame, in presentation order
    frame_pts: np.ndarray  # (N,) int64 non-decreasing: presentation time of each shown frame, in ticks
    frame_start_packets: np.ndarray  # (N,) int64: the keyframe packet a decode must start from to output each frame
    end_pts: int  # end of the last frame, in ticks
    time_base: Fraction

    @property
    def num_frames(self) -> int:
        return len(self.frame_pts)

    @property
    def start_time(self) -> float:
        return float(self.frame_pts[0] * self.time_base)

    @property
    def duration(self) -> float:
        return float((self.end_pts - self.frame_pts[0]) * self.time_base)

    @property
    def _tolerance(self) -> float:
        # Containers round timestamps to their time base (Matroska: 1 ms), so a frame stored at 667 ms may start at
        # 666.67 ms: a time reaches a frame within half a tick of it. Where ticks are as coarse as frames (AVI stores
        # frame numbers), timestamps are exact and only float error is allowed for.
        frame_interval = np.median(np.diff(self.frame_pts)) if self.num_frames > 1 else 1.0
        return 0.5 if frame_interval > 2 else 1e-6

    def frames_on_grid(self, step: float, count: float) -> np.ndarray:
        """
        Positions (ascending, unique) of the frames shown at the times `k * step` (seconds after `start_time`) for
        `k = 0 .. count - 1`: at each, the last frame whose pts is at or before it. Works on the frames, not the
        times, so memory is O(num_frames) however fine or long the grid.
        """
        # Frame j is shown for times t with frame_pts[j] - tolerance <= pts(t) < frame_pts[j + 1] - tolerance.
        starts = (self.frame_pts - self.frame_pts[0] - self._tolerance) * float(self.time_base)  # (N,) seconds
        gaps = np.diff(starts)
        positive_gaps = gaps[gaps > 0]
        if len(positive_gaps) and step < positive_gaps.min():
            # Every frame with a positive span is hit up to the last time; a coarser step that still hits them all,
            # up to the same time, keeps the numbers finite.
            last_time = min((count - 1) * step, self.duration)
            step = positive_gaps.min() / 2
            count = math.floor(last_time / step) + 1
        first_k = np.maximum(np.ceil(starts / step), 0.0)  # (N,) first grid point in each frame's span
        next_start = np.append(starts[1:] / step, np.inf)  # (N,) where the span ends, in grid points
        return np.flatnonzero((first_k < count) & (first_k < next_start))

    def keyframes_nearest(self, step: float, count: float) -> np.ndarray:
        """Positions (ascending, unique) of the shown keyframes nearest the times `k * step`, `k = 0 .. count - 1`
        (earlier on a tie); every shown keyframe when there are more times than frames."""
        keyframe_positions = np.flatnonzero(np.isin(self.frame_packets, self.keyframe_packets))  # (K',)
        if count > self.num_frames:
            return keyframe_positions
        keyframe_times = (self.frame_pts[keyframe_positions] - self.frame_pts[0]) * float(self.time_base)
        times = np.arange(count) * step  # (T,)
        after = np.clip(np.searchsorted(keyframe_times, times), 0, len(keyframe_times) - 1)  # (T,)
        before = np.maximum(after - 1, 0)  # (T,)
        nearer_before = times - keyframe_times[before] <= np.abs(keyframe_times[after] - times)
        return np.unique(keyframe_positions[np.where(nearer_before, before, after)])


def probe_video(source: VideoSource) -> VideoInfo:
    """
    Metadata of the video stream of `source`: duration, average frame rate, frame count, size, rotation, codec.

    Reads the packet headers of the whole stream (no decoding, a few microseconds per frame) and decodes the first
    frame, so the metadata is exact and a truncated file is detected.

    Args:
        source (`str`, `os.PathLike`, `bytes` or binary file object):
            A path to a video file, its content, or a seekable binary file object (read from its start).

    Raises:
        FileNotFoundError: `source` is a path to no file.
        ValueError: `source` is not a video, has no video stream, has no frames, or is truncated or corrupt.
    """
    source = _readable_source(source)
    with _open_video_stream(source) as (container, stream, description):
        index = _scan_packets(container, stream, description, _source_size(source))
        sink = _FrameSink(1, stream.codec_context.width, stream.codec_context.height, apply_rotation=False)
        _FrameDecoder(container, stream, index, description, sink).decode_runs(_runs_of(index, np.zeros(1, int)))
        return _video_info(stream, index, sink.rotation)


def read_video(
    source: VideoSource,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    approximate: bool = False,
    apply_rotation: bool = True,
    sample_indices_fn: Callable[[int], Sequence[int]] | None = None,
) -> DecodedVideo:
    """
    Decodes frames of the video stream of `source`, chosen by presentation time.

    Sampling (times are seconds after the first frame, over `info.duration`):
      - `num_frames=N`: N times evenly spread over the video, the start of each of N equal segments,
        `i * duration / N` for `i = 0 .. N - 1`. At a constant frame rate this picks frame `i * info.num_frames // N`,
        as Transformers' `default_sample_indices_fn` does.
      - `fps=f`: one time every `1 / f` seconds from the first frame, `k / f` for every `k` with `k / f < duration`,
        and always `k = 0` (so a rate too low for one interval to fit still returns the first frame).
        If that is more than `max_frames`, `max_frames` times evenly spread instead, as with `num_frames`.
      - `sample_indices_fn=f`: the frames `f(info.num_frames)`, by position in presentation order (exclusive with
        `num_frames` and `fps`).
      - neither: every frame (a full sequential decode).
    Each time selects the frame shown at that time: the last one whose presentation timestamp is at or before it.
    Variable frame rates are handled: only timestamps are used, never a nominal frame rate.

    **Each frame is returned at most once.** Times that select the same frame (more frames asked for than the video
    has, or a frame shown longer than the sampling interval) yield it once, so fewer than `num_frames` frames may come
    back; in particular, asking for more frames than the video has returns all of its frames. `timestamps` and
    `frame_indices` say which frames were returned. Memory is bounded by the frames returned: a huge `num_frames` or
    `fps`, or a file whose timestamps claim a huge duration, costs O(frames in the stream), not O(times asked for).

    Exact mode (default) decodes each requested frame from the keyframe before it. Approximate mode
    (`approximate=True`) returns, for each time, the keyframe nearest to it (before or after), decoding keyframes only:
    much faster (one frame per result), but a frame can be up to half the interval between the keyframes around the
    time asked for away from it, and after the last keyframe up to the rest of the video (a clip with one keyframe
    returns only its first frame). When approximate mode returns fewer frames than exact sampling would, a
    `UserWarning` says how many. `timestamps` are always the true presentation times of the returned frames.

    Args:
        source (`str`, `os.PathLike`, `bytes` or binary file object):
            A path to a video file, its content, or a seekable binary file object (read from its start).
        num_frames (`int`, *optional*):
            Number of frames to sample evenly over the video. Exclusive with `fps`.
        fps (`float`, *optional*):
            Frames to sample per second of video. Exclusive with `num_frames`.
        max_frames (`int`, *optional*):
            With `fps`: the most frames to return.
        approximate (`bool`, *optional*, defaults to `False`):
            Return the nearest keyframes instead of the exact frames; needs `num_frames` or `fps`.
        apply_rotation (`bool`, *optional*, defaults to `True`):
            Return frames upright, rotated by `info.rotation` as players (and decord, torchcodec) show them; `False`
            returns them as stored.
        sample_indices_fn (`Callable[[int], Sequence[int]]`, *optional*):
            Given the stream's frame count, the positions of the frames to return (in presentation order; a
            position given twice is returned once, ascending like all results).

    Returns:
        `DecodedVideo`: `frames` (T, H, W, 3) uint8 RGB, `timestamps` (T,) seconds, `frame_indices`, `info`.

    Raises:
        FileNotFoundError: `source` is a path to no file.
        ValueError: invalid arguments; `source` is not a video, has no video stream, has no frames, or is truncated
            or corrupt (a frame the read needs decodes with errors or does not come out: no partial result is
            returned).
    """
    _check_arguments(num_frames, fps, max_frames, approximate, apply_rotation)
    if sample_indices_fn is not None and (num_frames is not None or fps is not None or approximate):
        raise ValueError(
            "`sample_indices_fn` chooses the frames itself: pass it without `num_frames`, `fps` or `approximate`."
        )
    source = _readable_source(source)
    with _open_video_stream(source) as (container, stream, description):
        index = _scan_packets(container, stream, description, _source_size(source))
        if sample_indices_fn is not None:
            positions = np.unique(np.asarray(sample_indices_fn(index.num_frames), dtype=np.int64))  # ascending, once
            if positions.ndim != 1 or not positions.size or positions[0] < 0 or positions[-1] >= index.num_frames:
                raise ValueError(
                    f"`sample_indices_fn` must return frame positions in [0, {index.num_frames}), got {positions}."
                )
        elif num_frames is None and fps is None:
            positions = np.arange(index.num_frames)
        else:
            step, count = _sampling_grid(index.duration, num_frames, fps, max_frames)
            positions = index.frames_on_grid(step, count)
            if approximate:
                exact_count = len(positions)
                positions = index.keyframes_nearest(step, count)
                if len(positions) < exact_count:
                    warnings.warn(
                        f"`approximate=True` returns {len(positions)} frame(s) of {description} where exact sampling "
                        f"returns {exact_count}: the video has {len(index.keyframe_packets)} keyframe(s) and each "
                        "time gets the nearest one. Pass `approximate=False` for the exact frames.",
                        UserWarning,
                        stacklevel=2,
                    )
        runs = _runs_of(index, positions, keyframes_only=approximate)
        sink = _FrameSink(len(positions), stream.codec_context.width, stream.codec_context.height, apply_rotation)
        num_decoded_frames = _decode_in_parallel(source, container, stream, index, description, sink, runs)
        return DecodedVideo(
            frames=sink.frames,
            timestamps=index.frame_pts[positions] * float(index.time_base),
            frame_indices=positions.astype(np.int64),
            info=_video_info(stream, index, sink.rotation),
            num_decoded_frames=num_decoded_frames,
        )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def _check_arguments(num_frames, fps, max_frames, approximate, apply_rotation) -> None:
    if num_frames is not None and fps is not None:
        raise ValueError(f"Pass either `num_frames` or `fps`, not both (got num_frames={num_frames!r}, fps={fps!r}).")
    if num_frames is not None:
        _check_positive_int("num_frames", num_frames)
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0
    ):
        raise ValueError(f"`fps` must be a finite number > 0, got {fps!r}.")
    if max_frames is not None:
        if fps is None:
            raise ValueError(
                f"`max_frames` caps sampling by `fps` and needs it; for a fixed count use `num_frames` (got "
                f"max_frames={max_frames!r} with fps=None)."
            )
        _check_positive_int("max_frames", max_frames)
    if not isinstance(approximate, bool):
        raise ValueError(f"`approximate` must be True or False, got {approximate!r}.")
    if approximate and num_frames is None and fps is None:
        raise ValueError(
            "`approximate=True` needs `num_frames` or `fps` (without them every frame is decoded), got neither."
        )
    if not isinstance(apply_rotation, bool):
        raise ValueError(f"`apply_rotation` must be True or False, got {apply_rotation!r}.")


def _sampling_grid(
    duration: float, num_frames: int | None, fps: float | None, max_frames: int | None
) -> tuple[float, float]:
    """`(step, count)`: the sampling times of `read_video` are `k * step` seconds for `k = 0 .. count - 1`."""
    if fps is not None:
        count = max(math.floor(duration * fps - 1e-9) + 1, 1) if duration * fps < 2**62 else math.inf
        if max_frames is None or count <= max_frames:
            return 1.0 / fps, count
        num_frames = max_frames
    return duration / num_frames, num_frames


def _describe(source: VideoSource) -> str:
    """A short name of `source` for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fsdecode(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{memoryview(source).nbytes} bytes"
    name = getattr(source, "name", None)
    return f"file object {name!r}" if isinstance(name, str) else f"{type(source).__name__} object"


def _readable_source(source: VideoSource) -> VideoSource:
    """`source` as something `av.open` reads, checked: a path string, `bytes`, or a seekable binary file object."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"`source` video file not found: {path!r}.")
        if not os.path.isfile(path):
            raise ValueError(f"`source` must be a video file, got a directory or special file: {path!r}.")
        return path
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)  # one copy, shared by the decoding threads
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise ValueError(f"`source` must be opened in binary mode ('rb'), got a text file: {_describe(source)}.")
        if not (hasattr(source, "seekable") and source.seekable()):
            raise ValueError(f"`source` must be seekable; read the unseekable {_describe(source)} into bytes first.")
        return source
    raise TypeError(
        f"`source` must be a path, bytes or a binary file object, got {type(source).__name__}: {source!r}."
    )


def _source_size(source: VideoSource) -> int:
    """Size of `source` in bytes."""
    if isinstance(source, str):
        return os.path.getsize(source)
    if isinstance(source, bytes):
        return len(source)
    position = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(position)
    return size


@contextmanager
def _open_video_stream(source: VideoSource) -> Iterator[tuple[av.container.InputContainer, av.video.VideoStream, str]]:
    """Opens `source` (from `_readable_source`) and yields `(container, video stream, description of source)`."""
    description = _describe(source)
    if isinstance(source, bytes):
        file = io.BytesIO(source)  # shares the bytes, no copy
    elif isinstance(source, str):
        file = source
    else:
        source.seek(0)  # the container is read from the start of the file, wherever it was left
        file = source
    try:
        container = av.open(file, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise ValueError(f"`source` ({description}) is not a readable video file: {error}") from error
    with container:
        # An "attached picture" stream is a cover image (e.g. in an audio file), not a video.
        video_streams = [
            stream for stream in container.streams.video if not stream.disposition & av.stream.Disposition.attached_pic
        ]
        if not video_streams:
            kinds = ", ".join(sorted({stream.type for stream in container.streams})) or "none"
            raise ValueError(f"`source` ({description}) has no video stream (streams: {kinds}).")
        yield container, video_streams[0], description


def _declared_end_pts(stream: av.video.VideoStream) -> int | None:
    """End of the stream in ticks, from its `DURATION` tag (Matroska/WebM by FFmpeg or mkvmerge); None without one."""
    tag = stream.metadata.get("DURATION")  # "HH:MM:SS.nnnnnnnnn", the end time of the last frame
    if tag is None:
        return None
    try:
        hours, minutes, seconds = tag.split(":")
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return round(seconds / stream.time_base)


def _remove_discontinuities(dts: np.ndarray, pts: np.ndarray, durations: np.ndarray, time_base: Fraction) -> None:
    """Shifts, in place, the timestamps after each jump of `dts` (backwards, or forwards by more than
    `_DISCONTINUITY_SECONDS`) so that the stream continues one frame after the packet before the jump."""
    threshold = _DISCONTINUITY_SECONDS / float(time_base)
    steps = np.diff(dts)  # (P - 1,)
    typical_step = int(np.median(steps[steps > 0])) if (steps > 0).any() else 1
    for jump in np.flatnonzero((steps < 0) | (steps > threshold)) + 1:
        step = int(durations[jump - 1]) or typical_step
        shift = int(dts[jump - 1]) + step - int(dts[jump])  # dts[jump - 1] already includes the earlier shifts
        dts[jump:] += shift
        pts[jump:] += shift


def _packet_key(packet: av.Packet, by_content: bool) -> int | tuple:
    """
    What identifies `packet` in a scan of the stream and again after a seek (where the demuxer may give it other
    timestamps): its byte position in the file, else its decoding timestamp; or, for containers whose frames FFmpeg
    re-cuts with a parser (MPEG-PS, elementary streams: after a seek the first packets are fragments, with other
    positions and timestamps), its size and checksum.
    """
    if by_content:
        return ("crc", packet.size, zlib.crc32(memoryview(packet)))
    return packet.pos if packet.pos is not None and packet.pos >= 0 else ("dts", packet.dts)


def _scan_packets(container, stream, description: str, source_size: int) -> _StreamIndex:
    """Reads every packet header of `stream` (no decoding) into a `_StreamIndex`; checks the stream is complete."""
    is_transport_stream = container.format.name == "mpegts"
    keys_by_content = container.format.name in _FORMATS_CUT_BY_PARSERS
    # Lists of ints and bools, which Python's garbage collector does not track: a tuple per packet would set it off
    # during the scan, and its full collections visit every object of the process (~0.1 s beside torch).
    packet_keys, packet_pts, packet_dts, packet_durations = [], [], [], []
    packet_is_keyframe, packet_is_discard = [], []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            # MPEG-TS flags the packet after a continuity-counter jump (joined segments, a lost TS packet): its data
            # may be intact, and the decoder, which runs with error detection, judges it. Elsewhere a corrupt flag is
            # a short read: the file is cut.
            if packet.is_corrupt and not is_transport_stream:
                raise ValueError(
                    f"`source` ({description}) is corrupt or truncated: a packet of its video stream is incomplete or "
                    "damaged."
                )
            pts, dts = packet.pts, packet.dts
            if pts is None:
                if dts is None:
                    raise ValueError(f"`source` ({description}) has video packets without timestamps; remux it.")
                pts = dts
            packet_keys.append(_packet_key(packet, keys_by_content))
            packet_pts.append(pts)
            packet_dts.append(pts if dts is None else dts)
            packet_is_keyframe.append(packet.is_keyframe)
            packet_is_discard.append(packet.is_discard)
            packet_durations.append(packet.duration or 0)
    except av.error.FFmpegError as error:
        raise ValueError(f"`source` ({description}) is corrupt or truncated: {error}") from error
    if not packet_pts:
        raise ValueError(f"`source` ({description}) has a video stream with no frames.")

    raw_pts = np.array(packet_pts, dtype=np.int64)  # (P,) in decoding order
    raw_dts = np.array(packet_dts, dtype=np.int64)  # (P,)
    is_keyframe, is_discard = np.array(packet_is_keyframe), np.array(packet_is_discard)  # (P,) bool, (P,) bool
    durations = np.array(packet_durations, dtype=np.int64)  # (P,)
    pts, dts = raw_pts.copy(), raw_dts.copy()
    if container.format.flags & av.format.Flags.ts_discont.value:  # MPEG-TS/PS: timestamps may reset or jump
        _remove_discontinuities(dts, pts, durations, stream.time_base)
    if not is_keyframe.any():  # no packet is marked: decoding can only start at the first one
        is_keyframe[0] = True
    keyframe_packets = np.flatnonzero(is_keyframe)  # (K,) decoding order; includes keyframes an edit list hides
    first_keyframe = keyframe_packets[0]
    # Shown: not hidden by an edit list, and decodable: a stream cut inside a group of pictures starts with frames
    # whose references are gone (before the first keyframe in decoding order, or shown before it), which decoders drop.
    packet_numbers = np.arange(len(pts))
    is_shown = ~is_discard & (packet_numbers >= first_keyframe) & (pts >= pts[first_keyframe])
    shown_packets = packet_numbers[is_shown]
    if not len(shown_packets):
        raise ValueError(f"`source` ({description}) has a video stream with no decodable frames.")
    order = np.lexsort((shown_packets, pts[shown_packets]))  # by pts, then decoding order (duplicate pts)
    frame_packets = shown_packets[order]  # (N,)
    frame_pts = pts[frame_packets]  # (N,)

    # A decode from keyframe k outputs the frames after it in decoding order and not shown before it; a frame shown
    # before the last keyframe preceding it (a leading picture of an open group of pictures) needs the keyframe before.
    group = np.searchsorted(keyframe_packets, frame_packets, side="right") - 1  # (N,)
    is_leading = (pts[frame_packets] < pts[keyframe_packets[group]]) & (group > 0)
    frame_start_packets = keyframe_packets[group - is_leading]
    packet_group = np.searchsorted(keyframe_packets, packet_numbers, side="right") - 1  # (P,)
    has_open_gops = bool(np.any((packet_group > 0) & (pts < pts[keyframe_packets[np.maximum(packet_group, 0)]])))

    last = int(frame_packets[-1])
    # The last frame lasts its packet's duration if the container stores one, else as long as the frame before it.
    last_duration = int(durations[last]) or (int(frame_pts[-1] - frame_pts[-2]) if len(frame_pts) > 1 else 0)
    index = _StreamIndex(
        packet_keys=packet_keys,
        keys_by_content=keys_by_content,
        has_open_gops=has_open_gops,
        packet_pts=pts,
        seek_pts=raw_pts,
        seek_dts=raw_dts,
        keyframe_packets=keyframe_packets,
        frame_packets=frame_packets,
        frame_pts=frame_pts,
        frame_start_packets=frame_start_packets,
        end_pts=int(frame_pts[-1]) + last_duration,
        time_base=stream.time_base,
    )
    if index.duration <= 0:
        raise ValueError(f"`source` ({description}) has a zero-length video stream (one frame, no duration).")
    _check_complete(container, stream, index, description, len(pts), source_size)
    return index


def _check_complete(container, stream, index: _StreamIndex, description: str, num_packets: int, size: int) -> None:
    """Raises if the packets stop before what the container declares: a frame count (MP4, AVI, including frames an
    edit list hides), a duration (Matroska/WebM), or, for MPEG-TS, a whole number of transport packets."""
    if stream.frames and num_packets < stream.frames:
        raise ValueError(
            f"`source` ({description}) is truncated: its container declares {stream.frames} video frames but only "
            f"{num_packets} can be read."
        )
    declared_end = _declared_end_pts(stream)
    frame_interval = (index.end_pts - index.frame_pts[0]) / index.num_frames
    if declared_end is not None and declared_end - index.end_pts > 2 * frame_interval:
        # The packets stop more than two (average) frames before the declared end.
        raise ValueError(
            f"`source` ({description}) is truncated: its container declares video up to "
            f"{float(declared_end * stream.time_base):.3f} s but it can be read only up to "
            f"{float(index.end_pts * stream.time_base):.3f} s."
        )
    if container.format.name == "mpegts" and all(size % packet for packet in _TRANSPORT_STREAM_PACKET_SIZES):
        raise ValueError(
            f"`source` ({description}) is truncated: an MPEG-TS file is a whole number of 188-byte packets, but it "
            f"has {size} bytes."
        )


@dataclass(frozen=True)
class _Run:
    """Frames decoded in one pass: from keyframe packet `start` forward to packet `last`."""

    start: int
    last: int
    wanted: dict[int, int]  # packet -> position of its frame in the output


def _runs_of(index: _StreamIndex, positions: np.ndarray, keyframes_only: bool = False) -> list[_Run]:
    """Groups the frames at `positions` ((T,) ascending, unique) into runs that start at the same keyframe."""
    packets = index.frame_packets[positions]  # (T,)
    starts = packets if keyframes_only else index.frame_start_packets[positions]  # (T,)
    runs = {}
    for output_position, (packet, start) in enumerate(zip(packets.tolist(), starts.tolist())):
        runs.setdefault(start, {})[packet] = output_position
    return [_Run(start, max(wanted), wanted) for start, wanted in sorted(runs.items())]


class _FrameSink:
    """The output array, filled by the decoding threads; allocated at the first frame, which gives the rotation."""

    def __init__(self, num_frames: int, width: int, height: int, apply_rotation: bool):
        self.num_frames, self.width, self.height = num_frames, width, height
        self.apply_rotation = apply_rotation
        self.rotation = 0
        self.frames = None  # (T, H, W, 3) uint8 once allocated
        self._lock = Lock()

    def put(self, output_position: int, frame: av.VideoFrame, reformatter: VideoReformatter) -> None:
        """Converts `frame` to RGB at the stream's size and stores it, upright if asked, at `output_position`."""
        rgb = reformatter.reformat(
            frame, format="rgb24", width=self.width, height=self.height, **_REFORMAT_OPTIONS
        ).to_ndarray()
        if self.frames is None:
            with self._lock:
                if self.frames is None:
                    self.rotation = round(frame.rotation) % 360
                    quarter_turns = self.rotation // 90 if self.apply_rotation else 0
                    height, width = (self.width, self.height) if quarter_turns % 2 else (self.height, self.width)
                    self.frames = np.empty((self.num_frames, height, width, 3), dtype=np.uint8)
        quarter_turns = self.rotation // 90 if self.apply_rotation else 0
        self.frames[output_position] = np.rot90(rgb, quarter_turns) if quarter_turns else rgb


def _decode_in_parallel(source, container, stream, index, description, sink: _FrameSink, runs: list[_Run]) -> int:
    """Decodes `runs` into `sink`, spread over up to one thread per CPU core (each with its own demuxer and decoder;
    a file object is read by one). Returns the number of frames decoded."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    num_workers = min(cores, len(runs)) if isinstance(source, (str, bytes)) else 1
    if num_workers <= 1:
        # One run (a full decode, or frames of one group of pictures): frame threading over every core.
        decoder = _FrameDecoder(container, stream, index, description, sink, threads=cores if len(runs) == 1 else 1)
        decoder.decode_runs(runs)
        return decoder.num_decoded_frames
    # Each thread takes the next run when it is done with one (runs differ in cost), so every thread seeks forward
    # through the file; after an error the others stop at their current run.
    pending_runs, lock, failed = iter(runs), Lock(), Event()

    def next_runs() -> Iterator[_Run]:
        while not failed.is_set():
            with lock:
                run = next(pending_runs, None)
            if run is None:
                return
            yield run

    def decode(worker: int) -> int:
        opened = nullcontext((container, stream, description)) if worker == 0 else _open_video_stream(source)
        try:
            with opened as (own_container, own_stream, _):
                decoder = _FrameDecoder(own_container, own_stream, index, description, sink)
                decoder.decode_runs(next_runs())
                return decoder.num_decoded_frames
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=num_workers) as executor:
        return sum(executor.map(decode, range(num_workers)))


class _SeekLandedLateError(Exception):
    """A seek landed after the keyframe a run starts at."""


class _FrameDecoder:
    """Decodes runs of frames of a video stream by seeking to keyframes; counts the frames the decoder produces."""

    def __init__(self, container, stream, index: _StreamIndex, description: str, sink: _FrameSink, threads: int = 1):
        self.container, self.stream, self.index = container, stream, index
        self.description = description
        self.sink = sink
        self.num_decoded_frames = 0
        self.codec = stream.codec_context
        self.codec.copy_opaque = True  # a frame carries the `opaque` of the packet it came from
        # Decoding errors raise instead of being concealed. Not after a seek into an open group of pictures: there
        # the references of its leading pictures are missing, which FFmpeg reports like damage (H.264: "mmco: unref
        # short failure"); frames flagged corrupt still raise.
        self.codec.options = {} if index.has_open_gops else {"err_detect": "explode"}
        # Frame threading decodes up to `thread_count - 1` frames ahead and refills its pipeline after every seek:
        # worth it for one long run, not for the short runs of a sampled read (those run on several threads instead).
        self.codec.thread_type = "AUTO" if threads > 1 else "SLICE"
        self.codec.thread_count = max(1, threads)
        self.can_skip_non_reference = self.codec.name in _CODECS_SKIPPING_NON_REFERENCE_FRAMES
        self.reference_planner = H264ReferencePlanner(self.codec.extradata) if self.codec.name == "h264" else None
        # One converter for all frames: `VideoFrame.to_ndarray(format=...)` sets up a new one per frame.
        self.reformatter = VideoReformatter()
        self.first_packet_of_key = None  # packet key -> the first packet number with it, built on first need

    def decode_runs(self, runs: Iterable[_Run]) -> None:
        for run in runs:
            self._decode_run(run)

    def _decode_run(self, run: _Run) -> None:
        """
        Decodes the wanted frames of `run` into the sink.

        Demuxers seek by presentation time (Matroska) or by decoding time (MP4, MPEG-TS), and may land past the
        keyframe (or, with timestamp resets, elsewhere): the packets after a seek are matched to the scan by their
        byte position, and if the seek landed past the keyframe the next target is tried: the keyframe's pts, its
        dts, the first packet of the stream.
        """
        index = self.index
        seek_targets = [int(index.seek_pts[run.start]), int(index.seek_dts[run.start]), int(index.seek_dts[0])]
        for seek_target in dict.fromkeys(seek_targets):  # unique, in order
            try:
                missing = self._decode_after_seek(run, seek_target)
            except _SeekLandedLateError:
                continue
            if not missing:
                return
            first_missing = min(missing, key=lambda packet: index.packet_pts[packet])
            raise ValueError(
                f"`source` ({self.description}) is corrupt or truncated: the frame at "
                f"{self._seconds_of_packet(first_missing):.3f} s cannot be decoded."
            )
        raise ValueError(
            f"`source` ({self.description}) cannot be read: no seek reaches the keyframe at "
            f"{self._seconds_of_packet(run.start):.3f} s."
        )

    def _decode_after_seek(self, run: _Run, seek_target: int, plan_skips: bool = True) -> set[int]:
        """
        Seeks to `seek_target` (ticks), feeds packets `run.start .. run.last`, drains the decoder. Returns the packets
        of the wanted frames that did not come out. Raises `_SeekLandedLateError` if the seek landed late.

        Unwanted non-reference frames are skipped, and for H.264 the reference B-frames that `H264ReferencePlanner`
        finds unneeded (when the wanted frames are sparse: at most one packet in 4). Should a run decoded with such
        skips fail or miss a frame, it is decoded again with every reference frame.
        """
        remaining = dict(run.wanted)  # packet -> output position
        skipped_references = frozenset()
        try:
            self.container.seek(seek_target, backward=True, any_frame=False, stream=self.stream)
            self.codec.flush_buffers()
            start_pts = self.index.packet_pts[run.start]
            packets = (
                (number, packet)
                for number, packet in self._packets_from(run.start, run.last)
                # not a leading picture of an open group of pictures (its references are before the seek)
                if self.index.packet_pts[number] >= start_pts or number in remaining
            )
            if plan_skips and self.reference_planner is not None and len(run.wanted) * 4 <= run.last - run.start:
                # The whole run first: whether a frame is needed depends on the frames after it.
                buffered, num_bytes = [], 0
                for number, packet in packets:
                    buffered.append((number, packet))
                    num_bytes += packet.size
                    if num_bytes > _MAX_PLANNED_RUN_BYTES:  # too long to hold: decode every reference frame
                        packets = itertools.chain(buffered, packets)
                        break
                else:
                    packets = buffered
                    positions = self.reference_planner.skippable(
                        [packet for _, packet in buffered],
                        {position for position, (number, _) in enumerate(buffered) if number in remaining},
                    )
                    skipped_references = frozenset(buffered[position][0] for position in positions)
            for number, packet in packets:
                # A new tuple, not the int: PyAV keeps `opaque` values in one table for the process, keyed by id(),
                # and drops the entry when any buffer holding that key is freed. Small ints are shared objects, so
                # another decoder (another thread of this read, or any PyAV user) tagging a packet with the same
                # number would clear this tag, and the frame could no longer be identified.
                packet.opaque = (number,)
                if self.can_skip_non_reference:
                    if number in remaining:
                        self.codec.skip_frame = "DEFAULT"
                    else:
                        self.codec.skip_frame = "BIDIR" if number in skipped_references else "NONREF"
                for frame in self.codec.decode(packet):
                    self._take(frame, remaining)
            for frame in self.codec.decode(None):  # drain: frames still held for reordering come out
                self._take(frame, remaining)
        except (av.error.FFmpegError, ValueError) as error:
            if not skipped_references:
                if not isinstance(error, av.error.FFmpegError):  # a frame flagged corrupt (`_take`)
                    raise
                raise ValueError(
                    f"`source` ({self.description}) is corrupt or truncated: decoding the frames from "
                    f"{self._seconds_of_packet(run.start):.3f} s fails: {error}"
                ) from error
            remaining = None
        finally:
            self.codec.flush_buffers()
        if skipped_references and remaining != {}:
            return self._decode_after_seek(run, seek_target, plan_skips=False)
        return set(remaining)

    def _packets_from(self, start: int, last: int) -> Iterator[tuple[int, av.Packet]]:
        """Yields `(packet number, packet)` for packets `start .. last` of the scan, demuxed from the current seek
        position. Raises `_SeekLandedLateError` if the first packet demuxed comes after `start`."""
        keys = self.index.packet_keys
        expected = None  # number of the next packet, once the position in the scan is known
        for packet in self.container.demux(self.stream):
            if packet.size == 0:
                continue
            key = _packet_key(packet, self.index.keys_by_content)
            if expected is not None and expected < len(keys) and keys[expected] == key:
                number = expected
            else:
                number = self._number_of_key(key, after=-1 if expected is None else expected - 1)
                if number is None:
                    continue  # not in the scan (a seek inside a packet): wait for one that is
            if expected is None and number > start:
                raise _SeekLandedLateError
            expected = number + 1
            if number < start:
                continue
            yield number, packet
            if number >= last:
                return

    def _number_of_key(self, key: int, after: int) -> int | None:
        """The first packet number after `after` whose key is `key` (byte positions repeat where one PES packet holds
        the starts of two frames), or None."""
        if self.first_packet_of_key is None:
            self.first_packet_of_key = {}
            for number, packet_key in enumerate(self.index.packet_keys):
                self.first_packet_of_key.setdefault(packet_key, number)
        number = self.first_packet_of_key.get(key)
        if number is None or number > after:
            return number
        try:
            return self.index.packet_keys.index(key, after + 1)  # a repeated key
        except ValueError:
            return None

    def _take(self, frame: av.VideoFrame, remaining: dict[int, int]) -> None:
        """Stores `frame` if it is wanted. Any frame of the run flagged corrupt raises, wanted or not: the frames
        decoded after it may reference it."""
        self.num_decoded_frames += 1
        number = frame.opaque[0] if frame.opaque is not None else None  # the packet it came from
        if frame.is_corrupt:
            seconds = self._seconds_of_packet(number) if number is not None else math.nan
            raise ValueError(
                f"`source` ({self.description}) is corrupt: the frame at {seconds:.3f} s decodes with errors, and so "
                "may the frames decoded from it."
            )
        output_position = remaining.pop(number, None) if number is not None else None
        if output_position is not None:
            self.sink.put(output_position, frame, self.reformatter)

    def _seconds_of_packet(self, packet: int) -> float:
        return float(self.index.packet_pts[packet] * self.index.time_base)


def _video_info(stream, index: _StreamIndex, rotation: int) -> VideoInfo:
    """The `VideoInfo` of `stream`, measured by `index`."""
    return VideoInfo(
        duration=index.duration,
        average_fps=index.num_frames / index.duration,
        num_frames=index.num_frames,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation=rotation,
        codec=stream.codec_context.name,
        start_time=index.start_time,
    )
