"""Many questions about one video: Transformers' prompt-reuse recipe with the video in the cached prefix (the slow K/V
travel inside the cache), multi-turn chat, continuing a generation from its cache, and the session helpers. Every
reference is a from-scratch `generate` with the video's pixels."""

import copy

import pytest
import torch
from conftest import activate_hybrid_layers, tiny_slowfast_model, video_prompt
from test_generation import CallCounter, kv_projections
from test_modeling import frames
from test_processing import make_processor, model_for, random_video
from transformers.cache_utils import DynamicCache

from slowfast_hf import SlowKeyValuesLayer
from slowfast_hf.sessions import answer_questions, generate_with_shared_prefix
from slowfast_hf.transformers_compat import CACHE_KWARG

PAD_ID = 0
NUM_FRAMES = 6
QUESTIONS = [[9, 10], [11, 12, 13, 14, 15], [16, 17, 18, 19, 20, 21, 22, 23, 24]]  # 3 lengths


@pytest.fixture(scope="module")
def hybrid_model():
    return activate_hybrid_layers(tiny_slowfast_model(seed=3))


@pytest.fixture(scope="module")
def video():
    return frames(NUM_FRAMES, seed=11)


def prefix_ids(model) -> list[int]:
    return video_prompt(model, NUM_FRAMES, prefix=(1, 2, 3), suffix=())  # ends with the video's placeholders


def generate(model, input_ids, **kwargs):
    defaults = dict(max_new_tokens=8, do_sample=False, pad_token_id=PAD_ID, return_dict_in_generate=True)
    with torch.no_grad():
        return model.generate(input_ids=torch.tensor([input_ids]), **{**defaults, **kwargs})


@torch.no_grad()
def prefix_cache(model, video) -> DynamicCache:
    """Transformers' recipe: run the shared prefix once into a cache."""
    cache = DynamicCache(config=model.config.text_config)
    return getattr(
        model(input_ids=torch.tensor([prefix_ids(model)]), pixel_values_videos=video, **{CACHE_KWARG: cache}),
        CACHE_KWARG,
    )


def test_the_cache_carries_the_slow_keys_values(hybrid_model, video):
    cache = prefix_cache(hybrid_model, video)
    layer = cache.layers[-1]
    assert isinstance(layer, SlowKeyValuesLayer)
    assert len(cache.layers) == hybrid_model.config.text_config.num_hidden_layers + 1
    assert cache.get_seq_length() == len(prefix_ids(hybrid_model))
    assert sorted(layer.slow_key_values.key_values) == [0, 2]
    copied = copy.deepcopy(cache)  # the recipe's copy takes them along
    key, _ = copied.layers[-1].slow_key_values.key_values[0]
    assert torch.equal(key, layer.slow_key_values.key_values[0][0])
    assert key.data_ptr() != layer.slow_key_values.key_values[0][0].data_ptr()
    # a lazily built cache (no config) works too: the slow K/V stay after the decoder's layers
    lazy = DynamicCache()
    with torch.no_grad():
        hybrid_model(input_ids=torch.tensor([prefix_ids(hybrid_model)]), pixel_values_videos=video, cache=lazy)
    assert isinstance(lazy.layers[-1], SlowKeyValuesLayer) and lazy.get_seq_length() == cache.get_seq_length()


