# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Slow-fast video language model: vision encoder -> projector -> slow/fast tokens -> decoder with hybrid layers."""

import os
import re
from pathlib import Path

import torch
from einops import rearrange
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, is_torchdynamo_compiling, logging

from .configuration_slowfast import SlowFastConfig, vision_feature_size
from .hybrid_attention import (
    SLOW_FAST_CONTEXT_KWARG,
    SlowFastAttentionContext,
    add_hybrid_layers,
    decoder_layers,
    hybrid_layer_indices,
    init_cross_attention,
)
from .slow_key_values import SlowKeyValues, cached_slow_key_values, store_slow_key_values
from .token_builder import SlowFastTokenBuilder
from .transformers_compat import CACHE_KWARG, resolve_cache_argument
from .visual_inputs import (
    SlowFastVisualFeatures,
    check_pixels,
    check_visual_features,
    flatten_videos,
    gather_slow_tokens,
    is_finite,
    place_fast_tokens,
    repeat_per_sample,
)

logger = logging.get_logger(__name__)


def set_layer_norm_eps(module: nn.Module, eps: float) -> None:
    """Make every `nn.LayerNorm` (and subclass, e.g. `ConvNextLayerNorm`) inside `module` use `eps`: they read
    `self.eps` at every call, so the encoder's own modeling code runs unchanged."""
    for submodule in module.modules():
        if isinstance(submodule, nn.LayerNorm):
            submodule.eps = eps


def present_no_split_modules(model: nn.Module) -> set[str]:
    """
    The block classes that device maps, big-model loading and FSDP's auto-wrap must keep whole: those the wrapped
    Transformers models declare in their own `_no_split_modules` (the decoder's layer class, the vision encoder's
    layers, ...), restricted to the classes `model` holds. A hybrid layer's cross-attention is a submodule of its
    decoder layer's `self_attn`, so it always stays with its layer.
    """
    declared = set()
    for module in model.modules():
        if module is not model and isinstance(module, PreTrainedModel):
            declared.update(module._no_split_modules or ())
    # A vision tower taken out of a two-tower model (SigLIP) declares its text tower's blocks too; accelerate refuses
    # wrap classes the model does not hold.
    return declared & {type(module).__name__ for module in model.modules()}


def check_images(pixel_values) -> None:
    """`pixel_values` must be (num_images >= 1, C, H, W)."""
    if not torch.is_tensor(pixel_values) or pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
        shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
        raise ValueError(f"`pixel_values` must have shape (num_images >= 1, C, H, W), got {shape}.")


