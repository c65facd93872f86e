# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Fine-tuning slow-fast models with `transformers.Trainer`: freezing presets, a separate learning rate for the hybrid
cross-attention parameters, and a LoRA configuration for the decoder.

    from slowfast_hf.training import (
        SlowFastDataCollator,
        SlowFastTrainer,
        SlowFastTrainingArguments,
        VideoConversationDataset,
        freeze_for_training,
    )

    freeze_for_training(model, "projector_and_hybrid")
    args = SlowFastTrainingArguments(output_dir="out", learning_rate=2e-5, hybrid_learning_rate=1e-4)
    trainer = SlowFastTrainer(
        model=model,
        args=args,
        train_dataset=VideoConversationDataset("train.json", video_root="videos"),
        data_collator=SlowFastDataCollator(processor),
        processing_class=processor,
    )
    trainer.train()

`examples/train.py` does the same from the command line.
"""

import json
import os
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME  # the file `Trainer` writes last into a checkpoint
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .hybrid_attention import decoder_layers
from .training_data import SlowFastDataCollator, VideoConversationDataset, annotation_to_messages, load_annotations

if TYPE_CHECKING:
    from peft import LoraConfig

logger = logging.get_logger(__name__)

FreezePreset = Literal["projector_and_hybrid", "decoder", "all"]
FREEZE_PRESETS: tuple[str, ...] = get_args(FreezePreset)

# Every parameter of a hybrid layer's `self_attn.cross_attn` (`kv_proj`, `gate_proj`, `gate_alpha`), also under
# wrappers that prefix or nest the names (DDP's `module.`, PEFT's `base_model.model.` and `modules_to_save.default.`).
HYBRID_PARAMETER_PATTERN = re.compile(r"(?:^|\.)cross_attn\.")
VISUAL_INPUTS = ("pixel_values", "pixel_values_videos")


def is_hybrid_parameter(name: str) -> bool:
    """Whether the parameter called `name` (as `model.named_parameters()` gives it) belongs to a hybrid layer's
    cross-attention."""
    return HYBRID_PARAMETER_PATTERN.search(name) is not None


def _slowfast_parts(model: nn.Module) -> nn.Module:
    """The `SlowFastModel` of a `SlowFastForConditionalGeneration` (or the `SlowFastModel` itself)."""
    core = getattr(model, "model", model)
    missing = [
        name
        for name in ("vision_tower", "multi_modal_projector", "language_model")
        if not isinstance(getattr(core, name, None), nn.Module)
    ]
    if missing:
        raise ValueError(
            f"`model` must be a slow-fast model (SlowFastForConditionalGeneration or SlowFastModel); "
            f"{type(model).__name__} has no {', '.join(missing)}."
        )
    return core


def freeze_for_training(model: nn.Module, preset: FreezePreset, train_vision_tower: bool = False) -> list[str]:
    """
    Set `requires_grad` on every parameter of a slow-fast model for a training stage.

    Presets:
        - `"projector_and_hybrid"`: the projector and the hybrid layers' cross-attention (`kv_proj`, `gate_proj`,
          `gate_alpha`) train; the decoder and the vision tower are frozen (the released recipe's first stage).
        - `"decoder"`: the projector and the whole decoder, hybrid parameters, embeddings and LM head included (the
          released recipe's second stage).
        - `"all"`: every parameter, the vision tower's too.

    Args:
        model (`SlowFastForConditionalGeneration` or `SlowFastModel`): the model, changed in place.
        preset (`str`): one of `"projector_and_hybrid"`, `"decoder"`, `"all"`.
        train_vision_tower (`bool`, *optional*, defaults to `False`): also train the vision tower with
            `"projector_and_hybrid"` or `"decoder"` (`"all"` always trains it).

    Returns:
        `list[str]`: the names of the trainable parameters, in `model.named_parameters()` order.
    """
    if preset not in FREEZE_PRESETS:
        raise ValueError(f"`preset` must be one of {FREEZE_PRESETS}, got {preset!r}.")
    if not isinstance(train_vision_tower, bool):
        raise ValueError(f"`train_vision_tower` must be a bool, got {train_vision_tower!r}.")
    core = _slowfast_parts(model)
    model.requires_grad_(preset == "all")
    if preset != "all":
        core.multi_modal_projector.requires_grad_(True)
        if preset == "decoder":
            core.language_model.requires_grad_(True)
            output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            if output_embeddings is not None:
                output_embeddings.requires_grad_(True)
        else:
            for name, parameter in core.language_model.named_parameters():
                parameter.requires_grad_(is_hybrid_parameter(name))
        core.vision_tower.requires_grad_(train_vision_tower)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def decoder_lora_config(
    model: nn.Module,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    train_vision_tower: bool = False,
    **lora_kwargs,
) -> "LoraConfig":
    """
    A PEFT `LoraConfig` for a slow-fast model: LoRA on every linear projection of the decoder layers (`q/k/v/o_proj`
    and the MLP's for Llama/Qwen-style decoders), while the projector and the hybrid cross-attention (and the vision
    tower when `train_vision_tower`) train fully and are saved with the adapter (`modules_to_save`). The hybrid
    layers' own `cross_attn.kv_proj` / `cross_attn.gate_proj`, the vision tower's projections, the embeddings and the
    LM head get no LoRA.

    Use it with `peft.get_peft_model(model, decoder_lora_config(model))`; the model itself is not changed.

    Args:
        model (`SlowFastForConditionalGeneration`): the model the adapter is for (its layer names are read).
        r, lora_alpha, lora_dropout: the LoRA rank, scale and dropout.
        train_vision_tower (`bool`, *optional*, defaults to `False`): also train the whole vision tower.
        lora_kwargs: any other `LoraConfig` argument except `target_modules` and `modules_to_save`.
    """
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ImportError(
            '`decoder_lora_config` needs PEFT: `pip install peft`, or the training extra `pip install -e ".[train]"`.'
        ) from error
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"`r` (the LoRA rank) must be an integer >= 1, got {r!r}.")
    for name in ("target_modules", "modules_to_save"):
        if name in lora_kwargs:
            raise ValueError(f"`{name}` is set by `decoder_lora_config`; build a `LoraConfig` yourself to change it.")
    core = _slowfast_parts(model)
    layers = decoder_layers(core.language_model)
    layers_name = next(name for name, module in model.named_modules() if module is layers)
    projections = sorted(
        {
            name
            for layer in layers
            for name, module in layer.named_modules()
            if isinstance(module, nn.Linear) and not name.startswith("self_attn.cross_attn")
        }
    )
    # e.g. r"model\.language_model\.layers\.\d+\.(?:mlp\.down_proj|...|self_attn\.v_proj)", matched in full by PEFT
    target_modules = rf"{re.escape(layers_name)}\.\d+\.(?:{'|'.join(re.escape(name) for name in projections)})"
    modules_to_save = ["multi_modal_projector", "cross_attn"] + (["vision_tower"] if train_vision_tower else [])
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        **lora_kwargs,
    )


@dataclass
class SlowFastTrainingArguments(TrainingArguments):
    """
    [`TrainingArguments`] with a separate learning rate for the hybrid cross-attention parameters (the released
    recipe trained them with their own), and `ddp_find_unused_parameters` on by default.
    """

    hybrid_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the hybrid layers' cross-attention parameters (`cross_attn.kv_proj`, "
            "`cross_attn.gate_proj`, `cross_attn.gate_alpha`); they follow the same schedule as the other "
            "parameters. Defaults to `learning_rate`."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=True,
        metadata={
            "help": "`find_unused_parameters` of DistributedDataParallel. On by default (Transformers turns it off "
            "with activation checkpointing): a batch without videos leaves the projector and the hybrid "
            "cross-attention unused, which DDP rejects otherwise. Turn it off only if every batch holds a video."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        rate = self.hybrid_learning_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0):
            raise ValueError(f"`hybrid_learning_rate` must be a number > 0 or None, got {rate!r}.")


class SlowFastTrainer(Trainer):
    """
    [`Trainer`] whose optimizer gives the hybrid cross-attention parameters `args.hybrid_learning_rate` (when
    set): the optimizer Transformers builds (weight-decay groups, `args.optim`, `optimizer_cls_and_kwargs`) is kept,
    and each of its parameter groups holding hybrid parameters is split in two, the hybrid half with that learning
    rate. The learning-rate schedule scales every group alike.

    Hybrid parameters are found by name (`is_hybrid_parameter`): FSDP2 keeps the names, FSDP1 needs
    `use_orig_params: true`. With DeepSpeed, leave the optimizer out of the DeepSpeed config so that this one is used.

    A training batch that reaches no trainable parameter (text only, with the `"projector_and_hybrid"` preset) gets
    zero gradients instead of failing in `backward`.

    `train(resume_from_checkpoint=True)` resumes from the newest *complete* checkpoint of `args.output_dir` (one that
    holds a readable `trainer_state.json`, which `Trainer` writes last), skipping one half-written by a run killed
    while saving; a checkpoint whose files cannot be read fails with an error naming the file.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._hybrid_learning_rate is None:
            return
        if self.optimizer is not None:
            raise ValueError(
                "`hybrid_learning_rate` is set but an optimizer was passed in `optimizers`; give the hybrid "
                "parameters their learning rate in that optimizer's parameter groups instead."
            )
        deepspeed_plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        if deepspeed_plugin is not None and "optimizer" in deepspeed_plugin.deepspeed_config:
            raise ValueError(
                "`hybrid_learning_rate` is set but the DeepSpeed config defines its own optimizer, which would not "
                "see it; remove the `optimizer` section of the DeepSpeed config."
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)):
            _check_checkpoint_complete(Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with _naming_unreadable_files(resume_from_checkpoint, "model weights"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        with _naming_unreadable_files(checkpoint, "optimizer or scheduler state (optimizer.pt, scheduler.pt)"):
            return super()._load_optimizer_and_scheduler(checkpoint)

    @property
    def _hybrid_learning_rate(self) -> float | None:
        return getattr(self.args, "hybrid_learning_rate", None)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if created and self._hybrid_learning_rate is not None:
            split_hybrid_parameter_groups(
                optimizer, self.model if model is None else model, self._hybrid_learning_rate
            )
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.is_fsdp_enabled and model.training and not any(key in inputs for key in VISUAL_INPUTS):
            # FSDP reduces each unit's gradients in one collective; a process whose batch leaves the projector (and
            # the hybrid cross-attention) unused would send fewer of them than the others, and the run would abort.
            raise ValueError(
                "Under FSDP every training batch of every process must hold an image or a video; this batch is text "
                "only. Mix text-only samples into batches with videos (a larger `per_device_train_batch_size`), or "
                "train with DDP, which handles them."
            )
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if model.training and torch.is_grad_enabled() and not loss.requires_grad:
            # A batch that reaches no trainable parameter (text only, while only the projector and the hybrid layers
            # train) has a zero gradient. Tie the loss to the trainable parameters so that `backward` (and the
            # gradient all-reduce of the other processes) still runs, with zero gradients.
            loss = loss + sum(parameter.sum() * 0.0 for parameter in model.parameters() if parameter.requires_grad)
        return (loss, result[1]) if return_outputs else loss


def _checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` is not a complete Trainer checkpoint, or None."""
    state = checkpoint / TRAINER_STATE_NAME
    if not state.is_file():
        return f"it has no {TRAINER_STATE_NAME} (the file Trainer writes last: the save was interrupted)"
    try:
        json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"its {TRAINER_STATE_NAME} is not valid JSON (the save was interrupted)"
    return None


def _check_checkpoint_complete(checkpoint: Path) -> None:
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"`resume_from_checkpoint` {str(checkpoint)!r} is not a folder.")
    if problem := _checkpoint_problem(checkpoint):
        raise ValueError(f"`resume_from_checkpoint` {str(checkpoint)!r} is not a complete checkpoint: {problem}.")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str:
    """
    The newest complete `checkpoint-N` folder of `output_dir` (see [`SlowFastTrainer`]): newer, incomplete ones are
    skipped with a warning. Raises when there is none.
    """
    folder = Path(output_dir)
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    steps = {}
    if folder.is_dir():
        for path in folder.iterdir():
            if (match := pattern.match(path.name)) and path.is_dir():
                steps[path] = int(match[1])
    for checkpoint in sorted(steps, key=steps.get, reverse=True):
        problem = _checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning(f"Not resuming from {checkpoint}: {problem}.")
    raise ValueError(
        f"`resume_from_checkpoint=True` but `output_dir` {str(folder)!r} holds no complete checkpoint "
        f"({len(steps)} incomplete `{PREFIX_CHECKPOINT_DIR}-N` folders)."
    )


@contextmanager
def _naming_unreadable_files(checkpoint, what: str):
    """Turn the errors of reading a truncated or corrupt checkpoint file into one that names the checkpoint."""
    try:
        yield
    except (SafetensorError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(
            f"Cannot resume from {checkpoint}: its {what} cannot be read (truncated or corrupt?): {error}"
        ) from error
    except RuntimeError as error:
        if "PytorchStreamReader" not in str(error):  # torch.load of a truncated zip archive
            raise
        raise ValueError(
            f"Cannot resume from {checkpoint}: its {what} cannot be read (truncated or corrupt?): {error}"
        ) from error


def split_hybrid_parameter_groups(optimizer: torch.optim.Optimizer, model: nn.Module, learning_rate: float) -> None:
    """
    Move the trainable hybrid cross-attention parameters of `model` into parameter groups of their own with
    `learning_rate`, in place: each group holding some is split in two (same options otherwise, e.g. its weight
    decay), a group holding only hybrid parameters just takes the new learning rate. Call it before the first
    optimizer step and before a learning-rate scheduler is attached.
    """
    hybrid = {id(parameter) for name, parameter in model.named_parameters() if is_hybrid_parameter(name)}
    if not any(id(parameter) in hybrid for group in optimizer.param_groups for parameter in group["params"]):
        raise ValueError(
            "`hybrid_learning_rate` is set but the optimizer holds no hybrid cross-attention parameters: the model "
            "has no hybrid layers, they are frozen (see `freeze_for_training`), or a wrapper renamed the parameters "
            "(FSDP1 without `use_orig_params=True`)."
        )
    if optimizer.state:
        raise ValueError("The optimizer has already taken a step; split its parameter groups before training.")
    groups = []
    for group in optimizer.param_groups:
        options = {key: value for key, value in group.items() if key != "params"}
        others = [parameter for parameter in group["params"] if id(parameter) not in hybrid]
        hybrid_parameters = [parameter for parameter in group["params"] if id(parameter) in hybrid]
        if others:
            groups.append({**options, "params": others})
        if hybrid_parameters:
            groups.append({**options, "params": hybrid_parameters, "lr": learning_rate})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


__all__ = [
    "FREEZE_PRESETS",
    "FreezePreset",
    "SlowFastDataCollator",
    "SlowFastTrainer",
    "SlowFastTrainingArguments",
    "VideoConversationDataset",
    "annotation_to_messages",
    "decoder_lora_config",
    "freeze_for_training",
    "is_hybrid_parameter",
    "last_complete_checkpoint",
    "load_annotations",
    "split_hybrid_parameter_groups",
]
