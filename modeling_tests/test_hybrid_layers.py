"""
Hybrid layers (DESIGN §2): numeric checks against the unpatched base decoder, a fast-tokens-only run, and an
independent float64 reference implementation of one hybrid layer; plus `add_hybrid_layers` on a bare decoder.
"""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import VIDEO_TOKEN_ID, tiny_slowfast_config, tiny_slowfast_model, tiny_text_config, video_prompt
from transformers import AutoModel, AutoModelForCausalLM

from slowfast_hf import SlowFastForConditionalGeneration, add_hybrid_layers

# head_dim is pinned (several families default to 128/256); the slow-fast model's lm_head is never tied by default.
TEXT_OVERRIDES = {"head_dim": 16, "tie_word_embeddings": False}
FAMILY_OVERRIDES = {
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
    },
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "granite": {"logits_scaling": 8.0},  # released Granite checkpoints use 8 or 16 (the default 1.0 hides it)
}
# Mixture-of-experts decoders gather each expert's tokens across the whole batch, so even the unpatched model's
# logits for one sample move by ~1e-7 when another sample of the batch changes: compare those with a tolerance.
MOE_FAMILIES = {"mixtral", "qwen2_moe", "qwen3_moe"}


def text_overrides(family: str) -> dict:
    return {**TEXT_OVERRIDES, **FAMILY_OVERRIDES.get(family, {})}


def assert_unchanged(family: str, actual, expected):
    if family in MOE_FAMILIES:
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    else:
        assert torch.equal(actual, expected)


# Families for which every check of this file passes.
REQUIRED_FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]
EXTRA_FAMILIES = [
    "gemma",
    "gemma3_text",
    "olmo",
    "starcoder2",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "helium",
    "glm",
    "glm4",
    "smollm3",
    "arcee",
    "seed_oss",
    "ernie4_5",
]
SUPPORTED_FAMILIES = REQUIRED_FAMILIES + EXTRA_FAMILIES
# Their causal-LM head post-processes the logits (cohere/cohere2 `logit_scale`, granite `logits_scaling` != 1,
# gemma2 `final_logit_softcapping`), which the slow-fast model's plain lm_head does not: refused at construction.
LOGIT_POSTPROCESSING_FAMILIES = ["cohere", "cohere2", "granite", "gemma2"]
# The decoder layer does not forward `**kwargs` to `self_attn`, so the slow tokens never reach the hybrid layers:
# refused at the first forward pass with slow tokens.
KWARGS_DROPPING_FAMILIES = ["nemotron"]
# Rejected by `add_hybrid_layers`, with the reason its error must name.
UNSUPPORTED_FAMILIES = {
    "phi3": "q_proj, k_proj, v_proj",  # fused qkv_proj
    "phi": "o_proj",  # `dense` output projection
    "olmo2": "input_layernorm",  # post-norm layers
    "olmo3": "input_layernorm",
    "exaone4": "input_layernorm",
    "stablelm": "AttentionInterface",  # does not dispatch through the attention interface
    "bert": "no `layers` ModuleList",  # not a decoder
    "gpt2": "no `layers` ModuleList",
}
IMPLEMENTATIONS = ["eager", "sdpa"]
HYBRID_LAYERS = [0, 2]
NUM_FRAMES = (4, 2)  # two videos of different lengths -> different fast and slow token counts


def build_model(
    family: str, implementation: str, seed: int = 0, **config_overrides
) -> SlowFastForConditionalGeneration:
    model = tiny_slowfast_model(family, seed=seed, text_overrides=text_overrides(family), **config_overrides)
    model.set_attn_implementation(implementation)
    assert_dispatch(model.model.language_model, implementation)
    return model


def assert_dispatch(decoder, implementation: str):
    """Users see Transformers' own name; only the hybrid layers' attention modules dispatch to the wrapper."""
    assert decoder.config._attn_implementation == implementation
    for layer in decoder.layers:
        expected = f"slowfast_{implementation}" if hasattr(layer.self_attn, "cross_attn") else implementation
        assert layer.self_attn.config._attn_implementation == expected


def hybrid_modules(model):
    layers = model.model.language_model.layers
    return [layers[i].self_attn.cross_attn for i in HYBRID_LAYERS]


