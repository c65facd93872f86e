# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Video (and still image) preprocessing for slow-fast models: decode, sample, resize, crop, rescale, normalise."""

import logging
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_transforms import center_crop, get_resize_output_image_size, normalize, rescale, resize
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.video_processing_utils import VideoProcessorMixin

from .video_reading import probe_video, read_video

logger = logging.getLogger(__name__)

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE_MODES = ("bicubic", "bilinear", "nearest")
FRAME_SAMPLINGS = ("uniform", "linspace", "lmms_eval_pyav")
LMMS_EVAL_TARGET_FPS = 2  # the released lmms-eval adapter's default `fps`, which its evaluation scripts keep
RESIZE_BACKENDS = ("torch", "pil")
DEFAULT_NUM_FRAMES = 64  # frames per video when neither `num_frames` nor `fps` is set (the released 64-frame model)
_PIL_RESAMPLE = {
    "bicubic": PILImageResampling.BICUBIC,
    "bilinear": PILImageResampling.BILINEAR,
    "nearest": PILImageResampling.NEAREST,
}


def sample_frame_indices(
    total_frames: int, num_frames: int, frame_sampling: str = "uniform", video_fps: float | None = None
) -> np.ndarray:
    """
    Which of `total_frames` frames a `num_frames`-frame sample takes:
      - `"uniform"`: the first frame of each of `num_frames` equal segments, `i * total_frames // num_frames` (what
        `read_video(num_frames=...)` picks at a constant frame rate); every frame once when the video is shorter.
      - `"linspace"`: `np.linspace(0, total_frames - 1, num_frames, dtype=int)`, first and last frame included, frames
        repeated up to `num_frames` when the video is shorter (the released demo and inference script).
      - `"lmms_eval_pyav"`: the released evaluation scripts' PyAV reader (needs the video's `video_fps`): every
        `max(round(video_fps / 2), 1)`-th frame (2 frames per second), then, if that is more than `num_frames`, the
        `round((i + 1) * k / num_frames - 1)`-th of those `k` frames.
    """
    if frame_sampling == "linspace":
        return np.linspace(0, total_frames - 1, num_frames, dtype=int)
    if frame_sampling == "lmms_eval_pyav":
        strided = np.arange(0, total_frames, max(round(video_fps / LMMS_EVAL_TARGET_FPS), 1))
        if len(strided) < num_frames:
            return strided
        scale = len(strided) / num_frames
        return strided[[round((i + 1) * scale - 1) for i in range(num_frames)]]
    if num_frames >= total_frames:
        return np.arange(total_frames)
    return np.arange(num_frames) * total_frames // num_frames


