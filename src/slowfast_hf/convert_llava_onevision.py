# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Turn a Transformers LLaVA-OneVision checkpoint into a slow-fast model ("plug-and-play", Shi et al., 2025).

    python -m slowfast_hf.convert_llava_onevision --input llava-onevision-qwen2-7b-ov-hf \
        --output slowfast-llava-onevision-qwen2-7b --hybrid-layer-interval 8 --fast-temporal-stride 4

The vision tower (SigLIP), the projector and the decoder (Qwen2) keep their weights and names
(`model.vision_tower.*`, `model.multi_modal_projector.linear_{1,2}.*`, `model.language_model.*`, `lm_head.*`), and
`vision_feature_layer` / `vision_feature_select_strategy` are copied. The chosen decoder layers become hybrid layers
whose slow K/V projection starts as the layer's own `[Wk ; Wv]` and whose gate scale α starts at 0, so until the
model is fine-tuned it computes exactly what LLaVA-OneVision's decoder computes for the same input embeddings: the
same logits on text, and on a video the logits LLaVA-OneVision gives when the fast tokens sit at the placeholders.

What does change is how a video becomes tokens: LLaVA-OneVision puts every frame, bilinearly downsized to
`ceil(h/2) x ceil(w/2)`, and one trailing `image_newline` into the sequence; here the fast tokens follow the slow-fast
rule (`--fast-temporal-stride` etc.) and the slow tokens reach the hybrid layers. `model.image_newline` is therefore
dropped (logged). Images are one-frame videos at the tower's resolution: LLaVA-OneVision's anyres tiling
(`image_grid_pinpoints`, `vision_aspect_ratio`) is not carried over.

Memory: the checkpoint is loaded once with `LlavaOnevisionForConditionalGeneration.from_pretrained` (which maps the
names Transformers writes on disk, `language_model.model.*`, `vision_tower.*`, ..., to the module names above), and
the slow-fast model, built on the meta device, takes over the same tensors without copying them; only the new hybrid
parameters are allocated. The output is written to a hidden
folder next to `--output` and renamed at the end, so after any error there is nothing at `--output`.
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from .configuration_slowfast import GATE_KINDS, QUERY_POSITIONS, SlowFastConfig
from .convert_official import add_placeholder_tokens, atomic_output_dir, check_output_dir, run_command_line
from .hybrid_attention import decoder_layers, init_cross_attention
from .modeling_slowfast import SlowFastForConditionalGeneration, unreadable_safetensors
from .processing_slowfast import SlowFastProcessor
from .video_processing_slowfast import SlowFastVideoProcessor

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
DEFAULT_NUM_FRAMES = 32  # LLaVA-OneVision's video recipe
# SlowFastConfig arguments that the conversion takes from the checkpoint (or fixes), not from the caller
FIXED_BY_CHECKPOINT = {
    "text_config",
    "vision_config",
    "projector_type",
    "projector_bias",
    "vision_feature_layer",
    "vision_feature_select_strategy",
    "image_token_id",
    "video_token_id",
    "tie_word_embeddings",
    "init_cross_kv_from_lm",
}


def read_llava_onevision_config(input_dir: Path) -> LlavaOnevisionConfig:
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{input_dir} has no config.json: not a Transformers LLaVA-OneVision checkpoint.")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != LlavaOnevisionConfig.model_type:
        raise ValueError(
            f"{config_path} has `model_type` {model_type!r}, not {LlavaOnevisionConfig.model_type!r}: not a "
            "Transformers LLaVA-OneVision checkpoint."
        )
    config = LlavaOnevisionConfig.from_pretrained(input_dir)
    if not isinstance(config.vision_feature_layer, int):
        raise ValueError(
            f"`vision_feature_layer` {config.vision_feature_layer} selects several vision layers; slow-fast models "
            "take one."
        )
    if config.projector_hidden_act != "gelu":
        raise ValueError(f"`projector_hidden_act` {config.projector_hidden_act!r} is not 'gelu' (mlp2x_gelu).")
    return config


