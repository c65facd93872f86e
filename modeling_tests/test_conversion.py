"""
Conversion of released slow-fast checkpoints (`convert_official`) and of LLaVA-OneVision checkpoints
(`convert_llava_onevision`), on tiny checkpoints built here.

The released checkpoint is written the way the released code saves it (LLaVA names, timm ConvNeXt names, the
per-head `(h kv d)` slow K/V layout, 2 safetensors shards + index). The references below compute the released math
(DESIGN §2) in plain torch straight from those raw tensors, independently of the converted model's modules.
"""

import json
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TRAINING_TEXT, train_tiny_tokenizer
from safetensors.torch import save_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
)

from slowfast_hf import SlowFastProcessor, SlowFastTokenBuilder
from slowfast_hf.convert_llava_onevision import convert_llava_onevision
from slowfast_hf.convert_llava_onevision import main as llava_onevision_main
from slowfast_hf.convert_official import convert_official
from slowfast_hf.convert_official import main as official_main
from slowfast_hf.hybrid_attention import decoder_layers
from slowfast_hf.video_processing_slowfast import CLIP_MEAN, CLIP_STD

# The tiny released checkpoint: Qwen2 with grouped-query attention (Hkv = 2 > 1) and a 4-stage timm ConvNeXt.
VOCAB_SIZE = 128
HIDDEN_SIZE, INTERMEDIATE_SIZE, NUM_LAYERS, NUM_HEADS, NUM_KV_HEADS = 64, 128, 4, 4, 2
HEAD_DIM = HIDDEN_SIZE // NUM_HEADS
ROPE_THETA, RMS_EPS = 10000.0, 1e-6
CONVNEXT_DEPTHS, CONVNEXT_WIDTHS = (1, 2, 1, 1), (8, 16, 16, 32)
IMAGE_SIZE = 128  # ConvNeXt stride 32 -> a 4x4 feature grid
HYBRID_LAYERS = [1, 3]  # cross_attn_every_n_layers 2 from cross_attn_min_layer_depth 1
NUM_FRAMES = 8  # from the folder name, like the public ids' "frame64"
VISION = "model.vision_tower.vision_tower."
# The released timm ConvNeXt-XXL's layer norms (Transformers' ConvNextModel hard-codes 1e-6 in its inner ones; the
# converted config's `vision_layer_norm_eps` makes it use this).
RELEASED_CONVNEXT_EPS = 1e-5


