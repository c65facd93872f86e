"""Shared fixtures: tiny, seeded models built in code (no network)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import CONFIG_MAPPING
from video_fixtures import long_video, video_files  # noqa: F401  (session fixtures: real encoded videos)

import slowfast_hf  # noqa: F401  (registers the Auto classes)
from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration
from slowfast_hf.hybrid_attention import decoder_layers

VOCAB_SIZE = 128
IMAGE_TOKEN_ID = 126
VIDEO_TOKEN_ID = 127
IMAGE_SIZE = 32
PATCH_SIZE = 8  # 4x4 patch grid per frame


# Prepended to the scripts that load checkpoints in fresh interpreters with `trust_remote_code=True`: there,
# `slowfast_hf` cannot be imported, so everything must come from the checkpoint folder.
BLOCK_SLOWFAST_HF = """
import importlib.abc
import sys


class BlockSlowFastHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "slowfast_hf" or name.startswith("slowfast_hf."):
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, BlockSlowFastHF())
"""


def tiny_text_config(model_type: str = "qwen2", **overrides):
    """A 4-layer decoder of `model_type` with grouped-query attention (4 query heads, 2 KV heads)."""
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    return CONFIG_MAPPING[model_type](**kwargs)


def tiny_vision_config(model_type: str = "siglip_vision_model", **overrides):
    kwargs = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    kwargs.update(overrides)
    return CONFIG_MAPPING[model_type](**kwargs)


def tiny_slowfast_config(text_model_type: str = "qwen2", text_overrides=None, **overrides):
    kwargs = dict(
        text_config=tiny_text_config(text_model_type, **(text_overrides or {})).to_dict(),
        vision_config=tiny_vision_config().to_dict(),
        hybrid_layers=[0, 2],
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        fast_temporal_stride=2,
    )
    kwargs.update(overrides)
    return SlowFastConfig(**kwargs)


def tiny_slowfast_model(text_model_type: str = "qwen2", seed: int = 0, **config_overrides):
    torch.manual_seed(seed)
    return SlowFastForConditionalGeneration(tiny_slowfast_config(text_model_type, **config_overrides)).eval()


def video_prompt(model, num_frames: int, prefix=(1, 2, 3), suffix=(4, 5, 6)) -> list[int]:
    """Token ids `prefix + placeholders + suffix`, with as many video placeholders as the model makes fast tokens."""
    grid = IMAGE_SIZE // PATCH_SIZE
    count = model.model.token_builder.num_fast_tokens(num_frames, grid, grid)
    return list(prefix) + [VIDEO_TOKEN_ID] * count + list(suffix)


def activate_hybrid_layers(model, alpha: float = 0.7, gate_bias: float = 0.5):
    """Make every hybrid layer's cross term matter: alpha (and the dynamic gate's bias) away from their zero init."""
    count = 0
    with torch.no_grad():
        for layer in decoder_layers(model.model.language_model):
            cross_attn = getattr(layer.self_attn, "cross_attn", None)
            if cross_attn is not None:
                cross_attn.gate_alpha.fill_(alpha)
                if hasattr(cross_attn, "gate_proj"):
                    cross_attn.gate_proj.bias.fill_(gate_bias)
                count += 1
    assert count > 0
    return model


@pytest.fixture
def model():
    return tiny_slowfast_model()


SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<video>", "<image>"]
TRAINING_TEXT = [
    "what happens in the video? a red square moves from left to right.",
    "describe the image. the colour of the square is blue, green or red.",
    "system\nuser\nassistant\nyou are a helpful assistant. question answer yes no",
    "which frame shows the small coloured square? it appears once near the end.",
] * 4


def train_tiny_tokenizer(vocab_size: int = 120):
    """A BPE tokenizer trained in the test session, wrapped as a `PreTrainedTokenizerFast`, with the ChatML and
    placeholder tokens as special tokens. Its vocabulary fits the tiny models (`VOCAB_SIZE`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(
        TRAINING_TEXT, trainer=trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<video>", "<image>"],
    )
    assert len(tokenizer) <= VOCAB_SIZE
    return tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tiny_tokenizer()
