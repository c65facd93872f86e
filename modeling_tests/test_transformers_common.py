# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, `ProcessorTesterMixin`), run on the slow-fast
model the way in-tree models wire them up (LLaVA-OneVision's test module), with video inputs.

The mixins come from the sdist of the installed Transformers release (`fetch_transformers_tests.py`); the module
skips only when that cannot be had. Every class runs twice: with the hybrid gates at their zero initialisation and
with them open (α ≠ 0), where the slow path changes the outputs.
"""

import sys
import unittest
from unittest import mock

import pytest
import torch

from fetch_transformers_tests import transformers_tests_path

try:
    sys.path.insert(0, str(transformers_tests_path()))
except RuntimeError as error:  # no sdist: nothing to run the mixins with
    pytest.skip(f"Transformers' common tests are unavailable: {error}", allow_module_level=True)

from tests.test_configuration_common import ConfigTester  # noqa: E402
from tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402
from tests.test_processing_common import ProcessorTesterMixin  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

from conftest import train_tiny_tokenizer  # noqa: E402
from slowfast_hf import (  # noqa: E402
    SlowFastConfig,
    SlowFastForConditionalGeneration,
    SlowFastModel,
    SlowFastProcessor,
    SlowFastTokenBuilder,
    SlowFastVideoProcessor,
    hybrid_attention,
    modeling_slowfast,
)
from slowfast_hf.hybrid_attention import init_cross_attention  # noqa: E402

# low ids, as in-tree testers use: `test_resize_tokens_embeddings` clamps the ids to a smaller vocabulary
IMAGE_TOKEN_ID = 1
VIDEO_TOKEN_ID = 2


class SlowFastModelTester:
    """Tiny config and inputs: each sample holds one 16x16 image and one 4-frame video of 16x16 frames (4x4 patches)."""

    def __init__(self, parent, batch_size=7, text_length=7, num_frames=4):
        self.parent = parent
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.text_config = {
            "model_type": "qwen2",
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "pad_token_id": 0,
        }
        self.vision_config = {
            "model_type": "siglip_vision_model",
            "image_size": 16,
            "patch_size": 4,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "vision_use_head": False,
        }
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.hidden_size = self.text_config["hidden_size"]
        self.vocab_size = self.text_config["vocab_size"]
        self.image_size = self.vision_config["image_size"]
        self.is_training = True
        grid = self.image_size // self.vision_config["patch_size"]
        token_builder = SlowFastTokenBuilder.from_config(self.get_config())
        self.num_image_tokens = token_builder.num_fast_tokens(1, grid, grid)
        self.num_video_tokens = token_builder.num_fast_tokens(num_frames, grid, grid)
        self.seq_length = text_length + self.num_image_tokens + self.num_video_tokens

    def get_config(self):
        return SlowFastConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            hybrid_layers=[0],
            fast_temporal_stride=2,
            slow_spatial_stride=2,
            image_token_id=IMAGE_TOKEN_ID,
            video_token_id=VIDEO_TOKEN_ID,
        )

    def prepare_config_and_inputs_for_common(self):
        """Per sample: 2 text tokens, one image's and one video's placeholders, then text."""
        config = self.get_config()
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 3) + 3  # no placeholder
        image_end = 2 + self.num_image_tokens
        input_ids[:, 2:image_end] = IMAGE_TOKEN_ID
        input_ids[:, image_end : image_end + self.num_video_tokens] = VIDEO_TOKEN_ID
        size = self.image_size
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": floats_tensor([self.batch_size, 3, size, size]),
            "pixel_values_videos": floats_tensor([self.batch_size, self.num_frames, 3, size, size]),
        }
        return config, inputs


def open_hybrid_gates(cross_attn, *args, **kwargs):
    """`init_cross_attention`, then the gates opened (α = 0.7, gate bias 0.5) so the slow path changes outputs."""
    init_cross_attention(cross_attn, *args, **kwargs)
    with torch.no_grad():
        cross_attn.gate_alpha.fill_(0.7)
        if hasattr(cross_attn, "gate_proj"):
            cross_attn.gate_proj.bias.fill_(0.5)


class SlowFastCommonTests(ModelTesterMixin):
    all_model_classes = (SlowFastModel, SlowFastForConditionalGeneration)
    additional_model_inputs = ["pixel_values", "pixel_values_videos"]  # `test_eager_matches_sdpa_inference` inputs
    _is_composite = True
    test_torch_exportable = False  # `tests/exporters/` is not in the sdist
    # `last_hidden_state` of `get_video_features` is the vision encoder's output per frame (total_frames, ...), as for
    # images; what each video contributes is in `pooler_output`, whose per-video layout the test still checks
    skip_test_video_features_output_shape = True
    # SigLIP's post_layernorm gets no gradient: features are its hidden_states[-1], before that norm (as in LLaVA)
    test_all_params_have_gradient = False
    open_gates = False

    def setUp(self):
        self.model_tester = SlowFastModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=SlowFastConfig,
            has_text_modality=False,
            common_properties=["video_token_id", "image_token_id", "vision_feature_layer"],
        )
        # what registering in-tree would add: the mixins tell base models and VLMs apart by these tables
        for table, name in (
            (modeling_auto.MODEL_MAPPING_NAMES, "SlowFastModel"),
            (modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, "SlowFastForConditionalGeneration"),
        ):
            patcher = mock.patch.dict(table, {SlowFastConfig.model_type: name})
            patcher.start()
            self.addCleanup(patcher.stop)
        if self.open_gates:
            for module in (hybrid_attention, modeling_slowfast):
                patcher = mock.patch.object(module, "init_cross_attention", open_hybrid_gates)
                patcher.start()
                self.addCleanup(patcher.stop)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(
        "the forward does not return `image_outputs` / `video_outputs` yet (get_image_features / get_video_features "
        "return the vision encoder's outputs)"
    )
    def test_multimodal_outputs_are_returned(self):
        pass

    @unittest.skip("reentrant activation checkpointing is refused on purpose: the slow K/V reach the layers as kwargs")
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(
        "GenerationTesterMixin (tests/generation/) is not in the sdist; generation is covered by test_generation.py "
        "and the generation tests below"
    )
    def test_generation_tester_mixin_inheritance(self):
        pass

    @unittest.skip(
        "asserts every *Attention module's own config says `eager`: hybrid layers' attention modules read a config view "
        "naming the `slowfast_eager` wrapper (the model's configs say `eager`, test_hybrid_layers checks the dispatch)"
    )
    def test_attn_implementation_composite_models(self):
        pass


RANDOM_IDS_REASON = (
    "feeds random ids over the whole vocabulary, placeholders included, without their images/videos, which the model "
    "refuses by design (test_transformers_contract checks the refusal)"
)
for _name in dir(ModelTesterMixin):
    if _name.startswith("test_model_rope_scaling_from_config_"):  # the parameterized variants
        setattr(SlowFastCommonTests, _name, unittest.skip(RANDOM_IDS_REASON)(lambda self: None))


class SlowFastCommonTestsGatesClosed(SlowFastCommonTests, unittest.TestCase):
    """Hybrid gates at their zero initialisation: the model computes exactly its base decoder on the fast tokens."""


class SlowFastCommonTestsGatesOpen(SlowFastCommonTests, unittest.TestCase):
    """Hybrid gates open (α ≠ 0): every text position of every sample also reads its slow tokens."""

    open_gates = True
    # the base model computes the same hybrid layers; the closed-gate class runs it (halves this class's run time)
    all_model_classes = (SlowFastForConditionalGeneration,)

    @unittest.skip("the gates are opened on purpose by patching the hybrid initialisation (see the closed-gate class)")
    def test_can_init_all_missing_weights(self):
        pass

    @unittest.skip("the gates are opened on purpose by patching the hybrid initialisation (see the closed-gate class)")
    def test_initialization(self):
        pass


class SlowFastProcessorCommonTests(ProcessorTesterMixin, unittest.TestCase):
    """The processor (trained tiny tokenizer + video processor at 32x32 px, patch 8) in Transformers' processor tests."""

    processor_class = SlowFastProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return train_tiny_tokenizer()

    @classmethod
    def _setup_video_processor(cls):
        return SlowFastVideoProcessor(size={"height": 32, "width": 32})

    @staticmethod
    def prepare_processor_dict():
        return {"patch_size": 8, "fast_temporal_stride": 2}


NO_TORCHVISION = (
    "loads the saved video processor through AutoVideoProcessor, which needs torchvision (no CPU build here)"
)
HUB_VIDEOS = "reads its videos from the Hub (no network here; test_processing decodes real local files)"
PROCESSOR_SKIPS = {
    "test_kwargs_overrides_default_subprocessor_kwargs_1_videos": NO_TORCHVISION,
    "test_processor_from_pretrained_vs_from_components": NO_TORCHVISION,
    "test_subprocessor_defaults_0_text": NO_TORCHVISION,
    "test_subprocessor_defaults_2_videos": NO_TORCHVISION,
    "test_subprocessor_defaults_preserved_by_kwargs_1_videos": NO_TORCHVISION,
    "test_tokenizer_decode_defaults": NO_TORCHVISION,
    "test_apply_chat_template_video_0": HUB_VIDEOS,
    "test_apply_chat_template_video_1": HUB_VIDEOS,
    "test_apply_chat_template_video_frame_sampling": HUB_VIDEOS,
    "test_processor_text_has_no_visual": "downloads its inputs from the Hub (no network here)",
    "test_processor_from_and_save_pretrained": (
        "compares the saved dict with the in-memory one, but saving adds `auto_map` on purpose (the package ships its "
        "code with every save so trust_remote_code loads work); test_processing checks the round trip"
    ),
    "test_processor_with_multiple_inputs": (
        "keyed on an `image_processor` attribute: ours has none (the video processor also prepares images), so the "
        "mixin writes an <image> into the text without passing an image"
    ),
    "test_apply_chat_template_decoded_video_0": (
        "a batch's frames are concatenated with their counts under `video_num_frames` (the model's argument), where "
        "the mixin knows only `num_frames_per_video`; test_processing checks the layout"
    ),
}
PROCESSOR_SKIPS["test_processor_from_and_save_pretrained_as_nested_dict"] = PROCESSOR_SKIPS[
    "test_processor_from_and_save_pretrained"
]
for _name, _reason in PROCESSOR_SKIPS.items():
    setattr(SlowFastProcessorCommonTests, _name, unittest.skip(_reason)(lambda self: None))
