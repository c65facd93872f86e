# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""The slow-fast processor: tokenizer + video processor, expanding each placeholder to its fast-token count."""

import torch
from transformers import AutoTokenizer
from transformers.processing_utils import ProcessorMixin

from .token_builder import SlowFastTokenBuilder
from .video_processing_slowfast import SlowFastVideoProcessor, flatten_video_list

IGNORE_INDEX = -100

# ChatML. Each content part is text, an `<image>` or a `<video>` placeholder (expanded by the processor); the
# assistant replies sit in a `generation` block so `return_assistant_tokens_mask=True` can mark them. Newlines right
# after a block tag are written as `{{ '\n' }}`: Transformers renders templates with `trim_blocks`.
CHATML_TEMPLATE = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) }}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ render(message['content']) }}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class SlowFastProcessor(ProcessorMixin):
    r"""
    A tokenizer and a [`SlowFastVideoProcessor`] (which also prepares still images). Every `<video>` in the text
    becomes as many `<video>` tokens as the model will make fast tokens for that video, and every `<image>` as many
    `<image>` tokens, using [`SlowFastTokenBuilder`], the rule the model itself uses.

    Args:
        video_processor ([`SlowFastVideoProcessor`]): decodes, samples and normalises videos and images.
        tokenizer ([`PreTrainedTokenizerBase`]): must know `video_token` and `image_token`.
        chat_template (`str`, *optional*): defaults to ChatML with `<video>`/`<image>` parts.
        video_token, image_token (`str`): the placeholder tokens.
        patch_size (`int`): pixels per feature-grid cell of the vision encoder (its patch size; 32 for ConvNeXt).
        slow_spatial_stride, fast_temporal_sampling_stride, fast_temporal_stride, fast_spatial_stride,
        min_fast_frames (`int`), fast_frame_remainder, spatial_pool_remainder (`str`): the model's token rule, see
            [`SlowFastConfig`]; use [`from_model_config`] to copy them from a model.
    """

    def __init__(
        self,
        video_processor=None,
        tokenizer=None,
        chat_template=None,
        video_token: str = "<video>",
        image_token: str = "<image>",
        patch_size: int = 14,
        slow_spatial_stride: int = 2,
        fast_temporal_sampling_stride: int = 1,
        fast_temporal_stride: int = 4,
        fast_spatial_stride: int = 1,
        min_fast_frames: int = 1,
        fast_frame_remainder: str = "zero_pad",
        spatial_pool_remainder: str = "partial",
        **kwargs,
    ):
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"`patch_size` must be an integer >= 1, got {patch_size!r}.")
        self.video_token = video_token
        self.image_token = image_token
        self.patch_size = patch_size
        self.slow_spatial_stride = slow_spatial_stride
        self.fast_temporal_sampling_stride = fast_temporal_sampling_stride
        self.fast_temporal_stride = fast_temporal_stride
        self.fast_spatial_stride = fast_spatial_stride
        self.min_fast_frames = min_fast_frames
        self.fast_frame_remainder = fast_frame_remainder
        self.spatial_pool_remainder = spatial_pool_remainder
        self.token_builder = SlowFastTokenBuilder(
            slow_spatial_stride,
            fast_temporal_sampling_stride,
            fast_temporal_stride,
            fast_spatial_stride,
            min_fast_frames,
            fast_frame_remainder,
            spatial_pool_remainder,
        )
        for name, token in (("video_token", video_token), ("image_token", image_token)):
            if tokenizer is not None and tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
                raise ValueError(
                    f"`{name}` {token!r} is not in the tokenizer's vocabulary; add it as a special token."
                )
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token) if tokenizer is not None else None
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token) if tokenizer is not None else None
        super().__init__(video_processor, tokenizer, chat_template=chat_template or CHATML_TEMPLATE, **kwargs)

    @classmethod
    def from_model_config(cls, config, video_processor=None, tokenizer=None, **kwargs) -> "SlowFastProcessor":
        """
        A processor whose token rule and placeholder ids are the model's (a `SlowFastConfig`). Without a
        `video_processor`, a default one at the vision encoder's frame size; a given one must produce that size when
        the encoder takes a fixed size (ViT-style encoders; convolutional ones take any size).
        """
        if tokenizer is None:
            raise ValueError("`tokenizer` is required: the placeholder ids come from it.")
        vision_config = config.vision_config
        is_convolutional = bool(getattr(vision_config, "hidden_sizes", None))
        patch_size = 32 if is_convolutional else vision_config.patch_size
        image_size = getattr(vision_config, "image_size", None)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if video_processor is None:
            size = image_size or (384, 384)
            video_processor = SlowFastVideoProcessor(size={"height": size[0], "width": size[1]})
        elif not is_convolutional and image_size is not None and _fixed_output_size(video_processor) != image_size:
            raise ValueError(
                f"`video_processor` makes frames of {_fixed_output_size(video_processor) or 'input-dependent'} "
                f"pixels but the vision encoder takes {tuple(image_size)}; set its `size` (or `crop_size`) to "
                f"{{'height': {image_size[0]}, 'width': {image_size[1]}}}, or pass no `video_processor`."
            )
        processor = cls(
            video_processor,
            tokenizer,
            patch_size=patch_size,
            slow_spatial_stride=config.slow_spatial_stride,
            fast_temporal_sampling_stride=config.fast_temporal_sampling_stride,
            fast_temporal_stride=config.fast_temporal_stride,
            fast_spatial_stride=config.fast_spatial_stride,
            min_fast_frames=config.min_fast_frames,
            fast_frame_remainder=config.fast_frame_remainder,
            spatial_pool_remainder=config.spatial_pool_remainder,
            **kwargs,
        )
        for name in ("video_token_id", "image_token_id"):
            if getattr(config, name) is not None and getattr(config, name) != getattr(processor, name):
                raise ValueError(
                    f"The tokenizer's {name} {getattr(processor, name)} is not the model's {getattr(config, name)}."
                )
        return processor

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # Transformers' checks cannot read the videos this processor accepts (paths as `pathlib.Path`, bytes, file
        # objects): they check the text and images, and the videos are counted here, as the video processor reads them.
        samples = [text] if isinstance(text, str) else text
        if text is None or not all(isinstance(sample, str) for sample in samples):
            return super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)
        without_videos = [sample.replace(self.video_token, "") for sample in samples]
        super().validate_inputs(images=images, text=without_videos, videos=None, audio=audio, **kwargs)
        placeholders = sum(sample.count(self.video_token) for sample in samples)
        if videos is None:
            if placeholders:
                raise ValueError(
                    f"The text holds {placeholders} {self.video_token} placeholders but no videos were passed."
                )
            return
        num_videos = len(flatten_video_list(videos))
        if placeholders != num_videos:
            raise ValueError(
                f"The text holds {placeholders} {self.video_token} placeholders but {num_videos} videos were passed."
            )

    def check_argument_for_proper_class(self, argument_name, argument):
        # Transformers expects a torchvision-backed `BaseVideoProcessor` here; ours runs on plain torch.
        if argument_name == "video_processor":
            if not isinstance(argument, SlowFastVideoProcessor):
                raise TypeError(f"`video_processor` must be a SlowFastVideoProcessor, got {type(argument).__name__}.")
            return SlowFastVideoProcessor
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # `AutoVideoProcessor` needs torchvision and PIL; this video processor needs neither, so load it directly.
        subfolder = kwargs.pop("subfolder", "")
        video_processor = SlowFastVideoProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        return [video_processor, tokenizer]

    @property
    def image_processor(self):
        """Still images go through the video processor as one-frame videos."""
        return self.video_processor

    def _grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Processed frames of {height}x{width} pixels are not a multiple of `patch_size` {self.patch_size}."
            )
        return height // self.patch_size, width // self.patch_size

    def num_video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Placeholder tokens for a `num_frames`-frame video processed to `height × width` pixels."""
        return self.token_builder.num_fast_tokens(num_frames, height // self.patch_size, width // self.patch_size)

    def _process_videos(self, videos, **kwargs):
        processed = self.video_processor(videos, **kwargs)
        grid = self._grid(processed["pixel_values_videos"])
        replacements = [
            self.video_token * self.token_builder.num_fast_tokens(int(num_frames), *grid)
            for num_frames in processed["video_num_frames"]
        ]
        return processed, replacements

    def _process_images(self, images, **kwargs):
        processed = self.video_processor.preprocess_images(
            images, do_rescale=kwargs.get("do_rescale"), rescale_factor=kwargs.get("rescale_factor")
        )
        grid = self._grid(processed["pixel_values"])
        replacements = [self.image_token * self.token_builder.num_fast_tokens(1, *grid)] * len(
            processed["pixel_values"]
        )
        return processed, replacements

    def build_labels(self, batch) -> torch.Tensor:
        """
        Training labels for a batch from `apply_chat_template(..., tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True, return_tensors="pt")`: the token ids of the assistant replies, `-100`
        everywhere else (system and user turns, placeholders, padding).
        """
        if "assistant_masks" not in batch:
            raise ValueError(
                "`batch` lacks `assistant_masks`: call `apply_chat_template` with `return_assistant_tokens_mask=True`."
            )
        input_ids = torch.as_tensor(batch["input_ids"])
        keep = torch.as_tensor(batch["assistant_masks"]).bool()
        if "attention_mask" in batch:
            keep &= torch.as_tensor(batch["attention_mask"]).bool()
        keep &= (input_ids != self.video_token_id) & (input_ids != self.image_token_id)
        return torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values_videos", "video_num_frames", "pixel_values"]


def _fixed_output_size(video_processor: SlowFastVideoProcessor) -> tuple[int, int] | None:
    try:
        return video_processor.output_size
    except ValueError:  # shortest-edge resizing without a crop: the size depends on the input
        return None


__all__ = ["SlowFastProcessor", "CHATML_TEMPLATE"]