def released_tokenizer():
    """A BPE tokenizer like Qwen2's: ChatML special tokens, no `<video>` / `<image>` placeholders, no unk token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(TRAINING_TEXT, trainer=trainers.BpeTrainer(vocab_size=100, special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
    )


def released_config(tokenizer, **overrides) -> dict:
    """config.json as the released code writes it: a Qwen2 config plus LLaVA and slow-fast keys."""
    config = dict(
        architectures=["LlavaQwenSlowFastForCausalLM"],
        model_type="llava_qwen_slow_fast",
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        hidden_act="silu",
        max_position_embeddings=512,
        initializer_range=0.02,
        rms_norm_eps=RMS_EPS,
        rope_theta=ROPE_THETA,
        rope_scaling=None,
        use_sliding_window=False,
        sliding_window=4096,
        max_window_layers=NUM_LAYERS,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        torch_dtype="float32",
        use_cache=True,
        mm_vision_tower=f"convnext-{IMAGE_SIZE}",
        mm_hidden_size=CONVNEXT_WIDTHS[-1],
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2,  # ignored by the released ConvNeXt tower, which always returns its last stage
        mm_patch_merge_type="spatial_unpad",  # makes the released model carry `model.image_newline`
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        tile_image_input=False,
        cross_attn_every_n_layers=2,
        cross_attn_min_layer_depth=1,
        cross_attn_max_layer_depth=None,
        cross_attn_implementation="text-only-vanilla-flashattn",
        cross_attn_gating_type="whole-dynamic-tanh-warmup",
        initialize_cross_attn_kv_from_lm=True,
        mm_video_pooling_stride=2,
        fast_token_spatial_stride=1,
        fast_token_temporal_stride=2,
        fast_token_temporal_sampling_stride=1,
        min_fast_frames=1,
    )
    config.update(overrides)
    return config


def released_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the released names, scaled so that every part (norm weights, biases, layer scales,
    the gate) visibly matters."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, mean=0.0):
        return mean + scale * torch.randn(*shape, generator=generator)

    def norm(prefix, width):
        return {f"{prefix}.weight": randn(width, scale=0.1, mean=1.0), f"{prefix}.bias": randn(width, scale=0.1)}

    def linear(prefix, out_features, in_features, bias=True):
        tensors = {f"{prefix}.weight": randn(out_features, in_features, scale=in_features**-0.5)}
        if bias:
            tensors[f"{prefix}.bias"] = randn(out_features, scale=0.1)
        return tensors

    tensors = {
        "model.embed_tokens.weight": randn(VOCAB_SIZE, HIDDEN_SIZE),
        "lm_head.weight": randn(VOCAB_SIZE, HIDDEN_SIZE),
    }
    tensors["model.norm.weight"] = randn(HIDDEN_SIZE, scale=0.1, mean=1.0)
    kv_size = NUM_KV_HEADS * HEAD_DIM
    for i in range(NUM_LAYERS):
        prefix = f"model.layers.{i}"
        tensors[f"{prefix}.input_layernorm.weight"] = randn(HIDDEN_SIZE, scale=0.1, mean=1.0)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = randn(HIDDEN_SIZE, scale=0.1, mean=1.0)
        tensors |= linear(f"{prefix}.self_attn.q_proj", HIDDEN_SIZE, HIDDEN_SIZE)
        tensors |= linear(f"{prefix}.self_attn.k_proj", kv_size, HIDDEN_SIZE)
        tensors |= linear(f"{prefix}.self_attn.v_proj", kv_size, HIDDEN_SIZE)
        tensors |= linear(f"{prefix}.self_attn.o_proj", HIDDEN_SIZE, HIDDEN_SIZE, bias=False)
        tensors |= linear(f"{prefix}.mlp.gate_proj", INTERMEDIATE_SIZE, HIDDEN_SIZE, bias=False)
        tensors |= linear(f"{prefix}.mlp.up_proj", INTERMEDIATE_SIZE, HIDDEN_SIZE, bias=False)
        tensors |= linear(f"{prefix}.mlp.down_proj", HIDDEN_SIZE, INTERMEDIATE_SIZE, bias=False)
        if i in HYBRID_LAYERS:  # random, not [Wk ; Wv]: the per-head layout must be read right
            tensors |= linear(f"{prefix}.self_attn.cross_attn_kv_proj", 2 * kv_size, HIDDEN_SIZE)
            tensors[f"{prefix}.self_attn.cross_attn_gate_proj.0.weight"] = randn(1, HIDDEN_SIZE, scale=0.3)
            tensors[f"{prefix}.self_attn.cross_attn_gate_proj.0.bias"] = torch.tensor([0.5])
            tensors[f"{prefix}.self_attn.cross_attn_warm_up_gate"] = torch.tensor([0.8 + 0.1 * i])
    tensors |= linear("model.mm_projector.0", HIDDEN_SIZE, CONVNEXT_WIDTHS[-1])
    tensors |= linear("model.mm_projector.2", HIDDEN_SIZE, HIDDEN_SIZE)
    tensors["model.image_newline"] = randn(HIDDEN_SIZE)

    tensors[f"{VISION}stem.0.weight"] = randn(CONVNEXT_WIDTHS[0], 3, 4, 4, scale=0.2)
    tensors[f"{VISION}stem.0.bias"] = randn(CONVNEXT_WIDTHS[0], scale=0.1)
    tensors |= norm(f"{VISION}stem.1", CONVNEXT_WIDTHS[0])
    for stage, (depth, width) in enumerate(zip(CONVNEXT_DEPTHS, CONVNEXT_WIDTHS)):
        if stage > 0:
            previous = CONVNEXT_WIDTHS[stage - 1]
            tensors |= norm(f"{VISION}stages.{stage}.downsample.0", previous)
            tensors[f"{VISION}stages.{stage}.downsample.1.weight"] = randn(width, previous, 2, 2, scale=0.2)
            tensors[f"{VISION}stages.{stage}.downsample.1.bias"] = randn(width, scale=0.1)
        for block in range(depth):
            prefix = f"{VISION}stages.{stage}.blocks.{block}"
            tensors[f"{prefix}.conv_dw.weight"] = randn(width, 1, 7, 7, scale=0.15)
            tensors[f"{prefix}.conv_dw.bias"] = randn(width, scale=0.1)
            tensors |= norm(f"{prefix}.norm", width)
            tensors |= linear(f"{prefix}.mlp.fc1", 4 * width, width)
            tensors |= linear(f"{prefix}.mlp.fc2", width, 4 * width)
            tensors[f"{prefix}.gamma"] = randn(width, scale=0.1, mean=0.5)
    tensors |= norm(f"{VISION}head.norm", CONVNEXT_WIDTHS[-1])
    tensors |= linear(f"{VISION}head.fc", 10, CONVNEXT_WIDTHS[-1])
    return tensors


def write_released_checkpoint(directory, tensors=None, tokenizer=None, sharded=True, **config_overrides):
    """A released-format folder: config.json, 2 safetensors shards + index (or one `model.safetensors`), the
    tokenizer, generation_config.json."""
    tensors = released_tensors() if tensors is None else tensors
    tokenizer = released_tokenizer() if tokenizer is None else tokenizer
    directory.mkdir(parents=True)
    names = sorted(tensors)
    if sharded:
        shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": {name: file for file, shard_names in shards.items() for name in shard_names},
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        shards = {"model.safetensors": names}
    for file, shard_names in shards.items():
        save_file({name: tensors[name].contiguous() for name in shard_names}, directory / file, {"format": "pt"})
    (directory / "config.json").write_text(json.dumps(released_config(tokenizer, **config_overrides)))
    tokenizer.save_pretrained(directory)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id).save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------------
# Plain-torch references of the released model, computed from the raw released tensors
# ---------------------------------------------------------------------------------------------------------------


def layer_norm_2d(x, weight, bias, eps):
    """timm LayerNorm2d: normalise (B, C, H, W) over channels."""
    mean = x.mean(dim=1, keepdim=True)
    variance = (x - mean).pow(2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight[:, None, None] + bias[:, None, None]


def timm_convnext(pixels, tensors, eps=RELEASED_CONVNEXT_EPS):
    """A timm-style ConvNeXt: stem conv 4x4/4 + LayerNorm2d; per stage (after the first) LayerNorm2d + conv 2x2/2;
    blocks: depthwise 7x7 -> LayerNorm (channels last) -> fc1 -> GELU -> fc2 -> gamma -> residual. (B, C, h, w)."""
    t = {name.removeprefix(VISION): tensor for name, tensor in tensors.items() if name.startswith(VISION)}
    x = F.conv2d(pixels, t["stem.0.weight"], t["stem.0.bias"], stride=4)
    x = layer_norm_2d(x, t["stem.1.weight"], t["stem.1.bias"], eps)
    for stage, depth in enumerate(CONVNEXT_DEPTHS):
        if stage > 0:
            x = layer_norm_2d(x, t[f"stages.{stage}.downsample.0.weight"], t[f"stages.{stage}.downsample.0.bias"], eps)
            x = F.conv2d(x, t[f"stages.{stage}.downsample.1.weight"], t[f"stages.{stage}.downsample.1.bias"], stride=2)
        for block in range(depth):
            p = f"stages.{stage}.blocks.{block}."
            y = F.conv2d(x, t[p + "conv_dw.weight"], t[p + "conv_dw.bias"], padding=3, groups=x.shape[1])
            y = y.permute(0, 2, 3, 1)
            mean = y.mean(-1, keepdim=True)
            y = (y - mean) / torch.sqrt((y - mean).pow(2).mean(-1, keepdim=True) + eps)
            y = y * t[p + "norm.weight"] + t[p + "norm.bias"]
            y = F.gelu(y @ t[p + "mlp.fc1.weight"].T + t[p + "mlp.fc1.bias"])
            y = (y @ t[p + "mlp.fc2.weight"].T + t[p + "mlp.fc2.bias"]) * t[p + "gamma"]
            x = x + y.permute(0, 3, 1, 2)
    return x


def released_slow_tokens(pixels, tensors):
    """(T, 3, H, W) frames -> (1, N, D) slow tokens: ConvNeXt, mlp2x_gelu projector, 2x2 average pooling."""
    features = timm_convnext(pixels, tensors).permute(0, 2, 3, 1)  # (T, h, w, C)
    hidden = F.gelu(features @ tensors["model.mm_projector.0.weight"].T + tensors["model.mm_projector.0.bias"])
    projected = hidden @ tensors["model.mm_projector.2.weight"].T + tensors["model.mm_projector.2.bias"]
    pooled = F.avg_pool2d(projected.permute(0, 3, 1, 2), kernel_size=2).permute(0, 2, 3, 1)  # (T, h/2, w/2, D)
    return pooled.reshape(1, -1, HIDDEN_SIZE)


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * weight


def rotary(x, positions):
    """x (B, heads, L, d): Qwen2's rotary embedding (rotate-half form)."""
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM)
    angles = positions[:, None].float() * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    half = HEAD_DIM // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def attend(query, key, value, causal):
    """query (B, H, L, d); key/value (B, Hkv, N, d), KV head h // (H / Hkv) serving query head h."""
    key = key.repeat_interleave(NUM_HEADS // NUM_KV_HEADS, dim=1)
    value = value.repeat_interleave(NUM_HEADS // NUM_KV_HEADS, dim=1)
    scores = query @ key.transpose(-1, -2) / math.sqrt(HEAD_DIM)
    if causal:
        length = scores.shape[-1]
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ value


def released_hybrid_layer(h, slow_tokens, query_mask, tensors, layer):
    """
    One released decoder layer (DESIGN §2), from the raw released tensors of `model.layers.{layer}`; a hybrid one
    when they hold the cross-attention tensors. h (1, L, D) layer input; slow_tokens (1, N, D); query_mask (1, L)
    True for the positions that receive the cross term.
    """
    t = {name.removeprefix(f"model.layers.{layer}."): v for name, v in tensors.items() if f"layers.{layer}." in name}
    batch, length, _ = h.shape

    def heads(x, count):  # (B, L, count·d) -> (B, count, L, d)
        return x.view(batch, -1, count, HEAD_DIM).transpose(1, 2)

    positions = torch.arange(length)
    x = rms_norm(h, t["input_layernorm.weight"])
    s = rms_norm(slow_tokens, t["input_layernorm.weight"])  # the slow tokens go through the same norm
    query = rotary(heads(x @ t["self_attn.q_proj.weight"].T + t["self_attn.q_proj.bias"], NUM_HEADS), positions)
    key = rotary(heads(x @ t["self_attn.k_proj.weight"].T + t["self_attn.k_proj.bias"], NUM_KV_HEADS), positions)
    value = heads(x @ t["self_attn.v_proj.weight"].T + t["self_attn.v_proj.bias"], NUM_KV_HEADS)
    attn = attend(query, key, value, causal=True).transpose(1, 2).reshape(batch, length, -1)  # A: (B, L, H·d)
    if "self_attn.cross_attn_kv_proj.weight" not in t:  # a plain Qwen2 layer
        return released_mlp_half(h + attn @ t["self_attn.o_proj.weight"].T, t)

    # the released per-head layout: for each KV head, d key channels then d value channels ("(H KV D)")
    slow_kv = s @ t["self_attn.cross_attn_kv_proj.weight"].T + t["self_attn.cross_attn_kv_proj.bias"]
    slow_kv = slow_kv.view(batch, -1, NUM_KV_HEADS, 2, HEAD_DIM)  # (B, N, Hkv, kv, d)
    slow_key, slow_value = slow_kv[..., 0, :].transpose(1, 2), slow_kv[..., 1, :].transpose(1, 2)  # no rotary
    cross = attend(query, slow_key, slow_value, causal=False).transpose(1, 2).reshape(batch, length, -1)
    gate = torch.tanh(
        attn @ t["self_attn.cross_attn_gate_proj.0.weight"].T + t["self_attn.cross_attn_gate_proj.0.bias"]
    )
    gate = gate * torch.tanh(t["self_attn.cross_attn_warm_up_gate"])
    attn = attn + gate * cross * query_mask[..., None]
    return released_mlp_half(h + attn @ t["self_attn.o_proj.weight"].T, t)


def released_mlp_half(h, t):
    x = rms_norm(h, t["post_attention_layernorm.weight"])
    mlp = F.silu(x @ t["mlp.gate_proj.weight"].T) * (x @ t["mlp.up_proj.weight"].T)
    return h + mlp @ t["mlp.down_proj.weight"].T


# ---------------------------------------------------------------------------------------------------------------
# Released checkpoint -> slow-fast
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The tiny released checkpoint, its tensors, and its conversion (loaded with the Auto classes)."""
    root = tmp_path_factory.mktemp("official")
    tensors = released_tensors()
    source = write_released_checkpoint(root / f"slowfast-tiny-convnext-{IMAGE_SIZE}-frame{NUM_FRAMES}-s1t2", tensors)
    output = convert_official(source, root / "converted")
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    processor = AutoProcessor.from_pretrained(output)
    return dict(root=root, source=source, output=output, tensors=tensors, model=model, processor=processor)


def random_frames(num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def test_official_config_and_processor(released):
    model, processor = released["model"], released["processor"]
    config = model.config
    assert config.hybrid_layers == HYBRID_LAYERS
    assert config.cross_attn_gate == "dynamic_tanh_warmup" and config.cross_attn_query_positions == "text"
    assert (config.slow_spatial_stride, config.fast_temporal_stride, config.fast_spatial_stride) == (2, 2, 1)
    assert (config.fast_temporal_sampling_stride, config.min_fast_frames, config.vision_feature_layer) == (1, 1, -1)
    assert config.vision_config.model_type == "convnext"
    assert list(config.vision_config.depths) == list(CONVNEXT_DEPTHS)
    assert list(config.vision_config.hidden_sizes) == list(CONVNEXT_WIDTHS)
    assert config.text_config.model_type == "qwen2" and config.text_config.vocab_size == VOCAB_SIZE
    assert config.text_config.rope_parameters["rope_theta"] == ROPE_THETA
    assert not hasattr(config.text_config, "mm_hidden_size")  # LLaVA keys do not leak into the decoder's config
    # the tokenizer lacked the placeholders: they were added after its 100 tokens, inside the 128-row embedding
    assert (config.video_token_id, config.image_token_id) == (100, 101)
    assert isinstance(processor, SlowFastProcessor)
    assert (processor.video_token_id, processor.image_token_id) == (100, 101)
    assert processor.patch_size == 32 and processor.fast_temporal_stride == 2
    video_processor = processor.video_processor
    assert video_processor.num_frames == NUM_FRAMES
    assert video_processor.size == {"shortest_edge": IMAGE_SIZE}
    assert video_processor.crop_size == {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    assert video_processor.resample == "bicubic"
    assert video_processor.image_mean == list(CLIP_MEAN) and video_processor.image_std == list(CLIP_STD)
    assert "<|im_start|>" in processor.chat_template
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_official_weights_map_unchanged_or_permuted(released):
    state, tensors = released["model"].state_dict(), released["tensors"]
    assert torch.equal(
        state["model.language_model.layers.2.self_attn.k_proj.weight"],
        tensors["model.layers.2.self_attn.k_proj.weight"],
    )
    assert torch.equal(state["lm_head.weight"], tensors["lm_head.weight"])
    assert torch.equal(state["model.multi_modal_projector.linear_2.bias"], tensors["model.mm_projector.2.bias"])
    assert torch.equal(
        state["model.vision_tower.encoder.stages.2.layers.0.layer_scale_parameter"],
        tensors[f"{VISION}stages.2.blocks.0.gamma"],
    )
    for layer in HYBRID_LAYERS:
        ours = f"model.language_model.layers.{layer}.self_attn.cross_attn."
        theirs = f"model.layers.{layer}.self_attn.cross_attn_"
        assert torch.equal(state[ours + "gate_alpha"], tensors[theirs + "warm_up_gate"])
        assert torch.equal(state[ours + "gate_proj.weight"], tensors[theirs + "gate_proj.0.weight"])
        released_kv = tensors[theirs + "kv_proj.weight"].view(NUM_KV_HEADS, 2, HEAD_DIM, HIDDEN_SIZE)
        ours_kv = state[ours + "kv_proj.weight"].view(2, NUM_KV_HEADS, HEAD_DIM, HIDDEN_SIZE)
        assert torch.equal(ours_kv, released_kv.transpose(0, 1))  # (h kv d) -> (kv h d)
    assert not any("image_newline" in name or "head.fc" in name for name in state)


def test_official_convnext_matches_timm_reference(released):
    """The ConvNeXt mapping: Transformers' ConvNextModel on the converted weights vs a plain timm-style ConvNeXt on the
    released tensors; then the projected per-frame features."""
    model, tensors = released["model"], released["tensors"]
    pixels = random_frames(2)
    with torch.no_grad():
        ours = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        frame_features = model.model.get_frame_features(pixels)  # (T, h, w, D)
    reference = timm_convnext(pixels, tensors)
    assert ours.shape == reference.shape == (2, CONVNEXT_WIDTHS[-1], 4, 4)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    assert (ours - timm_convnext(pixels, tensors, eps=1e-6)).abs().max() > (ours - reference).abs().max()
    hidden = F.gelu(
        reference.permute(0, 2, 3, 1) @ tensors["model.mm_projector.0.weight"].T + tensors["model.mm_projector.0.bias"]
    )
    projected = hidden @ tensors["model.mm_projector.2.weight"].T + tensors["model.mm_projector.2.bias"]
    torch.testing.assert_close(frame_features, projected, rtol=0, atol=1e-5)


def test_official_hybrid_layers_match_released_math(released):
    """Each hybrid layer's output, on the input the converted model gives it, equals the released math computed from
    the raw released tensors (per-head K/V layout, same input norm for the slow tokens, gate on the self-attention
    output, text positions only), with slow tokens built by the plain ConvNeXt + projector + 2x2 pooling."""
    model, tensors, processor = released["model"], released["tensors"], released["processor"]
    num_frames = 4
    pixels = random_frames(num_frames, seed=1)
    num_fast = model.model.token_builder.num_fast_tokens(num_frames, 4, 4)
    text = processor.tokenizer("what happens in the video?")["input_ids"]
    input_ids = torch.tensor([text[:3] + [processor.video_token_id] * num_fast + text[3:]])
    captured = {}

    def capture(layer):
        def hook(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[layer] = (hidden, output[0] if isinstance(output, tuple) else output)

        return hook

    layers = decoder_layers(model.model.language_model)
    handles = [layers[i].register_forward_hook(capture(i), with_kwargs=True) for i in HYBRID_LAYERS]
    with torch.no_grad():
        model(input_ids=input_ids, pixel_values_videos=pixels)
    for handle in handles:
        handle.remove()

    slow_tokens = released_slow_tokens(pixels, tensors)
    assert slow_tokens.shape == (1, num_frames * 4, HIDDEN_SIZE)
    query_mask = input_ids != processor.video_token_id
    for layer in HYBRID_LAYERS:
        hidden, output = captured[layer]
        expected = released_hybrid_layer(hidden, slow_tokens, query_mask, tensors, layer)
        torch.testing.assert_close(output, expected, rtol=0, atol=1e-5)
        without_cross = released_hybrid_layer(hidden, slow_tokens, torch.zeros_like(query_mask), tensors, layer)
        assert (output - without_cross).abs().max() > 1e-2  # the cross term is really there


def test_official_text_only_is_the_released_qwen2(released):
    """Without a video the converted model is the released Qwen2 decoder: the same logits, bit for bit, as a plain
    `Qwen2ForCausalLM` holding the released decoder tensors."""
    tensors = released["tensors"]
    qwen2 = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=HIDDEN_SIZE,
            intermediate_size=INTERMEDIATE_SIZE,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=NUM_HEADS,
            num_key_value_heads=NUM_KV_HEADS,
            rms_norm_eps=RMS_EPS,
            rope_theta=ROPE_THETA,
        )
    )
    decoder = {
        name: tensor
        for name, tensor in tensors.items()
        if not name.startswith(("model.vision_tower", "model.mm_projector", "model.image_newline"))
        and "cross_attn" not in name
    }
    qwen2.load_state_dict(decoder, strict=True)
    input_ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    with torch.no_grad():
        assert torch.equal(released["model"](input_ids=input_ids).logits, qwen2.eval()(input_ids=input_ids).logits)


def test_official_generate_with_processor_video(released):
    model, processor = released["model"], released["processor"]
    video = np.random.default_rng(0).integers(0, 256, (12, 96, 160, 3), dtype=np.uint8)  # 12 frames, 16:9-ish
    messages = [
        {"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "what happens?"}]}
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["pixel_values_videos"].shape == (NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == NUM_FRAMES // 2 * 2 * 2
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    # loads in bf16 too (GPU users add `device_map="auto"`)
    bf16 = AutoModelForImageTextToText.from_pretrained(released["output"], dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.isfinite(bf16(**inputs).logits).all()


def test_official_single_file_checkpoint(released, tmp_path):
    """One `model.safetensors` instead of shards, and the layer scale named `weight` (as the released training code's
    ConvNeXt copy names timm's `gamma`): the same converted model."""
    tensors = {name.replace(".gamma", ".weight"): tensor for name, tensor in released["tensors"].items()}
    source = write_released_checkpoint(tmp_path / "slowfast-frame8", tensors, sharded=False)
    output = convert_official(source, tmp_path / "converted")
    state = AutoModelForImageTextToText.from_pretrained(output).state_dict()
    expected = released["model"].state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[name], expected[name]) for name in expected)


def test_official_cli(released, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="slowfast_hf.convert_official"):
        official_main(["--input", str(released["source"]), "--output", str(tmp_path / "out"), "--num-frames", "5"])
    assert AutoProcessor.from_pretrained(tmp_path / "out").video_processor.num_frames == 5
    assert "Dropped model.image_newline" in caplog.text and "head.fc.weight" in caplog.text
    assert "layer norm eps 1e-05" in caplog.text


def assert_nothing_written(root, output):
    assert not output.exists()
    assert not [path.name for path in root.iterdir() if path.name.startswith(f".{output.name}.partial")]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_config", "no config.json"),
        ("wrong_model_type", "not a released slow-fast checkpoint"),
        ("missing_shard", "Shards listed in .* are missing"),
        ("no_weights", "holds neither `model.safetensors.index.json` nor `model.safetensors`"),
        ("unknown_gate", "Unknown `cross_attn_gating_type` 'channel-wise-dynamic-sigmoid'"),
        ("all_tokens_query", "Unsupported `cross_attn_implementation`"),
        ("missing_tensor", "1 model parameters that no released tensor provides"),
        ("unknown_tensor", "1 tensors this conversion does not recognise: model.layers.0.self_attn.extra"),
        ("vocab_too_small", "do not fit the decoder's embedding of 101 rows"),
        ("no_frame_count", "Cannot tell the released frame count"),
    ],
)
def test_official_bad_inputs(tmp_path, breakage, message):
    tensors = released_tensors()
    overrides = {}
    if breakage == "missing_tensor":
        del tensors["model.layers.3.self_attn.cross_attn_warm_up_gate"]
    if breakage == "unknown_tensor":
        tensors["model.layers.0.self_attn.extra"] = torch.zeros(2)
    if breakage == "unknown_gate":
        overrides["cross_attn_gating_type"] = "channel-wise-dynamic-sigmoid"
    if breakage == "all_tokens_query":
        overrides["cross_attn_implementation"] = "vanilla-flashattn"
    if breakage == "wrong_model_type":
        overrides["model_type"] = "qwen2"
    if breakage == "vocab_too_small":  # 100 tokens + 2 placeholders do not fit 101 rows
        overrides["vocab_size"] = 101
        tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:101]
        tensors["lm_head.weight"] = tensors["lm_head.weight"][:101]
    name = "slowfast-checkpoint" if breakage == "no_frame_count" else "slowfast-frame8"
    source = write_released_checkpoint(tmp_path / name, tensors, **overrides)
    if breakage == "no_config":
        (source / "config.json").unlink()
    if breakage in ("missing_shard", "no_weights"):
        (source / "model-00002-of-00002.safetensors").unlink()
    if breakage == "no_weights":
        (source / "model-00001-of-00002.safetensors").unlink()
        (source / "model.safetensors.index.json").unlink()
    output = tmp_path / "converted"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        convert_official(source, output)
    assert_nothing_written(tmp_path, output)


