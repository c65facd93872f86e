# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""slowfast_hf: the slow-fast video architecture (Shi et al., 2025) for any Llama/Qwen-style Transformers decoder.

Importing the package registers the config and models with the Auto classes, and marks them so that
`save_pretrained` ships their code (`trust_remote_code=True` loads work without this package installed).
"""

from .transformers_compat import check_transformers_version

check_transformers_version()

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor, AutoVideoProcessor
from transformers.utils import is_torchvision_available, is_vision_available

from .configuration_slowfast import SlowFastConfig
from .hybrid_attention import SlowFastCrossAttention, add_hybrid_layers
from .modeling_slowfast import (
    SlowFastForConditionalGeneration,
    SlowFastModel,
    SlowFastPreTrainedModel,
    SlowFastVisualFeatures,
)
from .processing_slowfast import SlowFastProcessor
from .slow_key_values import SlowKeyValues, SlowKeyValuesLayer
from .token_builder import SlowFastTokenBuilder
from .video_processing_slowfast import SlowFastVideoProcessor
from .video_reading import DecodedVideo, VideoInfo, probe_video, read_video

__version__ = "0.1.0"

AutoConfig.register(SlowFastConfig.model_type, SlowFastConfig, exist_ok=True)
AutoModel.register(SlowFastConfig, SlowFastModel, exist_ok=True)
AutoModelForImageTextToText.register(SlowFastConfig, SlowFastForConditionalGeneration, exist_ok=True)
SlowFastConfig.register_for_auto_class()
SlowFastModel.register_for_auto_class("AutoModel")
SlowFastForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
AutoProcessor.register(SlowFastConfig, SlowFastProcessor, exist_ok=True)
SlowFastProcessor.register_for_auto_class("AutoProcessor")
if is_torchvision_available() and is_vision_available():  # AutoVideoProcessor itself needs both
    AutoVideoProcessor.register(SlowFastConfig, SlowFastVideoProcessor, exist_ok=True)
    SlowFastVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = [
    "DecodedVideo",
    "SlowFastProcessor",
    "SlowFastVideoProcessor",
    "VideoInfo",
    "probe_video",
    "read_video",
    "SlowFastConfig",
    "SlowFastCrossAttention",
    "SlowFastForConditionalGeneration",
    "SlowFastModel",
    "SlowFastPreTrainedModel",
    "SlowFastTokenBuilder",
    "SlowFastVisualFeatures",
    "SlowKeyValues",
    "SlowKeyValuesLayer",
    "add_hybrid_layers",
]
