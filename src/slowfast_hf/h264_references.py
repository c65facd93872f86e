# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Which reference B-pictures of a run of H.264 pictures need not be decoded.

An exact read decodes from a keyframe to each wanted picture. FFmpeg already skips the pictures nothing references
(`skip_frame="NONREF"`), but keeps the B-pictures that are references (B-pyramids), although often only the
non-reference B-pictures next to them use them. `H264ReferencePlanner` reads the slice headers of a run (not the
slice data), follows the decoded picture buffer as the standard defines it (ITU-T H.264 8.2.1 picture order counts,
8.2.4 reference lists, 8.2.5 marking), and finds the reference B-pictures that no picture leading to a wanted one
references; FFmpeg drops them with `skip_frame="BIDIR"`.

Skipping a reference picture changes FFmpeg's buffer: it fills the missing `frame_num` with a stand-in picture (a
copy of the latest reference, at another picture order count) and never runs the skipped picture's marking commands.
So a plan is kept only if the same simulation of FFmpeg's buffer gives every decoded picture the references the
stream itself gives it: the same lists for P-pictures (ordered by `frame_num`), the same buffer for B-pictures (whose
default lists order every buffered picture by picture order count). Streams this module does not follow (fields,
long-term references, picture order count type 1, slice groups, redundant pictures, gaps in `frame_num`, runs not
starting at an IDR picture) get no plan: every reference picture is decoded.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import av

_HIGH_PROFILES = frozenset({44, 83, 86, 100, 110, 118, 122, 128, 134, 135, 138, 139, 244})
_NAL_SLICE, _NAL_IDR_SLICE, _NAL_SPS, _NAL_PPS = 1, 5, 7, 8
_P, _B, _I = "P", "B", "I"
_SLICE_KINDS = (_P, _B, _I, _P, _I)  # slice_type % 5: P, B, I, SP (predicted like P), SI (intra like I)
_SLICE_HEADER_BYTES = 512  # enough for any slice header up to its marking commands (weight tables included)
_MAX_PLANS_TRIED = 8  # plans checked per run, each with one skip fewer than the last


class _Unsupported(Exception):
    """The stream uses something this module does not follow: plan no skips."""


class _Unsafe(Exception):
    """Under a plan, FFmpeg would see other references than the stream gives: do not use the plan."""


class _BitReader:
    """Reads the fields of a raw byte sequence payload (emulation-prevention bytes removed), most significant first."""

    def __init__(self, payload: bytes):
        self.value, self.size, self.position = int.from_bytes(payload, "big"), 8 * len(payload), 0

    def bits(self, count: int) -> int:
        if self.position + count > self.size:
            raise _Unsupported
        self.position += count
        return (self.value >> (self.size - self.position)) & ((1 << count) - 1)

    def flag(self) -> bool:
        return bool(self.bits(1))

    def unsigned(self) -> int:
        """ue(v): an Exp-Golomb code."""
        rest = self.value & ((1 << (self.size - self.position)) - 1)
        if not rest:
            raise _Unsupported
        leading_zeros = self.size - self.position - rest.bit_length()
        self.position += leading_zeros
        return self.bits(leading_zeros + 1) - 1

    def signed(self) -> int:
        """se(v)."""
        code = self.unsigned()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True)
class _SequenceParameters:
    log2_max_frame_num: int
    poc_type: int  # 0 or 2
    log2_max_poc_lsb: int
    max_num_ref_frames: int
    chroma_array_type: int
    separate_colour_plane: bool
    supported: bool  # frames only, POC type 0 or 2, no gaps in frame_num


@dataclass(frozen=True)
class _PictureParameters:
    sps_id: int
    bottom_field_pic_order_in_frame_present: bool
    num_ref_idx_default_active: tuple[int, int]  # (list 0, list 1)
    weighted_pred: bool
    weighted_bipred_idc: int
    redundant_pic_cnt_present: bool
    supported: bool  # one slice group


@dataclass(frozen=True)
class _Slice:
    kind: str  # _P, _B or _I
    num_ref_idx_active: tuple[int, int]
    modifications: tuple[tuple[tuple[int, int], ...], ...]  # per list: (modification_of_pic_nums_idc, abs_diff)