@torch.no_grad()
def set_alpha(model, value: float) -> None:
    for cross_attn in hybrid_modules(model):
        cross_attn.gate_alpha.fill_(value)


def right_pad(sequences, pad_id: int = 0):
    length = max(len(s) for s in sequences)
    input_ids = torch.tensor([s + [pad_id] * (length - len(s)) for s in sequences])
    attention_mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in sequences])
    return input_ids, attention_mask


def video_batch(model, num_frames=NUM_FRAMES, text_only_sample: bool = True, seed: int = 0):
    """Samples `prefix + video placeholders + suffix` (one video each) and optionally one text-only sample,
    right-padded; pixels (num_videos, max_frames, 3, H, W) with `video_num_frames`."""
    sequences = [video_prompt(model, t, prefix=(1, 2, 3), suffix=(4, 5, 6, 7)) for t in num_frames]
    if text_only_sample:
        sequences.append([1, 9, 10, 11, 12])
    input_ids, attention_mask = right_pad(sequences)
    vision_config = model.config.vision_config
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(
        len(num_frames), max(num_frames), 3, vision_config.image_size, vision_config.image_size, generator=generator
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values_videos": pixels.to(model.dtype),
        "video_num_frames": list(num_frames),
    }


def plain_base_model(model, family: str, implementation: str):
    """The unpatched causal LM of `family`, carrying the slow-fast model's language-model and lm_head weights."""
    base = AutoModelForCausalLM.from_config(
        tiny_text_config(family, **text_overrides(family)), attn_implementation=implementation
    )
    base.eval()
    assert base.config._attn_implementation == implementation
    assert not any(hasattr(layer.self_attn, "cross_attn") for layer in base.model.layers)

    prefix = "model.language_model."
    slow_fast_state = model.state_dict()
    language_state = {k[len(prefix) :]: v for k, v in slow_fast_state.items() if k.startswith(prefix)}
    base_state = base.state_dict()
    base_decoder_keys = {k[len("model.") :] for k in base_state if k.startswith("model.")}
    assert set(base_state) == {f"model.{k}" for k in base_decoder_keys} | {"lm_head.weight"}
    extra = set(language_state) - base_decoder_keys
    assert base_decoder_keys <= set(language_state)
    cross_pattern = re.compile(
        r"layers\.(\d+)\.self_attn\.cross_attn\.(kv_proj\.weight|kv_proj\.bias|gate_proj\.weight|gate_proj\.bias|gate_alpha)"
    )
    assert extra, "the slow-fast language model has no hybrid parameters"
    for key in extra:
        match = cross_pattern.fullmatch(key)
        assert match is not None and int(match.group(1)) in HYBRID_LAYERS, key
    assert {int(cross_pattern.fullmatch(k).group(1)) for k in extra} == set(HYBRID_LAYERS)

    loaded = {f"model.{k}": language_state[k] for k in base_decoder_keys}
    loaded["lm_head.weight"] = slow_fast_state["lm_head.weight"]
    base.load_state_dict(loaded, strict=True)
    for key, value in base.state_dict().items():
        assert torch.equal(value, loaded[key]), key
    return base


# --------------------------------------------------------------------------------------------------------------
# 1. Every supported family, both attention implementations
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=SUPPORTED_FAMILIES)
def family(request):
    return request.param


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    return request.param


def test_attention_implementation_from_config():
    config = tiny_slowfast_config("llama", text_overrides=TEXT_OVERRIDES)
    config._attn_implementation = "eager"
    model = SlowFastForConditionalGeneration(config)
    assert_dispatch(model.model.language_model, "eager")
    model.set_attn_implementation("sdpa")
    assert_dispatch(model.model.language_model, "sdpa")
    model.set_attn_implementation("eager")
    assert_dispatch(model.model.language_model, "eager")