class SlowFastVideoProcessor(VideoProcessorMixin):
    r"""
    Turns videos (paths, bytes, file objects, `(T, H, W, 3)` arrays/tensors, lists of PIL frames) and still images
    into the pixel values [`SlowFastForConditionalGeneration`] takes. Paths, bytes and file objects are decoded with
    [`slowfast_hf.video_reading.read_video`] (PyAV, seeking to each sampled frame).

    Args:
        size (`dict`, *optional*, defaults to `{"height": 384, "width": 384}`):
            `{"height", "width"}` resizes to exactly that size (SigLIP style); `{"shortest_edge": s}` resizes the
            shorter side to `s`, keeping the aspect ratio (CLIP style, usually with `crop_size`).
        crop_size (`dict`, *optional*): `{"height", "width"}` of a center crop after resizing.
        resample (`str`, *optional*, defaults to `"bicubic"`): one of `"bicubic"`, `"bilinear"`, `"nearest"`.
        resize_backend (`str`, *optional*, defaults to `"torch"`): `"torch"` resizes with torch's antialiased
            interpolation; `"pil"` with Transformers' own image functions (`transformers.image_transforms`: PIL
            resize, center crop, rescale, normalize), the pipeline of `CLIPImageProcessor` that the released models
            were trained and evaluated with.
        do_rescale (`bool`, *optional*, defaults to `True`): multiply the pixel values by `rescale_factor`. Frames
            already scaled to [0, 1] (floats) need `do_rescale=False`; with `do_rescale=True` they are warned about,
            as Transformers' image processors do.
        rescale_factor (`float`, *optional*, defaults to `1/255`): applied to the [0, 255] values.
        image_mean, image_std (`tuple[float]`, *optional*, default to SigLIP's 0.5): normalisation.
        num_frames (`int`, *optional*): frames sampled from each video; when neither `num_frames` nor `fps` is
            set, `DEFAULT_NUM_FRAMES` (64). Every frame is an explicit choice: `do_sample_frames=False`.
        fps (`float`, *optional*): frames sampled per second of video instead, at most `max_frames`.
        max_frames (`int`, *optional*): cap for `fps` sampling.
        do_sample_frames (`bool`, *optional*, defaults to `True`): `False` keeps every frame (arrays as given,
            files fully decoded).
        frame_sampling (`str`, *optional*, defaults to `"uniform"`): how `num_frames` frames are chosen, the same
            rule for files and arrays, see [`sample_frame_indices`]; `"linspace"` is the released models' inference
            rule, `"lmms_eval_pyav"` that of their evaluation scripts (files only: it needs the frame rate).
        approximate_seek (`bool`, *optional*, defaults to `False`): decode the nearest keyframes instead of the exact
            frames (much faster on long videos, approximate timestamps).
        apply_rotation (`bool`, *optional*, defaults to `True`): decoded files come upright (their display rotation
            applied, as players show them); `False` keeps the stored orientation.
    """

    model_input_names = ["pixel_values_videos", "video_num_frames"]

    def __init__(
        self,
        size: dict | None = None,
        crop_size: dict | None = None,
        resample: str = "bicubic",
        resize_backend: str = "torch",
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        image_mean: Sequence[float] = SIGLIP_MEAN,
        image_std: Sequence[float] = SIGLIP_STD,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        do_sample_frames: bool = True,
        frame_sampling: str = "uniform",
        approximate_seek: bool = False,
        apply_rotation: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = dict(size) if size is not None else {"height": 384, "width": 384}
        self.crop_size = dict(crop_size) if crop_size is not None else None
        self.resample = resample
        self.resize_backend = resize_backend
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.num_frames = num_frames
        self.fps = fps
        self.max_frames = max_frames
        self.do_sample_frames = do_sample_frames
        self.frame_sampling = frame_sampling
        self.approximate_seek = approximate_seek
        self.apply_rotation = apply_rotation
        self._validate()

    def _validate(self) -> None:
        if set(self.size) not in ({"height", "width"}, {"shortest_edge"}):
            raise ValueError(f'`size` must be {{"height", "width"}} or {{"shortest_edge"}}, got {self.size}.')
        if self.crop_size is not None and set(self.crop_size) != {"height", "width"}:
            raise ValueError(f'`crop_size` must be {{"height", "width"}}, got {self.crop_size}.')
        for name, value in (*self.size.items(), *(self.crop_size or {}).items()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Sizes must be integers >= 1, got {name}={value!r}.")
        if self.resample not in RESAMPLE_MODES:
            raise ValueError(f"`resample` must be one of {RESAMPLE_MODES}, got {self.resample!r}.")
        if self.resize_backend not in RESIZE_BACKENDS:
            raise ValueError(f"`resize_backend` must be one of {RESIZE_BACKENDS}, got {self.resize_backend!r}.")
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise ValueError(f"`frame_sampling` must be one of {FRAME_SAMPLINGS}, got {self.frame_sampling!r}.")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("`image_mean` and `image_std` must hold 3 values each, with `image_std` > 0.")
        _check_rescale(self.do_rescale, self.rescale_factor)
        _check_bool("do_sample_frames", self.do_sample_frames)
        _check_bool("apply_rotation", self.apply_rotation)
        self._check_sampling(self.num_frames, self.fps, self.max_frames)

    @staticmethod
    def _check_sampling(num_frames, fps, max_frames) -> None:
        if num_frames is not None and fps is not None:
            raise ValueError("Pass either `num_frames` or `fps`, not both.")
        if num_frames is not None and (
            isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1
        ):
            raise ValueError(f"`num_frames` must be an integer >= 1, got {num_frames!r}.")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
            raise ValueError(f"`fps` must be a number > 0, got {fps!r}.")
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise ValueError(f"`max_frames` must be an integer >= 1, got {max_frames!r}.")
        if max_frames is not None and fps is None:
            raise ValueError("`max_frames` caps `fps` sampling; pass `fps` with it (or `num_frames` alone).")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the processed frames when they do not depend on the input's aspect ratio."""
        if self.crop_size is not None:
            return self.crop_size["height"], self.crop_size["width"]
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        raise ValueError("With `size={'shortest_edge': ...}` and no `crop_size` the output size depends on the input.")

    def load_frames(self, video, num_frames=None, fps=None, max_frames=None, do_sample_frames=None) -> torch.Tensor:
        """One video in any accepted form -> (T, 3, H, W) frames (uint8, or the given float values), sampled as
        configured (arguments given here replace the processor's sampling settings)."""
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        _check_bool("do_sample_frames", do_sample_frames)
        if num_frames is None and fps is None:
            num_frames, fps = self.num_frames, self.fps
        if max_frames is None and fps is not None:
            max_frames = self.max_frames
        self._check_sampling(num_frames, fps, max_frames)
        if not do_sample_frames:
            num_frames = fps = max_frames = None
        elif num_frames is None and fps is None:
            num_frames = DEFAULT_NUM_FRAMES
        is_encoded = is_encoded_video(video)
        if is_encoded and num_frames is not None and self.frame_sampling != "uniform":
            video_fps = probe_video(video).average_fps if self.frame_sampling == "lmms_eval_pyav" else None

            def indices(total_frames: int) -> np.ndarray:
                return sample_frame_indices(total_frames, num_frames, self.frame_sampling, video_fps)

            decoded = read_video(video, sample_indices_fn=indices, apply_rotation=self.apply_rotation)
            # each frame is decoded once: repeat it as often as the sample takes it
            requested = indices(decoded.info.num_frames)
            frames = decoded.frames[np.searchsorted(decoded.frame_indices, requested)]
            return rearrange(torch.from_numpy(frames), "t h w c -> t c h w")
        if is_encoded:
            decoded = read_video(
                video,
                num_frames=num_frames,
                fps=fps,
                max_frames=max_frames,
                approximate=self.approximate_seek,
                apply_rotation=self.apply_rotation,
            )
            return rearrange(torch.from_numpy(decoded.frames), "t h w c -> t c h w")
        frames = _frames_to_tensor(video)
        if fps is not None:
            raise ValueError(
                "`fps` sampling needs timestamps: pass a path, bytes or file object, or use `num_frames`."
            )
        if num_frames is not None and self.frame_sampling == "lmms_eval_pyav":
            raise ValueError(
                '`frame_sampling="lmms_eval_pyav"` needs the frame rate: pass a path, bytes or file object.'
            )
        if num_frames is not None:
            frames = frames[torch.from_numpy(sample_frame_indices(frames.shape[0], num_frames, self.frame_sampling))]
        return frames

    def transform(self, frames: torch.Tensor, do_rescale: bool | None = None, rescale_factor=None) -> torch.Tensor:
        """(T, 3, H, W) frames in [0, 255] (or in [0, 1] with `do_rescale=False`) -> (T, 3, H', W') normalised
        float32."""
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        _check_rescale(do_rescale, rescale_factor)
        if do_rescale and frames.is_floating_point() and frames.numel() and 0 <= frames.min() and frames.max() <= 1:
            logger.warning(
                "It looks like you are trying to rescale already rescaled video frames or images (float values in "
                "[0, 1]). If the input has pixel values between 0 and 1, set `do_rescale=False` to avoid rescaling "
                "them again."
            )
        if self.resize_backend == "pil":
            return self._transform_with_image_transforms(frames, do_rescale, rescale_factor)
        frames = frames.to(torch.float32)
        height, width = frames.shape[-2:]
        if "shortest_edge" in self.size:
            scale = self.size["shortest_edge"] / min(height, width)
            target = (max(1, round(height * scale)), max(1, round(width * scale)))
        else:
            target = (self.size["height"], self.size["width"])
        if target != (height, width):
            antialias = self.resample != "nearest"
            frames = F.interpolate(frames, size=target, mode=self.resample, antialias=antialias, align_corners=None)
            frames = frames.clamp(0, 255 if do_rescale else 1)
        if self.crop_size is not None:
            crop_height, crop_width = self.crop_size["height"], self.crop_size["width"]
            if crop_height > frames.shape[-2] or crop_width > frames.shape[-1]:
                raise ValueError(
                    f"`crop_size` {self.crop_size} is larger than the resized frames {frames.shape[-2:]}."
                )
            top, left = (frames.shape[-2] - crop_height) // 2, (frames.shape[-1] - crop_width) // 2
            frames = frames[..., top : top + crop_height, left : left + crop_width]
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        if do_rescale:
            frames = frames * rescale_factor
        return (frames - mean) / std

    def _transform_with_image_transforms(self, frames: torch.Tensor, do_rescale: bool, rescale_factor) -> torch.Tensor:
        """The `resize_backend="pil"` pipeline: Transformers' image functions, frame by frame, in the order of its
        CLIP image processor (resize, center crop, rescale, normalize)."""
        processed = []
        for frame in rearrange(frames, "t c h w -> t h w c").numpy():
            if "shortest_edge" in self.size:
                target = get_resize_output_image_size(
                    frame, self.size["shortest_edge"], default_to_square=False, input_data_format=ChannelDimension.LAST
                )
            else:
                target = (self.size["height"], self.size["width"])
            if target != frame.shape[:2]:
                frame = resize(
                    frame, target, resample=_PIL_RESAMPLE[self.resample], input_data_format=ChannelDimension.LAST
                )
            if self.crop_size is not None:
                crop = (self.crop_size["height"], self.crop_size["width"])
                if crop[0] > frame.shape[0] or crop[1] > frame.shape[1]:
                    raise ValueError(
                        f"`crop_size` {self.crop_size} is larger than the resized frames {frame.shape[:2]}."
                    )
                frame = center_crop(frame, crop, input_data_format=ChannelDimension.LAST)
            if do_rescale:
                frame = rescale(frame, rescale_factor, input_data_format=ChannelDimension.LAST)
            frame = normalize(frame, self.image_mean, self.image_std, input_data_format=ChannelDimension.LAST)
            processed.append(frame.astype(np.float32))
        return rearrange(torch.from_numpy(np.stack(processed)), "t h w c -> t c h w")

    def preprocess(
        self,
        videos,
        num_frames=None,
        fps=None,
        max_frames=None,
        do_sample_frames=None,
        do_rescale=None,
        rescale_factor=None,
        return_tensors=None,
        **kwargs,
    ):
        """
        Args:
            videos: one video or a list of videos (each a path, `pathlib.Path`, bytes, binary file object,
                `(T, H, W, 3)` array or tensor, or a list of PIL frames). A nested list (one list per sample, as chat
                templates give) is flattened.
            num_frames / fps / max_frames / do_sample_frames: override the processor's sampling for this call.
            do_rescale / rescale_factor: override the processor's rescaling for this call.

        Returns:
            `BatchFeature` with `pixel_values_videos` `(total_frames, 3, H, W)` (the videos' frames one after
            another) and `video_num_frames` `(num_videos,)`.
        """
        _reject_unknown_kwargs(kwargs)
        videos = flatten_video_list(videos)
        processed = [
            self.transform(
                self.load_frames(video, num_frames, fps, max_frames, do_sample_frames), do_rescale, rescale_factor
            )
            for video in videos
        ]
        sizes = {tuple(frames.shape[-2:]) for frames in processed}
        if len(sizes) > 1:
            raise ValueError(f"Processed videos differ in size {sorted(sizes)}; set `crop_size` or a fixed `size`.")
        data = {
            "pixel_values_videos": torch.cat(processed),
            "video_num_frames": torch.tensor([frames.shape[0] for frames in processed]),
        }
        return BatchFeature(data, tensor_type=return_tensors)

    def preprocess_images(self, images, do_rescale=None, rescale_factor=None, return_tensors=None) -> BatchFeature:
        """Still images (`(H, W, 3)` arrays/tensors or PIL images) -> `pixel_values` `(num_images, 3, H, W)`."""
        images = images if isinstance(images, (list, tuple)) else [images]
        images = [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item])]
        if not images:
            raise ValueError("`images` is empty.")
        pixel_values = torch.cat(
            [self.transform(_frames_to_tensor([image]), do_rescale, rescale_factor) for image in images]
        )
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")