@dataclass(frozen=True)
class _Picture:
    is_idr: bool
    is_reference: bool
    frame_num: int
    poc_lsb: int
    delta_poc_bottom: int
    sps: _SequenceParameters
    slices: tuple[_Slice, ...]
    marking: tuple[int, ...] | None  # difference_of_pic_nums of each "unmark short-term" command; None: sliding window

    @property
    def is_bidirectional(self) -> bool:
        """Every slice is a B-slice: what `skip_frame="BIDIR"` drops whole."""
        return all(slice_.kind == _B for slice_ in self.slices)


def _payload(nal_body: bytes) -> bytes:
    """The raw byte sequence payload: emulation-prevention bytes (00 00 03) removed."""
    return nal_body.replace(b"\x00\x00\x03", b"\x00\x00")


def _avcc_parameter_sets(record: bytes) -> list[bytes]:
    """The SPS and PPS NAL units of an avcC record: after 5 header bytes, a count of SPS (low 5 bits), each with a
    16-bit size, then a count of PPS (a byte), each with a 16-bit size."""
    units, position = [], 5
    for count_mask in (0x1F, 0xFF):
        count = record[position] & count_mask
        position += 1
        for _ in range(count):
            size = int.from_bytes(record[position : position + 2], "big")
            units.append(record[position + 2 : position + 2 + size])
            position += 2 + size
    return units


def _skip_scaling_list(reader: _BitReader, size: int) -> None:
    last_scale = next_scale = 8
    for _ in range(size):
        if next_scale:
            next_scale = (last_scale + reader.signed()) % 256
        last_scale = next_scale or last_scale


def _parse_sps(payload: bytes) -> tuple[int, _SequenceParameters]:
    reader = _BitReader(payload)
    profile_idc = reader.bits(8)
    reader.bits(16)  # constraint flags, level_idc
    sps_id = reader.unsigned()
    chroma_format_idc, separate_colour_plane = 1, False
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = reader.unsigned()
        if chroma_format_idc == 3:
            separate_colour_plane = reader.flag()
        reader.unsigned(), reader.unsigned(), reader.flag()  # bit depths, qpprime_y_zero_transform_bypass_flag
        if reader.flag():  # seq_scaling_matrix_present_flag
            for list_index in range(12 if chroma_format_idc == 3 else 8):
                if reader.flag():
                    _skip_scaling_list(reader, 16 if list_index < 6 else 64)
    log2_max_frame_num = reader.unsigned() + 4
    poc_type = reader.unsigned()
    log2_max_poc_lsb = reader.unsigned() + 4 if poc_type == 0 else 0
    if poc_type == 1:
        return sps_id, _SequenceParameters(log2_max_frame_num, poc_type, 0, 0, 0, False, supported=False)
    max_num_ref_frames = reader.unsigned()
    gaps_in_frame_num_allowed = reader.flag()
    reader.unsigned(), reader.unsigned()  # picture size in macroblocks
    frame_mbs_only = reader.flag()
    return sps_id, _SequenceParameters(
        log2_max_frame_num=log2_max_frame_num,
        poc_type=poc_type,
        log2_max_poc_lsb=log2_max_poc_lsb,
        max_num_ref_frames=max_num_ref_frames,
        chroma_array_type=0 if separate_colour_plane else chroma_format_idc,
        separate_colour_plane=separate_colour_plane,
        supported=frame_mbs_only and not gaps_in_frame_num_allowed,
    )


def _parse_pps(payload: bytes) -> tuple[int, _PictureParameters]:
    reader = _BitReader(payload)
    pps_id, sps_id = reader.unsigned(), reader.unsigned()
    reader.flag()  # entropy_coding_mode_flag
    bottom_field_pic_order_in_frame_present = reader.flag()
    num_slice_groups = reader.unsigned() + 1
    if num_slice_groups > 1:
        return pps_id, _PictureParameters(sps_id, False, (1, 1), False, 0, False, supported=False)
    num_ref_idx_default_active = (reader.unsigned() + 1, reader.unsigned() + 1)
    weighted_pred, weighted_bipred_idc = reader.flag(), reader.bits(2)
    reader.signed(), reader.signed(), reader.signed()  # pic_init_qp, pic_init_qs, chroma_qp_index_offset
    reader.flag(), reader.flag()  # deblocking_filter_control_present_flag, constrained_intra_pred_flag
    return pps_id, _PictureParameters(
        sps_id=sps_id,
        bottom_field_pic_order_in_frame_present=bottom_field_pic_order_in_frame_present,
        num_ref_idx_default_active=num_ref_idx_default_active,
        weighted_pred=weighted_pred,
        weighted_bipred_idc=weighted_bipred_idc,
        redundant_pic_cnt_present=reader.flag(),
        supported=True,
    )


