# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Convert a released slow-fast checkpoint (Shi et al., 2025) into a folder this package loads.

    python -m slowfast_hf.convert_official --input slowfast-video-mllm-qwen2-7b-convnext-576-frame64-s1t4 \
        --output slowfast-qwen2-7b-convnext-576-frame64-hf

The input is a local copy of `shi-labs/slowfast-video-mllm-qwen2-7b-convnext-576-frame64-s1t4` (or `-frame96-s1t6`):
a LLaVA-style folder (`model_type "llava_qwen_slow_fast"`) with safetensors weights (shards listed in
`model.safetensors.index.json`, or one `model.safetensors`), its `config.json` and the Qwen2 tokenizer. The output
holds a [`SlowFastForConditionalGeneration`] and a [`SlowFastProcessor`] that load with `AutoModelForImageTextToText`
and `AutoProcessor`.

Released tensor -> ours (DESIGN §2, "Released checkpoint layout"):

    model.embed_tokens, model.layers.{i}.*, model.norm            -> model.language_model.<same name>, values unchanged
    lm_head.weight                                                -> lm_head.weight
    model.layers.{i}.self_attn.cross_attn_kv_proj.{weight,bias}   -> model.language_model.layers.{i}.self_attn
                                                                     .cross_attn.kv_proj.*, rows permuted from the
                                                                     released `(h kv d)` to our `(kv h d)`
    model.layers.{i}.self_attn.cross_attn_gate_proj.0.*           -> ...self_attn.cross_attn.gate_proj.*
    model.layers.{i}.self_attn.cross_attn_warm_up_gate            -> ...self_attn.cross_attn.gate_alpha
    model.mm_projector.{0,2}.*                                    -> model.multi_modal_projector.linear_{1,2}.*
    model.vision_tower.vision_tower.* (timm ConvNeXt)             -> model.vision_tower.* (Transformers ConvNextModel)
        stem.0, stem.1                        -> embeddings.patch_embeddings, embeddings.layernorm
        stages.{s}.downsample.{0,1}           -> encoder.stages.{s}.downsampling_layer.{0,1}
        stages.{s}.blocks.{b}.conv_dw, norm, mlp.fc1, mlp.fc2, gamma
                                              -> encoder.stages.{s}.layers.{b}.dwconv, layernorm, pwconv1, pwconv2,
                                                 layer_scale_parameter
        head.norm                             -> layernorm (the pooled-output norm, which slow-fast models never use)

Dropped, with a log line: the vision tower's classifier `head.fc` and LLaVA-NeXT's `model.image_newline`; neither
takes part in what the released model computes for videos.

