# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Helpers for the training tests: a tiny slow-fast model and processor saved like a checkpoint, real video clips
written with PyAV, annotation files in the released research code's format, and `examples/train.py` runs.

Fixture: `one_thread` (use it with `pytestmark = pytest.mark.usefixtures("one_thread")` after
`one_thread = training_fixtures.one_thread`).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, PATCH_SIZE
from test_processing import model_for
from video_fixtures import write_video

from slowfast_hf import SlowFastProcessor, SlowFastVideoProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "examples" / "train.py"
DDP_CONFIG = REPO_ROOT / "examples" / "accelerate_configs" / "ddp.yaml"
FSDP_CONFIG = REPO_ROOT / "examples" / "accelerate_configs" / "fsdp.yaml"
FSDP_ON_CPU = Path(__file__).resolve().parent / "fsdp_on_cpu.py"
NUM_FRAMES = 4  # frames sampled per clip
FAST_TEMPORAL_STRIDE = 2


def tiny_processor(tokenizer) -> SlowFastProcessor:
    """Frames sampled `NUM_FRAMES` per video, resized to the tiny vision encoder's input size."""
    video_processor = SlowFastVideoProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, num_frames=NUM_FRAMES)
    return SlowFastProcessor(
        video_processor, tokenizer, patch_size=PATCH_SIZE, fast_temporal_stride=FAST_TEMPORAL_STRIDE
    )


def tiny_model(tokenizer, seed: int = 0, **overrides):
    """The 4-layer tiny model (hybrid layers 0 and 2) with the tokenizer's placeholder ids, in training mode."""
    return model_for(tokenizer, seed=seed, fast_temporal_stride=FAST_TEMPORAL_STRIDE, **overrides).train()


def save_tiny_checkpoint(directory: Path, tokenizer, seed: int = 0) -> Path:
    """A tiny model and its processor saved together, as `examples/train.py --model_name_or_path` takes them."""
    tiny_model(tokenizer, seed=seed).save_pretrained(directory)
    tiny_processor(tokenizer).save_pretrained(directory)
    return directory


def write_clips(directory: Path, frame_counts: list[int]) -> list[str]:
    """One 32x32 H.264 clip per entry of `frame_counts` (frame `i` paints index `i`); returns their file names."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for index, num_frames in enumerate(frame_counts):
        name = f"clip{index}.mp4"
        write_video(directory / name, num_frames, height=IMAGE_SIZE, width=IMAGE_SIZE)
        names.append(name)
    return names


def write_annotations(path: Path, entries: list[dict]) -> Path:
    """`entries` as a JSON list (`.json`) or JSON lines (`.jsonl`), by `path`'s suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    else:
        path.write_text(json.dumps(entries, indent=1))
    return path


def video_entry(video: str | None, *turns: str, **extra) -> dict:
    """An annotation entry; `turns` alternate human/gpt values."""
    conversations = [{"from": ("human", "gpt")[i % 2], "value": value} for i, value in enumerate(turns)]
    entry = {"conversations": conversations, **extra}
    if video is not None:
        entry["video"] = video
    return entry


def clip_conversations(data_dir: Path, frame_counts: list[int], text_only_at: int | None = None) -> Path:
    """`data_dir/train.json`: one "what happens?" conversation per clip of `frame_counts` frames (in `clips/`), plus
    a text-only one inserted at `text_only_at` if given."""
    names = write_clips(data_dir / "clips", frame_counts)
    entries = [
        video_entry(f"clips/{name}", "<video>\nwhat happens?", f"the red square {index}")
        for index, name in enumerate(names)
    ]
    if text_only_at is not None:
        entries.insert(text_only_at, video_entry(None, "a question without video", "red"))
    return write_annotations(data_dir / "train.json", entries)


def four_step_arguments(checkpoint: Path, annotation_file: Path, freeze: str) -> list[str]:
    """`examples/train.py` arguments of the distributed tests: 4 steps (one epoch of 8 samples at a global batch of
    2), a separate hybrid learning rate, activation checkpointing, CPU, no reporting."""
    return [
        f"--model_name_or_path={checkpoint}",
        f"--annotation_file={annotation_file}",
        f"--freeze={freeze}",
        "--max_steps=4",
        "--learning_rate=1e-3",
        "--hybrid_learning_rate=1e-2",
        "--activation_checkpointing",
        "--seed=0",
        "--use_cpu",
        "--report_to=none",
        "--disable_tqdm=true",
    ]


LAUNCHERS = ("python", "torchrun", "accelerate", "accelerate_fsdp")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_train_script(
    arguments: list[str], launcher: str = "python", nproc: int = 1, timeout: float = 300
) -> subprocess.CompletedProcess:
    """
    Run `examples/train.py` in fresh processes, offline and with one thread per process; raise with its output when
    it fails. `launcher`: `"python"` (one process), `"torchrun"` (`torch.distributed.run --standalone`) or
    `"accelerate"` (`accelerate launch` with `examples/accelerate_configs/ddp.yaml`) or `"accelerate_fsdp"` (with
    `fsdp.yaml`, through `fsdp_on_cpu.py`), with `nproc` processes.
    """
    script = str(TRAIN_SCRIPT)
    if launcher == "python":
        command = [sys.executable, script]
    elif launcher == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    elif launcher in ("accelerate", "accelerate_fsdp"):
        if launcher == "accelerate":
            config, scripts = DDP_CONFIG, [script]
        else:
            config, scripts = FSDP_CONFIG, [str(FSDP_ON_CPU), script]
        command = [sys.executable, "-m", "accelerate.commands.launch", f"--config_file={config}"]
        command += [f"--num_processes={nproc}", f"--main_process_port={_free_port()}", "--mixed_precision=no"]
        command += scripts
    else:
        raise ValueError(f"`launcher` must be one of {LAUNCHERS}, got {launcher!r}.")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        command + arguments, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command + arguments)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def load_parameters(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "model.safetensors")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose much when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