def _check_rescale(do_rescale, rescale_factor) -> None:
    _check_bool("do_rescale", do_rescale)
    # any finite non-zero factor, as Transformers' processors take (its own tests rescale by -1)
    if (
        isinstance(rescale_factor, bool)
        or not isinstance(rescale_factor, (int, float))
        or not math.isfinite(rescale_factor)
        or rescale_factor == 0
    ):
        raise ValueError(f"`rescale_factor` must be a finite, non-zero number, got {rescale_factor!r}.")


def is_encoded_video(video) -> bool:
    """A video still to be decoded: a path (`str` or `os.PathLike`), its bytes, or a binary file object."""
    return isinstance(video, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(video, "read")


def _reject_unknown_kwargs(kwargs: dict) -> None:
    unknown = {key for key, value in kwargs.items() if value is not None and key != "device"}
    if unknown:
        raise ValueError(f"Unknown video processing arguments: {sorted(unknown)}.")


def flatten_video_list(videos) -> list:
    """One video, a list of videos, or a list of lists of videos (one per sample) -> a flat list of videos."""
    if videos is None:
        raise ValueError("`videos` is None.")
    is_single = (
        is_encoded_video(videos)
        or isinstance(videos, (np.ndarray, torch.Tensor))
        or (isinstance(videos, (list, tuple)) and videos and _is_frame(videos[0]))
    )
    if is_single:
        return [videos]
    flat = []
    for item in videos:
        nested = isinstance(item, (list, tuple)) and not (item and _is_frame(item[0]))
        flat.extend(item if nested else [item])
    if not flat:
        raise ValueError("`videos` is empty.")
    return flat


def _is_frame(item) -> bool:
    """A single frame: a PIL image or a 3-D array/tensor."""
    return hasattr(item, "getbands") or (isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 3)


def _frames_to_tensor(video) -> torch.Tensor:
    """(T, H, W, 3) array/tensor, (T, 3, H, W) tensor, or a list of PIL/array frames -> (T, 3, H, W)."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError("A video given as a list of frames must hold at least one frame.")
        video = np.stack(
            [np.asarray(frame.convert("RGB")) if hasattr(frame, "getbands") else np.asarray(frame) for frame in video]
        )
    frames = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video)
    if frames.ndim != 4:
        raise ValueError(f"A video must have shape (frames, height, width, 3), got {tuple(frames.shape)}.")
    if frames.shape[-1] == 3:
        frames = rearrange(frames, "t h w c -> t c h w")
    elif frames.shape[1] != 3:
        raise ValueError(f"A video must have 3 (RGB) channels first or last, got shape {tuple(frames.shape)}.")
    if frames.shape[0] == 0:
        raise ValueError("A video must hold at least one frame.")
    return frames


__all__ = ["DEFAULT_NUM_FRAMES", "SlowFastVideoProcessor", "sample_frame_indices"]