The released pipeline around the weights, written as typed settings (this package's own defaults differ):

    config    cross_attn_generated_tokens=False   generated tokens get no cross term (the released `generate`)
              fast_frame_remainder="drop"         released fast-frame sampling; temporal pooling drops trailing frames
              spatial_pool_remainder="drop"       spatial pooling floors on odd grids (`avg_pool2d`)
              vision_layer_norm_eps=1e-5          timm ConvNeXt-XXL's layer norms (ConvNextModel hard-codes 1e-6)
    processor frame_sampling="linspace"           `np.linspace(0, n - 1, N, dtype=int)` frames, repeated in short clips
              resize_backend="pil"                CLIPImageProcessor's functions: PIL bicubic shorter side, center crop
              chat template                       the released `qwen_1_5` prompt for one video and a question

Memory: the output model is built on the meta device, so nothing is allocated for it up front; the released shards
are read one at a time with `safetensors.safe_open`, and each tensor is renamed and assigned into the model as its
parameter (only the K/V projections are copied, to permute their rows). The process therefore holds one copy of the
weights, in the checkpoint's dtype (about 17 GB for the 7B model with its ConvNeXt-XXL tower in bf16);
`save_pretrained` then writes the output shard by shard.

The output is built in a hidden folder next to `--output` and renamed to it at the end: after any error there is
nothing at `--output`. A conversion that was killed outright (no chance to clean up) leaves its hidden folder behind;
the next conversion to the same `--output` deletes it (hidden folders of conversions still running are kept).
"""

import argparse
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from einops import rearrange
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, ConvNextConfig, GenerationConfig, PreTrainedTokenizerBase, Qwen2Config

from .configuration_slowfast import SlowFastConfig
from .modeling_slowfast import SlowFastForConditionalGeneration
from .processing_slowfast import SlowFastProcessor
from .video_processing_slowfast import CLIP_MEAN, CLIP_STD, SlowFastVideoProcessor

logger = logging.getLogger(__name__)

RELEASED_MODEL_TYPE = "llava_qwen_slow_fast"
RELEASED_GATE_KINDS = {"whole-dynamic-tanh-warmup": "dynamic_tanh_warmup"}
# Qwen2 architecture keys of the released config.json (a Qwen2Config with LLaVA and slow-fast keys added to it).
# `rope_scaling` is left out: the released model class sets it to None before building the decoder.
TEXT_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_theta",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)
REQUIRED_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "mm_vision_tower",
    "mm_hidden_size",
    "mm_projector_type",
    "cross_attn_every_n_layers",
    "cross_attn_implementation",
    "cross_attn_gating_type",
    "mm_video_pooling_stride",
    "fast_token_spatial_stride",
    "fast_token_temporal_stride",
    "fast_token_temporal_sampling_stride",
)
VISION_PREFIX = "model.vision_tower.vision_tower."
# timm's `convnext_xxlarge` (the released CLIP ConvNeXt-XXL) builds every layer norm with eps 1e-5. Transformers'
# ConvNextModel reads `layer_norm_eps` only for its pooled-output norm and hard-codes 1e-6 in the others, so the
# converted config also sets `vision_layer_norm_eps`, which the model applies to every layer norm of the tower.
CONVNEXT_XXLARGE_NORM_EPS = 1e-5

_RENAMES = [
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        # hybrid parameters first: the generic `model.layers.` rule below would also match them
        (
            r"^model\.layers\.(\d+)\.self_attn\.cross_attn_kv_proj\.(weight|bias)$",
            r"model.language_model.layers.\1.self_attn.cross_attn.kv_proj.\2",
        ),
        (
            r"^model\.layers\.(\d+)\.self_attn\.cross_attn_gate_proj\.0\.(weight|bias)$",
            r"model.language_model.layers.\1.self_attn.cross_attn.gate_proj.\2",
        ),
        (
            r"^model\.layers\.(\d+)\.self_attn\.cross_attn_warm_up_gate$",
            r"model.language_model.layers.\1.self_attn.cross_attn.gate_alpha",
        ),
        (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
        (r"^lm_head\.weight$", "lm_head.weight"),
        (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        (r"^model\.vision_tower\.vision_tower\.stem\.0\.", "model.vision_tower.embeddings.patch_embeddings."),
        (r"^model\.vision_tower\.vision_tower\.stem\.1\.", "model.vision_tower.embeddings.layernorm."),
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.downsample\.([01])\.",
            r"model.vision_tower.encoder.stages.\1.downsampling_layer.\2.",
        ),
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.",
            r"model.vision_tower.encoder.stages.\1.layers.\2.dwconv.",
        ),
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.blocks\.(\d+)\.norm\.",
            r"model.vision_tower.encoder.stages.\1.layers.\2.layernorm.",
        ),
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.",
            r"model.vision_tower.encoder.stages.\1.layers.\2.pwconv1.",
        ),
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.",
            r"model.vision_tower.encoder.stages.\1.layers.\2.pwconv2.",
        ),
        # timm names the layer scale `gamma`; the released training code's ConvNeXt copy renames it `weight`
        (
            r"^model\.vision_tower\.vision_tower\.stages\.(\d+)\.blocks\.(\d+)\.(gamma|weight)$",
            r"model.vision_tower.encoder.stages.\1.layers.\2.layer_scale_parameter",
        ),
        (r"^model\.vision_tower\.vision_tower\.head\.norm\.", "model.vision_tower.layernorm."),
    )
]
_DROPPED = [
    (re.compile(r"^model\.vision_tower\.vision_tower\.head\.fc\."), "the ConvNeXt classifier, never used"),
    (re.compile(r"^model\.image_newline$"), "LLaVA-NeXT's anyres image separator, never used for videos"),
]
_BLOCK = re.compile(rf"^{re.escape(VISION_PREFIX)}stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.weight$")


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output path that holds anything: a conversion never overwrites."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FileExistsError(f"`output_dir` {output_dir} already exists and is not empty; remove it or pick another.")


@contextmanager
def atomic_output_dir(output_dir: Path) -> Iterator[Path]:
    """
    Yield a new hidden folder next to `output_dir` to write into; when the block succeeds, rename it to `output_dir`
    (one rename on the same file system), and when it fails, delete it. `output_dir` is never seen half-written.
    """
    check_output_dir(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir)
    staging = output_dir.parent / f".{output_dir.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        if output_dir.exists():
            output_dir.rmdir()  # empty, as checked above
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_stale_staging(output_dir: Path) -> list[Path]:
    """
    Delete the hidden staging folders of earlier conversions to `output_dir` that were killed before they could clean
    up (`.{name}.partial-{pid}-{random}`, whose process no longer runs on this machine). Returns what was deleted.
    """
    removed = []
    for staging in output_dir.parent.glob(f".{output_dir.name}.partial-*"):
        pid = staging.name.rsplit(".partial-", 1)[1].split("-")[0]
        if staging.is_dir() and not (pid.isdigit() and _process_is_running(int(pid))):
            shutil.rmtree(staging, ignore_errors=True)
            logger.info("Deleted %s, left behind by an interrupted conversion.", staging)
            removed.append(staging)
    return removed


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def open_safetensors(path: Path):
    """`safe_open`, with errors that name the file (safetensors' own say only what failed in its header)."""
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def run_command_line(convert, *args, **kwargs):
    """Run a conversion for `main`: its errors end the process with one line on stderr, not a traceback."""
    try:
        return convert(*args, **kwargs)
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}") from None


def add_placeholder_tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> dict[str, int]:
    """
    Make sure the tokenizer has the `<video>` and `<image>` placeholders (added as special tokens when missing) and
    that their ids are rows of the decoder's `vocab_size`-row embedding. Returns their ids by token.
    """
    tokens = ("<video>", "<image>")
    missing = [token for token in tokens if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
        logger.info("Added the placeholder tokens %s to the tokenizer.", missing)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}
    too_large = {token: index for token, index in ids.items() if index >= vocab_size}
    if too_large:
        raise ValueError(
            f"The placeholder token ids {too_large} do not fit the decoder's embedding of {vocab_size} rows (the "
            f"tokenizer holds {len(tokenizer)} tokens); the embedding would have to grow, which this conversion "
            "does not do."
        )
    return ids


class SafetensorsCheckpoint:
    """
    The safetensors weights of a checkpoint folder: each tensor's shape (read from the file headers, no data) and a
    reader that yields one file's tensors at a time.
    """

    def __init__(self, directory: Path):
        index_path = directory / "model.safetensors.index.json"
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as error:
                raise ValueError(f"{index_path} is not a safetensors index (no readable `weight_map`).") from error
            files = sorted(set(weight_map.values()))
        elif (directory / "model.safetensors").is_file():
            weight_map, files = None, ["model.safetensors"]
        else:
            raise FileNotFoundError(
                f"{directory} holds neither `model.safetensors.index.json` nor `model.safetensors`: not a safetensors "
                "checkpoint."
            )
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"Shards listed in {index_path} are missing from {directory}: {missing}.")
        self.paths = [directory / name for name in files]
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in self.paths:
            with open_safetensors(path) as shard:
                for name in shard.keys():
                    self.shapes[name] = tuple(shard.get_slice(name).get_shape())
        if weight_map is not None and (absent := sorted(set(weight_map) - set(self.shapes))):
            raise ValueError(f"{index_path} lists {len(absent)} tensors that no shard holds, e.g. {absent[:3]}.")

    def shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """The tensors of one safetensors file at a time, by name."""
        for path in self.paths:
            with open_safetensors(path) as shard:
                yield {name: shard.get_tensor(name) for name in shard.keys()}