class SlowFastMultiModalProjector(nn.Module):
    """Vision features -> LLM width: `linear`, or `mlp2x_gelu` (Linear, GELU, Linear)."""

    def __init__(self, config: SlowFastConfig):
        super().__init__()
        in_features = vision_feature_size(config.vision_config, config.vision_feature_layer)
        hidden_size = config.text_config.hidden_size
        self.linear_1 = nn.Linear(in_features, hidden_size, bias=config.projector_bias)
        if config.projector_type == "mlp2x_gelu":
            self.act = ACT2FN["gelu"]
            self.linear_2 = nn.Linear(hidden_size, hidden_size, bias=config.projector_bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.linear_1(features)
        if hasattr(self, "linear_2"):
            hidden_states = self.linear_2(self.act(hidden_states))
        return hidden_states


class SlowFastPreTrainedModel(PreTrainedModel):
    config: SlowFastConfig
    config_class = SlowFastConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = [CACHE_KWARG]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def post_init(self):
        super().post_init()
        self._no_split_modules = present_no_split_modules(self)

    @classmethod
    def is_custom_code(cls) -> bool:
        # Transformers guards custom code that writes weights in place by skipping, at initialisation, every module
        # without parameters of its own (e.g. SigLIP's attention and MLP blocks, whose own init then never runs for
        # weights missing from a checkpoint). Every init here goes through `transformers.initialization`, like in-tree
        # models, so the whole model (vision tower and decoder included) initialises as it does in-tree.
        return False

    @torch.no_grad()
    def initialize_weights(self):
        super().initialize_weights()
        # Hybrid parameters missing from a checkpoint start as DESIGN §2 says (K/V from the layer's own K/V, α = 0);
        # loaded ones are left alone by `transformers.initialization`.
        for module in self.modules():
            if isinstance(module, SlowFastModel):
                text_config = module.config.text_config
                for layer in decoder_layers(module.language_model):
                    if hasattr(layer.self_attn, "cross_attn"):
                        init_cross_attention(
                            layer.self_attn.cross_attn,
                            layer.self_attn,
                            text_config,
                            module.config.init_cross_kv_from_lm,
                        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, output_loading_info: bool = False, **kwargs):
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:  # safetensors' message names no file
            unreadable = unreadable_safetensors(pretrained_model_name_or_path)
            raise OSError(
                f"Cannot load {pretrained_model_name_or_path}: {', '.join(unreadable) or 'a safetensors file'} is "
                f"truncated or corrupt ({error})."
            ) from error
        _check_hybrid_weights_loaded(
            model.config,
            loading_info["unexpected_keys"],
            loading_info["missing_keys"],
            chosen="hybrid_layers" in kwargs,
        )
        return (model, loading_info) if output_loading_info else model

    def _activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, *args, **kwargs):
        if (activation_checkpointing_kwargs or {}).get("use_reentrant", False):
            raise ValueError(
                "Slow-fast models support only non-reentrant activation checkpointing (`use_reentrant=False`, the "
                "default): the slow keys/values reach the checkpointed layers as keyword arguments, which reentrant "
                "checkpointing cannot backpropagate through more than once."
            )
        super()._activation_checkpointing_enable(activation_checkpointing_kwargs, *args, **kwargs)

    def save_pretrained(self, *args, **kwargs):
        if self._auto_class is not None:  # ship every entry point, not only the saved class
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": "modeling_slowfast.SlowFastModel",
                "AutoModelForImageTextToText": "modeling_slowfast.SlowFastForConditionalGeneration",
            }
        # FSDP2 turns the model's class into a subclass of its own, defined in torch; save as the slow-fast class, so
        # that the config's `auto_map` and the code shipped with the weights are this package's, not torch's.
        wrapped_class = type(self)
        self.__class__ = next(cls for cls in wrapped_class.__mro__ if cls.__module__ == __name__)
        try:
            return super().save_pretrained(*args, **kwargs)
        finally:
            self.__class__ = wrapped_class