def test_official_failure_while_writing_leaves_no_output(released, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(SlowFastProcessor, "save_pretrained", fail)  # after the model's shards are written
    output = tmp_path / "converted"
    with pytest.raises(OSError, match="disk full"):
        convert_official(released["source"], output)
    assert_nothing_written(tmp_path, output)


def test_official_refuses_existing_output(released, tmp_path):
    output = tmp_path / "converted"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        convert_official(released["source"], output)
    assert (output / "keep.txt").read_text() == "mine" and len(list(output.iterdir())) == 1


# ---------------------------------------------------------------------------------------------------------------
# LLaVA-OneVision -> slow-fast
# ---------------------------------------------------------------------------------------------------------------

OV_IMAGE_SIZE, OV_PATCH_SIZE = 32, 8  # a 4x4 SigLIP patch grid


def tiny_llava_onevision(tokenizer, seed: int = 0, tie_word_embeddings: bool = False):
    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=HIDDEN_SIZE,
            intermediate_size=INTERMEDIATE_SIZE,
            num_hidden_layers=NUM_LAYERS,
            num_attention_heads=NUM_HEADS,
            num_key_value_heads=NUM_KV_HEADS,
            max_position_embeddings=512,
            tie_word_embeddings=tie_word_embeddings,
        ),
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=OV_IMAGE_SIZE,
            patch_size=OV_PATCH_SIZE,
            vision_use_head=False,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=tie_word_embeddings,
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # biases and norm weights away from their 0/1 init, so that a lost tensor shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def write_llava_onevision(directory, tokenizer, **kwargs):
    model = tiny_llava_onevision(tokenizer, **kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32}})
    )
    return directory


