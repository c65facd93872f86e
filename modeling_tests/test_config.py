"""`SlowFastConfig`: defaults, hybrid-layer resolution, validation, sub-configs, save/load and Auto registration."""

import json

import pytest
from conftest import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    VOCAB_SIZE,
    tiny_slowfast_config,
    tiny_text_config,
    tiny_vision_config,
)
from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig

from slowfast_hf import SlowFastConfig

STRIDE_FIELDS = [
    "slow_spatial_stride",
    "fast_temporal_sampling_stride",
    "fast_temporal_stride",
    "fast_spatial_stride",
    "min_fast_frames",
]


def without_name(config_dict):
    """`AutoConfig.from_pretrained` records where it loaded from; everything else must round-trip."""
    return {key: value for key, value in config_dict.items() if key != "_name_or_path"}


def tiny_kwargs(**overrides):
    kwargs = dict(
        text_config=tiny_text_config().to_dict(),
        vision_config=tiny_vision_config().to_dict(),
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
    )
    kwargs.update(overrides)
    return kwargs


# --------------------------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------------------------


def test_defaults_build():
    config = SlowFastConfig()
    assert config.model_type == "slowfast_video"
    assert isinstance(config.text_config, PreTrainedConfig)
    assert isinstance(config.vision_config, PreTrainedConfig)
    assert config.text_config.model_type == "qwen2"
    assert config.vision_config.model_type == "siglip_vision_model"
    # Transformers' default Qwen2Config has 32 layers: every 8th layer from 0
    assert config.hybrid_layers == list(range(0, config.text_config.num_hidden_layers, 8))
    assert config.hybrid_layer_interval is None
    assert config.projector_type == "mlp2x_gelu"
    assert config.cross_attn_gate == "dynamic_tanh_warmup"
    assert config.cross_attn_query_positions == "text"
    assert config.vision_feature_select_strategy == "full"
    assert config.slow_spatial_stride == 2
    assert config.fast_temporal_sampling_stride == 1
    assert config.fast_temporal_stride == 4
    assert config.fast_spatial_stride == 1
    assert config.min_fast_frames == 1
    assert config.init_cross_kv_from_lm is True
    assert config.image_token_id is None and config.video_token_id is None


def test_default_hybrid_layers_released_28_layer_decoder():
    # the released Qwen2-7B: 28 layers -> hybrid layers 0, 8, 16, 24
    text_config = CONFIG_MAPPING["qwen2"](
        num_hidden_layers=28,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB_SIZE,
    )
    config = SlowFastConfig(text_config=text_config)
    assert config.text_config.num_hidden_layers == 28
    assert config.hybrid_layers == [0, 8, 16, 24]
    config = SlowFastConfig(text_config=text_config.to_dict())
    assert config.hybrid_layers == [0, 8, 16, 24]


def test_default_interval_on_small_decoder():
    config = SlowFastConfig(**tiny_kwargs(text_config=tiny_text_config(num_hidden_layers=20).to_dict()))
    assert config.hybrid_layers == [0, 8, 16]
    config = SlowFastConfig(**tiny_kwargs())  # 4 layers
    assert config.hybrid_layers == [0]


# --------------------------------------------------------------------------------------------------------------
# Hybrid-layer resolution and round trip
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "interval, min_depth, max_depth, expected",
    [
        (2, 1, 4, [1, 3]),
        (2, 1, None, [1, 3]),
        (1, 0, None, [0, 1, 2, 3]),
        (3, 0, 4, [0, 3]),
        (5, 0, None, [0]),
        (1, 2, 3, [2]),
    ],
)
def test_interval_resolves_into_list(interval, min_depth, max_depth, expected):
    config = SlowFastConfig(
        **tiny_kwargs(
            hybrid_layer_interval=interval, hybrid_layer_min_depth=min_depth, hybrid_layer_max_depth=max_depth
        )
    )
    assert config.hybrid_layers == expected
    assert config.hybrid_layer_interval is None
    assert config.hybrid_layer_min_depth == 0
    assert config.hybrid_layer_max_depth is None


def test_explicit_hybrid_layers_sorted():
    config = SlowFastConfig(**tiny_kwargs(hybrid_layers=[3, 0, 2]))
    assert config.hybrid_layers == [0, 2, 3]
    assert SlowFastConfig(**tiny_kwargs(hybrid_layers=[])).hybrid_layers == []


