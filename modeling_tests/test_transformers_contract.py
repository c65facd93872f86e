"""Regression tests for the Transformers model contract (issue 10): `return_dict`, user-visible attention
implementation names, v5 `get_*_features` outputs, `generate(inputs_embeds=...)` with videos, `_tp_plan` and the
in-tree initialisation of sub-models, assisted and prompt-lookup decoding with videos. All run with the hybrid gates
open, where the slow path changes outputs."""

import pytest
import torch
from conftest import (
    IMAGE_SIZE,
    PATCH_SIZE,
    activate_hybrid_layers,
    tiny_slowfast_config,
    tiny_slowfast_model,
    video_prompt,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from slowfast_hf import SlowFastForConditionalGeneration
from slowfast_hf.transformers_compat import CACHE_KWARG

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def hybrid_model():
    return activate_hybrid_layers(tiny_slowfast_model(seed=3))


def video_inputs(model, batch_size=1):
    torch.manual_seed(0)
    input_ids = torch.tensor([video_prompt(model, NUM_FRAMES)] * batch_size)
    pixels = torch.randn(batch_size, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE)
    return dict(input_ids=input_ids, pixel_values_videos=pixels)


@torch.no_grad()
def test_return_dict_false_returns_the_outputs_as_a_tuple(hybrid_model):
    inputs = video_inputs(hybrid_model)
    as_dict = hybrid_model(**inputs)
    as_tuple = hybrid_model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.logits)
    base_tuple = hybrid_model.model(**inputs, return_dict=False)
    torch.testing.assert_close(base_tuple[0], hybrid_model.model(**inputs).last_hidden_state)


def test_users_see_and_set_transformers_attention_names():
    model = tiny_slowfast_model()
    text_config = model.config.text_config
    assert text_config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    assert text_config._attn_implementation == "eager"
    text_config.output_attentions = True  # Transformers accepts it only under exactly "eager"
    model.set_attn_implementation({"text_config": "sdpa", "vision_config": "eager"})
    assert (text_config._attn_implementation, model.config.vision_config._attn_implementation) == ("sdpa", "eager")
    config = tiny_slowfast_config(attn_implementation={"text_config": "eager", "vision_config": "sdpa"})
    built = SlowFastForConditionalGeneration(config)
    assert built.model.language_model.config._attn_implementation == "eager"
    assert built.model.vision_tower.config._attn_implementation == "sdpa"


@torch.no_grad()
def test_eager_and_sdpa_agree_with_the_gates_open(hybrid_model):
    inputs = video_inputs(hybrid_model, batch_size=2)
    sdpa = hybrid_model(**inputs).logits
    eager_model = activate_hybrid_layers(tiny_slowfast_model(seed=3))
    eager_model.set_attn_implementation("eager")
    eager = eager_model(**inputs, output_attentions=True)
    torch.testing.assert_close(eager.logits, sdpa, atol=1e-5, rtol=1e-4)
    assert len(eager.attentions) == hybrid_model.config.text_config.num_hidden_layers
    closed = tiny_slowfast_model(seed=3)(**inputs).logits
    assert not torch.allclose(closed, sdpa, atol=1e-3)  # the cross term matters here


@torch.no_grad()
def test_video_features_follow_the_v5_convention(hybrid_model):
    pixels = video_inputs(hybrid_model, batch_size=2)["pixel_values_videos"]
    features = hybrid_model.get_video_features(pixels, output_hidden_states=True)
    assert isinstance(features, BaseModelOutputWithPooling)
    grid = IMAGE_SIZE // PATCH_SIZE
    assert features.last_hidden_state.shape == (2 * NUM_FRAMES, grid * grid, 32)  # vision encoder, every frame
    assert len(features.hidden_states) == hybrid_model.config.vision_config.num_hidden_layers + 1
    assert len(features.pooler_output) == 2 and all(
        a is b for a, b in zip(features.pooler_output, features.fast_tokens)
    )
    assert [s.shape[0] for s in features.slow_tokens] == [
        hybrid_model.model.token_builder.num_slow_tokens(4, grid, grid)
    ] * 2
    assert hybrid_model.get_video_features(pixels).hidden_states is None
    as_tuple = hybrid_model.get_video_features(pixels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], features.last_hidden_state)
    image = hybrid_model.get_image_features(pixels[0, :1])
    torch.testing.assert_close(image.last_hidden_state, features.last_hidden_state[:1])
    eager = activate_hybrid_layers(tiny_slowfast_model(seed=3))
    eager.set_attn_implementation("eager")
    attentions = eager.get_image_features(pixels[0, :1], output_attentions=True).attentions
    assert len(attentions) == eager.config.vision_config.num_hidden_layers


