# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune a slow-fast model on video conversations with the Hugging Face Trainer.

`--model_name_or_path` is a folder (or Hub id) holding a slow-fast model and its processor, as `save_pretrained`
writes them; `--annotation_file` a JSON/JSONL file in the released research code's format (see
`slowfast_hf.training_data`). Every `TrainingArguments` option works (`--learning_rate`, `--max_steps`,
`--activation_checkpointing`, `--bf16`, `--save_steps`, `--resume_from_checkpoint`, ...), plus
`--hybrid_learning_rate` for the hybrid cross-attention parameters. `--resume_from_checkpoint True` resumes from the
newest complete checkpoint of `--output_dir` (a half-written one, from a run killed while saving, is skipped).
Needs the training extra: `pip install -e ".[train]"`.

    python examples/train.py --model_name_or_path my-slowfast --annotation_file train.json --output_dir out \\
        --freeze projector_and_hybrid --learning_rate 1e-3 --hybrid_learning_rate 1e-4 --max_steps 1000

The same command runs distributed under `torchrun --nproc_per_node N examples/train.py ...` or
`accelerate launch --config_file examples/accelerate_configs/ddp.yaml examples/train.py ...`. With `--lora_rank R`
the decoder trains through a LoRA adapter (the projector and hybrid cross-attention fully), and the output folder
holds the adapter.
"""

import importlib
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the collator tokenizes inside DataLoader workers


def require_training_extra() -> None:
    """Fail with one line naming the extra when what training needs is not installed."""
    missing = []
    for name in ("accelerate", "peft"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        sys.exit(
            f"error: train.py needs {' and '.join(missing)}, which are not installed; install the package's training "
            'extra: pip install -e ".[train]" (from the source checkout).'
        )


require_training_extra()

from transformers import AutoModelForImageTextToText, AutoProcessor, HfArgumentParser, set_seed

import slowfast_hf  # noqa: F401  (registers the Auto classes)
from slowfast_hf.training import (
    FreezePreset,
    SlowFastDataCollator,
    SlowFastTrainer,
    SlowFastTrainingArguments,
    VideoConversationDataset,
    decoder_lora_config,
    freeze_for_training,
)


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(metadata={"help": "A saved slow-fast model and processor (folder or Hub id)."})
    annotation_file: str = field(metadata={"help": "Training conversations: a .json or .jsonl annotation file."})
    video_root: str | None = field(
        default=None, metadata={"help": "Folder of the videos' relative paths; defaults to the annotation's folder."}
    )
    video_placeholder: str = field(
        default="<video>", metadata={"help": "The video placeholder of the annotation file's first human turns."}
    )
    num_frames: int | None = field(
        default=None, metadata={"help": "Frames sampled per video; defaults to the saved video processor's setting."}
    )
    freeze: FreezePreset = field(
        default="projector_and_hybrid",
        metadata={
            "help": "What trains: the projector and hybrid cross-attention (`projector_and_hybrid`), plus the whole "
            "decoder (`decoder`), or everything (`all`)."
        },
    )
    train_vision_tower: bool = field(default=False, metadata={"help": "Also train the vision tower."})
    lora_rank: int = field(
        default=0,
        metadata={
            "help": "If > 0, train the decoder through LoRA adapters of this rank (with `--freeze "
            "projector_and_hybrid`: the projector and hybrid cross-attention train fully)."
        },
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale (with `--lora_rank`)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (with `--lora_rank`)."})


def resume_argument(value: str | None) -> str | bool | None:
    """`--resume_from_checkpoint True` resumes from the newest complete checkpoint of `--output_dir` (as
    `Trainer.train(resume_from_checkpoint=True)` does), `False` starts afresh, anything else is a checkpoint folder."""
    if value is not None and value.lower() in ("true", "false"):
        return value.lower() == "true" or None
    return value


def main():
    parser = HfArgumentParser((ScriptArguments, SlowFastTrainingArguments))
    script_args, training_args = parser.parse_args_into_dataclasses()
    if script_args.num_frames is not None and script_args.num_frames < 1:
        parser.error(f"--num_frames must be >= 1, got {script_args.num_frames}.")
    if script_args.lora_rank < 0:
        parser.error(f"--lora_rank must be >= 0, got {script_args.lora_rank}.")
    if script_args.lora_rank and script_args.freeze != "projector_and_hybrid":
        parser.error("--lora_rank trains the decoder through adapters; use it with --freeze projector_and_hybrid.")
    set_seed(training_args.seed)  # LoRA weights are initialised before the Trainer seeds anything

    model = AutoModelForImageTextToText.from_pretrained(script_args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(script_args.model_name_or_path)
    if script_args.num_frames is not None:
        processor.video_processor.num_frames = script_args.num_frames

    if script_args.lora_rank:
        from peft import get_peft_model

        model = get_peft_model(
            model,
            decoder_lora_config(
                model,
                r=script_args.lora_rank,
                lora_alpha=script_args.lora_alpha,
                lora_dropout=script_args.lora_dropout,
                train_vision_tower=script_args.train_vision_tower,
            ),
        )
        trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    else:
        trainable = freeze_for_training(model, script_args.freeze, script_args.train_vision_tower)
    if training_args.process_index == 0:
        parameters = dict(model.named_parameters())
        count = sum(parameters[name].numel() for name in trainable)
        total = sum(parameter.numel() for parameter in parameters.values())
        print(f"trainable parameters: {count:,} of {total:,} ({len(trainable)} tensors)")
        print(f"processes: {training_args.world_size}")

    train_dataset = VideoConversationDataset(
        script_args.annotation_file, script_args.video_root, script_args.video_placeholder
    )
    trainer = SlowFastTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=SlowFastDataCollator(processor),
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=resume_argument(training_args.resume_from_checkpoint))
    if trainer.is_fsdp_enabled:  # checkpoints stay sharded; the final model is gathered into one ordinary folder
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model()  # the model (or LoRA adapter) and the processor, into --output_dir
    # Shut down in order: every process waits for the main one to finish writing, the DDP/FSDP-wrapped model (which
    # holds the process group) is released, then the process group is destroyed. Left to interpreter exit, gloo's
    # threads can abort a finished run (SIGABRT, "terminate called without an active exception",
    # pytorch/pytorch#190489); destroyed while the wrapped model still lives, a process can hang when freeing it.
    accelerator = trainer.accelerator
    accelerator.wait_for_everyone()
    del trainer, model
    accelerator.free_memory()  # drops the accelerator's own references to the wrapped model, then collects garbage
    accelerator.end_training()


if __name__ == "__main__":
    main()