class SlowFastModel(SlowFastPreTrainedModel):
    """Vision encoder, projector and a Transformers decoder whose `config.hybrid_layers` are hybrid layers."""

    def __init__(self, config: SlowFastConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        if config.vision_layer_norm_eps is not None:
            set_layer_norm_eps(self.vision_tower, config.vision_layer_norm_eps)
        self.multi_modal_projector = SlowFastMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        add_hybrid_layers(
            self.language_model,
            config.hybrid_layers,
            gate_kind=config.cross_attn_gate,
            init_cross_kv_from_lm=config.init_cross_kv_from_lm,
        )
        self.token_builder = SlowFastTokenBuilder.from_config(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """
        (num_frames, C, H, W) pixels -> (num_frames, h, w, hidden_size) projected per-frame features, encoded
        `config.vision_batch_size` frames at a time (all at once when None).
        """
        return self._encode_video_frames(pixel_values)[0]

    def _encode_video_frames(
        self,
        pixel_values: torch.Tensor,
        keep_vision_outputs: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, BaseModelOutput | None]:
        """
        `get_frame_features`, and, when `keep_vision_outputs`, the vision encoder's outputs over every frame (last
        hidden state, and its hidden states / attentions when asked for).
        """
        if pixel_values.ndim != 4:
            raise ValueError(
                f"Frames must have shape (num_frames, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        vision_config = self.config.vision_config
        expected_channels = getattr(vision_config, "num_channels", pixel_values.shape[1])
        if pixel_values.shape[1] != expected_channels:
            raise ValueError(f"Frames must have {expected_channels} channels, got {pixel_values.shape[1]}.")
        height, width = pixel_values.shape[-2:]
        patch_size = getattr(vision_config, "patch_size", None)
        image_size = getattr(vision_config, "image_size", None)
        is_convolutional = bool(getattr(vision_config, "hidden_sizes", None))  # any input size works
        if not is_convolutional and patch_size is not None and image_size is not None:
            expected = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
            if (height, width) != expected:
                raise ValueError(
                    f"Frames are {height}x{width} pixels but the vision encoder takes {expected[0]}x{expected[1]}; "
                    "resize them with the processor."
                )
        num_frames = pixel_values.shape[0]
        batch_size = self.config.vision_batch_size or num_frames
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`config.vision_batch_size` must be an integer >= 1 or None, got {batch_size!r}.")
        chunk_outputs = []
        features = None
        for start in range(0, num_frames, batch_size):
            chunk, vision_outputs = self._encode_frames(pixel_values[start : start + batch_size], output_attentions)
            if features is None:
                # (T, h, w, hidden_size), filled chunk by chunk: `torch.cat` would briefly hold every chunk twice
                features = chunk if batch_size >= num_frames else chunk.new_empty(num_frames, *chunk.shape[1:])
            if batch_size < num_frames:
                features[start : start + batch_size] = chunk
            if keep_vision_outputs:
                chunk_outputs.append(vision_outputs)
        if not keep_vision_outputs:
            return features, None

        def concatenate(name):
            per_chunk = [getattr(outputs, name) for outputs in chunk_outputs]
            return tuple(torch.cat(layer) for layer in zip(*per_chunk)) if per_chunk[0] is not None else None

        return features, BaseModelOutput(
            last_hidden_state=torch.cat([outputs.last_hidden_state for outputs in chunk_outputs]),
            hidden_states=concatenate("hidden_states") if output_hidden_states else None,
            attentions=concatenate("attentions") if output_attentions else None,
        )

    def _encode_frames(self, pixel_values: torch.Tensor, output_attentions: bool = False):
        """(T, C, H, W) pixels -> (T, h, w, hidden_size) through the vision encoder, feature selection and projector,
        and the vision encoder's outputs."""
        attention_kwargs = {"output_attentions": True} if output_attentions else {}
        outputs = self.vision_tower(
            pixel_values.to(self.vision_tower.dtype), output_hidden_states=True, return_dict=True, **attention_kwargs
        )
        features = outputs.hidden_states[self.config.vision_feature_layer]
        if features.ndim == 4:  # convolutional encoders: (T, C, h, w)
            features = rearrange(features, "t c h w -> t h w c")
        else:  # ViT-style encoders: (T, [CLS +] h·w, C)
            if self.config.vision_feature_select_strategy == "default":
                features = features[:, 1:]
            patch_size = self.config.vision_config.patch_size
            grid_height, grid_width = pixel_values.shape[-2] // patch_size, pixel_values.shape[-1] // patch_size
            if features.shape[1] != grid_height * grid_width:
                raise ValueError(
                    f"The vision encoder returned {features.shape[1]} tokens per frame, expected a "
                    f"{grid_height}x{grid_width} grid; check `vision_feature_select_strategy`."
                )
            features = rearrange(features, "t (h w) c -> t h w c", h=grid_height)
        return self.multi_modal_projector(features), outputs

    def _visual_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_num_frames,
        keep_vision_outputs: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        argument: str = "pixel_values_videos",
    ) -> SlowFastVisualFeatures:
        """The slow/fast tokens of videos (or, with `argument="pixel_values"`, of images as one-frame videos)."""
        frames, num_frames = flatten_videos(pixel_values_videos, video_num_frames)
        check_pixels(frames, argument)
        frame_features, vision_outputs = self._encode_video_frames(
            frames, keep_vision_outputs, output_hidden_states, output_attentions
        )
        fast_tokens, slow_tokens = [], []
        for video in frame_features.split(num_frames):
            fast, slow = self.token_builder(video)
            fast_tokens.append(fast)
            slow_tokens.append(slow)
        return SlowFastVisualFeatures(
            last_hidden_state=vision_outputs.last_hidden_state if vision_outputs is not None else None,
            pooler_output=fast_tokens,
            hidden_states=vision_outputs.hidden_states if vision_outputs is not None else None,
            attentions=vision_outputs.attentions if vision_outputs is not None else None,
            fast_tokens=fast_tokens,
            slow_tokens=slow_tokens,
        )

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        video_num_frames: torch.Tensor | list[int] | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SlowFastVisualFeatures | tuple:
        """
        Args:
            pixel_values_videos (`torch.Tensor`):
                Either `(num_videos, max_frames, C, H, W)`, where video `i` is its first `video_num_frames[i]`
                frames (all of them when `video_num_frames` is None), or `(total_frames, C, H, W)`: the videos'
                frames one after another, split by `video_num_frames` (one video when None).
            video_num_frames (`torch.Tensor` or `list[int]` of shape `(num_videos,)`, *optional*):
                The number of frames of each video.
            output_hidden_states / output_attentions (`bool`, *optional*):
                Also return the vision encoder's hidden states / attentions (defaults: the config's).
            return_dict (`bool`, *optional*):
                `False` returns `SlowFastVisualFeatures.to_tuple()` (defaults: the config's).
        Returns:
            [`SlowFastVisualFeatures`]: the fast tokens (also as `pooler_output`) and slow tokens of each video, and
            the vision encoder's outputs.
        """
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return self._visual_features(
            pixel_values_videos,
            video_num_frames,
            keep_vision_outputs=True,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SlowFastVisualFeatures | tuple:
        """`pixel_values` (num_images, C, H, W): each image is a one-frame video; see `get_video_features`."""
        check_images(pixel_values)
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return self._visual_features(
            pixel_values,
            [1] * pixel_values.shape[0],
            keep_vision_outputs=True,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            argument="pixel_values",
        )

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, token_id):
        """(B, L) bool mask of the positions holding placeholder `token_id`."""
        if token_id is None:
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            return torch.zeros(inputs_embeds.shape[:2], dtype=torch.bool, device=device)
        if input_ids is not None:
            return input_ids == token_id
        placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder).all(-1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_num_frames: torch.Tensor | list[int] | None = None,
        image_features: SlowFastVisualFeatures | None = None,
        video_features: SlowFastVisualFeatures | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        visual_placeholders_as_text: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_images, C, H, W)`, *optional*): still images.
        pixel_values_videos (`torch.FloatTensor`, *optional*): videos, see [`SlowFastModel.get_video_features`].
        video_num_frames (`torch.Tensor` or `list[int]`, *optional*): frames per video.
        image_features / video_features (`SlowFastVisualFeatures`, *optional*): precomputed instead of pixels.
        cache / past_key_values (`Cache`, *optional*): the decoder cache, under Transformers' name for it
            (`past_key_values` before Transformers 5.24); either name is accepted. It also carries the slow tokens'
            keys/values, projected once when the video is read: a cache that holds a video's prefix answers later
            text (decoding steps, a question, the next chat turn) without pixels or features.
        visual_placeholders_as_text (`bool`, *optional*, defaults to `False`): embed image/video placeholders that
            come without their image/video as ordinary tokens instead of refusing them. `generate` sets it for an
            assistant model in assisted decoding, which Transformers gives the text but not the pixels (the target
            model, which sees them, verifies every proposed token).
        """
        cache = resolve_cache_argument(cache, past_key_values)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of `input_ids` or `inputs_embeds`.")
        _check_text_inputs(input_ids, inputs_embeds, attention_mask, self.config.text_config)
        if pixel_values is not None and image_features is not None:
            raise ValueError("Pass either `pixel_values` or `image_features`, not both.")
        if pixel_values_videos is not None and video_features is not None:
            raise ValueError("Pass either `pixel_values_videos` or `video_features`, not both.")
        if video_num_frames is not None and pixel_values_videos is None:
            raise ValueError("`video_num_frames` was given without `pixel_values_videos`.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_mask = self.get_placeholder_mask(input_ids, inputs_embeds, self.config.image_token_id)
        video_mask = self.get_placeholder_mask(input_ids, inputs_embeds, self.config.video_token_id)
        if pixel_values is not None:
            check_images(pixel_values)
            image_features = self._visual_features(pixel_values, [1] * pixel_values.shape[0], argument="pixel_values")
        if pixel_values_videos is not None:
            video_features = self._visual_features(pixel_values_videos, video_num_frames)

        if cache is None and (use_cache if use_cache is not None else self.language_model.config.use_cache):
            # the cache the decoder would create, made here so that it holds the slow keys/values too
            cache = DynamicCache(config=self.language_model.config)
        # placeholders without their images or videos are an error in a prefill (checked eagerly only: the check
        # reads the data)
        is_prefill = not is_torchdynamo_compiling() and (cache is None or cache.get_seq_length() == 0)
        items = []  # (sample, first position, slow tokens) of every image and video
        for kind, features, mask in (("image", image_features, image_mask), ("video", video_features, video_mask)):
            if features is not None and getattr(self.config, f"{kind}_token_id") is None:
                raise ValueError(
                    f"{kind.capitalize()}s were given but `config.{kind}_token_id` is not set, so their placeholders "
                    f"cannot be found; set it to the id of the tokenizer's {kind} placeholder token."
                )
            if features is None:
                if is_prefill and mask.any() and not visual_placeholders_as_text:
                    raise ValueError(
                        f"The text holds {int(mask.sum())} {kind} placeholder tokens but no {kind} was given."
                    )
                continue
            inputs_embeds, placed = place_fast_tokens(inputs_embeds, mask, features, kind)
            items += placed

        slow_key_values = cached_slow_key_values(cache)
        if slow_key_values is not None and not self.config.cross_attn_generated_tokens:
            raise ValueError(
                "The cache holds slow keys/values, but this model's later tokens do not cross-attend "
                "(`config.cross_attn_generated_tokens=False`, the released models' behaviour): only the forward pass "
                "that receives the images or videos uses their slow tokens."
            )
        slow_tokens = None
        if items:
            if slow_key_values is not None:
                raise ValueError(
                    "The cache already holds the slow tokens of earlier images or videos; new ones cannot be added to "
                    "it (every earlier text position would have to attend them too). Start from a cache without them."
                )
            slow_tokens, slow_token_mask = gather_slow_tokens(items, inputs_embeds.shape[0], video_mask.device)
            # filled by each hybrid layer, which projects the slow tokens inside its own forward
            slow_key_values = SlowKeyValues({}, slow_token_mask, slow_token_mask.any(dim=1))
            # with `cross_attn_generated_tokens=False` (the released behaviour) only this pass uses them: later
            # passes neither read nor keep them
            if cache is not None and self.config.cross_attn_generated_tokens:
                store_slow_key_values(cache, slow_key_values, len(decoder_layers(self.language_model)))

        context = None
        if slow_key_values is not None:
            query_mask = self._query_mask(image_mask | video_mask, attention_mask, slow_key_values, bool(items))
            context = kwargs[SLOW_FAST_CONTEXT_KWARG] = SlowFastAttentionContext(
                slow_key_values,
                query_mask,
                slow_tokens=slow_tokens,
                layers=decoder_layers(self.language_model),
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **{CACHE_KWARG: cache},
            **kwargs,
        )
        if (
            context is not None
            and not is_torchdynamo_compiling()
            and (missing := set(hybrid_layer_indices(self.language_model)) - context.layers_reached)
        ):
            raise ValueError(
                f"Hybrid layers {sorted(missing)} never received the slow tokens: "
                f"{type(self.language_model).__name__}'s decoder layers do not pass `**kwargs` on to their attention, "
                "so this decoder family cannot carry hybrid layers."
            )
        return BaseModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_KWARG: getattr(outputs, CACHE_KWARG)},
        )

    def _query_mask(self, visual_mask, attention_mask, slow_key_values: SlowKeyValues, visuals_are_new: bool):
        """
        (B, L) positions of this forward pass that receive the cross term: text (not placeholders, not padding) of
        samples with slow tokens. `visuals_are_new`: the images/videos are in this pass, not in the cached prefix.
        """
        query_mask = ~visual_mask & slow_key_values.has_slow_tokens.to(visual_mask.device)[:, None]
        if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
            query_mask &= attention_mask[:, -visual_mask.shape[1] :].bool().to(visual_mask.device)
        # (a 4D mask or a dict of them, as `generate` builds for a static cache, says nothing about padded queries:
        # they then receive a cross term too, which no real position ever reads)
        if self.config.cross_attn_query_positions == "text_after_first_visual" and visuals_are_new:
            query_mask &= visual_mask.cumsum(dim=1) > 0  # cached visuals are all before this pass
        return query_mask


class SlowFastForConditionalGeneration(SlowFastPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: SlowFastConfig):
        super().__init__(config)
        _check_plain_logits(config.text_config)
        self.model = SlowFastModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_video_features(self, pixel_values_videos, video_num_frames=None, **kwargs) -> SlowFastVisualFeatures:
        """See [`SlowFastModel.get_video_features`]."""
        return self.model.get_video_features(pixel_values_videos, video_num_frames, **kwargs)

    def get_image_features(self, pixel_values, **kwargs) -> SlowFastVisualFeatures:
        """See [`SlowFastModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        video_num_frames: torch.Tensor | list[int] | None = None,
        image_features: SlowFastVisualFeatures | None = None,
        video_features: SlowFastVisualFeatures | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        visual_placeholders_as_text: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; `-100` marks positions without a loss (placeholders, prompts, padding).
        See [`SlowFastModel.forward`] for the visual inputs.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            video_num_frames=video_num_frames,
            image_features=image_features,
            video_features=video_features,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            past_key_values=past_key_values,
            visual_placeholders_as_text=visual_placeholders_as_text,
            return_dict=True,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            _check_labels(labels, outputs.last_hidden_state.shape[:2], self.config.text_config.vocab_size)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_KWARG: getattr(outputs, CACHE_KWARG)},
        )

    def prepare_inputs_for_generation(
        self, input_ids, inputs_embeds=None, is_first_iteration: bool = False, **kwargs
    ):  # `inputs_embeds` named: `generate` accepts it only when this signature does
        if not is_first_iteration and not kwargs.get("use_cache", True):
            _check_no_generated_placeholder(input_ids, self.config)
        if not is_first_iteration and kwargs.get("use_cache", True):
            # the prompt's images and videos live on in the cache (fast tokens' keys/values, slow keys/values)
            for key in ("video_num_frames", "image_features", "video_features"):
                kwargs.pop(key, None)
            cache = kwargs.get(CACHE_KWARG)
            if cache is not None and cache.get_seq_length() == 0:
                # a prefill outside the first iteration: an assistant model in assisted decoding, which Transformers
                # gives no pixels; like LLaVA-OneVision, it reads the placeholders as text
                kwargs["visual_placeholders_as_text"] = True
        return super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """Beam search and `num_return_sequences` repeat every sample; its images and videos must follow it. They are
        encoded once here and each sample's visual features are repeated with it, in order."""
        if expand_size > 1:
            for kind, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id)):
                pixels = model_kwargs.pop("pixel_values" if kind == "image" else "pixel_values_videos", None)
                features = model_kwargs.pop(f"{kind}_features", None)
                if pixels is not None and features is not None:
                    raise ValueError(f"Pass either pixels or `{kind}_features` for the {kind}s, not both.")
                if pixels is not None and kind == "image":
                    features = self.model._visual_features(pixels, [1] * pixels.shape[0], argument="pixel_values")
                elif pixels is not None:
                    features = self.model._visual_features(pixels, model_kwargs.pop("video_num_frames", None))
                if features is not None:
                    check_visual_features(features, kind, self.config.text_config.hidden_size)
                    inputs_embeds = model_kwargs.get("inputs_embeds")
                    # with `inputs_embeds`, `input_ids` is an empty (B, 0) placeholder: find the placeholders in the embeds
                    ids = input_ids if inputs_embeds is None else None
                    mask = self.model.get_placeholder_mask(ids, inputs_embeds, token_id)
                    model_kwargs[f"{kind}_features"] = repeat_per_sample(features, mask, expand_size, kind)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | PreTrainedModel,
        text_model_name_or_path: str | PreTrainedModel,
        tokenizer=None,
        **config_kwargs,
    ) -> "SlowFastForConditionalGeneration":
        """
        Build a slow-fast model around an existing vision encoder and causal LM (Hub ids, local paths or loaded
        models), keeping their weights unchanged; the projector is new and the hybrid parameters start as DESIGN §2
        says. `config_kwargs` go to [`SlowFastConfig`] (strides, `hybrid_layers`, placeholder ids, ...).

        The placeholder ids are required: pass `video_token_id` (and `image_token_id` for images), or a `tokenizer`
        holding the tokens `<video>` (and `<image>`), whose ids are then used.
        """
        config_kwargs.update(_placeholder_ids(tokenizer, config_kwargs))
        vision_model = _load_pretrained(vision_model_name_or_path, AutoModel, "vision_model_name_or_path")
        text_model = _load_pretrained(text_model_name_or_path, AutoModelForCausalLM, "text_model_name_or_path")
        if hasattr(vision_model, "vision_model") and hasattr(vision_model.config, "vision_config"):
            name_or_path = vision_model.config._name_or_path
            vision_model = vision_model.vision_model  # a full CLIP/SigLIP model: keep its vision tower
            vision_model.config._name_or_path = name_or_path
        for name in ("text_config", "vision_config", "tie_word_embeddings"):
            if name in config_kwargs:
                raise ValueError(f"`{name}` comes from the pretrained models; do not pass it in `config_kwargs`.")
        decoder = text_model.get_decoder()
        config = SlowFastConfig(
            text_config=decoder.config,
            vision_config=vision_model.config,
            tie_word_embeddings=text_model.config.tie_word_embeddings,
            **config_kwargs,
        )
        with torch.device("meta"):
            model = cls(config)
        if config.vision_layer_norm_eps is not None:
            set_layer_norm_eps(vision_model, config.vision_layer_norm_eps)
        model.model.vision_tower = vision_model
        model.model.language_model = add_hybrid_layers(
            decoder, config.hybrid_layers, config.cross_attn_gate, config.init_cross_kv_from_lm
        )
        projector = SlowFastMultiModalProjector(config).to(decoder.device, decoder.dtype)
        projector.apply(model._init_weights)
        model.model.multi_modal_projector = projector
        model.lm_head = text_model.get_output_embeddings()
        return model


