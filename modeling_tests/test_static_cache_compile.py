"""Static cache and `torch.compile`: `generate(cache_implementation="static")` with hybrid layers, and a compiled
decoding step that compiles once (no graph break, no recompilation: no shape changes from step to step)."""

import contextlib

import pytest
import torch
from conftest import activate_hybrid_layers, tiny_slowfast_model, video_prompt
from test_modeling import frames, pad
from torch._dynamo.utils import counters
from transformers.cache_utils import StaticCache

from slowfast_hf import SlowKeyValuesLayer
from slowfast_hf.transformers_compat import CACHE_KWARG

PAD_ID = 0
DECODE_STEPS = 16


@pytest.fixture(scope="module")
def hybrid_model():
    return activate_hybrid_layers(tiny_slowfast_model(seed=5))


def test_static_cache_generate_equals_dynamic_cache(hybrid_model):
    """Left-padded batch, one sample without video: `generate` then passes the static cache's dict of masks."""
    prompts = [video_prompt(hybrid_model, 3), [1, 5, 6, 7, 8], video_prompt(hybrid_model, 6, prefix=(1,))]
    input_ids, attention_mask, _, _ = pad(prompts, "left")
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values_videos=torch.cat([frames(3, seed=1), frames(6, seed=2)]),
        video_num_frames=[3, 6],
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=PAD_ID,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        dynamic = hybrid_model.generate(**inputs)
        static = hybrid_model.generate(**inputs, cache_implementation="static")
    assert isinstance(getattr(static, CACHE_KWARG), StaticCache)
    assert isinstance(getattr(static, CACHE_KWARG).layers[-1], SlowKeyValuesLayer)
    assert static.sequences.tolist() == dynamic.sequences.tolist()
    torch.testing.assert_close(torch.stack(static.logits), torch.stack(dynamic.logits), atol=1e-5, rtol=0)


@torch.no_grad()
def decode(model, forward, prompt, video, steps: int, after_first_step=None) -> list[int]:
    """Greedy decoding with a static cache: an eager prefill, then `steps` calls of `forward` (one token each)."""
    cache = StaticCache(config=model.config.text_config, max_cache_len=len(prompt) + steps + 1)
    output = model(input_ids=torch.tensor([prompt]), pixel_values_videos=video, **{CACHE_KWARG: cache})
    token = output.logits[:, -1:].argmax(-1)
    tokens = [token.item()]
    for step in range(steps):
        position_ids = torch.tensor([[len(prompt) + step]])
        output = forward(input_ids=token, position_ids=position_ids, **{CACHE_KWARG: cache})
        token = output.logits[:, -1:].argmax(-1)
        tokens.append(token.item())
        if step == 0 and after_first_step is not None:
            after_first_step()
    return tokens


def test_compiled_static_cache_decoding_compiles_once_and_equals_eager():
    """`torch.compile(model.forward, fullgraph=True)` (inductor): the first decoding step compiles one graph, the
    next 15 reuse it (any recompilation raises), and the tokens are those of eager decoding."""
    model = activate_hybrid_layers(
        tiny_slowfast_model(seed=5, text_overrides=dict(num_hidden_layers=2), hybrid_layers=[1])
    )
    prompt, video = video_prompt(model, 6), frames(6, seed=2)
    eager = decode(model, model.forward, prompt, video, DECODE_STEPS)
    assert len(set(eager)) > 3  # not a degenerate repetition

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model.forward, fullgraph=True)
    with contextlib.ExitStack() as stack:
        forbid_recompiles = lambda: stack.enter_context(torch._dynamo.config.patch(error_on_recompile=True))
        tokens = decode(model, compiled, prompt, video, DECODE_STEPS, after_first_step=forbid_recompiles)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    assert tokens == eager