@torch.no_grad()
def test_text_only_alpha_zero_is_bit_identical_to_base(family, implementation):
    model = build_model(family, implementation)
    base = plain_base_model(model, family, implementation)

    input_ids = torch.tensor([[1, 5, 9, 17, 33, 65, 100, 2], [3, 4, 8, 16, 32, 64, 90, 7]])
    assert torch.equal(model(input_ids=input_ids).logits, base(input_ids=input_ids).logits)

    padded_ids, attention_mask = right_pad([[1, 5, 9, 17, 33, 65, 100, 2], [3, 4, 8, 16, 32]])
    ours = model(input_ids=padded_ids, attention_mask=attention_mask).logits
    theirs = base(input_ids=padded_ids, attention_mask=attention_mask).logits
    assert torch.equal(ours, theirs)

    left_ids = torch.tensor([[0, 0, 0, 3, 4, 8, 16, 32], [1, 5, 9, 17, 33, 65, 100, 2]])
    left_mask = (left_ids != 0).long()
    ours = model(input_ids=left_ids, attention_mask=left_mask).logits
    theirs = base(input_ids=left_ids, attention_mask=left_mask).logits
    assert torch.equal(ours[left_mask.bool()], theirs[left_mask.bool()])


def fast_tokens_only_logits(model, batch):
    """The same batch through the decoder with the fast tokens scattered by hand and no slow path at all."""
    features = model.model.get_video_features(batch["pixel_values_videos"], batch["video_num_frames"])
    fast = torch.cat(features.fast_tokens)
    inputs_embeds = model.get_input_embeddings()(batch["input_ids"]).clone()
    placeholders = batch["input_ids"] == VIDEO_TOKEN_ID
    assert int(placeholders.sum()) == fast.shape[0]
    inputs_embeds[placeholders] = fast.to(inputs_embeds.dtype)
    hidden = model.model.language_model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"])
    return model.lm_head(hidden.last_hidden_state), inputs_embeds