def unreadable_safetensors(folder) -> list[str]:
    """The safetensors files of a local checkpoint folder whose header safetensors cannot read."""
    unreadable = []
    if isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder):
        for path in sorted(Path(folder).glob("*.safetensors")):
            try:
                with safe_open(path, framework="pt"):
                    pass
            except SafetensorError:
                unreadable.append(str(path))
    return unreadable


_CROSS_ATTENTION_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.cross_attn\.")


def _check_hybrid_weights_loaded(config: SlowFastConfig, unexpected_keys, missing_keys, chosen: bool) -> None:
    """
    A checkpoint's trained cross-attention of layers that `config.hybrid_layers` does not make hybrid would be dropped
    (Transformers only logs unexpected keys): refuse to load, as Transformers refuses weights of the wrong shape,
    unless `hybrid_layers` was passed to `from_pretrained` (a deliberate choice, only warned about).
    """
    dropped = sorted({int(match[1]) for key in unexpected_keys if (match := _CROSS_ATTENTION_KEY.search(key))})
    if not dropped:
        return
    not_loaded = {int(match[1]) for key in missing_keys if (match := _CROSS_ATTENTION_KEY.search(key))}
    saved = sorted(set(dropped) | (set(config.hybrid_layers) - not_loaded))
    message = (
        f"The checkpoint holds trained hybrid cross-attention for decoder layers {dropped}, which `hybrid_layers` "
        f"{config.hybrid_layers} does not make hybrid"
    )
    if chosen:
        logger.warning(f"{message}: as `hybrid_layers` was passed, that cross-attention is left out.")
        return
    raise ValueError(
        f"{message} (the checkpoint's config), so loading would drop it. Its hybrid layers are {saved}: set "
        f'`"hybrid_layers": {saved}` in its config.json, or pass `hybrid_layers={saved}` to `from_pretrained`.'
    )