def drop_reason(name: str) -> str | None:
    """Why a released tensor is left out of the conversion, or None when it is converted."""
    return next((reason for pattern, reason in _DROPPED if pattern.match(name)), None)


def released_name_to_ours(name: str) -> str | None:
    """Our parameter name for a released tensor, or None when no rule knows it."""
    for pattern, replacement in _RENAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def released_kv_to_ours(tensor: torch.Tensor, num_key_value_heads: int) -> torch.Tensor:
    """
    Permute the rows of a released slow K/V projection (weight `(2·Hkv·d, D)` or bias `(2·Hkv·d,)`) from the
    released per-head layout `(h kv d)` (for each KV head, d key rows then d value rows) to ours, `(kv h d)`
    (the keys of every KV head, then the values).
    """
    return rearrange(tensor, "(h kv d) ... -> (kv h d) ...", kv=2, h=num_key_value_heads).contiguous()


def query_positions(cross_attn_implementation: str) -> str:
    """Our `cross_attn_query_positions` for a released `cross_attn_implementation`."""
    # "text-only-vanilla[-flashattn][-masksystem]": text tokens query the slow tokens; "masksystem" also leaves out
    # the text before the first visual token. "vanilla..." lets every token (visual ones too) query, which we do not.
    if not cross_attn_implementation.startswith("text-only-vanilla"):
        raise ValueError(
            f"Unsupported `cross_attn_implementation` {cross_attn_implementation!r}: only the released "
            "'text-only-vanilla*' kinds (text tokens query the slow tokens) have a slow-fast equivalent."
        )
    return "text_after_first_visual" if "masksystem" in cross_attn_implementation else "text"