@pytest.fixture(scope="module")
def llava_onevision(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava_onevision")
    tokenizer = train_tiny_tokenizer()
    source = write_llava_onevision(root / "llava-onevision-tiny", tokenizer)
    output = convert_llava_onevision(
        source, root / "converted", num_frames=6, hybrid_layer_interval=2, fast_temporal_stride=2
    )
    original = LlavaOnevisionForConditionalGeneration.from_pretrained(source).eval()
    converted = AutoModelForImageTextToText.from_pretrained(output).eval()
    return dict(root=root, source=source, output=output, original=original, converted=converted, tokenizer=tokenizer)


def test_llava_onevision_keeps_weights_and_adds_closed_hybrid_layers(llava_onevision):
    original, converted = llava_onevision["original"].state_dict(), llava_onevision["converted"].state_dict()
    hybrid = {name for name in converted if ".cross_attn." in name}
    assert set(converted) - hybrid == set(original) - {"model.image_newline"}
    for name in set(converted) - hybrid:
        assert torch.equal(converted[name], original[name]), name
    config = llava_onevision["converted"].config
    assert config.hybrid_layers == [0, 2]
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-1, "full")
    for layer in config.hybrid_layers:
        prefix = f"model.language_model.layers.{layer}.self_attn."
        assert converted[prefix + "cross_attn.gate_alpha"].item() == 0.0
        kv = torch.cat([converted[prefix + "k_proj.weight"], converted[prefix + "v_proj.weight"]])
        assert torch.equal(converted[prefix + "cross_attn.kv_proj.weight"], kv)
    processor = AutoProcessor.from_pretrained(llava_onevision["output"])
    assert processor.patch_size == OV_PATCH_SIZE and processor.video_processor.num_frames == 6
    assert processor.video_processor.size == {"height": OV_IMAGE_SIZE, "width": OV_IMAGE_SIZE}
    assert processor.video_processor.image_mean == [0.5, 0.5, 0.5]


