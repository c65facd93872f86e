"""
Splitting a slow-fast model at layer boundaries: `_no_split_modules` comes from the wrapped decoder's and vision
tower's own, accelerate's FSDP auto-wrap and device maps use it, and a model loaded with `device_map="auto"` under a
memory budget that offloads layers to disk generates what the plain model generates.
"""

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin, compute_module_sizes, fsdp_utils, infer_auto_device_map
from conftest import tiny_slowfast_model, tiny_vision_config, video_prompt
from test_modeling import activate_hybrid_layers, frames
from transformers import CONFIG_MAPPING

from slowfast_hf import SlowFastForConditionalGeneration
from slowfast_hf.hybrid_attention import decoder_layers
from slowfast_hf.slow_key_values import cached_slow_key_values
from slowfast_hf.transformers_compat import CACHE_KWARG

# (decoder family, vision config): the encoder blocks of each vision family, as its Transformers model names them
FAMILIES = {
    "qwen2+siglip": ("qwen2", lambda: tiny_vision_config("siglip_vision_model"), "SiglipEncoderLayer"),
    "llama+clip": ("llama", lambda: tiny_vision_config("clip_vision_model"), "CLIPEncoderLayer"),
    "qwen2+convnext": (
        "qwen2",
        lambda: CONFIG_MAPPING["convnext"](hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]),
        "ConvNextLayer",
    ),
}


def family_model(family: str):
    text_model_type, vision_config, _ = FAMILIES[family]
    return tiny_slowfast_model(text_model_type, vision_config=vision_config().to_dict())


def modules_of_class(model, class_name: str) -> list:
    return [module for module in model.modules() if type(module).__name__ == class_name]


@pytest.mark.parametrize("family", FAMILIES)
def test_no_split_modules_are_the_decoder_and_vision_tower_blocks(family):
    model = family_model(family)
    vision_block = FAMILIES[family][2]
    language_model = model.model.language_model
    declared = set(type(language_model)._no_split_modules) | set(type(model.model.vision_tower)._no_split_modules)
    decoder_layer = type(decoder_layers(language_model)[0]).__name__
    assert {decoder_layer, vision_block} <= model._no_split_modules <= declared
    for name in model._no_split_modules:  # only classes the model holds (accelerate rejects the others)
        assert modules_of_class(model, name), name
    for layer in decoder_layers(language_model):  # the cross-attention lives inside the (unsplit) decoder layer
        if hasattr(layer.self_attn, "cross_attn"):
            assert any(module is layer.self_attn.cross_attn for module in layer.modules())


@pytest.mark.skipif(not hasattr(fsdp_utils, "fsdp2_prepare_auto_wrap_policy"), reason="this accelerate has no FSDP2")
@pytest.mark.parametrize("family", FAMILIES)
def test_fsdp2_auto_wrap_makes_every_decoder_and_vision_layer_a_unit(family):
    """The policy `accelerate launch --config_file examples/accelerate_configs/fsdp.yaml` builds (no class named)."""
    model = family_model(family)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap")
    policy = fsdp_utils.fsdp2_prepare_auto_wrap_policy(plugin, model)
    layers = decoder_layers(model.model.language_model)
    assert all(policy(layer) for layer in layers)
    vision_layers = modules_of_class(model, FAMILIES[family][2])
    assert vision_layers and all(policy(layer) for layer in vision_layers)
    for layer in layers:  # nothing inside a decoder layer is a unit of its own: the layer stays whole
        assert not any(policy(module) for module in layer.modules() if module is not layer)