def read_released_config(input_dir: Path) -> dict:
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{input_dir} has no config.json: not a released slow-fast checkpoint.")
    released = json.loads(config_path.read_text())
    if released.get("model_type") != RELEASED_MODEL_TYPE:
        raise ValueError(
            f"{config_path} has `model_type` {released.get('model_type')!r}, not {RELEASED_MODEL_TYPE!r}: not a "
            "released slow-fast checkpoint."
        )
    missing = [key for key in REQUIRED_CONFIG_KEYS if released.get(key) is None]
    if missing:
        raise ValueError(f"{config_path} lacks {missing}, which every released slow-fast checkpoint has.")
    return released


def convnext_config(shapes: dict[str, tuple[int, ...]], image_size: int) -> ConvNextConfig:
    """The Transformers ConvNeXt configuration of the released timm tower, with depths and widths read from its
    tensor shapes (3/4/30/3 and 384/768/1536/3072 for ConvNeXt-XXL)."""
    depths: dict[int, int] = {}
    for name in shapes:
        if match := _BLOCK.match(name):
            stage, block = int(match[1]), int(match[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if sorted(depths) != [0, 1, 2, 3]:
        raise ValueError(
            f"Expected a 4-stage timm ConvNeXt vision tower under `{VISION_PREFIX}stages.*`, found stages "
            f"{sorted(depths)}."
        )
    stem = shapes.get(f"{VISION_PREFIX}stem.0.weight")
    if stem is None or stem[1:] != (3, 4, 4):
        raise ValueError(f"Expected `{VISION_PREFIX}stem.0.weight` of shape (C, 3, 4, 4), got {stem}.")
    return ConvNextConfig(
        num_channels=3,
        patch_size=4,
        depths=[depths[stage] for stage in range(4)],
        hidden_sizes=[shapes[f"{VISION_PREFIX}stages.{stage}.blocks.0.conv_dw.weight"][0] for stage in range(4)],
        hidden_act="gelu",
        image_size=image_size,
        layer_norm_eps=CONVNEXT_XXLARGE_NORM_EPS,
    )


def qwen2_config(released: dict) -> Qwen2Config:
    """The decoder's configuration: the Qwen2 keys of the released config.json."""
    return Qwen2Config(**{key: released[key] for key in TEXT_CONFIG_KEYS if key in released})


def slowfast_config(
    released: dict, text_config: Qwen2Config, shapes: dict[str, tuple[int, ...]], token_ids: dict[str, int]
) -> SlowFastConfig:
    """Our configuration for a released config.json (already checked by `read_released_config`)."""
    vision_tower = released["mm_vision_tower"]
    if not (match := re.fullmatch(r"convnext-(\d+)", vision_tower)):
        raise ValueError(
            f"Unsupported `mm_vision_tower` {vision_tower!r}: the released checkpoints use 'convnext-576' (CLIP "
            "ConvNeXt-XXL at 576 px)."
        )
    if released["mm_projector_type"] != "mlp2x_gelu":
        raise ValueError(f"Unsupported `mm_projector_type` {released['mm_projector_type']!r}; expected 'mlp2x_gelu'.")
    gate = released["cross_attn_gating_type"]
    if gate not in RELEASED_GATE_KINDS:
        raise ValueError(f"Unknown `cross_attn_gating_type` {gate!r}; supported: {sorted(RELEASED_GATE_KINDS)}.")
    vision_config = convnext_config(shapes, image_size=int(match[1]))
    if vision_config.hidden_sizes[-1] != released["mm_hidden_size"]:
        raise ValueError(
            f"`mm_hidden_size` {released['mm_hidden_size']} is not the ConvNeXt's last width "
            f"{vision_config.hidden_sizes[-1]}."
        )
    return SlowFastConfig(
        text_config=text_config,
        vision_config=vision_config,
        projector_type="mlp2x_gelu",
        # The released tower always returns its last stage, whatever `mm_vision_select_layer` says.
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        hybrid_layer_interval=released["cross_attn_every_n_layers"],
        hybrid_layer_min_depth=released.get("cross_attn_min_layer_depth") or 0,
        hybrid_layer_max_depth=released.get("cross_attn_max_layer_depth"),
        cross_attn_query_positions=query_positions(released["cross_attn_implementation"]),
        cross_attn_gate=RELEASED_GATE_KINDS[gate],
        cross_attn_generated_tokens=False,
        vision_layer_norm_eps=CONVNEXT_XXLARGE_NORM_EPS,
        slow_spatial_stride=released["mm_video_pooling_stride"],
        fast_temporal_sampling_stride=released["fast_token_temporal_sampling_stride"],
        fast_temporal_stride=released["fast_token_temporal_stride"],
        fast_spatial_stride=released["fast_token_spatial_stride"],
        min_fast_frames=released.get("min_fast_frames") or 1,
        fast_frame_remainder="drop",
        spatial_pool_remainder="drop",
        video_token_id=token_ids["<video>"],
        image_token_id=token_ids["<image>"],
        tie_word_embeddings=released.get("tie_word_embeddings", False),
    )


def load_released_weights(
    config: SlowFastConfig, checkpoint: SafetensorsCheckpoint
) -> SlowFastForConditionalGeneration:
    """
    Build the model on the meta device and fill it from the released shards, one shard at a time. Every name and
    shape is checked against the model from the file headers before any data is read.
    """
    with torch.device("meta"):
        model = SlowFastForConditionalGeneration(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    plan, dropped, unrecognised, mismatched = {}, [], [], []
    for name, shape in checkpoint.shapes.items():
        if drop_reason(name) is not None:
            dropped.append(name)
        elif (target := released_name_to_ours(name)) not in expected:
            unrecognised.append(name)
        elif expected[target] != shape:
            mismatched.append(f"{name} {shape} -> {target} {expected[target]}")
        else:
            plan[name] = target
    missing = sorted(set(expected) - set(plan.values()))
    for problems, what in (
        (unrecognised, "tensors this conversion does not recognise"),
        (mismatched, "tensors whose shapes do not fit the configuration"),
        (missing, "model parameters that no released tensor provides"),
    ):
        if problems:
            raise ValueError(f"The checkpoint has {len(problems)} {what}: {', '.join(sorted(problems)[:8])}.")

    num_key_value_heads = config.text_config.num_key_value_heads
    for shard in checkpoint.shards():
        converted = {}
        for name, tensor in shard.items():
            if name in plan:
                target = plan[name]
                is_kv = ".cross_attn.kv_proj." in target
                converted[target] = released_kv_to_ours(tensor, num_key_value_heads) if is_kv else tensor
        model.load_state_dict(converted, strict=False, assign=True)
    for name in dropped:
        logger.info("Dropped %s: %s.", name, drop_reason(name))
    return model.eval()


def frames_from_name(input_dir: Path) -> int:
    """The released frame count from a checkpoint folder named like the public ids (`...-frame64-s1t4`)."""
    match = re.search(r"frame(\d+)", input_dir.resolve().name)
    if match is None:
        raise ValueError(
            f"Cannot tell the released frame count from the folder name {input_dir.resolve().name!r} (no "
            "'frame<N>'); pass `--num-frames` (64 for ...-frame64-s1t4, 96 for ...-frame96-s1t6)."
        )
    return int(match[1])


def convert_official(
    input_dir: str | Path, output_dir: str | Path, num_frames: int | None = None, max_shard_size: str = "5GB"
) -> Path:
    """
    Convert the released checkpoint in `input_dir` into a model + processor folder at `output_dir` (see the module
    docstring). `num_frames` (frames sampled per video by the processor) defaults to the count in the folder name.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"`num_frames` must be an integer >= 1, got {num_frames!r}.")
    check_output_dir(output_dir)
    released = read_released_config(input_dir)
    num_frames = num_frames or frames_from_name(input_dir)
    checkpoint = SafetensorsCheckpoint(input_dir)
    if not (input_dir / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{input_dir} has no tokenizer (tokenizer_config.json): not a released checkpoint.")
    text_config = qwen2_config(released)
    # `config=`: AutoTokenizer would otherwise parse the released config.json, a model type it does not know
    tokenizer = AutoTokenizer.from_pretrained(input_dir, config=text_config)
    token_ids = add_placeholder_tokens(tokenizer, text_config.vocab_size)
    config = slowfast_config(released, text_config, checkpoint.shapes, token_ids)
    model = load_released_weights(config, checkpoint)
    if (input_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(input_dir)

    image_size = config.vision_config.image_size
    video_processor = SlowFastVideoProcessor(
        # the released CLIPImageProcessor: shorter side to 576 (PIL bicubic), center crop 576 x 576, CLIP mean/std
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample="bicubic",
        resize_backend="pil",
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        num_frames=num_frames,
        frame_sampling="linspace",
    )
    processor = SlowFastProcessor.from_model_config(config, video_processor, tokenizer)
    with atomic_output_dir(output_dir) as staging:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        processor.save_pretrained(staging)
    logger.info(
        "Wrote %s: hybrid layers %s, gate %s, ConvNeXt depths %s widths %s at %d px (layer norm eps %g), %d frames "
        "per video, fast temporal stride %d, <video> id %d, <image> id %d.",
        output_dir,
        config.hybrid_layers,
        config.cross_attn_gate,
        config.vision_config.depths,
        config.vision_config.hidden_sizes,
        image_size,
        config.vision_layer_norm_eps,
        num_frames,
        config.fast_temporal_stride,
        config.video_token_id,
        config.image_token_id,
    )
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="Folder of the released checkpoint.")
    parser.add_argument("--output", required=True, type=Path, help="New folder for the converted model.")
    parser.add_argument(
        "--num-frames",
        type=int,
        help="Frames the processor samples per video (default: the N of 'frameN' in the input folder's name).",
    )
    parser.add_argument("--max-shard-size", default="5GB", help="Largest output safetensors file (default 5GB).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_command_line(
        convert_official, args.input, args.output, num_frames=args.num_frames, max_shard_size=args.max_shard_size
    )


if __name__ == "__main__":
    main()
