# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Hub-ready slow-fast checkpoints: a generated model card, and one call that saves (or pushes) a model, its processor
and the card together.

    from slowfast_hf.hub import push_to_hub, save_for_hub

    save_for_hub(model, processor, "my-slowfast", license="apache-2.0", training_data="1k video QA pairs.")
    push_to_hub(model, processor, "me/my-slowfast", license="apache-2.0", training_data="1k video QA pairs.")

The folder (or Hub repository) is self-sufficient: safetensors weights (sharded above `max_shard_size`),
`config.json` with its `auto_map`, the modeling and processing code (so `trust_remote_code=True` loads it where this
package is not installed), `processor_config.json` (with the video processor's settings), the tokenizer files,
`chat_template.jinja` and `README.md`, the model card.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_file
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .token_builder import SlowFastTokenBuilder
from .transformers_compat import MIN_TRANSFORMERS_VERSION
from .video_processing_slowfast import DEFAULT_NUM_FRAMES

# The processor's token rule and placeholders must be the model's, or the saved folder would feed the model the
# wrong number of placeholders.
SHARED_SETTINGS = (
    "slow_spatial_stride",
    "fast_temporal_sampling_stride",
    "fast_temporal_stride",
    "fast_spatial_stride",
    "min_fast_frames",
    "fast_frame_remainder",
    "spatial_pool_remainder",
    "video_token_id",
    "image_token_id",
)

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A slow-fast video language model (Shi et al., *Slow-Fast Architecture for Video Multi-Modal Large Language Models*,
[arXiv 2504.01328](https://arxiv.org/abs/2504.01328)), built with the `slowfast_hf` plugin for Hugging Face
Transformers. Each video is seen twice: a few compressed **fast tokens** sit in the decoder's input sequence next to
the text, while the per-frame **slow tokens** stay out of it and are read through gated cross-attention in the
**hybrid layers**.

## Model

| | |
|---|---|
| Base models | {{ base_models }} |
| Vision encoder | {{ vision }} |
| Decoder | {{ decoder }} |
| Projector | `{{ projector }}` |
| Hybrid layers | {{ hybrid_layers }} |
| Frames per video | {{ frames }} |
| Frame size | {{ frame_size }} |
| Slow tokens | {{ slow_tokens }} |
| Fast tokens | {{ fast_tokens }} |
| Parameters | {{ parameters }} |

## Training data

{{ training_data }}

## Usage

With `trust_remote_code=True` the modeling and processing code stored with the weights runs; it needs
`transformers>={{ transformers_floor }}`, `torch`, `einops` and `av` (PyAV, to read videos):
`pip install "transformers>={{ transformers_floor }}" torch einops av`. Or install the `slowfast_hf` package, which is
not on PyPI: from a source checkout of it, `pip install .`; then `import slowfast_hf` registers the classes and no
remote code is needed.

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{{ model_id }}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{ model_id }}", trust_remote_code=True)

video = {"type": "video", "path": "clip.mp4"}
messages = [{"role": "user", "content": [video, {"type": "text", "text": "Describe the video."}]}]
inputs = processor.apply_chat_template(
    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
)
output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
```

## License

{{ license }}
"""


def create_model_card(
    model,
    processor,
    *,
    model_id: str,
    license: str,
    base_models: Sequence[str] | None = None,
    training_data: str | None = None,
    datasets: Sequence[str] | None = None,
) -> ModelCard:
    """
    The model card (README.md) of a slow-fast model and its processor: Hub metadata (`library_name: transformers`,
    `pipeline_tag: video-text-to-text`, `license`, `base_model`, `datasets`, tags) and a description of the
    architecture (base models, hybrid layers, token strides, frame count), the training data, a usage snippet and the
    license.

    Args:
        model ([`SlowFastForConditionalGeneration`]): the model.
        processor ([`SlowFastProcessor`]): its processor; its token rule and placeholder ids must be the model's.
        model_id (`str`): the Hub id (or path) the usage snippet loads; its last part is the card's title.
        license (`str`): the license of the weights, as a Hub license id (e.g. `"apache-2.0"`); it depends on the
            base models' licenses, so it has no default.
        base_models (`Sequence[str]`, *optional*): Hub ids of the models this one was built from. Defaults to the
            vision encoder and decoder that [`~SlowFastForConditionalGeneration.from_vision_text_pretrained`] loaded
            (recorded in the config as the sub-configs' `_name_or_path`); recorded local paths are named in the text
            but left out of the `base_model` metadata, which takes Hub ids only.
        training_data (`str`, *optional*): a description of the training data (Markdown).
        datasets (`Sequence[str]`, *optional*): Hub ids of the training datasets, for the `datasets` metadata.

    Returns:
        `huggingface_hub.ModelCard`: save it with `card.save(path)` or push it with `card.push_to_hub(repo_id)`.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "slowfast_video":
        raise ValueError(f"`model` must be a slow-fast model, got {type(model).__name__}.")
    if not callable(getattr(processor, "num_video_tokens", None)):
        raise ValueError(f"`processor` must be a SlowFastProcessor, got {type(processor).__name__}.")
    mismatched = {
        name: (getattr(config, name), getattr(processor, name))
        for name in SHARED_SETTINGS
        if getattr(config, name) is not None and getattr(config, name) != getattr(processor, name)
    }
    if mismatched:
        details = ", ".join(f"{name}: model {ours}, processor {theirs}" for name, (ours, theirs) in mismatched.items())
        raise ValueError(
            f"`processor` does not match `model` ({details}); build it with `SlowFastProcessor.from_model_config`."
        )
    if not isinstance(license, str) or not license:
        raise ValueError(f"`license` must be a Hub license id such as 'apache-2.0', got {license!r}.")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"`model_id` must be a non-empty string, got {model_id!r}.")
    datasets = _check_hub_ids(datasets, "datasets")
    if base_models is not None:
        sources = _check_hub_ids(base_models, "base_models")
        hub_models = sources
    else:  # what `from_vision_text_pretrained` loaded; a local folder is named in the text only
        recorded = (config.vision_config._name_or_path, config.text_config._name_or_path)
        sources = [name for name in recorded if name]
        hub_models = [name for name in sources if not os.path.isdir(name) and _is_hub_id(name)]

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        license=license,
        base_model=hub_models or None,
        datasets=datasets or None,
        tags=["slowfast_hf", "slow-fast", "video", "multimodal"],
    )
    vision_config, text_config = config.vision_config, config.text_config
    return ModelCard.from_template(
        card_data,
        template_str=MODEL_CARD_TEMPLATE,
        model_name=model_id.rstrip("/").split("/")[-1],
        model_id=model_id,
        base_models=_describe_sources(sources, hub_models),
        vision=f"`{vision_config.model_type}`",
        decoder=(
            f"`{text_config.model_type}`, {text_config.num_hidden_layers} layers, hidden size "
            f"{text_config.hidden_size}"
        ),
        projector=config.projector_type,
        hybrid_layers=_describe_hybrid_layers(config),
        parameters=f"{model.num_parameters():,}",
        training_data=training_data or "Not documented.",
        license=f"`{license}`",
        transformers_floor=MIN_TRANSFORMERS_VERSION,
        **_describe_tokens(config, processor),
    )


def save_for_hub(
    model,
    processor,
    save_directory: str | os.PathLike,
    *,
    license: str,
    base_models: Sequence[str] | None = None,
    training_data: str | None = None,
    datasets: Sequence[str] | None = None,
    model_id: str | None = None,
    max_shard_size: int | str = "5GB",
) -> ModelCard:
    """
    Save `model`, `processor` and their model card into `save_directory`: `model.save_pretrained`,
    `processor.save_pretrained` and `README.md`. The card is built first, so invalid arguments write nothing.

    Args:
        model, processor, license, base_models, training_data, datasets: see [`create_model_card`].
        save_directory (`str` or `os.PathLike`): the folder (created if needed).
        model_id (`str`, *optional*): the id the card's usage snippet loads; defaults to the folder's name.
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`): weight files larger than this are split
            into shards (`model.safetensors.index.json` maps the tensors to them).

    Returns:
        `huggingface_hub.ModelCard`: the card written to `README.md`.
    """
    card = create_model_card(
        model,
        processor,
        model_id=model_id or Path(save_directory).resolve().name,
        license=license,
        base_models=base_models,
        training_data=training_data,
        datasets=datasets,
    )
    model.save_pretrained(save_directory, max_shard_size=max_shard_size)
    processor.save_pretrained(save_directory)
    card.save(os.path.join(save_directory, "README.md"))
    return card


def push_to_hub(
    model,
    processor,
    repo_id: str,
    *,
    license: str,
    base_models: Sequence[str] | None = None,
    training_data: str | None = None,
    datasets: Sequence[str] | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    max_shard_size: int | str = "5GB",
) -> str:
    """
    Push `model`, `processor` and their model card to the Hub repository `repo_id` (created if needed), with the
    libraries' own methods: the card uploaded as `README.md`, then `model.push_to_hub` and `processor.push_to_hub`.
    (The card is not sent through `ModelCard.push_to_hub`, whose YAML check goes to huggingface.co whatever the
    endpoint in huggingface_hub < 2.2.) Transformers' `push_to_hub` keeps the card it finds in the repository (adding the model's
    tags), which is why the card goes first. Three commits: the card, the model, the processor.

    Args:
        model, processor, license, base_models, training_data, datasets: see [`create_model_card`].
        repo_id (`str`): `"namespace/name"` of the repository.
        private (`bool`, *optional*): visibility of a newly created repository.
        token (`str` or `bool`, *optional*): the Hub token; defaults to the one `hf auth login` saved.
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`): shard size of the weights.

    Returns:
        `str`: the URL of the last commit.
    """
    card = create_model_card(
        model,
        processor,
        model_id=repo_id,
        license=license,
        base_models=base_models,
        training_data=training_data,
        datasets=datasets,
    )
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    upload_file(
        path_or_fileobj=str(card).encode(),
        path_in_repo="README.md",
        repo_id=repo_id,
        token=token,
        commit_message="Add model card",
    )
    model.push_to_hub(repo_id, token=token, max_shard_size=max_shard_size)
    return processor.push_to_hub(repo_id, token=token)


def _check_hub_ids(ids: Sequence[str] | None, argument: str) -> list[str]:
    if ids is None:
        return []
    if isinstance(ids, str) or not all(isinstance(repo_id, str) for repo_id in ids):
        raise ValueError(f"`{argument}` must be a list of Hub ids, got {ids!r}.")
    for repo_id in ids:
        if not _is_hub_id(repo_id):
            raise ValueError(f"`{argument}` must hold Hub ids (such as 'Qwen/Qwen2-7B-Instruct'), got {repo_id!r}.")
    return list(ids)


def _is_hub_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _describe_sources(sources: list[str], hub_models: list[str]) -> str:
    if not sources:
        return "not recorded"
    return ", ".join(
        f"[`{name}`](https://huggingface.co/{name})" if name in hub_models else f"`{name}` (a local checkpoint)"
        for name in sources
    )


def _describe_hybrid_layers(config) -> str:
    num_layers = config.text_config.num_hidden_layers
    if not config.hybrid_layers:
        return f"none of the {num_layers} decoder layers (self-attention only: the fast tokens are all the model sees)"
    layers = ", ".join(str(index) for index in config.hybrid_layers)
    return (
        f"{layers} (of {num_layers}); gate `{config.cross_attn_gate}`, queries `{config.cross_attn_query_positions}`"
    )


def _describe_tokens(config, processor) -> dict[str, str]:
    """Frame sampling, frame size and slow/fast token counts, as the processor and the model make them."""
    video_processor = processor.video_processor
    num_frames = None
    if not video_processor.do_sample_frames:
        frames = "every frame"
    elif video_processor.fps is not None:
        frames = f"{video_processor.fps} per second, at most {video_processor.max_frames or 'unlimited'}"
    else:
        num_frames = video_processor.num_frames or DEFAULT_NUM_FRAMES
        frames = f"{num_frames}, sampled evenly" + (
            " (linspace: first and last frame included)" if video_processor.frame_sampling == "linspace" else ""
        )
    stride = config.slow_spatial_stride
    slow = f"each frame pooled {stride}x{stride}, cross-attended" if config.hybrid_layers else "none (no hybrid layer)"
    fast = (
        f"every {config.fast_temporal_sampling_stride} frame(s) kept, averaged over {config.fast_temporal_stride}, "
        f"pooled {config.fast_spatial_stride}x{config.fast_spatial_stride}, in the sequence"
    )
    if video_processor.crop_size is None and "shortest_edge" in video_processor.size:
        # the frame size, hence the token counts, follow each video's aspect ratio
        frame_size = f"shorter side resized to {video_processor.size['shortest_edge']} px"
    else:
        height, width = video_processor.output_size
        grid = height // processor.patch_size, width // processor.patch_size
        frame_size = f"{height}x{width} px ({grid[0]}x{grid[1]} feature grid)"
        if num_frames is not None:
            builder = SlowFastTokenBuilder.from_config(config)
            fast = f"{builder.num_fast_tokens(num_frames, *grid)} per video: {fast}"
            if config.hybrid_layers:
                num_slow = builder.num_slow_tokens(num_frames, *grid)
                slow = f"{num_slow} per video ({num_slow // num_frames} per frame): {slow}"
    return dict(frames=frames, frame_size=frame_size, slow_tokens=slow, fast_tokens=fast)


__all__ = ["create_model_card", "push_to_hub", "save_for_hub"]
