# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Video reading with PyAV: stream metadata, and frames sampled by presentation time.

Both `probe_video` and `read_video` first read the packet headers of the video stream (demuxing only, no decoding:
a few microseconds per frame, ~50 ms for 10 minutes at 30 fps). That gives the exact presentation timestamp (pts) of
every frame and the position of every keyframe, whatever the container stores in its header: frame counts of
Matroska/WebM files and variable frame rates come out exact. `read_video` then decodes only what the requested frames
need: each run of requested frames that share a keyframe costs one seek to that keyframe and one forward decode to the
last of them, so 64 frames out of a long video cost about 64 short decodes rather than a full decode (the exact-seek
strategy of torchcodec's `seek_mode="exact"`).

Frames are returned as stored: `VideoInfo.rotation` says how a player would rotate them, but they are not rotated.
"""

import io
import math
import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from transformers.video_utils import VideoMetadata

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

__all__ = ["DecodedVideo", "VideoInfo", "VideoSource", "probe_video", "read_video"]


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
            Number of frames in the stream, counted from its packets (also for containers that do not store it, such
            as Matroska/WebM).
        width (`int`), height (`int`):
            Frame size in pixels, as stored (before `rotation`).
        rotation (`int`):
            Degrees (0, 90, 180 or 270) by which a player rotates the frames counter-clockwise for display, from the
            stream's display matrix; 0 when it has none. The frames `read_video` returns are not rotated.
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
            The frames in RGB, in presentation order, each at most once.
        timestamps (`np.ndarray` of shape `(T,)`, `float64`):
            Presentation time of each frame in seconds, on the clock of `info.start_time`.
        frame_indices (`np.ndarray` of shape `(T,)`, `int64`):
            Position of each frame in the stream, in presentation order, counted from 0.
        info (`VideoInfo`):
            Metadata of the video stream.
        num_decoded_frames (`int`):
            How many frames the decoder produced to return these: the cost of the read (a full decode produces
            `info.num_frames`).
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
            width=self.info.width,
            height=self.info.height,
            duration=self.info.duration,
            video_backend="pyav",
            frames_indices=self.frame_indices.tolist(),
        )


@dataclass(frozen=True)
class _StreamIndex:
    """Presentation timestamps of a video stream's frames, in ticks of its time base, from a scan of its packets."""

    frame_pts: np.ndarray  # (N,) int64, ascending: every decodable frame
    keyframe_pts: np.ndarray  # (K >= 1,) int64, ascending: the keyframes; `frame_pts[0]` is the first
    keyframe_dts: np.ndarray  # (K,) int64: decoding timestamps of the keyframes
    first_dts: int  # decoding timestamp of the first packet
    end_pts: int  # end of the last frame
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

    def frames_at(self, times: np.ndarray) -> np.ndarray:
        """(T,) seconds after `start_time` -> (T,) position of the frame shown at each time: the last one whose pts is
        at or before it."""
        target_pts = self.frame_pts[0] + times / float(self.time_base)  # (T,) ticks
        # Containers round timestamps to their time base (Matroska: 1 ms), so a frame stored at 667 ms may start at
        # 666.67 ms: a target reaches a frame within half a tick of it. Where ticks are as coarse as frames (AVI stores
        # frame numbers), timestamps are exact and only float error is allowed for.
        frame_interval = np.median(np.diff(self.frame_pts)) if self.num_frames > 1 else 1.0
        tolerance = 0.5 if frame_interval > 2 else 1e-6
        return np.searchsorted(self.frame_pts, target_pts + tolerance, side="right") - 1

    def keyframes_nearest(self, times: np.ndarray) -> np.ndarray:
        """(T,) seconds after `start_time` -> (T,) position of the keyframe nearest each time (earlier on a tie)."""
        target_pts = self.frame_pts[0] + times / float(self.time_base)  # (T,) ticks
        after = np.clip(np.searchsorted(self.keyframe_pts, target_pts), 0, len(self.keyframe_pts) - 1)  # (T,)
        before = np.maximum(after - 1, 0)  # (T,)
        before_pts, after_pts = self.keyframe_pts[before], self.keyframe_pts[after]
        nearest = np.where(target_pts - before_pts <= np.abs(after_pts - target_pts), before_pts, after_pts)
        return np.searchsorted(self.frame_pts, nearest)


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
    with _open_video_stream(source) as (container, stream, description):
        index = _scan_packets(container, stream, description)
        _, rotation = _FrameDecoder(container, stream, index, description).decode(np.zeros(1, dtype=np.int64))
        return _video_info(stream, index, rotation)


def read_video(
    source: VideoSource,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    approximate: bool = False,
) -> DecodedVideo:
    """
    Decodes frames of the video stream of `source`, chosen by presentation time.

    Sampling (times are seconds after the first frame, over `info.duration`):
      - `num_frames=N`: N times evenly spread over the video, the start of each of N equal segments,
        `i * duration / N` for `i = 0 .. N - 1`. At a constant frame rate this picks frame `i * info.num_frames // N`,
        as Transformers' `default_sample_indices_fn` does.
      - `fps=f`: one time every `1 / f` seconds from the first frame, `k / f` for every `k` with `k / f < duration`.
        If that is more than `max_frames`, `max_frames` times evenly spread instead, as with `num_frames`.
      - neither: every frame (a full sequential decode).
    Each time selects the frame shown at that time: the last one whose presentation timestamp is at or before it.
    Variable frame rates are handled: only timestamps are used, never a nominal frame rate.

    **Each frame is returned at most once.** Times that select the same frame (more frames asked for than the video
    has, or a frame shown longer than the sampling interval) yield it once, so fewer than `num_frames` frames may come
    back; in particular, asking for more frames than the video has returns all of its frames. `timestamps` and
    `frame_indices` say which frames were returned.

    Exact mode (default) seeks to the keyframe at or before each requested frame and decodes forward to it; requested
    frames with no keyframe between them are decoded in one pass. Approximate mode (`approximate=True`) returns, for
    each time, the keyframe nearest to it (before or after), decoding keyframes only: much faster (one frame per
    result), but the frames can be up to half a keyframe interval (often 1-5 s) away from the times asked for.
    `timestamps` are always the true presentation times of the returned frames.

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

    Returns:
        `DecodedVideo`: `frames` (T, H, W, 3) uint8 RGB, `timestamps` (T,) seconds, `frame_indices`, `info`.

    Raises:
        FileNotFoundError: `source` is a path to no file.
        ValueError: invalid sampling arguments; `source` is not a video, has no video stream, has no frames, or is
            truncated or corrupt (a frame that should be returned cannot be decoded: no partial result is returned).
    """
    _check_sampling_arguments(num_frames, fps, max_frames, approximate)
    with _open_video_stream(source) as (container, stream, description):
        index = _scan_packets(container, stream, description)
        if num_frames is None and fps is None:
            positions = np.arange(index.num_frames)
        else:
            times = _sampling_times(index.duration, num_frames, fps, max_frames)
            positions = index.keyframes_nearest(times) if approximate else index.frames_at(times)
        positions = np.unique(positions)  # (T,) ascending, each frame once
        if approximate:
            stream.codec_context.skip_frame = "NONKEY"
        decoder = _FrameDecoder(container, stream, index, description, sequential=num_frames is None and fps is None)
        frames, rotation = decoder.decode(positions)
        return DecodedVideo(
            frames=frames,
            timestamps=index.frame_pts[positions] * float(index.time_base),
            frame_indices=positions.astype(np.int64),
            info=_video_info(stream, index, rotation),
            num_decoded_frames=decoder.num_decoded_frames,
        )


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")


def _check_sampling_arguments(num_frames, fps, max_frames, approximate) -> None:
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
            raise ValueError("`max_frames` caps sampling by `fps` and needs it; for a fixed count use `num_frames`.")
        _check_positive_int("max_frames", max_frames)
    if not isinstance(approximate, bool):
        raise ValueError(f"`approximate` must be True or False, got {approximate!r}.")
    if approximate and num_frames is None and fps is None:
        raise ValueError("`approximate=True` needs `num_frames` or `fps` (without them every frame is decoded).")


def _sampling_times(duration: float, num_frames: int | None, fps: float | None, max_frames: int | None) -> np.ndarray:
    """(T,) sampling times in seconds after the first frame, as documented in `read_video`."""
    if fps is not None:
        count = math.floor(duration * fps - 1e-9) + 1  # every k with k / fps < duration
        if max_frames is None or count <= max_frames:
            return np.arange(count) / fps
        num_frames = max_frames
    return np.arange(num_frames) * (duration / num_frames)


def _describe(source: VideoSource) -> str:
    """A short name of `source` for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fsdecode(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"{memoryview(source).nbytes} bytes"
    name = getattr(source, "name", None)
    return f"file object {name!r}" if isinstance(name, str) else f"{type(source).__name__} object"


@contextmanager
def _open_video_stream(source: VideoSource) -> Iterator[tuple[av.container.InputContainer, av.video.VideoStream, str]]:
    """Opens `source` and yields `(container, video stream, description of source)`; closes the container after."""
    description = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"`source` video file not found: {path!r}.")
        if not os.path.isfile(path):
            raise ValueError(f"`source` must be a video file, got a directory or special file: {path!r}.")
        file = path
    elif isinstance(source, (bytes, bytearray, memoryview)):
        file = io.BytesIO(source)
    elif hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise ValueError(f"`source` must be opened in binary mode ('rb'), got a text file: {description}.")
        if not (hasattr(source, "seekable") and source.seekable()):
            raise ValueError(f"`source` must be seekable; read the unseekable {description} into bytes first.")
        source.seek(0)  # the container is read from the start of the file, wherever it was left
        file = source
    else:
        raise TypeError(
            f"`source` must be a path, bytes or a binary file object, got {type(source).__name__}: {source!r}."
        )
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


def _scan_packets(container, stream, description: str) -> _StreamIndex:
    """Reads every packet header of `stream` (no decoding) into a `_StreamIndex`; checks the stream is complete."""
    packet_pts, packet_dts, packet_is_keyframe, packet_duration = [], [], [], []
    num_packets = 0  # including those outside an edit list, which the container's frame count includes
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end of the stream
                continue
            if packet.is_corrupt:
                raise ValueError(
                    f"`source` ({description}) is corrupt or truncated: a packet of its video stream is incomplete or "
                    "damaged."
                )
            num_packets += 1
            if packet.is_discard:  # decoded for reference but never shown (before the start of an edit list)
                continue
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                raise ValueError(f"`source` ({description}) has video packets without timestamps; remux it.")
            packet_pts.append(pts)
            packet_dts.append(packet.dts if packet.dts is not None else pts)
            packet_is_keyframe.append(packet.is_keyframe)
            packet_duration.append(packet.duration or 0)
    except av.error.FFmpegError as error:
        raise ValueError(f"`source` ({description}) is corrupt or truncated: {error}") from error
    if not packet_pts:
        raise ValueError(f"`source` ({description}) has a video stream with no frames.")

    packet_pts = np.asarray(packet_pts, dtype=np.int64)  # (P,) in decoding order
    packet_dts = np.asarray(packet_dts, dtype=np.int64)  # (P,)
    is_keyframe = np.asarray(packet_is_keyframe, dtype=bool)  # (P,)
    if not is_keyframe.any():  # no packet is marked: decoding can only start at the first one
        is_keyframe[0] = True
    keyframe_pts, keyframe_packets = np.unique(packet_pts[is_keyframe], return_index=True)  # (K,), (K,)
    # A stream cut inside a group of pictures starts with frames whose references are gone: decoders drop them.
    frame_pts = np.unique(packet_pts)  # (N,) presentation order
    frame_pts = frame_pts[frame_pts >= keyframe_pts[0]]
    last = int(np.argmax(packet_pts))
    # The last frame lasts its packet's duration if the container stores one, else as long as the frame before it.
    last_duration = packet_duration[last] or (int(frame_pts[-1] - frame_pts[-2]) if len(frame_pts) > 1 else 0)
    index = _StreamIndex(
        frame_pts=frame_pts,
        keyframe_pts=keyframe_pts,
        keyframe_dts=packet_dts[is_keyframe][keyframe_packets],
        first_dts=int(packet_dts[0]),
        end_pts=int(frame_pts[-1]) + last_duration,
        time_base=stream.time_base,
    )
    if index.duration <= 0:
        raise ValueError(f"`source` ({description}) has a zero-length video stream (one frame, no duration).")

    # A truncated file is one whose packets stop before the frame count (MP4, AVI) or the duration (Matroska/WebM) its
    # container declares.
    if stream.frames and num_packets < stream.frames:
        raise ValueError(
            f"`source` ({description}) is truncated: its container declares {stream.frames} video frames but only "
            f"{num_packets} can be read."
        )
    declared_end = _declared_end_pts(stream)
    if declared_end is not None and declared_end - index.end_pts > 2 * (index.end_pts - frame_pts[0]) / len(frame_pts):
        # The packets stop more than two (average) frames before the declared end.
        raise ValueError(
            f"`source` ({description}) is truncated: its container declares video up to "
            f"{float(declared_end * stream.time_base):.3f} s but it can be read only up to "
            f"{float(index.end_pts * stream.time_base):.3f} s."
        )
    return index


class _FirstFrameMissedError(Exception):
    """The first frame of a run did not come out of the decoder after a seek."""


class _FrameDecoder:
    """Decodes chosen frames of a video stream by seeking to keyframes; counts the frames the decoder produces."""

    def __init__(self, container, stream, index: _StreamIndex, description: str, sequential: bool = False):
        self.container = container
        self.stream = stream
        self.index = index
        self.description = description
        self.num_decoded_frames = 0
        # Frame threading decodes up to `thread_count - 1` frames past the last one asked for and refills its pipeline
        # after every seek, which costs more than it gains on the short runs of a sampled read (64 frames of the
        # 10-minute benchmark video, 2 cores: 0.26 s with slice threading only, 0.35 s with frame threading too). It
        # is kept for a sequential decode of the whole stream, where nothing it decodes ahead is wasted.
        stream.thread_type = "AUTO" if sequential else "SLICE"
        # One converter for all frames: `VideoFrame.to_ndarray(format=...)` sets up a new one per frame, which costs
        # more than decoding a small frame.
        self.reformatter = VideoReformatter()

    def decode(self, positions: np.ndarray) -> tuple[np.ndarray, int]:
        """
        Decodes the frames at `positions` ((T,) ascending, unique) into (T, H, W, 3) uint8 RGB. Returns the frames and
        the rotation of the stream's display matrix in degrees.

        Requested frames are grouped in runs that share a keyframe (no keyframe between consecutive ones): each run
        costs one seek to its keyframe and one forward decode.
        """
        wanted_pts = self.index.frame_pts[positions]  # (T,)
        # Group of pictures of each frame: index of the last keyframe at or before it.
        gops = np.searchsorted(self.index.keyframe_pts, wanted_pts, side="right") - 1  # (T,)
        run_starts = np.flatnonzero(np.diff(gops, prepend=-2))  # (R,) where the group changes
        run_ends = [*run_starts[1:], len(positions)]

        width, height = self.stream.codec_context.width, self.stream.codec_context.height
        frames = np.empty((len(positions), height, width, 3), dtype=np.uint8)  # (T, H, W, 3)
        rotation = 0.0
        for run_start, run_end in zip(run_starts, run_ends):
            run = self._decode_run(wanted_pts[run_start:run_end].tolist(), int(gops[run_start]))
            for position, frame in enumerate(run, start=run_start):
                frames[position] = self.reformatter.reformat(
                    frame, format="rgb24", width=width, height=height
                ).to_ndarray()
                rotation = frame.rotation
        return frames, round(rotation) % 360

    def _decode_run(self, run_pts: list[int], gop: int) -> Iterator[av.VideoFrame]:
        """
        Yields the frames whose pts are `run_pts` (ascending), all in group of pictures `gop`, decoded forward from
        its keyframe.

        Demuxers seek by presentation time (Matroska) or by decoding time (MP4, MPEG-TS), and a seek may land past the
        keyframe: then the first requested frame does not come out. So the seek goes to the keyframe's pts, else to
        its dts, else to the first packet of the stream.
        """
        seek_targets = [int(self.index.keyframe_pts[gop]), int(self.index.keyframe_dts[gop]), self.index.first_dts]
        for seek_target in dict.fromkeys(seek_targets):  # unique, in order
            try:
                yield from self._decode_after_seek(run_pts, seek_target)
                return
            except _FirstFrameMissedError:
                continue
        raise self._missing_frame_error(run_pts[0])

    def _decode_after_seek(self, run_pts: list[int], seek_target: int) -> Iterator[av.VideoFrame]:
        """Seeks to `seek_target` (ticks), then yields the frames whose pts are `run_pts`. Raises
        `_FirstFrameMissedError`, having yielded nothing, if the first of them does not come out."""
        remaining = iter(run_pts)
        want = next(remaining)
        try:
            self.container.seek(seek_target, backward=True, any_frame=False, stream=self.stream)
            for frame in (frame for packet in self.container.demux(self.stream) for frame in packet.decode()):
                self.num_decoded_frames += 1
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts < want:
                    continue
                if pts > want:  # frames come out in presentation order: `want` was skipped
                    break
                if frame.is_corrupt:
                    raise ValueError(
                        f"`source` ({self.description}) is corrupt: the frame at {self._seconds(want):.3f} s decodes "
                        "with errors."
                    )
                yield frame
                want = next(remaining, None)
                if want is None:
                    return
        except av.error.FFmpegError as error:
            raise ValueError(f"`source` ({self.description}) is corrupt or truncated: {error}") from error
        if want == run_pts[0]:
            raise _FirstFrameMissedError
        raise self._missing_frame_error(want)

    def _seconds(self, pts: int) -> float:
        return float(pts * self.index.time_base)

    def _missing_frame_error(self, pts: int) -> ValueError:
        return ValueError(
            f"`source` ({self.description}) is corrupt or truncated: the frame at {self._seconds(pts):.3f} s cannot "
            "be decoded."
        )


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
