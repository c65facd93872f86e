"""
`examples/train.py` under FSDP2 (`accelerate launch --config_file examples/accelerate_configs/fsdp.yaml`) on 2 CPU
processes with the gloo backend, against the same script in one process with the same global batch.

The run trains what the released recipe's first stage trains (`--freeze projector_and_hybrid`: every decoder layer
is an FSDP unit holding frozen weights and the trainable hybrid cross-attention side by side), with the hybrid
parameters in their own learning-rate group and activation checkpointing on. It writes a sharded checkpoint in the
middle; a second run resumes from it. Both must end where one process ends (the DDP test's tolerance), and the final
folder is an ordinary `save_pretrained` checkpoint that loads in one process.
"""

import pytest
import torch
from accelerate.utils import fsdp_utils
from safetensors.torch import load_file
from training_fixtures import (
    clip_conversations,
    four_step_arguments,
    load_parameters,
    run_train_script,
    save_tiny_checkpoint,
)

from slowfast_hf import SlowFastForConditionalGeneration
from slowfast_hf.training import is_hybrid_parameter

TOLERANCE = 1e-5  # as in test_distributed.py

pytestmark = pytest.mark.skipif(
    not hasattr(fsdp_utils, "fsdp2_prepare_model"), reason="this accelerate has no FSDP2 (fsdp_version: 2)"
)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory, tiny_tokenizer):
    """One process; 2 FSDP2 processes saving a checkpoint at step 2; 2 FSDP2 processes resuming from it."""
    root = tmp_path_factory.mktemp("fsdp")
    checkpoint = save_tiny_checkpoint(root / "model", tiny_tokenizer)
    # FSDP: a video in every batch
    annotation_file = clip_conversations(root / "data", [6, 8, 10, 12, 7, 9, 11, 5])
    arguments = four_step_arguments(checkpoint, annotation_file, freeze="projector_and_hybrid")
    fsdp = ["--per_device_train_batch_size=1", "--ddp_backend=gloo"]
    launch = dict(launcher="accelerate_fsdp", nproc=2)
    single = [f"--output_dir={root / 'single'}", "--per_device_train_batch_size=2", "--save_strategy=no"]
    run_train_script(arguments + single)
    result = run_train_script(arguments + fsdp + [f"--output_dir={root / 'fsdp'}", "--save_steps=2"], **launch)
    assert "processes: 2" in result.stdout
    run_train_script(
        arguments
        + fsdp
        + [
            f"--output_dir={root / 'resumed'}",
            f"--resume_from_checkpoint={root / 'fsdp' / 'checkpoint-2'}",
            "--save_strategy=no",
        ],
        **launch,
    )
    return root


def max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max((first[name] - second[name]).abs().max().item() for name in first)


def test_fsdp2_matches_one_process(fsdp_runs):
    single = load_parameters(fsdp_runs / "single")
    fsdp = load_parameters(fsdp_runs / "fsdp")
    initial = load_parameters(fsdp_runs / "model")
    difference = max_difference(fsdp, single)
    hybrid_change = max((single[n] - initial[n]).abs().max().item() for n in single if is_hybrid_parameter(n))
    print(f"FSDP2: max |2 processes - 1 process| = {difference:.2e}; max hybrid parameter change {hybrid_change:.2e}")
    assert difference < TOLERANCE
    assert hybrid_change > 100 * TOLERANCE  # the runs did move the hybrid parameters
    trainable = ("model.multi_modal_projector.",)
    for name in single:
        if not name.startswith(trainable) and not is_hybrid_parameter(name):  # frozen by `projector_and_hybrid`
            assert torch.equal(fsdp[name], initial[name]), name


def test_fsdp2_checkpoint_is_sharded_and_resumes(fsdp_runs):
    checkpoint = fsdp_runs / "fsdp" / "checkpoint-2"
    shards = sorted(path.name for path in checkpoint.rglob("*.distcp"))
    print(f"checkpoint-2: {shards}")
    assert len(shards) >= 2 and {name.split("_")[2] for name in shards} == {"0", "1"}  # written by both processes
    difference = max_difference(load_parameters(fsdp_runs / "resumed"), load_parameters(fsdp_runs / "fsdp"))
    print(f"FSDP2 resumed at step 2: max |resumed - uninterrupted| = {difference:.2e}")
    assert difference < TOLERANCE


def test_fsdp2_output_loads_bit_exact_in_one_process(fsdp_runs):
    saved = load_file(fsdp_runs / "fsdp" / "model.safetensors")
    model, loading_info = SlowFastForConditionalGeneration.from_pretrained(
        fsdp_runs / "fsdp", output_loading_info=True
    )
    assert not any(loading_info.values()), loading_info
    state = model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