@pytest.mark.parametrize("decoding", ["greedy", "beam_search"])
def test_prefix_reuse_equals_generating_from_scratch(hybrid_model, video, decoding):
    """Transformers' prompt-reuse recipe, `generate(full prompt, cache=copy.deepcopy(prefix_cache))`, with the video
    in the prefix: the questions carry no pixels, the vision encoder and the slow K/V projections do not run, and
    the answers are those of a from-scratch `generate`."""
    kwargs = dict(output_logits=True) if decoding == "greedy" else dict(num_beams=3, output_scores=True)
    cache = prefix_cache(hybrid_model, video)
    modules = [hybrid_model.model.vision_tower, *kv_projections(hybrid_model)]
    for question in QUESTIONS:
        prompt = prefix_ids(hybrid_model) + question
        expected = generate(hybrid_model, prompt, pixel_values_videos=video, **kwargs)
        reused_cache = copy.deepcopy(cache)
        if decoding == "beam_search":
            reused_cache.batch_repeat_interleave(3)  # one row per beam, as for any prefix cache
        with CallCounter(modules) as calls:
            reused = generate(hybrid_model, prompt, **{CACHE_KWARG: reused_cache}, **kwargs)
        assert calls.calls == 0
        assert reused.sequences.tolist() == expected.sequences.tolist()
        if decoding == "greedy":
            torch.testing.assert_close(torch.stack(reused.logits), torch.stack(expected.logits), atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(reused.sequences_scores, expected.sequences_scores, atol=1e-5, rtol=0)
    # the cross term matters: without the slow K/V, the first question's answer changes
    without = copy.deepcopy(cache)
    without.layers[-1].reset()
    prompt = prefix_ids(hybrid_model) + QUESTIONS[0]
    no_cross = generate(hybrid_model, prompt, **{CACHE_KWARG: without}, output_logits=True)
    expected = generate(hybrid_model, prompt, pixel_values_videos=video, output_logits=True)
    assert (no_cross.logits[0] - expected.logits[0]).abs().max() > 1e-3


def test_continuing_a_generation_from_its_cache_keeps_the_cross_term(hybrid_model, video):
    """Generating 3 tokens, then 5 more from the returned cache, is generating 8 at once (the 4th step's logits were
    ~0.05 off when the slow K/V lived outside the cache)."""
    prompt = prefix_ids(hybrid_model) + QUESTIONS[1]
    at_once = generate(hybrid_model, prompt, pixel_values_videos=video, output_logits=True)
    first = generate(hybrid_model, prompt, pixel_values_videos=video, max_new_tokens=3, output_logits=True)
    rest = generate(
        hybrid_model,
        first.sequences[0].tolist(),
        max_new_tokens=5,
        output_logits=True,
        **{CACHE_KWARG: getattr(first, CACHE_KWARG)},
    )
    assert rest.sequences.tolist() == at_once.sequences.tolist()
    torch.testing.assert_close(torch.stack(first.logits + rest.logits), torch.stack(at_once.logits), atol=1e-5, rtol=0)


def test_multi_turn_chat_equals_one_long_prompt(hybrid_model, video):
    """Turn 2 appends to turn 1's cache: the same as generating after the whole conversation from scratch."""
    turn_1 = generate(hybrid_model, prefix_ids(hybrid_model) + QUESTIONS[0], pixel_values_videos=video)
    conversation = turn_1.sequences[0].tolist() + [3, 2] + QUESTIONS[2]  # end of turn, next user turn
    turn_2 = generate(hybrid_model, conversation, output_logits=True, **{CACHE_KWARG: getattr(turn_1, CACHE_KWARG)})
    expected = generate(hybrid_model, conversation, pixel_values_videos=video, output_logits=True)
    assert turn_2.sequences.tolist() == expected.sequences.tolist()
    torch.testing.assert_close(torch.stack(turn_2.logits), torch.stack(expected.logits), atol=1e-5, rtol=0)


def test_a_cache_with_a_video_refuses_another_video(hybrid_model, video):
    cache = prefix_cache(hybrid_model, video)
    with pytest.raises(ValueError, match="already holds the slow tokens"), torch.no_grad():
        hybrid_model(
            input_ids=torch.tensor([prefix_ids(hybrid_model)]), pixel_values_videos=video, **{CACHE_KWARG: cache}
        )


@pytest.mark.parametrize("decoding", [dict(), dict(num_beams=2)])
def test_a_question_batch_through_the_helper_equals_the_questions_one_by_one(hybrid_model, video, decoding):
    prefix = dict(input_ids=torch.tensor([prefix_ids(hybrid_model)]), pixel_values_videos=video)
    with CallCounter([hybrid_model.model.vision_tower]) as vision:
        batched = generate_with_shared_prefix(
            hybrid_model, prefix, QUESTIONS, max_new_tokens=8, do_sample=False, pad_token_id=PAD_ID, **decoding
        )
    assert vision.calls == 1
    assert batched.shape == (len(QUESTIONS), 8)
    for question, tokens in zip(QUESTIONS, batched.tolist()):
        expected = generate(hybrid_model, prefix_ids(hybrid_model) + question, pixel_values_videos=video, **decoding)
        assert tokens == expected.sequences[0, len(prefix_ids(hybrid_model)) + len(question) :].tolist()


def test_generate_with_shared_prefix_rejects_bad_inputs(hybrid_model, video):
    prefix = dict(input_ids=torch.tensor([prefix_ids(hybrid_model)]), pixel_values_videos=video)
    with pytest.raises(ValueError, match="prefix_length"):
        generate_with_shared_prefix(hybrid_model, dict(input_ids=torch.tensor(prefix_ids(hybrid_model))), QUESTIONS)
    with pytest.raises(ValueError, match="non-empty list of token ids"):
        generate_with_shared_prefix(hybrid_model, prefix, [[1, 2], []])
    with pytest.raises(ValueError, match="not to `generate`"):
        generate_with_shared_prefix(hybrid_model, prefix, QUESTIONS, pixel_values_videos=video)


def test_answer_questions_equals_generate_per_question(tiny_tokenizer):
    processor = make_processor(tiny_tokenizer)
    model = activate_hybrid_layers(model_for(tiny_tokenizer))
    clip = random_video(5, seed=4)
    questions = ["what happens in the video?", "which frame shows the small coloured square?", "yes no"]
    answers = answer_questions(model, processor, clip, questions, max_new_tokens=6, pad_token_id=PAD_ID)
    assert len(answers) == 3
    for question, answer in zip(questions, answers):
        messages = [
            {"role": "user", "content": [{"type": "video", "video": clip}, {"type": "text", "text": question}]}
        ]
        batch = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=PAD_ID)
        expected = tiny_tokenizer.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer == expected


def test_prefix_reuse_with_cross_attention_only_after_the_first_visual_token(video):
    """The released variant that keeps the cross term from the text before the video (the system prompt): the
    cached prefix applied it; a reused prefix's questions all come after the video."""
    model = activate_hybrid_layers(tiny_slowfast_model(seed=3, cross_attn_query_positions="text_after_first_visual"))
    prompt = prefix_ids(model) + QUESTIONS[1]
    expected = generate(model, prompt, pixel_values_videos=video, output_logits=True)
    reused = generate(model, prompt, output_logits=True, **{CACHE_KWARG: copy.deepcopy(prefix_cache(model, video))})
    assert reused.sequences.tolist() == expected.sequences.tolist()
    torch.testing.assert_close(torch.stack(reused.logits), torch.stack(expected.logits), atol=1e-5, rtol=0)
    default = activate_hybrid_layers(tiny_slowfast_model(seed=3))  # same weights, every text position
    assert (
        generate(default, prompt, pixel_values_videos=video, output_logits=True).logits[0] - expected.logits[0]
    ).abs().max() > 1e-4