def test_save_load_round_trip(tmp_path):
    config = SlowFastConfig(
        **tiny_kwargs(
            hybrid_layer_interval=2,
            hybrid_layer_min_depth=1,
            hybrid_layer_max_depth=4,
            projector_type="linear",
            cross_attn_gate="tanh_warmup",
            cross_attn_query_positions="text_after_first_visual",
            slow_spatial_stride=3,
            fast_temporal_sampling_stride=2,
            fast_temporal_stride=6,
            fast_spatial_stride=2,
            min_fast_frames=4,
        )
    )
    assert config.hybrid_layers == [1, 3]
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "slowfast_video"
    assert saved["hybrid_layers"] == [1, 3]
    assert saved.get("hybrid_layer_interval") is None

    loaded = SlowFastConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.hybrid_layers == [1, 3]
    assert loaded.hybrid_layer_interval is None
    assert loaded.text_config.model_type == "qwen2"
    assert loaded.vision_config.model_type == "siglip_vision_model"
    assert type(loaded.text_config) is type(config.text_config)
    assert type(loaded.vision_config) is type(config.vision_config)

    # a second round trip is a fixed point
    loaded.save_pretrained(tmp_path / "again")
    assert SlowFastConfig.from_pretrained(tmp_path / "again").to_dict() == config.to_dict()


def test_round_trip_of_defaults(tmp_path):
    config = SlowFastConfig()
    config.save_pretrained(tmp_path)
    loaded = SlowFastConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.hybrid_layers == [0, 8, 16, 24]


def test_to_dict_from_dict_round_trip():
    config = tiny_slowfast_config()
    rebuilt = SlowFastConfig.from_dict(config.to_dict())
    assert rebuilt.to_dict() == config.to_dict()
    assert rebuilt.hybrid_layers == [0, 2]


# --------------------------------------------------------------------------------------------------------------
# Validation: each invalid value names its field
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [[4], [0, 5], [-1], [0, 0], [1, 2, 1], [1.0], [True]])
def test_invalid_hybrid_layers(layers):
    with pytest.raises(ValueError, match="hybrid_layers"):
        SlowFastConfig(**tiny_kwargs(hybrid_layers=layers))


def test_hybrid_layers_and_interval_exclusive():
    with pytest.raises(ValueError, match="hybrid_layer_interval"):
        SlowFastConfig(**tiny_kwargs(hybrid_layers=[0], hybrid_layer_interval=2))


@pytest.mark.parametrize("interval", [0, -2, 1.5, True])
def test_invalid_interval(interval):
    with pytest.raises(ValueError, match="hybrid_layer_interval"):
        SlowFastConfig(**tiny_kwargs(hybrid_layer_interval=interval))


@pytest.mark.parametrize(
    "field, value",
    [
        ("hybrid_layer_max_depth", 0),
        ("hybrid_layer_max_depth", 5),
        ("hybrid_layer_max_depth", 2.5),
        ("hybrid_layer_min_depth", -1),
        ("hybrid_layer_min_depth", 4),
        ("hybrid_layer_min_depth", 1.0),
    ],
)
def test_invalid_depths(field, value):
    with pytest.raises(ValueError, match=field):
        SlowFastConfig(**tiny_kwargs(hybrid_layer_interval=1, **{field: value}))


def test_min_depth_not_below_max_depth():
    with pytest.raises(ValueError, match="hybrid_layer_min_depth"):
        SlowFastConfig(**tiny_kwargs(hybrid_layer_interval=1, hybrid_layer_min_depth=2, hybrid_layer_max_depth=2))