def test_auto_device_map_splits_between_decoder_layers_only():
    model = tiny_slowfast_model()
    sizes = compute_module_sizes(model)
    # room for about a third of the model on each of 3 devices: the decoder must be split somewhere
    budget = sizes[""] // 3 + max(sizes[f"model.language_model.layers.{i}"] for i in range(4))
    device_map = infer_auto_device_map(  # (older accelerate takes a list, not Transformers' set)
        model, max_memory={0: budget, 1: budget, 2: budget}, no_split_module_classes=list(model._no_split_modules)
    )
    assert len(set(device_map.values())) > 1
    layer_prefix = "model.language_model.layers."
    for name in device_map:
        if name.startswith(layer_prefix):  # whole layers only, never a part (e.g. `self_attn.cross_attn`)
            assert name[len(layer_prefix) :].isdigit(), name


def placement(device_map: dict, name: str):
    """Where `device_map` puts module `name` (the entry of its closest enclosing module)."""
    enclosing = [key for key in device_map if key == "" or name == key or name.startswith(key + ".")]
    return device_map[max(enclosing, key=len)]


@pytest.fixture(scope="module")
def saved_hybrid_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("device_map") / "model"
    activate_hybrid_layers(tiny_slowfast_model(seed=3)).save_pretrained(directory)
    return directory


def test_offloaded_device_map_generates_the_plain_models_tokens(saved_hybrid_model, tmp_path):
    plain = SlowFastForConditionalGeneration.from_pretrained(saved_hybrid_model)
    sizes = compute_module_sizes(plain)
    # the CPU holds about half of the model; accelerate offloads the rest, hybrid layers included, to disk
    budget = {"cpu": sizes[""] // 2, "disk": 10 * sizes[""]}
    offloaded = SlowFastForConditionalGeneration.from_pretrained(
        saved_hybrid_model, device_map="auto", max_memory=budget, offload_folder=tmp_path / "offload"
    )
    device_map = offloaded.hf_device_map
    print(f"device map: {device_map}")
    assert set(device_map.values()) == {"cpu", "disk"}
    assert placement(device_map, "model.language_model.layers.2") == "disk"  # a hybrid layer's weights live on disk

    video = frames(6, seed=1)
    input_ids = torch.tensor([video_prompt(plain, 6)])
    generated = {}
    for name, model in (("plain", plain), ("offloaded", offloaded)):
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                pixel_values_videos=video[None],
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=0,
                output_logits=True,
                return_dict_in_generate=True,
            )
        generated[name] = output
    assert generated["offloaded"].sequences.tolist() == generated["plain"].sequences.tolist()
    logits = {name: torch.stack(output.logits) for name, output in generated.items()}
    difference = (logits["offloaded"] - logits["plain"]).abs().max().item()
    print(f"offloaded vs plain: max |logits difference| = {difference:.2e}")
    assert difference < 1e-5


def test_slow_keys_values_are_projected_on_each_hybrid_layers_device(saved_hybrid_model, tmp_path):
    """With layers offloaded (their weights on the meta device between calls), each hybrid layer still projects the
    slow tokens itself, on the device its forward runs on, with its real weights."""
    plain = SlowFastForConditionalGeneration.from_pretrained(saved_hybrid_model)
    sizes = compute_module_sizes(plain)
    offloaded = SlowFastForConditionalGeneration.from_pretrained(
        saved_hybrid_model,
        device_map="auto",
        max_memory={"cpu": sizes[""] // 2, "disk": 10 * sizes[""]},
        offload_folder=tmp_path / "offload",
    )
    video = frames(6, seed=2)
    input_ids = torch.tensor([video_prompt(plain, 6)])
    key_values = {}
    for name, model in (("plain", plain), ("offloaded", offloaded)):
        with torch.no_grad():
            output = model(input_ids=input_ids, pixel_values_videos=video[None], use_cache=True)
        key_values[name] = cached_slow_key_values(getattr(output, CACHE_KWARG)).key_values
    expected, actual = key_values["plain"], key_values["offloaded"]
    assert sorted(actual) == sorted(expected) == [0, 2]
    for index, (key, value) in actual.items():
        assert key.device.type == value.device.type == "cpu"  # the execution device, not `meta`
        torch.testing.assert_close(key, expected[index][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(value, expected[index][1], rtol=0, atol=1e-6)
