# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Run a training script under accelerate's FSDP on CPU processes (a test harness, used by test_fsdp.py):

    accelerate launch --config_file examples/accelerate_configs/fsdp.yaml modeling_tests/fsdp_on_cpu.py \\
        examples/train.py --use_cpu --ddp_backend gloo ...

accelerate (1.x) builds the `FullyShardedDataParallelPlugin` from the config on any machine, but switches the
distributed type to FSDP only for GPU-family devices: with `--use_cpu` it stays MULTI_CPU and the same command
silently trains with plain DDP. This wrapper makes that one switch for CPU processes, so the rest (the auto-wrap
policy built from `_no_split_modules`, `fully_shard`, the Trainer's FSDP checkpointing and final gather) runs as on
GPUs; then it runs the script unchanged.
"""

import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerator_state_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = fsdp_plugin
        # every later `AcceleratorState()` copies the process state's type again
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = _init_with_fsdp_on_cpu

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