@torch.no_grad()
def test_video_alpha_zero_equals_fast_tokens_only(family, implementation):
    model = build_model(family, implementation)
    batch = video_batch(model)
    logits = model(**batch).logits
    assert all(float(c.gate_alpha) == 0.0 for c in hybrid_modules(model))

    expected, inputs_embeds = fast_tokens_only_logits(model, batch)
    assert torch.equal(logits, expected)

    base = plain_base_model(model, family, implementation)
    base_hidden = base.model(inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.equal(logits, base.lm_head(base_hidden))


def text_positions(batch):
    return (batch["input_ids"] != VIDEO_TOKEN_ID) & batch["attention_mask"].bool()


def test_video_alpha_nonzero_changes_text_logits_and_trains(family, implementation):
    model = build_model(family, implementation)
    batch = video_batch(model)
    with torch.no_grad():
        reference = model(**batch).logits
        set_alpha(model, 0.5)
        logits = model(**batch).logits
    num_videos = len(NUM_FRAMES)
    text = text_positions(batch)
    for sample in range(num_videos):
        # "text" query mode: every text position of a sample with a video reads the slow tokens, the prompt too
        diff = (logits[sample] - reference[sample]).abs().amax(-1)
        assert diff[text[sample]].min() > 1e-4, diff
    # the text-only sample receives no cross term at all
    assert_unchanged(family, logits[num_videos:], reference[num_videos:])
    assert torch.isfinite(logits).all()

    labels = batch["input_ids"].masked_fill(~text, -100)
    model.train()
    output = model(**batch, labels=labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    for index, cross_attn in zip(HYBRID_LAYERS, hybrid_modules(model)):
        for name in ("gate_alpha", "kv_proj.weight", "gate_proj.weight"):
            grad = cross_attn.get_parameter(name).grad
            assert grad is not None, (index, name)
            assert torch.isfinite(grad).all(), (index, name)
            assert grad.abs().max() > 0, (index, name)


@torch.no_grad()
def test_text_after_first_visual_leaves_the_prompt_alone(family, implementation):
    model = build_model(family, implementation, cross_attn_query_positions="text_after_first_visual")
    batch = video_batch(model)
    reference = model(**batch).logits
    set_alpha(model, 0.5)
    logits = model(**batch).logits

    num_videos = len(NUM_FRAMES)
    text = text_positions(batch)
    for sample in range(num_videos):
        ids = batch["input_ids"][sample]
        first_visual = int((ids == VIDEO_TOKEN_ID).nonzero()[0])
        assert first_visual > 0
        assert_unchanged(family, logits[sample, :first_visual], reference[sample, :first_visual])
        after = text[sample].clone()
        after[:first_visual] = False
        diff = (logits[sample] - reference[sample]).abs().amax(-1)
        assert after.any() and diff[after].min() > 1e-4, diff
    assert_unchanged(family, logits[num_videos:], reference[num_videos:])


@pytest.mark.parametrize("family", sorted(UNSUPPORTED_FAMILIES))
def test_unsupported_family_is_rejected(family):
    config = tiny_text_config(family, **({} if family in ("bert", "gpt2") else TEXT_OVERRIDES))
    decoder = AutoModel.from_config(config)
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    implementation = decoder.config._attn_implementation
    with pytest.raises(ValueError, match=re.escape(UNSUPPORTED_FAMILIES[family])):
        add_hybrid_layers(decoder, [0])
    # nothing changed
    assert decoder.config._attn_implementation == implementation
    assert decoder.state_dict().keys() == state.keys()
    # and the slow-fast model refuses to be built around it
    if family not in ("bert", "gpt2"):
        with pytest.raises(ValueError, match=re.escape(UNSUPPORTED_FAMILIES[family])):
            tiny_slowfast_model(family, text_overrides=TEXT_OVERRIDES)


@pytest.mark.parametrize("family", LOGIT_POSTPROCESSING_FAMILIES)
def test_family_with_logit_postprocessing_is_rejected(family):
    """The slow-fast LM head is a plain Linear: a family whose causal LM rescales or soft-caps its logits would not
    reproduce the base model at α = 0, so the model refuses to be built around it."""
    with pytest.raises(ValueError, match="post-processes its logits"):
        tiny_slowfast_model(family, text_overrides=text_overrides(family))


def test_granite_without_logit_scaling_is_accepted():
    model = tiny_slowfast_model("granite", text_overrides={**TEXT_OVERRIDES, "logits_scaling": 1.0})
    assert len(hybrid_modules(model)) == len(HYBRID_LAYERS)


@pytest.mark.parametrize("family", KWARGS_DROPPING_FAMILIES)
@torch.no_grad()
def test_family_dropping_attention_kwargs_is_refused_at_forward(family):
    """A decoder layer that does not pass `**kwargs` on to its attention never delivers the slow tokens; the forward
    pass says so instead of silently ignoring the video."""
    model = build_model(family, "eager")
    with pytest.raises(ValueError, match="never received the slow tokens"):
        model(**video_batch(model))


# --------------------------------------------------------------------------------------------------------------
# 2. Independent float64 reference implementation of one hybrid layer
# --------------------------------------------------------------------------------------------------------------


def ref_rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def ref_softmax(scores, allowed, compute_dtype=torch.float64):
    """Softmax over the last axis of `scores` restricted to `allowed` (bool, broadcastable), computed in
    `compute_dtype` and returned in the dtype of `scores`."""
    scores = scores.masked_fill(~allowed, float("-inf"))
    if compute_dtype != torch.float64:  # mirror Transformers' eager attention bit for bit: torch's float32 softmax
        return torch.softmax(scores.to(compute_dtype), dim=-1).to(scores.dtype)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    return weights / weights.sum(-1, keepdim=True)


def ref_hybrid_layer(layer, config, hidden, cos, sin, attention_mask, slow, slow_mask, query_mask, self_softmax_dtype):
    """
    DESIGN §2 for one Llama/Qwen2/Qwen3 decoder layer, written from scratch in float64. The RMS norms are the
    layer's own modules (Transformers' RMSNorm computes in float32 even in a float64 model, so a float64 norm of
    our own would differ by ~1e-7); everything else (projections, rotary, GQA, softmaxes, gate, masks, MLP) is
    spelled out here.

    hidden (B, L, D); cos/sin (B, L, d) from the model's rotary embedding; attention_mask (B, L) 1 for real tokens;
    slow (B, N, D) padded slow tokens with slow_mask (B, N); query_mask (B, L) positions receiving the cross term.
    self_softmax_dtype: Transformers' eager self-attention takes its softmax in float32 even in a float64 model.
    """
    attn, cross = layer.self_attn, layer.self_attn.cross_attn
    B, L, _ = hidden.shape
    H, Hkv = config.num_attention_heads, config.num_key_value_heads
    d = attn.head_dim
    group = H // Hkv

    def linear(x, module):
        y = x @ module.weight.T
        return y if module.bias is None else y + module.bias

    x = layer.input_layernorm(hidden)
    s = layer.input_layernorm(slow)  # the same norm for the slow tokens

    q = linear(x, attn.q_proj).view(B, L, H, d)
    k = linear(x, attn.k_proj).view(B, L, Hkv, d)
    v = linear(x, attn.v_proj).view(B, L, Hkv, d)
    if hasattr(attn, "q_norm"):  # Qwen3: per-head RMS norm before rotary
        q = attn.q_norm(q)
        k = attn.k_norm(k)
    q = q * cos[:, :, None] + ref_rotate_half(q) * sin[:, :, None]
    k = k * cos[:, :, None] + ref_rotate_half(k) * sin[:, :, None]

    kv = linear(s, cross.kv_proj)  # rows: [K of every KV head ; V of every KV head]
    slow_k = kv[..., : Hkv * d].reshape(B, -1, Hkv, d)
    slow_v = kv[..., Hkv * d :].reshape(B, -1, Hkv, d)

    positions = torch.arange(L)
    causal = positions[None, :] <= positions[:, None]  # (query, key)
    self_out = torch.zeros(B, L, H, d, dtype=hidden.dtype)
    cross_out = torch.zeros(B, L, H, d, dtype=hidden.dtype)
    for b in range(B):
        allowed = causal & attention_mask[b].bool()[None, :]
        for h in range(H):
            g = h // group  # grouped-query attention: query head h reads KV head h // (H / Hkv)
            scores = q[b, :, h] @ k[b, :, g].T / math.sqrt(d)
            self_out[b, :, h] = ref_softmax(scores, allowed, self_softmax_dtype) @ v[b, :, g]
            if slow_mask[b].any():
                cross_scores = q[b, :, h] @ slow_k[b, :, g].T / math.sqrt(d)  # no rotary on slow keys
                cross_out[b, :, h] = ref_softmax(cross_scores, slow_mask[b][None, :]) @ slow_v[b, :, g]

    A = self_out.reshape(B, L, H * d)
    C = cross_out.reshape(B, L, H * d)
    warm_up = torch.tanh(cross.gate_alpha)
    if cross.gate_kind == "dynamic_tanh_warmup":
        gate = torch.tanh(A @ cross.gate_proj.weight.T + cross.gate_proj.bias) * warm_up  # (B, L, 1)
    else:
        gate = warm_up.expand(B, L, 1)
    mixed = A + gate * C * query_mask[..., None].to(A.dtype)
    hidden = hidden + linear(mixed, attn.o_proj)

    y = layer.post_attention_layernorm(hidden)
    mlp = layer.mlp
    y = linear(F.silu(linear(y, mlp.gate_proj)) * linear(y, mlp.up_proj), mlp.down_proj)
    return hidden + y


@torch.no_grad()
def randomize_for_reference(model, seed: int = 1):
    """Random norms, biases, hybrid K/V, gates and α: nothing that a layout or norm mix-up could hide behind."""
    generator = torch.Generator().manual_seed(seed)

    def rand_like(t, scale):
        return torch.randn(t.shape, generator=generator, dtype=t.dtype) * scale

    for layer in model.model.language_model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.copy_(1 + rand_like(norm.weight, 0.3))
        attn = layer.self_attn
        for name in ("q_norm", "k_norm"):
            if hasattr(attn, name):
                getattr(attn, name).weight.copy_(1 + rand_like(getattr(attn, name).weight, 0.3))
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
            proj.weight.copy_(rand_like(proj.weight, 0.15))
            if proj.bias is not None:
                proj.bias.copy_(rand_like(proj.bias, 0.3))
        cross = getattr(attn, "cross_attn", None)
        if cross is not None:
            cross.kv_proj.weight.copy_(rand_like(cross.kv_proj.weight, 0.15))
            if cross.kv_proj.bias is not None:
                cross.kv_proj.bias.copy_(rand_like(cross.kv_proj.bias, 0.3))
            if hasattr(cross, "gate_proj"):
                cross.gate_proj.weight.copy_(rand_like(cross.gate_proj.weight, 0.5))
                cross.gate_proj.bias.copy_(rand_like(cross.gate_proj.bias, 0.5))
            cross.gate_alpha.copy_(0.5 + rand_like(cross.gate_alpha, 0.2).abs())


@pytest.mark.parametrize("gate_kind", ["dynamic_tanh_warmup", "tanh_warmup"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
@torch.no_grad()
def test_hybrid_layer_matches_float64_reference(family, implementation, gate_kind):
    model = build_model(family, implementation, cross_attn_gate=gate_kind).double()
    config = model.config.text_config
    language_model = model.model.language_model
    for cross in hybrid_modules(model):
        assert cross.gate_kind == gate_kind
        assert hasattr(cross, "gate_proj") == (gate_kind == "dynamic_tanh_warmup")
    if family == "qwen2":
        assert language_model.layers[0].self_attn.q_proj.bias is not None
    if family == "qwen3":
        assert hasattr(language_model.layers[0].self_attn, "q_norm")
    randomize_for_reference(model)

    batch = video_batch(model, text_only_sample=True)
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    B, L = input_ids.shape

    # slow tokens in text order, padded (the two videos have different frame counts)
    features = model.model.get_video_features(batch["pixel_values_videos"], batch["video_num_frames"])
    slow_list = list(features.slow_tokens) + [features.slow_tokens[0][:0]]
    N = max(t.shape[0] for t in slow_list)
    assert slow_list[0].shape[0] != slow_list[1].shape[0]
    slow = torch.zeros(B, N, config.hidden_size, dtype=torch.float64)
    slow_mask = torch.zeros(B, N, dtype=torch.bool)
    for b, tokens in enumerate(slow_list):
        slow[b, : tokens.shape[0]] = tokens
        slow_mask[b, : tokens.shape[0]] = True
    has_video = slow_mask.any(1)
    query_mask = (input_ids != VIDEO_TOKEN_ID) & attention_mask.bool() & has_video[:, None]

    position_ids = torch.arange(L)[None].expand(B, L)
    probe = torch.zeros(B, L, config.hidden_size, dtype=torch.float64)
    cos, sin = language_model.rotary_emb(probe, position_ids)
    assert cos.dtype == torch.float64 and cos.shape == (B, L, config.head_dim)

    captured = {}
    handles = []
    for index in HYBRID_LAYERS:
        layer = language_model.layers[index]

        def pre_hook(module, args, kwargs, index=index):
            captured[("in", index)] = (args[0] if args else kwargs["hidden_states"]).clone()

        def hook(module, args, kwargs, output, index=index):
            captured[("out", index)] = (output[0] if isinstance(output, tuple) else output).clone()

        handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    try:
        model(**batch)
    finally:
        for handle in handles:
            handle.remove()

    real = attention_mask.bool()
    self_softmax_dtype = torch.float32 if implementation == "eager" else torch.float64
    for index in HYBRID_LAYERS:
        layer = language_model.layers[index]
        hidden_in, hidden_out = captured[("in", index)], captured[("out", index)]
        expected = ref_hybrid_layer(
            layer, config, hidden_in, cos, sin, attention_mask, slow, slow_mask, query_mask, self_softmax_dtype
        )
        diff = (hidden_out - expected).abs()
        assert diff[real].max() < 1e-10, (index, float(diff[real].max()))
        # the cross term matters: the same reference without it is far away
        without = ref_hybrid_layer(
            layer,
            config,
            hidden_in,
            cos,
            sin,
            attention_mask,
            slow,
            slow_mask,
            torch.zeros_like(query_mask),
            self_softmax_dtype,
        )
        assert (hidden_out - without)[query_mask].abs().max() > 1e-3
        # the text-only sample: finite everywhere (its all-padding slow row must not produce NaN) and no cross term
        assert torch.isfinite(hidden_out).all()
        assert (hidden_out[2] - without[2])[real[2]].abs().max() < 1e-10


# --------------------------------------------------------------------------------------------------------------
# 3. add_hybrid_layers on a standalone decoder
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("gate_kind", ["dynamic_tanh_warmup", "tanh_warmup"])
def test_add_hybrid_layers_on_standalone_decoder(family, gate_kind):
    torch.manual_seed(0)
    decoder = AutoModel.from_config(tiny_text_config(family, **TEXT_OVERRIDES))
    original = {k: v.clone() for k, v in decoder.state_dict().items()}
    implementation = decoder.config._attn_implementation
    chosen = [1, 3]
    returned = add_hybrid_layers(decoder, chosen, gate_kind=gate_kind)
    assert returned is decoder
    assert_dispatch(decoder, implementation)

    state = decoder.state_dict()
    has_bias = family == "qwen2"
    names = ["kv_proj.weight", "gate_alpha"]
    names += ["kv_proj.bias"] if has_bias else []
    names += ["gate_proj.weight", "gate_proj.bias"] if gate_kind == "dynamic_tanh_warmup" else []
    expected_new = {f"layers.{i}.self_attn.cross_attn.{name}" for i in chosen for name in names}
    assert set(state) == set(original) | expected_new
    assert not set(original) & expected_new
    for key, value in original.items():
        assert torch.equal(state[key], value), key

    config = decoder.config
    for i in chosen:
        attn = decoder.layers[i].self_attn
        cross = attn.cross_attn
        assert torch.equal(cross.kv_proj.weight, torch.cat([attn.k_proj.weight, attn.v_proj.weight]))
        assert cross.kv_proj.weight.shape == (2 * config.num_key_value_heads * config.head_dim, config.hidden_size)
        if has_bias:
            assert torch.equal(cross.kv_proj.bias, torch.cat([attn.k_proj.bias, attn.v_proj.bias]))
        assert torch.equal(cross.gate_alpha, torch.zeros(1))
        if gate_kind == "dynamic_tanh_warmup":
            assert cross.gate_proj.weight.shape == (1, config.num_attention_heads * config.head_dim)
        else:
            assert not hasattr(cross, "gate_proj")
    for i in (0, 2):
        assert not hasattr(decoder.layers[i].self_attn, "cross_attn")


def test_add_hybrid_layers_on_causal_lm():
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_text_config("llama", **TEXT_OVERRIDES))
    keys = set(lm.state_dict())
    add_hybrid_layers(lm, [0])
    assert set(lm.state_dict()) - keys == {
        f"model.layers.0.self_attn.cross_attn.{n}"
        for n in ("kv_proj.weight", "gate_proj.weight", "gate_proj.bias", "gate_alpha")
    }
    assert_dispatch(lm.model, lm.config._attn_implementation)


@pytest.mark.parametrize(
    "hybrid_layers, gate_kind, match",
    [
        ([4], "dynamic_tanh_warmup", "hybrid_layers"),
        ([-1], "dynamic_tanh_warmup", "hybrid_layers"),
        ([True], "dynamic_tanh_warmup", "hybrid_layers"),
        ([1.0], "dynamic_tanh_warmup", "hybrid_layers"),
        ([0], "sigmoid", "gate_kind"),
        ([0, 0], "dynamic_tanh_warmup", "already a hybrid layer"),
    ],
)
def test_add_hybrid_layers_rejects_bad_arguments(hybrid_layers, gate_kind, match):
    decoder = AutoModel.from_config(tiny_text_config("llama", **TEXT_OVERRIDES))
    keys = set(decoder.state_dict())
    implementation = decoder.config._attn_implementation
    with pytest.raises(ValueError, match=match):
        add_hybrid_layers(decoder, hybrid_layers, gate_kind=gate_kind)
    # a rejected call leaves the decoder as it was
    assert set(decoder.state_dict()) == keys
    assert decoder.config._attn_implementation == implementation


def test_add_hybrid_layers_twice_on_the_same_layer():
    decoder = AutoModel.from_config(tiny_text_config("llama", **TEXT_OVERRIDES))
    add_hybrid_layers(decoder, [1])
    keys = set(decoder.state_dict())
    implementation = decoder.config._attn_implementation
    with pytest.raises(ValueError, match="[Ll]ayer 1 is already a hybrid layer"):
        add_hybrid_layers(decoder, [1])
    with pytest.raises(ValueError, match="[Ll]ayer 1 is already a hybrid layer"):
        add_hybrid_layers(decoder, [0, 1])
    # the rejected calls changed nothing (layer 0 in particular is not half-converted)
    assert set(decoder.state_dict()) == keys
    assert not hasattr(decoder.layers[0].self_attn, "cross_attn")
    assert decoder.config._attn_implementation == implementation
    # a different layer is still fine, and the implementation is not double-prefixed
    add_hybrid_layers(decoder, [2])
    assert decoder.config._attn_implementation == implementation
