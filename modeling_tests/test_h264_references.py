# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Tests of `slowfast_hf.h264_references`: slice headers are read as FFmpeg's own bitstream parser reads them, and exact
reads that skip the reference B-frames it plans return the frames of a full sequential decode.
"""

import re
import subprocess

import av
import numpy as np
import pytest
import real_video_fixtures
from real_video_fixtures import X264_REFERENCE_STRUCTURES, full_decode

from slowfast_hf import video_reading
from slowfast_hf.h264_references import H264ReferencePlanner
from slowfast_hf.video_reading import read_video

# pytest finds fixtures by their names in the test module.
x264_reference_structures = real_video_fixtures.x264_reference_structures

GOP = 50  # frames per group of pictures of the fixtures
# Files whose P-frames reference P-frames only (x264 `ref=1`, or a strict pyramid), so that the reference B-frames of
# groups of pictures before a wanted P-frame can be skipped. In the others P-frames may reference B-frames (`ref` >= 3).
SKIP_REFERENCE_B_FRAMES = {"veryfast", "strict_pyramid", "four_slices", "veryfast_ts"}
SLICE_KINDS = "PBIPI"  # slice_type % 5
_TRACE_LINE = re.compile(r"\[trace_headers @ [0-9a-fx]+\] (?:\d+\s+(\S+)\s+[01]+ = (-?\d+)|(Packet:|Slice Header))")


def ffmpeg_slice_headers(path, num_packets: int) -> tuple[list[list[list[tuple[str, int]]]], dict[str, int]]:
    """Per packet, per slice, the `(field, value)` pairs of its header as FFmpeg's `trace_headers` bitstream filter
    prints them, in order; and the last value of every field of the parameter sets."""
    command = ["ffmpeg", "-v", "trace", "-i", str(path), "-frames:v", str(num_packets), "-c", "copy", "-bsf:v",
               "trace_headers", "-f", "null", "-"]  # fmt: skip
    log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    packets, parameters, fields = [], {}, None
    for match in _TRACE_LINE.finditer(log):
        name, value, marker = match.group(1), match.group(2), match.group(3)
        if marker == "Packet:":
            packets.append([])
            fields = None
        elif marker == "Slice Header":
            fields = []
            packets[-1].append(fields)
        elif fields is not None:
            fields.append((name, int(value)))
        else:
            parameters[name] = int(value)
    return packets, parameters


def expected_slice(fields: list[tuple[str, int]], parameters: dict[str, int]) -> dict:
    """What `H264ReferencePlanner` must read from a slice header, from FFmpeg's fields."""
    values = dict(fields)
    kind = SLICE_KINDS[values["slice_type"] % 5]
    num_active = [parameters["num_ref_idx_l0_default_active_minus1"] + 1,
                  parameters["num_ref_idx_l1_default_active_minus1"] + 1]  # fmt: skip
    if values.get("num_ref_idx_active_override_flag"):
        num_active[0] = values["num_ref_idx_l0_active_minus1"] + 1
        if kind == "B":
            num_active[1] = values["num_ref_idx_l1_active_minus1"] + 1
    modifications, current, command = [[], []], 0, None
    marking = [] if values.get("adaptive_ref_pic_marking_mode_flag") else None
    for name, value in fields:
        if name.startswith("ref_pic_list_modification_flag_l"):
            current = int(name[-1])
        elif name == "modification_of_pic_nums_idc":
            command = value
        elif name == "abs_diff_pic_num_minus1":
            modifications[current].append((command, value + 1))
        elif name == "difference_of_pic_nums_minus1":
            marking.append(value + 1)
    num_lists = {"P": 1, "B": 2, "I": 0}[kind]
    return {
        "kind": kind,
        "is_reference": values["nal_ref_idc"] > 0,
        "frame_num": values["frame_num"],
        "poc_lsb": values["pic_order_cnt_lsb"],
        "num_ref_idx_active": tuple(num_active),
        "modifications": tuple(tuple(commands) for commands in modifications[:num_lists]),
        "marking": tuple(marking) if marking is not None else None,
    }


@pytest.mark.parametrize("name", ["veryfast", "medium", "eight_b_frames", "four_slices", "veryfast_ts"])
def test_slice_headers_read_as_ffmpeg_reads_them(x264_reference_structures, name):
    path, num_packets = x264_reference_structures[name], 2 * GOP
    ffmpeg_packets, parameters = ffmpeg_slice_headers(path, num_packets)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        planner = H264ReferencePlanner(stream.codec_context.extradata)
        packets = [bytes(packet) for packet in container.demux(stream) if packet.size][:num_packets]
    assert len(ffmpeg_packets) == len(packets) == num_packets
    num_modified = num_marked = 0
    for packet, ffmpeg_slices in zip(packets, ffmpeg_packets):
        picture = planner._picture(packet)
        expected = [expected_slice(fields, parameters) for fields in ffmpeg_slices]
        assert len(picture.slices) == len(expected) == (4 if name == "four_slices" else 1)
        for slice_, wanted in zip(picture.slices, expected):
            read = {
                "kind": slice_.kind,
                "is_reference": picture.is_reference,
                "frame_num": picture.frame_num,
                "poc_lsb": picture.poc_lsb,
                "num_ref_idx_active": slice_.num_ref_idx_active[: {"P": 1, "B": 2, "I": 0}[slice_.kind]],
                "modifications": slice_.modifications,
                "marking": picture.marking,
            }
            wanted["num_ref_idx_active"] = wanted["num_ref_idx_active"][: len(read["num_ref_idx_active"])]
            assert read == wanted
            num_modified += any(slice_.modifications)
        num_marked += picture.marking is not None
    assert picture.is_idr is False and planner._picture(packets[0]).is_idr
    assert num_modified and num_marked  # the fixtures reorder lists and mark by command: both are read


