# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Many questions about one video, each costing only its own tokens.

Attention is causal and a position's cross term depends only on its query and the slow tokens, so the prompt up to
the end of the video is the same for every question: its decoder cache, which also holds the slow tokens' keys/values
([`SlowKeyValuesLayer`]), is computed once and reused exactly. This is Transformers' prompt-reuse recipe; the helpers
here run it for a batch of questions:

    prefix cache = model(prefix with the video)            # vision encoder, fast tokens, slow K/V: once
    cache.batch_repeat_interleave(questions)               # the slow K/V stay one shared copy
    model.generate(prefix + each question, cache=cache)    # prefills only the questions' tokens
"""

import torch
from transformers.cache_utils import DynamicCache

from .transformers_compat import CACHE_KWARG

VISUAL_INPUTS = ("pixel_values", "pixel_values_videos", "video_num_frames", "image_features", "video_features")


def _decoding_expansion(model, generate_kwargs: dict) -> int:
    """How many rows `generate` makes of each input row (beams, or returned sequences when sampling)."""
    config = generate_kwargs.get("generation_config", model.generation_config)
    num_beams = generate_kwargs.get("num_beams", config.num_beams) or 1
    num_return_sequences = generate_kwargs.get("num_return_sequences", config.num_return_sequences) or 1
    return num_beams if num_beams > 1 else num_return_sequences


@torch.no_grad()
def generate_with_shared_prefix(model, prefix_inputs: dict, continuations: list[list[int]], **generate_kwargs):
    """
    Generate after each of `continuations`, all following one prompt prefix, in one batch.

    The prefix (holding the images/videos) runs once into a cache; the continuations are then generated together,
    left-padded between the prefix and their tokens, so the prefill computes only their tokens. The result is, token
    for token, `generate(prefix + continuation, <visual inputs>)` of each continuation alone.

    Args:
        model ([`SlowFastForConditionalGeneration`]): the model.
        prefix_inputs (`dict`): model inputs of the prefix for one sample: `input_ids` `(1, P)` and its visual
            inputs (`pixel_values_videos`, `video_features`, ...), as the processor returns them.
        continuations (`list[list[int]]`): the token ids that follow the prefix, one list per question.
        generate_kwargs: passed to `generate` (`max_new_tokens`, `num_beams`, `do_sample`, ...).
    Returns:
        `torch.LongTensor` `(len(continuations) · n, new_tokens)`: the generated tokens, `n` rows per continuation
        (`num_return_sequences`), padded with the pad token after an early end.
    """
    if not model.config.cross_attn_generated_tokens:
        raise ValueError(
            "This model gives later tokens no cross term (`config.cross_attn_generated_tokens=False`, the released "
            "models' behaviour): a question after a cached video prefix would not cross-attend to the video as it "
            "does in one prompt. Generate each question with its video instead."
        )
    input_ids = prefix_inputs.get("input_ids") if isinstance(prefix_inputs, dict) else None
    if not torch.is_tensor(input_ids) or input_ids.ndim != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] == 0:
        shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise ValueError(f"`prefix_inputs` must hold `input_ids` of shape (1, prefix_length), got {shape}.")
    if "attention_mask" in prefix_inputs and not bool(prefix_inputs["attention_mask"].all()):
        raise ValueError("The prefix must not be padded: its `attention_mask` has zeros.")
    if not isinstance(continuations, (list, tuple)) or not continuations:
        raise ValueError(f"`continuations` must be a non-empty list of token id lists, got {continuations!r}.")
    for index, tokens in enumerate(continuations):
        if (
            not isinstance(tokens, (list, tuple))
            or not tokens
            or any(isinstance(t, bool) or not isinstance(t, int) for t in tokens)
        ):
            raise ValueError(f"`continuations[{index}]` must be a non-empty list of token ids, got {tokens!r}.")
    if passed := [
        key for key in VISUAL_INPUTS + ("input_ids", "attention_mask", CACHE_KWARG) if key in generate_kwargs
    ]:
        raise ValueError(f"Pass {passed} in `prefix_inputs` (visual inputs) or not at all, not to `generate`.")

    text_config = model.config.get_text_config(decoder=True)
    cache = DynamicCache(config=text_config)
    model(**prefix_inputs, use_cache=True, logits_to_keep=1, **{CACHE_KWARG: cache})

    pad_token_id = generate_kwargs.get("pad_token_id", model.generation_config.pad_token_id)
    if pad_token_id is None:
        pad_token_id = text_config.pad_token_id if text_config.pad_token_id is not None else 0
    longest = max(len(tokens) for tokens in continuations)
    padding = [longest - len(tokens) for tokens in continuations]
    # (N, P + longest): the prefix, then each continuation left-padded to the longest
    suffix_ids = torch.tensor([[pad_token_id] * pad + list(tokens) for pad, tokens in zip(padding, continuations)])
    suffix_mask = torch.tensor([[0] * pad + [1] * len(tokens) for pad, tokens in zip(padding, continuations)])
    batch_size = len(continuations)
    device = input_ids.device
    batch_ids = torch.cat([input_ids.expand(batch_size, -1), suffix_ids.to(device)], dim=1)
    batch_mask = torch.cat([torch.ones_like(input_ids).expand(batch_size, -1), suffix_mask.to(device)], dim=1)

    cache.batch_repeat_interleave(batch_size * _decoding_expansion(model, generate_kwargs))
    generate_kwargs = {"pad_token_id": pad_token_id, **generate_kwargs}
    output = model.generate(input_ids=batch_ids, attention_mask=batch_mask, **{CACHE_KWARG: cache}, **generate_kwargs)
    sequences = output if torch.is_tensor(output) else output.sequences
    return sequences[:, batch_ids.shape[1] :]


@torch.no_grad()
def answer_questions(model, processor, video, questions: list[str], system_prompt: str | None = None, **kwargs):
    """
    Answer several questions about one video, in one batch sharing the video's prompt prefix: the video is read,
    encoded and prefilled once, each question then costs only its own tokens.

    Each answer is the one `generate` gives for the chat `[system, user: <video> question]` alone (greedy decoding
    by default; `kwargs` go to `generate`, e.g. `max_new_tokens`, `num_beams`).

    Args:
        model ([`SlowFastForConditionalGeneration`]): the model.
        processor ([`SlowFastProcessor`]): its processor (chat template, video processing).
        video: anything the processor takes as one video (a path, frames, a `DecodedVideo`).
        questions (`list[str]`): the questions.
        system_prompt (`str`, *optional*): a system message; the chat template's default when None.
    Returns:
        `list[str]`: the answers, question by question (`num_return_sequences` each).
    """
    if not isinstance(questions, (list, tuple)) or not questions or not all(isinstance(q, str) for q in questions):
        raise ValueError(f"`questions` must be a non-empty list of strings, got {questions!r}.")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError(f"`system_prompt` must be a string or None, got {type(system_prompt).__name__}.")
    video_token, tokenizer = processor.video_token, processor.tokenizer
    texts = []
    for question in questions:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    # the prefix ends with the video placeholder: a special token, after which the text is tokenized on its own
    prefix_text = texts[0][: texts[0].index(video_token) + len(video_token)]
    prefix_inputs = dict(processor(text=[prefix_text], videos=[video], return_tensors="pt", add_special_tokens=False))
    prefix_ids = prefix_inputs["input_ids"][0].tolist()
    num_placeholders = prefix_ids.count(processor.video_token_id)
    continuations = []
    for question, text in zip(questions, texts):
        ids = tokenizer(text.replace(video_token, video_token * num_placeholders, 1), add_special_tokens=False)
        ids = ids["input_ids"]
        if ids[: len(prefix_ids)] != prefix_ids:
            raise ValueError(f"The chat of question {question!r} does not start with the shared video prefix.")
        continuations.append(ids[len(prefix_ids) :])
    new_tokens = generate_with_shared_prefix(model, prefix_inputs, continuations, **kwargs)
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


__all__ = ["answer_questions", "generate_with_shared_prefix"]