@pytest.mark.parametrize("num_beams", [1, 2])
@torch.no_grad()
def test_generate_from_inputs_embeds_with_a_video(hybrid_model, num_beams):
    inputs = video_inputs(hybrid_model, batch_size=2)
    kwargs = dict(max_new_tokens=5, do_sample=False, num_beams=num_beams, pad_token_id=0)
    from_ids = hybrid_model.generate(**inputs, **kwargs)
    embeds = hybrid_model.get_input_embeddings()(inputs["input_ids"])
    from_embeds = hybrid_model.generate(
        inputs_embeds=embeds, pixel_values_videos=inputs["pixel_values_videos"], **kwargs
    )
    assert torch.equal(from_embeds, from_ids[:, inputs["input_ids"].shape[1] :])


def test_tp_plan_shards_the_head_like_the_embedding():
    model = tiny_slowfast_model()
    assert model.tp_plan["lm_head"] == "colwise_gather_output"
    assert "model.language_model.embed_tokens" in model.tp_plan


def test_missing_weights_get_the_vision_towers_own_initialisation():
    torch.manual_seed(0)
    config = tiny_slowfast_config()
    model = SlowFastForConditionalGeneration.from_pretrained(None, config=config, state_dict={})
    # SigLIP initialises its attention projections with xavier_uniform (bound sqrt(6 / (32 + 32)) ~ 0.31); the
    # generic fallback (normal, std 0.02) would keep every value below ~0.1
    q_proj = next(p for n, p in model.model.vision_tower.named_parameters() if n.endswith("self_attn.q_proj.weight"))
    assert q_proj.abs().max() > 0.15
    assert q_proj.abs().max() <= (6 / 64) ** 0.5 + 1e-6


# (a text-only assistant is refused by Transformers itself, which hands it the pixels: as for any in-tree VLM)
@pytest.mark.parametrize("assistant", ["slowfast", "prompt_lookup"])
@torch.no_grad()
def test_assisted_and_prompt_lookup_decoding_with_a_video_match_greedy(hybrid_model, assistant):
    inputs = video_inputs(hybrid_model)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    greedy = hybrid_model.generate(**inputs, **kwargs)
    if assistant == "prompt_lookup":
        kwargs["prompt_lookup_num_tokens"] = 3
    else:  # gets the text without the pixels, reads the placeholders as text
        kwargs["assistant_model"] = activate_hybrid_layers(tiny_slowfast_model(seed=4))
    assert torch.equal(hybrid_model.generate(**inputs, **kwargs), greedy)


def test_placeholders_without_their_video_are_still_refused_outside_assisted_decoding(hybrid_model):
    inputs = video_inputs(hybrid_model)
    with pytest.raises(ValueError, match="video placeholder tokens but no video was given"):
        hybrid_model.generate(input_ids=inputs["input_ids"], max_new_tokens=2, pad_token_id=0)


@torch.no_grad()
def test_static_cache_generation_matches_the_dynamic_cache(hybrid_model):
    inputs = video_inputs(hybrid_model, batch_size=2)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    dynamic = hybrid_model.generate(**inputs, **kwargs)
    assert torch.equal(hybrid_model.generate(**inputs, cache_implementation="static", **kwargs), dynamic)


@torch.no_grad()
def test_generation_continues_from_a_returned_cache(hybrid_model):
    inputs = video_inputs(hybrid_model)
    kwargs = dict(do_sample=False, pad_token_id=0)
    first = hybrid_model.generate(**inputs, max_new_tokens=4, return_dict_in_generate=True, **kwargs)
    follow_up = torch.cat([first.sequences, torch.tensor([[7, 8, 9]])], dim=1)
    expected = hybrid_model.generate(
        input_ids=follow_up, pixel_values_videos=inputs["pixel_values_videos"], max_new_tokens=4, **kwargs
    )
    continued = hybrid_model.generate(  # the cache carries the video (its slow keys/values): no pixels again
        input_ids=follow_up,
        max_new_tokens=4,
        **{CACHE_KWARG: getattr(first, CACHE_KWARG)},
        **kwargs,
    )
    assert torch.equal(continued, expected)