def _check_no_generated_placeholder(input_ids, config: SlowFastConfig) -> None:
    """Without a cache every step re-reads the whole sequence, where a generated placeholder token has no video."""
    if input_ids is None:
        return
    for kind in ("image", "video"):
        token_id = getattr(config, f"{kind}_token_id")
        if token_id is not None and (input_ids[:, -1] == token_id).any():
            raise ValueError(
                f"`generate` produced the {kind} placeholder token (id {token_id}); with `use_cache=False` every step "
                f"re-reads the whole sequence, where a generated placeholder has no {kind} to stand for. Keep the "
                f"cache (the default), or forbid the token with `suppress_tokens=[{token_id}]`."
            )


def _check_text_inputs(input_ids, inputs_embeds, attention_mask, text_config) -> None:
    """
    Refuse what the embedding, the masks and the cross-attention would reject obscurely (on GPUs, an out-of-range id
    is a device-side assert). The checks that read tensor values are skipped under `torch.compile`.
    """
    check_values = not torch.compiler.is_compiling()
    if input_ids is not None:
        if not torch.is_tensor(input_ids) or input_ids.ndim != 2 or input_ids.is_floating_point():
            given = f"{input_ids.dtype} of shape {tuple(input_ids.shape)}" if torch.is_tensor(input_ids) else None
            raise ValueError(
                "`input_ids` must be an integer tensor of shape (batch_size, sequence_length), got "
                f"{given or type(input_ids).__name__}."
            )
        out_of_range = (input_ids < 0) | (input_ids >= text_config.vocab_size)
        if check_values and out_of_range.any():
            raise ValueError(
                f"`input_ids` must be token ids in [0, {text_config.vocab_size}), got "
                f"{sorted(set(input_ids[out_of_range].tolist()))[:5]}."
            )
        batch_size, length = input_ids.shape
    else:
        if not torch.is_tensor(inputs_embeds) or inputs_embeds.ndim != 3 or not inputs_embeds.is_floating_point():
            raise ValueError(
                "`inputs_embeds` must be a floating-point tensor of shape (batch_size, length, hidden_size)."
            )
        if inputs_embeds.shape[-1] != text_config.hidden_size:
            raise ValueError(
                f"`inputs_embeds` has width {inputs_embeds.shape[-1]} but the decoder's hidden_size is "
                f"{text_config.hidden_size}."
            )
        if check_values and not is_finite(inputs_embeds):
            raise ValueError("`inputs_embeds` holds non-finite values (inf or NaN).")
        batch_size, length = inputs_embeds.shape[:2]
    if (
        torch.is_tensor(attention_mask)
        and attention_mask.ndim == 2
        and (attention_mask.shape[0] != batch_size or attention_mask.shape[1] < length)
    ):
        raise ValueError(
            f"`attention_mask` of shape {tuple(attention_mask.shape)} does not fit the {batch_size} sequences of "
            f"{length} tokens: it must be (batch_size, past + new tokens)."
        )