def _skip_pred_weight_table(reader: _BitReader, sps: _SequenceParameters, num_ref_idx_active, num_lists) -> None:
    reader.unsigned()  # luma_log2_weight_denom
    if sps.chroma_array_type:
        reader.unsigned()  # chroma_log2_weight_denom
    for list_index in range(num_lists):
        for _ in range(num_ref_idx_active[list_index]):
            if reader.flag():  # luma_weight_flag
                reader.signed(), reader.signed()
            if sps.chroma_array_type and reader.flag():  # chroma_weight_flag
                reader.signed(), reader.signed(), reader.signed(), reader.signed()


def _parse_slice_header(payload: bytes, nal_type: int, is_reference: bool, sequences, pictures) -> _Picture:
    """The fields of one slice header that reference lists and marking depend on (7.3.3)."""
    reader = _BitReader(payload)
    reader.unsigned()  # first_mb_in_slice
    kind = _SLICE_KINDS[reader.unsigned() % 5]
    pps = pictures.get(reader.unsigned())
    sps = sequences.get(pps.sps_id) if pps is not None else None
    if sps is None or not (pps.supported and sps.supported):
        raise _Unsupported
    if sps.separate_colour_plane:
        reader.bits(2)  # colour_plane_id
    frame_num = reader.bits(sps.log2_max_frame_num)
    if nal_type == _NAL_IDR_SLICE:
        reader.unsigned()  # idr_pic_id
    poc_lsb = delta_poc_bottom = 0
    if sps.poc_type == 0:
        poc_lsb = reader.bits(sps.log2_max_poc_lsb)
        if pps.bottom_field_pic_order_in_frame_present:
            delta_poc_bottom = reader.signed()
    if pps.redundant_pic_cnt_present and reader.unsigned():
        raise _Unsupported  # a redundant picture
    if kind == _B:
        reader.flag()  # direct_spatial_mv_pred_flag
    num_lists = {_P: 1, _B: 2, _I: 0}[kind]
    num_ref_idx_active = list(pps.num_ref_idx_default_active)
    if num_lists and reader.flag():  # num_ref_idx_active_override_flag
        num_ref_idx_active[0] = reader.unsigned() + 1
        if kind == _B:
            num_ref_idx_active[1] = reader.unsigned() + 1
    modifications = []
    for _ in range(num_lists):
        commands = []
        if reader.flag():  # ref_pic_list_modification_flag
            while (command := reader.unsigned()) != 3:
                if command > 1:
                    raise _Unsupported  # a long-term reference
                commands.append((command, reader.unsigned() + 1))
        modifications.append(tuple(commands))
    if (pps.weighted_pred and kind == _P) or (pps.weighted_bipred_idc == 1 and kind == _B):
        _skip_pred_weight_table(reader, sps, num_ref_idx_active, num_lists)
    marking = None
    if is_reference:
        if nal_type == _NAL_IDR_SLICE:
            reader.flag()  # no_output_of_prior_pics_flag
            if reader.flag():
                raise _Unsupported  # long_term_reference_flag
        elif reader.flag():  # adaptive_ref_pic_marking_mode_flag
            differences = []
            while (operation := reader.unsigned()) != 0:
                if operation != 1:
                    raise _Unsupported  # long-term references, or "unmark all"
                differences.append(reader.unsigned() + 1)
            marking = tuple(differences)
    return _Picture(
        is_idr=nal_type == _NAL_IDR_SLICE,
        is_reference=is_reference,
        frame_num=frame_num,
        poc_lsb=poc_lsb,
        delta_poc_bottom=delta_poc_bottom,
        sps=sps,
        slices=(_Slice(kind, tuple(num_ref_idx_active), tuple(modifications)),),
        marking=marking,
    )


@dataclass
class _Reference:
    """A short-term reference frame in a decoded picture buffer; `picture` < 0 for FFmpeg's stand-ins."""

    picture: int
    frame_num: int
    poc: int


def _pic_num(reference: _Reference, frame_num: int, max_frame_num: int) -> int:
    """PicNum (FrameNumWrap) of `reference`, seen from a picture with `frame_num` (8.2.4.1)."""
    return reference.frame_num - max_frame_num if reference.frame_num > frame_num else reference.frame_num


