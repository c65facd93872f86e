"""save_pretrained / from_pretrained, the Auto classes, remote code (`trust_remote_code=True` without the package),
tied embeddings, and `from_vision_text_pretrained`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import (
    BLOCK_SLOWFAST_HF,
    IMAGE_SIZE,
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    activate_hybrid_layers,
    tiny_slowfast_model,
    tiny_text_config,
    tiny_vision_config,
    video_prompt,
)
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlamaForCausalLM,
    Qwen2ForCausalLM,
    SiglipVisionModel,
)

from slowfast_hf import SlowFastConfig, SlowFastForConditionalGeneration, SlowFastModel
from slowfast_hf.hybrid_attention import decoder_layers

CODE_FILES = (
    "configuration_slowfast.py",
    "modeling_slowfast.py",
    "hybrid_attention.py",
    "token_builder.py",
    "transformers_compat.py",
    "visual_inputs.py",
)


def video_inputs(model, num_frames: int = 3, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    pixel_values_videos = torch.randn(num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    input_ids = torch.tensor([video_prompt(model, num_frames)])
    return input_ids, pixel_values_videos


def assert_same_tensors(expected: dict, actual: dict):
    assert set(expected) == set(actual), set(expected) ^ set(actual)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def all_tensors(model) -> dict:
    """Every parameter and buffer (persistent or not) by name, plus the state dict."""
    tensors = dict(model.state_dict())
    tensors.update({f"buffer:{name}": buffer for name, buffer in model.named_buffers()})
    return tensors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model with active hybrid layers, saved; plus its logits on a video prompt."""
    path = tmp_path_factory.mktemp("slowfast_saved")
    model = activate_hybrid_layers(tiny_slowfast_model(seed=3))
    model.save_pretrained(path)
    input_ids, pixel_values_videos = video_inputs(model)
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
    return path, model, input_ids, pixel_values_videos, logits


def test_save_pretrained_writes_weights_config_and_code(saved):
    path, model, *_ = saved
    files = set(os.listdir(path))
    assert "model.safetensors" in files
    assert "config.json" in files
    for name in CODE_FILES:
        assert name in files, f"{name} was not copied next to the checkpoint: {sorted(files)}"
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "slowfast_video"
    auto_map = config["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_slowfast.SlowFastConfig"
    assert auto_map["AutoModelForImageTextToText"] == "modeling_slowfast.SlowFastForConditionalGeneration"
    assert config["hybrid_layers"] == [0, 2]
    # the shipped code is the package's own code
    import slowfast_hf

    package_dir = os.path.dirname(slowfast_hf.__file__)
    for name in CODE_FILES:
        with open(os.path.join(package_dir, name)) as source:
            assert (path / name).read_text() == source.read(), name


def test_save_pretrained_auto_map_has_auto_model(saved):
    """Saving the generation model must also map `AutoModel`, so that
    `AutoModel.from_pretrained(path, trust_remote_code=True)` works without the package (Transformers only writes the
    saved class's own entry unless `config.auto_map` already has the others)."""
    path, *_ = saved
    auto_map = json.loads((path / "config.json").read_text())["auto_map"]
    assert auto_map.get("AutoModel") == "modeling_slowfast.SlowFastModel", auto_map


def test_from_pretrained_restores_every_tensor_and_logits(saved):
    path, model, input_ids, pixel_values_videos, logits = saved
    loaded = SlowFastForConditionalGeneration.from_pretrained(path).eval()
    assert type(loaded) is SlowFastForConditionalGeneration
    assert_same_tensors(all_tensors(model), all_tensors(loaded))
    alphas = [p for n, p in loaded.named_parameters() if n.endswith("gate_alpha")]
    assert len(alphas) == 2 and all(a.item() == pytest.approx(0.7) for a in alphas)
    with torch.no_grad():
        reloaded_logits = loaded(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
    assert torch.equal(reloaded_logits, logits)


def test_auto_classes(saved):
    path, model, input_ids, pixel_values_videos, logits = saved
    config = AutoConfig.from_pretrained(path)
    assert type(config) is SlowFastConfig
    assert config.hybrid_layers == [0, 2]
    assert config.video_token_id == VIDEO_TOKEN_ID and config.image_token_id == IMAGE_TOKEN_ID

    generation_model = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert type(generation_model) is SlowFastForConditionalGeneration
    with torch.no_grad():
        generation_logits = generation_model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
    assert torch.equal(generation_logits, logits)

    base_model = AutoModel.from_pretrained(path).eval()
    assert type(base_model) is SlowFastModel
    expected = {name.removeprefix("model."): t for name, t in model.state_dict().items() if name.startswith("model.")}
    assert_same_tensors(expected, dict(base_model.state_dict()))
    with torch.no_grad():
        hidden = base_model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).last_hidden_state
        expected_hidden = model.model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).last_hidden_state
    assert torch.equal(hidden, expected_hidden)