def read_normalisation(input_dir: Path) -> tuple[list[float], list[float]]:
    """The image mean and std of the checkpoint's own (video) processor configuration."""
    for name in PROCESSOR_CONFIG_FILES:
        path = input_dir / name
        if path.is_file():
            processor_config = json.loads(path.read_text())
            if "image_mean" not in processor_config or "image_std" not in processor_config:
                raise ValueError(f"{path} lacks `image_mean` / `image_std`.")
            return processor_config["image_mean"], processor_config["image_std"]
    raise FileNotFoundError(f"{input_dir} has none of {PROCESSOR_CONFIG_FILES}, which give the images' normalisation.")


def convert_llava_onevision(
    input_dir: str | Path,
    output_dir: str | Path,
    num_frames: int = DEFAULT_NUM_FRAMES,
    max_shard_size: str = "5GB",
    seed: int = 0,
    **slowfast_kwargs,
) -> Path:
    """
    Convert the LLaVA-OneVision checkpoint in `input_dir` into a slow-fast model + processor folder at `output_dir`.

    Args:
        num_frames: frames the processor samples per video.
        max_shard_size: largest output safetensors file.
        seed: seeds the initialisation of the hybrid gates' projections (which act only once α moves).
        slowfast_kwargs: [`SlowFastConfig`] arguments for the slow-fast part (`hybrid_layers` or
            `hybrid_layer_interval` / `hybrid_layer_min_depth` / `hybrid_layer_max_depth`, `cross_attn_gate`,
            `cross_attn_query_positions`, the token strides, `min_fast_frames`); the rest comes from the checkpoint.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"`num_frames` must be an integer >= 1, got {num_frames!r}.")
    if given := sorted(FIXED_BY_CHECKPOINT & set(slowfast_kwargs)):
        raise ValueError(f"{given} come from the LLaVA-OneVision checkpoint; do not pass them.")
    check_output_dir(output_dir)
    source_config = read_llava_onevision_config(input_dir)
    image_mean, image_std = read_normalisation(input_dir)
    tokenizer = AutoTokenizer.from_pretrained(input_dir)
    add_placeholder_tokens(tokenizer, source_config.text_config.vocab_size)
    config = SlowFastConfig(
        text_config=source_config.text_config,
        vision_config=source_config.vision_config,
        projector_type="mlp2x_gelu",
        projector_bias=source_config.multimodal_projector_bias,
        vision_feature_layer=source_config.vision_feature_layer,
        vision_feature_select_strategy=source_config.vision_feature_select_strategy,
        image_token_id=source_config.image_token_id,
        video_token_id=source_config.video_token_id,
        tie_word_embeddings=source_config.tie_word_embeddings,
        init_cross_kv_from_lm=True,
        **slowfast_kwargs,
    )
    image_size = config.vision_config.image_size
    video_processor = SlowFastVideoProcessor(
        size={"height": image_size, "width": image_size},
        resample="bicubic",
        image_mean=image_mean,
        image_std=image_std,
        num_frames=num_frames,
    )
    processor = SlowFastProcessor.from_model_config(config, video_processor, tokenizer)

    try:
        source = LlavaOnevisionForConditionalGeneration.from_pretrained(input_dir, dtype="auto")
    except SafetensorError as error:  # safetensors' message names no file
        unreadable = ", ".join(unreadable_safetensors(input_dir)) or f"a safetensors file of {input_dir}"
        raise ValueError(
            f"{unreadable} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error
    state_dict = source.state_dict()
    state_dict.pop("model.image_newline")
    logger.info(
        "Dropped model.image_newline: LLaVA-OneVision appends it to each video's tokens; slow-fast models place "
        "only fast tokens at a placeholder, so it has no use here."
    )
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(config)
    loaded = model.load_state_dict(state_dict, strict=False, assign=True)
    not_hybrid = [name for name in loaded.missing_keys if ".cross_attn." not in name]
    if loaded.unexpected_keys or not_hybrid:
        raise ValueError(
            f"The LLaVA-OneVision weights do not fit the slow-fast model: unexpected {loaded.unexpected_keys[:5]}, "
            f"missing {not_hybrid[:5]}."
        )
    model.tie_weights()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in decoder_layers(model.model.language_model):
            attention = layer.self_attn
            if hasattr(attention, "cross_attn"):
                weight = attention.k_proj.weight
                attention.cross_attn.to_empty(device=weight.device).to(weight.dtype)
                init_cross_attention(attention.cross_attn, attention, config.text_config, init_cross_kv_from_lm=True)
    model.generation_config = source.generation_config
    del source, state_dict

    with atomic_output_dir(output_dir) as staging:
        model.eval().save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
    logger.info(
        "Wrote %s: hybrid layers %s (alpha = 0, K/V from the LM), gate %s, %d frames per video, fast-token strides "
        "sampling %d / temporal %d / spatial %d, slow spatial stride %d.",
        output_dir,
        config.hybrid_layers,
        config.cross_attn_gate,
        num_frames,
        config.fast_temporal_sampling_stride,
        config.fast_temporal_stride,
        config.fast_spatial_stride,
        config.slow_spatial_stride,
    )
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="Folder of the LLaVA-OneVision checkpoint.")
    parser.add_argument("--output", required=True, type=Path, help="New folder for the slow-fast model.")
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument("--hybrid-layers", type=int, nargs="+", help="Decoder layers to make hybrid, e.g. 0 8 16 24.")
    layers.add_argument("--hybrid-layer-interval", type=int, help="Every N-th layer becomes hybrid (default 8).")
    parser.add_argument("--hybrid-layer-min-depth", type=int, default=0, help="First layer for the interval.")
    parser.add_argument("--hybrid-layer-max-depth", type=int, help="End (exclusive) for the interval.")
    parser.add_argument("--cross-attn-gate", choices=GATE_KINDS, default="dynamic_tanh_warmup")
    parser.add_argument("--cross-attn-query-positions", choices=QUERY_POSITIONS, default="text")
    parser.add_argument("--slow-spatial-stride", type=int, default=2)
    parser.add_argument("--fast-temporal-sampling-stride", type=int, default=1)
    parser.add_argument("--fast-temporal-stride", type=int, default=4)
    parser.add_argument("--fast-spatial-stride", type=int, default=1)
    parser.add_argument("--min-fast-frames", type=int, default=1)
    parser.add_argument("--num-frames", type=int, default=DEFAULT_NUM_FRAMES, help="Frames sampled per video.")
    parser.add_argument("--max-shard-size", default="5GB", help="Largest output safetensors file (default 5GB).")
    parser.add_argument("--seed", type=int, default=0, help="Seed for the hybrid gates' initialisation.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_command_line(
        convert_llava_onevision,
        args.input,
        args.output,
        num_frames=args.num_frames,
        max_shard_size=args.max_shard_size,
        seed=args.seed,
        hybrid_layers=args.hybrid_layers,
        hybrid_layer_interval=args.hybrid_layer_interval,
        hybrid_layer_min_depth=args.hybrid_layer_min_depth,
        hybrid_layer_max_depth=args.hybrid_layer_max_depth,
        cross_attn_gate=args.cross_attn_gate,
        cross_attn_query_positions=args.cross_attn_query_positions,
        slow_spatial_stride=args.slow_spatial_stride,
        fast_temporal_sampling_stride=args.fast_temporal_sampling_stride,
        fast_temporal_stride=args.fast_temporal_stride,
        fast_spatial_stride=args.fast_spatial_stride,
        min_fast_frames=args.min_fast_frames,
    )


if __name__ == "__main__":
    main()
