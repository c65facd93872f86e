# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Video (and still image) preprocessing for slow-fast models: decode, sample, resize, crop, rescale, normalise."""

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from transformers.feature_extraction_utils import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin

from .video_reading import read_video

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE_MODES = ("bicubic", "bilinear", "nearest")


def _sample_indices(total_frames: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over `total_frames` (the middle of each of `num_frames` equal segments);
    when fewer frames exist than asked for, every frame once."""
    if num_frames >= total_frames:
        return list(range(total_frames))
    return [int((i + 0.5) * total_frames / num_frames) for i in range(num_frames)]


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
        rescale_factor (`float`, *optional*, defaults to `1/255`): applied to the uint8 values.
        image_mean, image_std (`tuple[float]`, *optional*, default to SigLIP's 0.5): normalisation.
        num_frames (`int`, *optional*): frames sampled evenly from each video (all frames when neither
            `num_frames` nor `fps` is set).
        fps (`float`, *optional*): frames sampled per second of video instead, at most `max_frames`.
        max_frames (`int`, *optional*): cap for `fps` sampling.
        approximate_seek (`bool`, *optional*, defaults to `False`): decode the nearest keyframes instead of the exact
            frames (much faster on long videos, approximate timestamps).
    """

    model_input_names = ["pixel_values_videos", "video_num_frames"]

    def __init__(
        self,
        size: dict | None = None,
        crop_size: dict | None = None,
        resample: str = "bicubic",
        rescale_factor: float = 1 / 255,
        image_mean: Sequence[float] = SIGLIP_MEAN,
        image_std: Sequence[float] = SIGLIP_STD,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        approximate_seek: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = dict(size) if size is not None else {"height": 384, "width": 384}
        self.crop_size = dict(crop_size) if crop_size is not None else None
        self.resample = resample
        self.rescale_factor = rescale_factor
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.num_frames = num_frames
        self.fps = fps
        self.max_frames = max_frames
        self.approximate_seek = approximate_seek
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
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("`image_mean` and `image_std` must hold 3 values each, with `image_std` > 0.")
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

    def load_frames(self, video, num_frames=None, fps=None, max_frames=None) -> torch.Tensor:
        """One video in any accepted form -> (T, 3, H, W) uint8 frames, sampled as configured (arguments given here
        replace the processor's sampling settings)."""
        if num_frames is None and fps is None:
            num_frames, fps = self.num_frames, self.fps
        if max_frames is None and fps is not None:
            max_frames = self.max_frames
        self._check_sampling(num_frames, fps, max_frames)
        if isinstance(video, (str, os.PathLike, bytes)) or hasattr(video, "read"):
            decoded = read_video(
                video, num_frames=num_frames, fps=fps, max_frames=max_frames, approximate=self.approximate_seek
            )
            return rearrange(torch.from_numpy(decoded.frames), "t h w c -> t c h w")
        frames = _frames_to_tensor(video)
        if fps is not None:
            raise ValueError(
                "`fps` sampling needs timestamps: pass a path, bytes or file object, or use `num_frames`."
            )
        if num_frames is not None:
            frames = frames[_sample_indices(frames.shape[0], num_frames)]
        return frames

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 or float in [0, 255] -> (T, 3, H', W') normalised float32."""
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
            frames = frames.clamp(0, 255)
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
        return (frames * self.rescale_factor - mean) / std

    def preprocess(self, videos, num_frames=None, fps=None, max_frames=None, return_tensors=None, **kwargs):
        """
        Args:
            videos: one video or a list of videos (each a path, bytes, file object, `(T, H, W, 3)` array or tensor,
                or a list of PIL frames). A nested list (one list per sample, as chat templates give) is flattened.
            num_frames / fps / max_frames: override the processor's sampling for this call.

        Returns:
            `BatchFeature` with `pixel_values_videos` `(total_frames, 3, H, W)` (the videos' frames one after
            another) and `video_num_frames` `(num_videos,)`.
        """
        _reject_unknown_kwargs(kwargs)
        videos = _flatten_video_list(videos)
        processed = [self.transform(self.load_frames(video, num_frames, fps, max_frames)) for video in videos]
        sizes = {tuple(frames.shape[-2:]) for frames in processed}
        if len(sizes) > 1:
            raise ValueError(f"Processed videos differ in size {sorted(sizes)}; set `crop_size` or a fixed `size`.")
        data = {
            "pixel_values_videos": torch.cat(processed),
            "video_num_frames": torch.tensor([frames.shape[0] for frames in processed]),
        }
        return BatchFeature(data, tensor_type=return_tensors)

    def preprocess_images(self, images, return_tensors=None) -> BatchFeature:
        """Still images (`(H, W, 3)` arrays/tensors or PIL images) -> `pixel_values` `(num_images, 3, H, W)`."""
        images = images if isinstance(images, (list, tuple)) else [images]
        images = [image for item in images for image in (item if isinstance(item, (list, tuple)) else [item])]
        if not images:
            raise ValueError("`images` is empty.")
        pixel_values = torch.cat([self.transform(_frames_to_tensor([image])) for image in images])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


def _reject_unknown_kwargs(kwargs: dict) -> None:
    unknown = {key for key, value in kwargs.items() if value is not None and key not in ("do_sample_frames", "device")}
    if unknown:
        raise ValueError(f"Unknown video processing arguments: {sorted(unknown)}.")


def _flatten_video_list(videos) -> list:
    if videos is None:
        raise ValueError("`videos` is None.")
    is_single = (
        isinstance(videos, (str, os.PathLike, bytes, np.ndarray, torch.Tensor))
        or hasattr(videos, "read")
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


__all__ = ["SlowFastVideoProcessor"]