class _PictureBuffer:
    """
    The short-term reference frames of a decoded picture buffer, as the stream defines it (`skipped` empty) or as
    FFmpeg holds it when the pictures `skipped` are not decoded.
    """

    def __init__(self, skipped: frozenset[int]):
        self.skipped = skipped
        self.references: list[_Reference] = []  # in the order they were stored
        self.num_stand_ins = 0
        self.prev_ref_frame_num = 0
        self.prev_poc_msb = self.prev_poc_lsb = 0  # POC type 0
        self.prev_frame_num = self.frame_num_offset = 0  # POC type 2

    def decode(self, number: int, picture: _Picture) -> tuple[int, tuple[tuple[int, ...], ...]]:
        """Takes picture `number` through the buffer: its picture order count and the pictures in each list of each
        of its slices (a stand-in as a negative number)."""
        sps = picture.sps
        max_frame_num = 1 << sps.log2_max_frame_num
        if picture.is_idr:
            self.references.clear()
            self.prev_ref_frame_num = self.prev_poc_msb = self.prev_poc_lsb = self.prev_frame_num = 0
            self.frame_num_offset = 0
        elif picture.frame_num not in (self.prev_ref_frame_num, (self.prev_ref_frame_num + 1) % max_frame_num):
            if not self.skipped:
                raise _Unsupported  # the stream itself has a gap in frame_num
            self._fill_gap(picture.frame_num, sps)
        poc = self._picture_order_count(picture, max_frame_num)
        lists = tuple(
            self._reference_list(picture, slice_, list_index, poc, max_frame_num)
            for slice_ in picture.slices
            for list_index in range({_P: 1, _B: 2, _I: 0}[slice_.kind])
        )
        if picture.is_reference:
            self._mark(number, picture, poc, max_frame_num)
        return poc, lists

    def _fill_gap(self, frame_num: int, sps: _SequenceParameters) -> None:
        """FFmpeg's frame_num gap handling: a stand-in per missing frame_num, at the POC of the latest reference
        plus 2, each stored by the sliding window."""
        max_frame_num = 1 << sps.log2_max_frame_num
        missing = (frame_num - self.prev_ref_frame_num - 1) % max_frame_num
        if missing > max(1, sps.max_num_ref_frames):
            raise _Unsafe  # FFmpeg fills at most that many
        for step in range(1, missing + 1):
            self.num_stand_ins += 1
            poc = self.references[-1].poc + 2 if self.references else 0
            self._slide(sps)
            self.references.append(
                _Reference(-self.num_stand_ins, (self.prev_ref_frame_num + step) % max_frame_num, poc)
            )
        self.prev_ref_frame_num = (frame_num - 1) % max_frame_num

    def _picture_order_count(self, picture: _Picture, max_frame_num: int) -> int:
        sps = picture.sps
        if sps.poc_type == 0:
            max_poc_lsb = 1 << sps.log2_max_poc_lsb
            lsb = picture.poc_lsb
            if lsb < self.prev_poc_lsb and self.prev_poc_lsb - lsb >= max_poc_lsb // 2:
                msb = self.prev_poc_msb + max_poc_lsb
            elif lsb > self.prev_poc_lsb and lsb - self.prev_poc_lsb > max_poc_lsb // 2:
                msb = self.prev_poc_msb - max_poc_lsb
            else:
                msb = self.prev_poc_msb
            if picture.is_reference:
                self.prev_poc_msb, self.prev_poc_lsb = msb, lsb
            top = msb + lsb
            return min(top, top + picture.delta_poc_bottom)
        if not picture.is_idr and self.prev_frame_num > picture.frame_num:
            self.frame_num_offset += max_frame_num
        self.prev_frame_num = picture.frame_num
        if picture.is_idr:
            return 0
        return 2 * (self.frame_num_offset + picture.frame_num) - (0 if picture.is_reference else 1)

    def _short_term(self, pic_num: int, frame_num: int, max_frame_num: int) -> _Reference:
        """The reference whose PicNum, seen from a picture with `frame_num`, is `pic_num`."""
        for reference in self.references:
            if _pic_num(reference, frame_num, max_frame_num) == pic_num:
                return reference
        raise _Unsafe if self.skipped else _Unsupported

    def _reference_list(self, picture: _Picture, slice_: _Slice, list_index: int, poc: int, max_frame_num: int):
        """8.2.4.2 initial list, truncated to the active size, then 8.2.4.3 modifications."""
        frame_num = picture.frame_num
        if slice_.kind == _P:
            initial = sorted(self.references, key=lambda ref: -_pic_num(ref, frame_num, max_frame_num))
        else:
            before = sorted((ref for ref in self.references if ref.poc < poc), key=lambda ref: -ref.poc)
            after = sorted((ref for ref in self.references if ref.poc > poc), key=lambda ref: ref.poc)
            initial = before + after if list_index == 0 else after + before
            if list_index == 1 and len(initial) > 1 and initial == before + after:
                initial[0], initial[1] = initial[1], initial[0]
        num_active = slice_.num_ref_idx_active[list_index]
        references = initial[:num_active]
        pic_num_pred = frame_num
        for position, (command, abs_diff) in enumerate(slice_.modifications[list_index]):
            pic_num_no_wrap = pic_num_pred - abs_diff if command == 0 else pic_num_pred + abs_diff
            pic_num_no_wrap %= max_frame_num
            pic_num_pred = pic_num_no_wrap
            pic_num = pic_num_no_wrap - max_frame_num if pic_num_no_wrap > frame_num else pic_num_no_wrap
            target = self._short_term(pic_num, frame_num, max_frame_num)
            references = [*references[:position], target, *(ref for ref in references[position:] if ref is not target)]
            references = references[:num_active]
        return tuple(ref.picture for ref in references)

    def _slide(self, sps: _SequenceParameters) -> None:
        """8.2.5.3: when the buffer is full, the short-term reference with the smallest FrameNumWrap (the one stored
        first) goes."""
        if len(self.references) >= max(1, sps.max_num_ref_frames):
            del self.references[0]

    def _mark(self, number: int, picture: _Picture, poc: int, max_frame_num: int) -> None:
        """8.2.5: stores the decoded reference picture, after the sliding window or its marking commands."""
        if picture.is_idr:
            self.references.clear()
        elif picture.marking is None:
            self._slide(picture.sps)
        else:
            for difference in picture.marking:
                # A missing picture: FFmpeg fails with "mmco: unref short failure".
                self.references.remove(
                    self._short_term(picture.frame_num - difference, picture.frame_num, max_frame_num)
                )
            if len(self.references) >= max(1, picture.sps.max_num_ref_frames):
                raise _Unsupported if not self.skipped else _Unsafe
        self.references.append(_Reference(number, picture.frame_num, poc))
        self.prev_ref_frame_num = picture.frame_num


