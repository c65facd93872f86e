"""`examples/train.py` on 2 CPU processes (DDP, gloo backend) under `torchrun` and under `accelerate launch` with
`examples/accelerate_configs/ddp.yaml`, against the same script in one process with the same global batch.

2 processes x `per_device_train_batch_size=1` and 1 process x 2 see the same samples at every step (the same seeded
shuffle, split between the processes), and the Trainer normalises the loss by the token count of the global batch,
so the runs must end with the same parameters up to float rounding. Activation checkpointing is on, and one sample
has no video, so DDP also meets a step where one process leaves the projector and the hybrid layers unused.
"""

import pytest
import torch
from training_fixtures import (
    clip_conversations,
    four_step_arguments,
    load_parameters,
    run_train_script,
    save_tiny_checkpoint,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def training_setup(tmp_path_factory, tiny_tokenizer):
    """A saved tiny checkpoint, 8 annotated conversations (one text-only) and the single-process run's result."""
    root = tmp_path_factory.mktemp("distributed")
    checkpoint = save_tiny_checkpoint(root / "model", tiny_tokenizer)
    annotation_file = clip_conversations(root / "data", [6, 8, 10, 12, 7, 9, 11], text_only_at=3)
    arguments = four_step_arguments(checkpoint, annotation_file, freeze="decoder") + ["--save_strategy=no"]
    result = run_train_script(arguments + [f"--output_dir={root / 'single'}", "--per_device_train_batch_size=2"])
    assert "processes: 1" in result.stdout
    return {"root": root, "checkpoint": checkpoint, "arguments": arguments}


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(training_setup, launcher):
    root, arguments = training_setup["root"], training_setup["arguments"]
    output_dir = root / launcher
    result = run_train_script(
        arguments + [f"--output_dir={output_dir}", "--per_device_train_batch_size=1", "--ddp_backend=gloo"],
        launcher=launcher,
        nproc=2,
    )
    assert "processes: 2" in result.stdout
    single = load_parameters(root / "single")
    distributed = load_parameters(output_dir)
    initial = load_parameters(training_setup["checkpoint"])
    assert distributed.keys() == single.keys()
    difference = max((distributed[name] - single[name]).abs().max().item() for name in single)
    change = max((single[name] - initial[name]).abs().max().item() for name in single)
    print(f"{launcher}: max |2 processes - 1 process| = {difference:.2e}; max parameter change {change:.2e}")
    assert difference < TOLERANCE
    assert change > 100 * TOLERANCE  # the runs did move the parameters
    for name in single:
        if name.startswith("model.vision_tower."):  # frozen by the `decoder` preset
            assert torch.equal(distributed[name], initial[name]), name