def test_llava_onevision_text_logits_bit_exact(llava_onevision):
    input_ids = torch.tensor([[17, 21, 33, 40, 12, 61, 25, 9], [11, 12, 13, 14, 15, 16, 17, 18]])
    with torch.no_grad():
        expected = llava_onevision["original"](input_ids=input_ids).logits
        actual = llava_onevision["converted"](input_ids=input_ids).logits
    assert torch.equal(actual, expected)


def test_llava_onevision_video_fast_tokens_bit_exact(llava_onevision):
    """
    The exact correspondence: our model on a video (fast tokens at the placeholders, slow tokens in the hybrid
    layers with alpha = 0) gives, bit for bit, the logits LLaVA-OneVision gives for `inputs_embeds` that hold the
    same fast tokens at the same positions. Our per-frame features are LLaVA-OneVision's own (same tower, same
    projector), bit for bit.
    """
    original, converted = llava_onevision["original"], llava_onevision["converted"]
    video_token_id = converted.config.video_token_id
    num_frames = 5
    pixels = torch.randn(num_frames, 3, OV_IMAGE_SIZE, OV_IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = converted.get_video_features(pixels)
        fast_tokens = features.fast_tokens[0]
        input_ids = torch.tensor([[7, 21, 33] + [video_token_id] * fast_tokens.shape[0] + [40, 2, 61]])
        actual = converted(input_ids=input_ids, pixel_values_videos=pixels).logits

        inputs_embeds = original.get_input_embeddings()(input_ids)
        inputs_embeds[input_ids == video_token_id] = fast_tokens
        expected = original(inputs_embeds=inputs_embeds).logits
        assert torch.equal(actual, expected)

        # the frame features behind those fast tokens are LLaVA-OneVision's projected features
        hidden = original.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        theirs = original.model.multi_modal_projector(hidden).view(num_frames, 4, 4, HIDDEN_SIZE)
        assert torch.equal(converted.model.get_frame_features(pixels), theirs)

        # with fast temporal stride 1, the fast tokens are LLaVA-OneVision's own video tokens without the trailing
        # image_newline (its bilinear 2x downsizing of an even grid is the 2x2 average)
        per_frame = SlowFastTokenBuilder(fast_temporal_stride=1)(theirs)[0]
        llava_tokens = original.model.get_video_features(pixels[None]).pooler_output[0]
        torch.testing.assert_close(per_frame, llava_tokens[:-1], rtol=0, atol=1e-6)


def test_llava_onevision_generate_and_cli(llava_onevision, tmp_path, caplog):
    tied = write_llava_onevision(tmp_path / "tied", llava_onevision["tokenizer"], tie_word_embeddings=True)
    output = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="slowfast_hf.convert_llava_onevision"):
        llava_onevision_main(["--input", str(tied), "--output", str(output), "--hybrid-layers", "1", "3"])
    assert "Dropped model.image_newline" in caplog.text
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    assert model.config.hybrid_layers == [1, 3] and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    processor = AutoProcessor.from_pretrained(output)
    video = np.random.default_rng(1).integers(0, 256, (40, 24, 24, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "what?"}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["pixel_values_videos"].shape[0] == 32  # LLaVA-OneVision's default frame count
    with torch.no_grad():
        assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("released_checkpoint", "not a Transformers LLaVA-OneVision checkpoint"),
        ("feature_layers", "selects several vision layers"),
        ("no_processor_config", "give the images' normalisation"),
        ("fixed_setting", "come from the LLaVA-OneVision checkpoint"),
        ("bad_interval", "`hybrid_layer_interval` must be an integer >= 1"),
    ],
)
def test_llava_onevision_bad_inputs(llava_onevision, tmp_path, breakage, message):
    source = llava_onevision["source"]
    kwargs = {}
    if breakage == "released_checkpoint":
        source = write_released_checkpoint(tmp_path / "released-frame8")
    if breakage in ("feature_layers", "no_processor_config"):
        source = write_llava_onevision(tmp_path / "source", llava_onevision["tokenizer"])
    if breakage == "feature_layers":
        config = json.loads((source / "config.json").read_text())
        (source / "config.json").write_text(json.dumps({**config, "vision_feature_layer": [-2, -1]}))
    if breakage == "no_processor_config":
        (source / "preprocessor_config.json").unlink()
    if breakage == "fixed_setting":
        kwargs["vision_feature_layer"] = -2
    if breakage == "bad_interval":
        kwargs["hybrid_layer_interval"] = 0
    output = tmp_path / "converted"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        convert_llava_onevision(source, output, **kwargs)
    assert_nothing_written(tmp_path, output)
