# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Configuration of a slow-fast video language model (Shi et al., 2025)."""

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

PROJECTOR_TYPES = ("mlp2x_gelu", "linear")
QUERY_POSITIONS = ("text", "text_after_first_visual")
GATE_KINDS = ("dynamic_tanh_warmup", "tanh_warmup")
VISION_FEATURE_SELECT_STRATEGIES = ("default", "full")
FAST_FRAME_REMAINDERS = ("zero_pad", "drop")
SPATIAL_POOL_REMAINDERS = ("partial", "drop")


def vision_feature_size(vision_config, vision_feature_layer: int) -> int:
    """Channels of the vision encoder's hidden state number `vision_feature_layer` (checked against its depth)."""
    hidden_sizes = getattr(vision_config, "hidden_sizes", None)
    if hidden_sizes:  # convolutional encoders: the embeddings output, then one output per stage
        sizes = [hidden_sizes[0], *hidden_sizes]
    elif isinstance(getattr(vision_config, "hidden_size", None), int):
        depth = getattr(vision_config, "num_hidden_layers", None)
        if not isinstance(depth, int):
            return vision_config.hidden_size  # depth unknown
        sizes = [vision_config.hidden_size] * (
            depth + 1
        )  # ViT-style encoders: the embeddings output, then one per layer
    else:
        raise ValueError(
            f"The vision config ({vision_config.model_type}) has neither `hidden_size` nor `hidden_sizes`, so the "
            "projector's input width is unknown; use a vision encoder config such as SigLIP, CLIP vision or ConvNeXt."
        )
    if not -len(sizes) <= vision_feature_layer < len(sizes):
        raise ValueError(
            f"`vision_feature_layer` must index one of the vision encoder's {len(sizes)} hidden states (the "
            f"embeddings and {len(sizes) - 1} layers/stages), i.e. be in [{-len(sizes)}, {len(sizes) - 1}], got "
            f"{vision_feature_layer}."
        )
    return sizes[vision_feature_layer]