def _check_labels(labels, sequence_shape, vocab_size: int, ignore_index: int = -100) -> None:
    """`labels` must be (batch_size, sequence_length) token ids of the vocabulary, or `ignore_index`."""
    if not torch.is_tensor(labels) or labels.dtype not in (torch.int64, torch.int32):
        description = labels.dtype if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(f"`labels` must be an integer (torch.long) tensor, got {description}.")
    if tuple(labels.shape) != tuple(sequence_shape):
        raise ValueError(
            f"`labels` must have the input's shape (batch_size, sequence_length) = {tuple(sequence_shape)}, got "
            f"{tuple(labels.shape)}."
        )
    invalid = (labels != ignore_index) & ((labels < 0) | (labels >= vocab_size))
    if not torch.compiler.is_compiling() and invalid.any():
        raise ValueError(
            f"`labels` must be token ids in [0, {vocab_size}) or {ignore_index} (no loss), got "
            f"{sorted(set(labels[invalid].tolist()))[:5]}."
        )


def _check_plain_logits(text_config) -> None:
    """The LM head here is a plain Linear; refuse decoders whose causal LM rescales or soft-caps its logits."""
    postprocessing = {
        "logit_scale": getattr(text_config, "logit_scale", None),
        "logits_scaling": getattr(text_config, "logits_scaling", 1.0),
        "final_logit_softcapping": getattr(text_config, "final_logit_softcapping", None),
    }
    changed = {name: value for name, value in postprocessing.items() if value not in (None, 1.0)}
    if changed:
        raise ValueError(
            f"{text_config.model_type} post-processes its logits ({changed}), which the slow-fast LM head does not "
            "reproduce; this decoder family is not supported."
        )