@pytest.mark.parametrize("field", STRIDE_FIELDS)
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_invalid_strides(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SlowFastConfig(**tiny_kwargs(**{field: value}))


@pytest.mark.parametrize(
    "field, value",
    [
        ("cross_attn_gate", "sigmoid"),
        ("cross_attn_gate", "whole-dynamic-tanh-warmup"),  # the released name is spelled differently here
        ("projector_type", "mlp3x_gelu"),
        ("projector_type", "identity"),
        ("cross_attn_query_positions", "all"),
        ("vision_feature_select_strategy", "cls"),
    ],
)
def test_unknown_choices(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SlowFastConfig(**tiny_kwargs(**{field: value}))


@pytest.mark.parametrize("field", ["image_token_id", "video_token_id"])
@pytest.mark.parametrize("value", [VOCAB_SIZE, VOCAB_SIZE + 10, -1, 3.0])
def test_token_ids_out_of_vocab(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SlowFastConfig(**tiny_kwargs(**{field: value}))


def test_token_ids_at_vocab_edges_accepted():
    config = SlowFastConfig(**tiny_kwargs(image_token_id=0, video_token_id=VOCAB_SIZE - 1))
    assert (config.image_token_id, config.video_token_id) == (0, VOCAB_SIZE - 1)


def test_image_and_video_token_ids_must_differ():
    with pytest.raises(ValueError, match="image_token_id"):
        SlowFastConfig(**tiny_kwargs(image_token_id=5, video_token_id=5))


def test_vision_feature_layer_must_be_int():
    with pytest.raises(ValueError, match="vision_feature_layer"):
        SlowFastConfig(**tiny_kwargs(vision_feature_layer=1.5))
    assert SlowFastConfig(**tiny_kwargs(vision_feature_layer=-2)).vision_feature_layer == -2


# --------------------------------------------------------------------------------------------------------------
# Sub-configs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen3", "qwen2"])
@pytest.mark.parametrize("as_dict", [False, True])
def test_text_config_model_types(model_type, as_dict):
    text_config = tiny_text_config(model_type)
    text_config = text_config.to_dict() if as_dict else text_config
    config = SlowFastConfig(**tiny_kwargs(text_config=text_config, hybrid_layers=[1]))
    assert config.text_config.model_type == model_type
    assert type(config.text_config) is CONFIG_MAPPING[model_type]
    assert config.text_config.num_hidden_layers == 4
    assert config.text_config.vocab_size == VOCAB_SIZE
    assert config.hybrid_layers == [1]


def test_text_config_model_type_round_trip(tmp_path):
    config = SlowFastConfig(**tiny_kwargs(text_config=tiny_text_config("llama")))
    config.save_pretrained(tmp_path)
    loaded = SlowFastConfig.from_pretrained(tmp_path)
    assert loaded.text_config.model_type == "llama"
    assert loaded.to_dict() == config.to_dict()


def test_vocab_check_uses_the_text_config():
    text_config = tiny_text_config(vocab_size=1000)
    config = SlowFastConfig(**tiny_kwargs(text_config=text_config, image_token_id=900, video_token_id=901))
    assert config.video_token_id == 901


@pytest.mark.parametrize("as_dict", [False, True])
def test_vision_config_clip(as_dict):
    vision = CONFIG_MAPPING["clip_vision_model"](
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    vision = vision.to_dict() if as_dict else vision
    config = SlowFastConfig(**tiny_kwargs(vision_config=vision, vision_feature_select_strategy="default"))
    assert config.vision_config.model_type == "clip_vision_model"
    assert type(config.vision_config) is CONFIG_MAPPING["clip_vision_model"]
    assert config.vision_config.hidden_size == 32


@pytest.mark.parametrize("as_dict", [False, True])
def test_vision_config_convnext(as_dict, tmp_path):
    vision = CONFIG_MAPPING["convnext"](hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    config = SlowFastConfig(**tiny_kwargs(vision_config=vision.to_dict() if as_dict else vision))
    assert config.vision_config.model_type == "convnext"
    assert config.vision_config.hidden_sizes == [8, 16, 32, 64]
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.vision_config.model_type == "convnext"
    assert without_name(loaded.to_dict()) == without_name(config.to_dict())


# --------------------------------------------------------------------------------------------------------------
# Auto classes
# --------------------------------------------------------------------------------------------------------------


def test_autoconfig_for_model():
    config = AutoConfig.for_model("slowfast_video")
    assert isinstance(config, SlowFastConfig)
    assert config.hybrid_layers == [0, 8, 16, 24]
    config = AutoConfig.for_model("slowfast_video", **tiny_kwargs(hybrid_layers=[2]))
    assert isinstance(config, SlowFastConfig)
    assert config.hybrid_layers == [2]


def test_autoconfig_from_pretrained(tmp_path):
    config = tiny_slowfast_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SlowFastConfig)
    assert without_name(loaded.to_dict()) == without_name(config.to_dict())
    assert loaded.hybrid_layers == [0, 2]
    assert loaded.text_config.model_type == "qwen2"
    assert loaded.vision_config.model_type == "siglip_vision_model"


# --------------------------------------------------------------------------------------------------------------
# Booleans are not integers: every integer field refuses them
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        dict(hybrid_layer_interval=1, hybrid_layer_max_depth=True),
        dict(hybrid_layer_interval=1, hybrid_layer_min_depth=True),
        dict(image_token_id=True),
    ],
    ids=["max_depth", "min_depth", "image_token_id"],
)
def test_bools_rejected_like_other_integer_fields(overrides):
    field = next(name for name in overrides if name != "hybrid_layer_interval")
    with pytest.raises(ValueError, match=f"`{field}`"):
        SlowFastConfig(**tiny_kwargs(**overrides))