class SlowFastConfig(PreTrainedConfig):
    r"""
    Configuration of [`SlowFastForConditionalGeneration`]: a vision encoder, a projector and a Llama/Qwen-style
    decoder some of whose layers are *hybrid layers* that also cross-attend to the uncompressed ("slow") video tokens.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a `Qwen2Config`):
            The decoder's configuration (any Llama/Qwen-style model type Transformers knows).
        vision_config (`dict` or `PreTrainedConfig`, *optional*, defaults to a `SiglipVisionConfig`):
            The vision encoder's configuration (SigLIP, CLIP vision, ConvNeXt, ...).
        projector_type (`str`, *optional*, defaults to `"mlp2x_gelu"`):
            `"mlp2x_gelu"` (Linear, GELU, Linear) or `"linear"`.
        projector_bias (`bool`, *optional*, defaults to `True`):
            Whether the projector's linear layers have a bias.
        vision_feature_layer (`int`, *optional*, defaults to `-1`):
            Which of the vision encoder's hidden states feeds the projector.
        vision_feature_select_strategy (`str`, *optional*, defaults to `"full"`):
            `"default"` drops the first (CLS) token of ViT-style encoders, `"full"` keeps every token.
        vision_layer_norm_eps (`float`, *optional*):
            When set, every layer norm of the vision encoder uses this epsilon (applied after the encoder is built, so
            the encoder's own modeling code is used unchanged). The released models set 1e-5: their timm
            ConvNeXt-XXL uses it where Transformers' `ConvNextModel` hard-codes 1e-6. `None` keeps the encoder's own.
        vision_batch_size (`int`, *optional*):
            Run the vision encoder and projector on at most this many frames at a time, which bounds the encoder's
            activation memory on long videos (the result does not change). `None` encodes all frames at once.
        hybrid_layers (`list[int]`, *optional*):
            Indices of the decoder layers that become hybrid layers. Mutually exclusive with `hybrid_layer_interval`.
        hybrid_layer_interval (`int`, *optional*):
            Every `hybrid_layer_interval`-th layer from `hybrid_layer_min_depth` (inclusive) to
            `hybrid_layer_max_depth` (exclusive, defaults to the number of layers) becomes hybrid. When neither this
            nor `hybrid_layers` is given, every 8th layer from 0 (the released models). Resolved into `hybrid_layers`.
        cross_attn_query_positions (`str`, *optional*, defaults to `"text"`):
            Which positions query the slow tokens: `"text"` (every non-visual, non-padding token, the released
            setting) or `"text_after_first_visual"` (the system prompt before the first visual token does not).
        cross_attn_gate (`str`, *optional*, defaults to `"dynamic_tanh_warmup"`):
            `"dynamic_tanh_warmup"`: `tanh(w·A + b) · tanh(α)`, one value per token from the self-attention output `A`
            (the released "whole-dynamic-tanh-warmup"); `"tanh_warmup"`: `tanh(α)` alone. `α` starts at 0.
        cross_attn_generated_tokens (`bool`, *optional*, defaults to `True`):
            Whether tokens decoded after the prompt (forward passes continuing the cache, with no new images or
            videos) cross-attend to the slow tokens, as every text token mathematically can. `False` is the released
            models' behaviour (their `generate` resets the new tokens' types, so only the prompt's text tokens get the
            cross term; their published numbers were produced this way): the slow keys/values are then used only by
            the forward pass that receives the images/videos and are not returned for later steps. (This assumes a
            cache, `generate`'s default: with `use_cache=False` every step is a full forward with the images/videos,
            in which all text tokens, generated ones included, cross-attend.)
        init_cross_kv_from_lm (`bool`, *optional*, defaults to `True`):
            Initialise the slow-token key/value projection from the layer's own `[Wk; Wv]`.
        slow_spatial_stride (`int`, *optional*, defaults to 2):
            Spatial average pooling of each video frame before it becomes slow tokens (`mm_video_pooling_stride`).
        fast_temporal_sampling_stride (`int`, *optional*, defaults to 1):
            Keep every n-th (pooled) frame for the fast tokens.
        fast_temporal_stride (`int`, *optional*, defaults to 4):
            Average the kept frames over windows of this many frames.
        fast_spatial_stride (`int`, *optional*, defaults to 1):
            Spatial average pooling of the fast tokens.
        min_fast_frames (`int`, *optional*, defaults to 1):
            The fast tokens cover at least this many frames (or every frame of a shorter video).
        fast_frame_remainder (`str`, *optional*, defaults to `"zero_pad"`):
            Frame counts that are not a multiple of the strides: `"zero_pad"` samples every
            `fast_temporal_sampling_stride`-th frame and zero-pads the last temporal window; `"drop"` is the released
            rule (`max(T // s, min_fast_frames)` evenly spread frames, trailing frames that fill no window dropped),
            see [`SlowFastTokenBuilder`].
        spatial_pool_remainder (`str`, *optional*, defaults to `"partial"`):
            Grids that are not a multiple of the spatial strides: `"partial"` averages a border window over the cells
            it covers (rounds up); `"drop"` drops those cells (rounds down, the released models).
        image_token_id (`int`, *optional*):
            The placeholder token that the processor repeats once per fast token of an image.
        video_token_id (`int`, *optional*):
            The placeholder token that the processor repeats once per fast token of a video.
    """

    model_type = "slowfast_video"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    projector_type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    projector_bias: bool = True
    vision_feature_layer: int = -1
    vision_feature_select_strategy: Literal["default", "full"] = "full"
    vision_batch_size: int | None = None
    vision_layer_norm_eps: float | None = None
    hybrid_layers: list[int] | None = None
    hybrid_layer_interval: int | None = None
    hybrid_layer_min_depth: int = 0
    hybrid_layer_max_depth: int | None = None
    cross_attn_query_positions: Literal["text", "text_after_first_visual"] = "text"
    cross_attn_gate: Literal["dynamic_tanh_warmup", "tanh_warmup"] = "dynamic_tanh_warmup"
    cross_attn_generated_tokens: bool = True
    init_cross_kv_from_lm: bool = True
    slow_spatial_stride: int = 2
    fast_temporal_sampling_stride: int = 1
    fast_temporal_stride: int = 4
    fast_spatial_stride: int = 1
    min_fast_frames: int = 1
    fast_frame_remainder: Literal["zero_pad", "drop"] = "zero_pad"
    spatial_pool_remainder: Literal["partial", "drop"] = "partial"
    image_token_id: int | None = None
    video_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.hybrid_layers = self._resolve_hybrid_layers()
        self.hybrid_layer_interval = None
        self.hybrid_layer_min_depth = 0
        self.hybrid_layer_max_depth = None
        for name, allowed in (
            ("projector_type", PROJECTOR_TYPES),
            ("cross_attn_query_positions", QUERY_POSITIONS),
            ("cross_attn_gate", GATE_KINDS),
            ("vision_feature_select_strategy", VISION_FEATURE_SELECT_STRATEGIES),
            ("fast_frame_remainder", FAST_FRAME_REMAINDERS),
            ("spatial_pool_remainder", SPATIAL_POOL_REMAINDERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        for name in (
            "slow_spatial_stride",
            "fast_temporal_sampling_stride",
            "fast_temporal_stride",
            "fast_spatial_stride",
            "min_fast_frames",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        batch_size = self.vision_batch_size
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"`vision_batch_size` must be an integer >= 1 or None, got {batch_size!r}.")
        if not isinstance(self.cross_attn_generated_tokens, bool):
            raise ValueError(
                f"`cross_attn_generated_tokens` must be True or False, got {self.cross_attn_generated_tokens!r}."
            )
        eps = self.vision_layer_norm_eps
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1):
            raise ValueError(f"`vision_layer_norm_eps` must be a number in (0, 1) or None, got {eps!r}.")
        if not isinstance(self.vision_feature_layer, int) or isinstance(self.vision_feature_layer, bool):
            raise ValueError(f"`vision_feature_layer` must be an integer, got {self.vision_feature_layer!r}.")
        vision_feature_size(self.vision_config, self.vision_feature_layer)
        for name in ("image_token_id", "video_token_id"):
            value = getattr(self, name)
            vocab_size = self.text_config.vocab_size
            if value is not None and (
                isinstance(value, bool) or not (isinstance(value, int) and 0 <= value < vocab_size)
            ):
                raise ValueError(f"`{name}` must be a token id in [0, {vocab_size}), got {value!r}.")
        if self.image_token_id is not None and self.image_token_id == self.video_token_id:
            raise ValueError(f"`image_token_id` and `video_token_id` must differ, both are {self.image_token_id}.")

    def _resolve_hybrid_layers(self) -> list[int]:
        num_layers = self.text_config.num_hidden_layers
        if self.hybrid_layers is not None:
            if self.hybrid_layer_interval is not None:
                raise ValueError("Pass either `hybrid_layers` or `hybrid_layer_interval`, not both.")
            layers = list(self.hybrid_layers)
            for index in layers:
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_layers:
                    raise ValueError(
                        f"`hybrid_layers` entries must be decoder layer indices in [0, {num_layers}), got {index!r}."
                    )
            if len(set(layers)) != len(layers):
                raise ValueError(f"`hybrid_layers` must not repeat a layer, got {layers}.")
            return sorted(layers)

        interval = 8 if self.hybrid_layer_interval is None else self.hybrid_layer_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"`hybrid_layer_interval` must be an integer >= 1, got {interval!r}.")
        max_depth = num_layers if self.hybrid_layer_max_depth is None else self.hybrid_layer_max_depth
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 0 < max_depth <= num_layers:
            raise ValueError(f"`hybrid_layer_max_depth` must be in [1, {num_layers}], got {max_depth!r}.")
        min_depth = self.hybrid_layer_min_depth
        if isinstance(min_depth, bool) or not isinstance(min_depth, int) or not 0 <= min_depth < max_depth:
            raise ValueError(f"`hybrid_layer_min_depth` must be in [0, {max_depth}), got {min_depth!r}.")
        return list(range(min_depth, max_depth, interval))


__all__ = ["SlowFastConfig", "vision_feature_size"]