class H264ReferencePlanner:
    """
    Plans which reference B-pictures a run of H.264 pictures can skip (see the module docstring). One per decoder: it
    keeps the parameter sets seen so far.

    Args:
        extradata (`bytes` or `None`): the stream's codec extradata: an `avcC` record (MP4, Matroska: NAL units
            prefixed with their length) or Annex B parameter sets (MPEG-TS: NAL units after start codes), or none.
    """

    def __init__(self, extradata: bytes | None):
        self.sequences: dict[int, _SequenceParameters] = {}
        self.pictures: dict[int, _PictureParameters] = {}
        self.nal_length_size = None  # None: Annex B start codes
        extradata = bytes(extradata or b"")
        try:
            if extradata[:1] == b"\x01":  # avcC (ISO/IEC 14496-15 5.3.3.1)
                self.nal_length_size = (extradata[4] & 3) + 1
                units = _avcc_parameter_sets(extradata)
            else:
                units = list(self._annex_b_units(extradata))
            for unit in units:
                self._read_parameter_set(unit)
        except (_Unsupported, IndexError):
            pass  # unreadable parameter sets: plans wait for in-band ones

    def skippable(self, packets: Sequence[bytes | av.Packet], wanted: set[int]) -> frozenset[int]:
        """
        The positions in `packets` (the pictures of a run, in decoding order, starting at an IDR picture; one picture
        per packet) of reference B-pictures that need not be decoded for the pictures at positions `wanted`, when
        every other unwanted non-reference picture is skipped too. Empty when the run cannot be planned.
        """
        try:
            pictures = [self._picture(packet) for packet in packets]
            if not pictures or not pictures[0].is_idr:
                raise _Unsupported
            stream = _PictureBuffer(frozenset())
            decoded = []  # per picture: (the buffer it is decoded with, its picture order count, its lists)
            for number, picture in enumerate(pictures):
                buffer = sorted(ref.picture for ref in stream.references)
                decoded.append((buffer, *stream.decode(number, picture)))
        except (_Unsupported, IndexError):
            return frozenset()
        needed = set(wanted)
        for number in range(len(pictures) - 1, -1, -1):
            if number in needed:
                needed.update(picture for references in decoded[number][2] for picture in references)
        candidates = [
            number
            for number, picture in enumerate(pictures)
            if picture.is_reference and picture.is_bidirectional and number not in needed
        ]
        for _ in range(_MAX_PLANS_TRIED):
            if not candidates:
                break
            first_mismatch = self._first_mismatch(pictures, decoded, wanted, frozenset(candidates))
            if first_mismatch is None:
                return frozenset(candidates)
            # The mismatch comes from a skip before it: decode the latest such picture, and try again.
            earlier = [number for number in candidates if number < first_mismatch]
            candidates.remove(earlier[-1] if earlier else candidates[-1])
        return frozenset()

    @staticmethod
    def _first_mismatch(pictures, decoded, wanted: set[int], skipped: frozenset[int]) -> int | None:
        """The first picture FFmpeg would decode with other references than the stream gives it when the pictures
        `skipped` (and the unwanted non-reference ones) are dropped; None if there is none."""
        ffmpeg = _PictureBuffer(skipped)
        for number, picture in enumerate(pictures):
            if number in skipped or not (picture.is_reference or number in wanted):
                continue
            buffer = sorted(ref.picture for ref in ffmpeg.references)
            try:
                poc, lists = ffmpeg.decode(number, picture)
            except _Unsafe:
                return number
            stream_buffer, stream_poc, stream_lists = decoded[number]
            if (poc, lists) != (stream_poc, stream_lists):
                return number
            if buffer != stream_buffer and any(slice_.kind == _B for slice_ in picture.slices):
                return number  # B-slices' default lists order the whole buffer: a stand-in in it may move entries
        return None

    def _picture(self, packet: bytes) -> _Picture:
        """The picture in `packet`, from the headers of its slices; reads the parameter sets it carries."""
        picture = None
        slices = []
        for unit in self._units(packet):
            nal_type = unit[0] & 31
            if nal_type in (_NAL_SPS, _NAL_PPS):
                self._read_parameter_set(unit)
            elif nal_type in (_NAL_SLICE, _NAL_IDR_SLICE):
                header = _parse_slice_header(
                    _payload(bytes(unit[1:_SLICE_HEADER_BYTES])), nal_type, bool(unit[0] & 0x60), self.sequences,
                    self.pictures,
                )  # fmt: skip
                if picture is not None and (header.frame_num, header.is_idr) != (picture.frame_num, picture.is_idr):
                    raise _Unsupported  # two pictures in one packet
                picture = picture or header
                slices.extend(header.slices)
            elif nal_type in (2, 3, 4, 20, 21):
                raise _Unsupported  # data partitioning, extensions (SVC, MVC)
        if picture is None:
            raise _Unsupported
        return replace(picture, slices=tuple(slices))

    def _read_parameter_set(self, unit: bytes) -> None:
        nal_type = unit[0] & 31
        if nal_type == _NAL_SPS:
            sps_id, sps = _parse_sps(_payload(bytes(unit[1:])))
            self.sequences[sps_id] = sps
        elif nal_type == _NAL_PPS:
            pps_id, pps = _parse_pps(_payload(bytes(unit[1:])))
            self.pictures[pps_id] = pps

    def _units(self, packet: bytes) -> Iterator[memoryview]:
        """The NAL units of `packet`."""
        if self.nal_length_size is None:
            yield from self._annex_b_units(packet)
            return
        data, position, size_bytes = memoryview(packet), 0, self.nal_length_size
        while position + size_bytes <= len(data):
            size = int.from_bytes(data[position : position + size_bytes], "big")
            position += size_bytes
            if size == 0 or position + size > len(data):
                raise _Unsupported
            yield data[position : position + size]
            position += size

    @staticmethod
    def _annex_b_units(data: bytes) -> Iterator[memoryview]:
        data = bytes(data)
        start = data.find(b"\x00\x00\x01")
        while start >= 0:
            start += 3
            end = data.find(b"\x00\x00\x01", start)
            unit = data[start : None if end < 0 else end].rstrip(b"\x00")  # a 4-byte start code's zero, trailing zeros
            if unit:
                yield memoryview(unit)
            start = end