@pytest.fixture
def fallbacks(monkeypatch) -> list[int]:
    """The start packets of the runs decoded again with every reference frame (their planned skips failed)."""
    started_again = []
    decode_after_seek = video_reading._FrameDecoder._decode_after_seek

    def recording_decode_after_seek(self, run, seek_target, plan_skips=True):
        if not plan_skips:
            started_again.append(run.start)
        return decode_after_seek(self, run, seek_target, plan_skips)

    monkeypatch.setattr(video_reading._FrameDecoder, "_decode_after_seek", recording_decode_after_seek)
    return started_again


def read_one_frame_per_group(path, offset: int) -> video_reading.DecodedVideo:
    """Frames `offset`, `offset + GOP`, ...: one per group of pictures, so each run has one wanted frame."""
    return read_video(path, sample_indices_fn=lambda num_frames: range(offset, num_frames, GOP), apply_rotation=False)


@pytest.mark.parametrize("name", list(X264_REFERENCE_STRUCTURES))
def test_reads_skipping_reference_b_frames_equal_a_full_decode(
    x264_reference_structures, name, fallbacks, monkeypatch
):
    """Every frame of each file read as the only wanted frame of its run, against a full sequential decode; no run
    needs its fallback (a second decode with every reference frame); the frames decoded, with plans and without."""
    path = x264_reference_structures[name]
    reference = full_decode(path)
    with_plans = 0
    for offset in range(GOP):
        decoded = read_one_frame_per_group(path, offset)
        np.testing.assert_array_equal(decoded.frames, reference[offset::GOP])
        with_plans += decoded.num_decoded_frames
    assert fallbacks == []
    monkeypatch.setattr(H264ReferencePlanner, "skippable", lambda self, packets, wanted: frozenset())
    without_plans = sum(read_one_frame_per_group(path, offset).num_decoded_frames for offset in range(GOP))
    if name in SKIP_REFERENCE_B_FRAMES:
        assert with_plans <= 0.92 * without_plans  # measured: 0.89 (ref=1), 0.67 (strict pyramid)
    else:
        assert with_plans == without_plans


def test_unchecked_plans_decode_wrongly_and_failed_runs_are_decoded_again(
    x264_reference_structures, fallbacks, monkeypatch
):
    """
    Without the planner's simulation of FFmpeg's buffer, skipping every reference B-frame before the wanted frame:
    FFmpeg decodes some frames wrongly without reporting any error (so the simulation, not FFmpeg's error detection,
    is what keeps reads exact), and fails on others, whose runs are then decoded again with every reference frame.
    """
    path = x264_reference_structures["veryfast"]
    reference = full_decode(path)

    def every_reference_b_picture_before_the_wanted_one(self, packets, wanted):
        pictures = [self._picture(packet) for packet in packets]
        return frozenset(
            number
            for number, picture in enumerate(pictures)
            if picture.is_reference and picture.is_bidirectional and number < max(wanted)
        )

    monkeypatch.setattr(H264ReferencePlanner, "skippable", every_reference_b_picture_before_the_wanted_one)
    num_wrong = num_decoded_again = 0
    for position in range(GOP):
        fallbacks.clear()
        decoded = read_video(path, sample_indices_fn=lambda _, position=position: [position], apply_rotation=False)
        frame = decoded.frames[0]
        if fallbacks:
            np.testing.assert_array_equal(frame, reference[position])
            num_decoded_again += 1
        else:
            num_wrong += not np.array_equal(frame, reference[position])
    assert num_wrong >= 5 and num_decoded_again >= 1  # measured: 20 and 4 of the 50 frames


def test_runs_too_long_to_hold_decode_every_reference_frame(x264_reference_structures, monkeypatch):
    """A run is held in memory (compressed) to plan it only up to `_MAX_PLANNED_RUN_BYTES`; a longer one is decoded
    with every reference frame, still exactly."""
    path = x264_reference_structures["veryfast"]
    reference = full_decode(path)
    planned = read_one_frame_per_group(path, 45)
    monkeypatch.setattr(video_reading, "_MAX_PLANNED_RUN_BYTES", 20_000)  # a few packets of these 640x272 frames
    unplanned = read_one_frame_per_group(path, 45)
    monkeypatch.setattr(H264ReferencePlanner, "skippable", lambda self, packets, wanted: frozenset())
    without_plans = read_one_frame_per_group(path, 45)
    for decoded in (planned, unplanned):
        np.testing.assert_array_equal(decoded.frames, reference[45::GOP])
    assert unplanned.num_decoded_frames == without_plans.num_decoded_frames > planned.num_decoded_frames