REMOTE_CODE_SCRIPT = BLOCK_SLOWFAST_HF + textwrap.dedent(
    """
    try:
        import slowfast_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("slowfast_hf is still importable")

    import torch
    from transformers import AutoModel, AutoModelForImageTextToText

    path, inputs_file, out_file = sys.argv[1:4]
    inputs = torch.load(inputs_file)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    assert "slowfast_hf" not in sys.modules, "loading imported the installed package"
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"]).logits
    out = {"logits": logits, "class": type(model).__name__, "module": type(model).__module__}
    try:
        base_model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            out["hidden"] = base_model(
                input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"]
            ).last_hidden_state
        out["base_class"] = type(base_model).__name__
        out["base_module"] = type(base_model).__module__
    except Exception as error:  # reported by its own test
        out["base_error"] = repr(error)[:300]
    torch.save(out, out_file)
    """
)


@pytest.fixture(scope="module")
def remote_code_run(saved, tmp_path_factory):
    """Load the saved checkpoint in a fresh interpreter where `slowfast_hf` cannot be imported."""
    path, model, input_ids, pixel_values_videos, logits = saved
    work = tmp_path_factory.mktemp("remote_code")
    script = work / "load_remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    inputs_file, out_file = work / "inputs.pt", work / "out.pt"
    torch.save({"input_ids": input_ids, "pixel_values_videos": pixel_values_videos}, inputs_file)
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules_cache"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(inputs_file), str(out_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return torch.load(out_file)


def test_trust_remote_code_without_the_package(saved, remote_code_run):
    logits = saved[-1]
    out = remote_code_run
    assert out["class"] == "SlowFastForConditionalGeneration"
    assert not out["module"].startswith("slowfast_hf"), out["module"]
    assert out["module"].startswith("transformers_modules"), out["module"]
    torch.testing.assert_close(out["logits"], logits, atol=1e-6, rtol=0)


def test_trust_remote_code_auto_model_without_the_package(saved, remote_code_run):
    path, model, input_ids, pixel_values_videos, logits = saved
    out = remote_code_run
    assert "base_error" not in out, out.get("base_error")
    assert out["base_class"] == "SlowFastModel"
    assert out["base_module"].startswith("transformers_modules"), out["base_module"]
    with torch.no_grad():
        expected = model.model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).last_hidden_state
    torch.testing.assert_close(out["hidden"], expected, atol=1e-6, rtol=0)