def _placeholder_ids(tokenizer, config_kwargs: dict) -> dict[str, int]:
    """The placeholder ids `from_vision_text_pretrained` was given, or those of the tokenizer's `<video>`/`<image>`."""
    if tokenizer is None:
        if config_kwargs.get("video_token_id") is None:
            raise ValueError(
                "`video_token_id` is required: pass the id of the tokenizer's video placeholder token (and "
                "`image_token_id` for images), or pass `tokenizer=` holding `<video>` (and `<image>`); add them with "
                '`tokenizer.add_special_tokens({"extra_special_tokens": ["<video>", "<image>"]})`.'
            )
        return {}
    ids = {}
    for name, token in (("video_token_id", "<video>"), ("image_token_id", "<image>")):
        if config_kwargs.get(name) is not None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tokenizer.unk_token_id:
            ids[name] = token_id
        elif name == "video_token_id":
            raise ValueError(
                f"`tokenizer` has no {token} token to take `video_token_id` from; add it with "
                '`tokenizer.add_special_tokens({"extra_special_tokens": ["<video>", "<image>"]})` (and make sure the '
                "decoder's embedding has a row for it), or pass `video_token_id`."
            )
    return ids


def _load_pretrained(model_or_path, auto_class, argument: str) -> PreTrainedModel:
    if isinstance(model_or_path, PreTrainedModel):
        return model_or_path
    if isinstance(model_or_path, str):
        return auto_class.from_pretrained(model_or_path)
    raise ValueError(
        f"`{argument}` must be a model id, a local path or a loaded PreTrainedModel, got {type(model_or_path)}"
    )


__all__ = [
    "SlowFastForConditionalGeneration",
    "SlowFastModel",
    "SlowFastPreTrainedModel",
]
