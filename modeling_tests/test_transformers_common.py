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

import pytest
import torch

from fetch_transformers_tests import transformers_tests_path

try:
    sys.path.insert(0, str(transformers_tests_path()))
except RuntimeError as error:  # no sdist: nothing to run the mixins with
    pytest.skip(f"Transformers' common tests are unavailable: {error}", allow_module_level=True)

from tests.test_configuration_common import ConfigTester  # noqa: E402
from tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402
from transformers.testing_utils import torch_device  # noqa: E402

from conftest import activate_hybrid_layers  # noqa: E402
from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration, SlowFastModel  # noqa: E402

VIDEO_TOKEN_ID = 98
IMAGE_TOKEN_ID = 97


class SlowFastModelTester:
    """Tiny config and inputs: each sample holds one 4-frame video of 16x16 frames (2x2 patch grid)."""

    def __init__(self, parent, batch_size=3, text_length=7, num_frames=4):
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
        }
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.hidden_size = self.text_config["hidden_size"]
        self.vocab_size = self.text_config["vocab_size"]
        self.image_size = self.vision_config["image_size"]
        self.is_training = True
        # 4 frames of a 4x4 patch grid (16x16 px, patch 4); slow tokens pool 2x2 -> 2x2 per frame; fast tokens
        # average those over temporal windows of 2 -> 2 fast frames x 4 = 8 fast tokens
        self.num_fast_tokens = 2 * 4
        self.seq_length = text_length + self.num_fast_tokens

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
        config = self.get_config()
        input_ids = ids_tensor([self.batch_size, self.seq_length], IMAGE_TOKEN_ID - 2) + 2  # no placeholder
        input_ids[:, 2 : 2 + self.num_fast_tokens] = VIDEO_TOKEN_ID
        pixel_values_videos = floats_tensor(
            [self.batch_size, self.num_frames, 3, self.image_size, self.image_size]
        )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": pixel_values_videos,
        }
        return config, inputs


class SlowFastCommonTests(ModelTesterMixin):
    all_model_classes = (SlowFastModel, SlowFastForConditionalGeneration)
    _is_composite = True
    hybrid_alpha = 0.0
    test_torch_exportable = False  # `tests/exporters/` is not in the sdist

    def setUp(self):
        self.model_tester = SlowFastModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=SlowFastConfig,
            has_text_modality=False,
            common_properties=["video_token_id", "image_token_id", "vision_feature_layer"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class SlowFastCommonTestsGatesClosed(SlowFastCommonTests, unittest.TestCase):
    pass