def test_tied_word_embeddings_survive_save_and_load(tmp_path):
    model = activate_hybrid_layers(tiny_slowfast_model(seed=4, tie_word_embeddings=True))
    embeddings = model.get_input_embeddings().weight
    assert model.lm_head.weight is embeddings
    model.save_pretrained(tmp_path)
    loaded = SlowFastForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.tie_word_embeddings
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    assert torch.equal(loaded.lm_head.weight, embeddings)
    assert_same_tensors(all_tensors(model), all_tensors(loaded))
    input_ids, pixel_values_videos = video_inputs(model)
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
        actual = loaded(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
    assert torch.equal(actual, expected)


# ---------------------------------------------------------------------------------------------------------------
# from_vision_text_pretrained


def tiny_pretrained_parts(text_model_class, text_model_type: str, tie_word_embeddings: bool, seed: int = 7):
    torch.manual_seed(seed)
    vision_model = SiglipVisionModel(tiny_vision_config()).eval()
    text_config = tiny_text_config(text_model_type, tie_word_embeddings=tie_word_embeddings)
    text_model = text_model_class(text_config).eval()
    return vision_model, text_model


def cloned_state(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


TEXT_MODELS = [
    pytest.param(Qwen2ForCausalLM, "qwen2", False, id="qwen2"),
    pytest.param(LlamaForCausalLM, "llama", True, id="llama-tied"),
]


@pytest.mark.parametrize("as_paths", [True, False], ids=["paths", "objects"])
@pytest.mark.parametrize("text_model_class, text_model_type, tied", TEXT_MODELS)
def test_from_vision_text_pretrained(tmp_path, text_model_class, text_model_type, tied, as_paths):
    vision_model, text_model = tiny_pretrained_parts(text_model_class, text_model_type, tied)
    vision_state, text_state = cloned_state(vision_model), cloned_state(text_model)
    input_ids = torch.tensor([[1, 5, 9, 17, 33, 2, 64, 100]])
    with torch.no_grad():
        text_logits = text_model(input_ids=input_ids).logits
    if as_paths:
        vision_model.save_pretrained(tmp_path / "vision")
        text_model.save_pretrained(tmp_path / "text")
        vision_source, text_source = str(tmp_path / "vision"), str(tmp_path / "text")
    else:
        vision_source, text_source = vision_model, text_model

    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        vision_source,
        text_source,
        hybrid_layers=[1],
        image_token_id=IMAGE_TOKEN_ID,
        video_token_id=VIDEO_TOKEN_ID,
        fast_temporal_stride=2,
    ).eval()
    assert type(model) is SlowFastForConditionalGeneration
    assert model.config.hybrid_layers == [1]
    assert model.config.tie_word_embeddings == tied
    for name, tensor in model.named_parameters():
        assert tensor.device.type != "meta", name
    for name, tensor in model.named_buffers():
        assert tensor.device.type != "meta", name

    # vision weights unchanged
    model_vision_state = model.model.vision_tower.state_dict()
    assert_same_tensors(vision_state, dict(model_vision_state))
    # decoder weights unchanged (the only new keys are the hybrid layer's)
    decoder_state = model.model.language_model.state_dict()
    base_decoder_state = {n.removeprefix("model."): t for n, t in text_state.items() if n.startswith("model.")}
    new_keys = set(decoder_state) - set(base_decoder_state)
    assert new_keys and all(key.startswith("layers.1.self_attn.cross_attn.") for key in new_keys), new_keys
    assert_same_tensors(base_decoder_state, {n: decoder_state[n] for n in base_decoder_state})
    lm_head_key = "lm_head.weight" if "lm_head.weight" in text_state else "model.embed_tokens.weight"
    assert torch.equal(model.lm_head.weight, text_state[lm_head_key])
    if tied:
        assert model.lm_head.weight is model.get_input_embeddings().weight

    # hybrid parameters start as DESIGN §2 says
    attention = decoder_layers(model.model.language_model)[1].self_attn
    cross_attn = attention.cross_attn
    assert torch.equal(cross_attn.kv_proj.weight, torch.cat([attention.k_proj.weight, attention.v_proj.weight]))
    if attention.k_proj.bias is not None:
        assert torch.equal(cross_attn.kv_proj.bias, torch.cat([attention.k_proj.bias, attention.v_proj.bias]))
    else:
        assert attention.cross_attn.kv_proj.bias is None
    assert torch.equal(attention.cross_attn.gate_alpha, torch.zeros(1))
    for index, layer in enumerate(decoder_layers(model.model.language_model)):
        assert hasattr(layer.self_attn, "cross_attn") == (index == 1)

    # text-only logits equal the original causal LM's exactly
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    assert torch.equal(logits, text_logits)

    # and the model runs on a video (alpha = 0: the hybrid layer is the base layer)
    frames = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        video_logits = model(input_ids=torch.tensor([video_prompt(model, 3)]), pixel_values_videos=frames).logits
    assert torch.isfinite(video_logits).all()


def test_from_vision_text_pretrained_model_saves_and_reloads(tmp_path):
    vision_model, text_model = tiny_pretrained_parts(Qwen2ForCausalLM, "qwen2", False)
    model = SlowFastForConditionalGeneration.from_vision_text_pretrained(
        vision_model, text_model, hybrid_layers=[1], image_token_id=IMAGE_TOKEN_ID, video_token_id=VIDEO_TOKEN_ID
    ).eval()
    activate_hybrid_layers(model)
    model.save_pretrained(tmp_path)
    loaded = SlowFastForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert_same_tensors(dict(model.state_dict()), dict(loaded.state_dict()))
    frames = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    input_ids = torch.tensor([video_prompt(model, 4)])
    with torch.no_grad():
        expected = model(input_ids=input_ids, pixel_values_videos=frames).logits
        actual = loaded(input_ids=input_ids, pixel_values_videos=frames).logits
    assert torch.equal(actual, expected)


def test_from_vision_text_pretrained_rejects_bad_arguments():
    vision_model, text_model = tiny_pretrained_parts(Qwen2ForCausalLM, "qwen2", False)
    ids = dict(video_token_id=VIDEO_TOKEN_ID)
    with pytest.raises(ValueError, match="text_config"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(
            vision_model, text_model, text_config=tiny_text_config().to_dict(), **ids
        )
    with pytest.raises(ValueError, match="vision_config"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(
            vision_model, text_model, vision_config=tiny_vision_config().to_dict(), **ids
        )
    with pytest.raises(ValueError, match="vision_model_name_or_path"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(3, text_model, **ids)
    with pytest.raises(ValueError, match="text_model_name_or_path"):
        SlowFastForConditionalGeneration.from_vision_text_pretrained(vision_model, 3, **ids)
