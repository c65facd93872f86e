# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Evaluation with lmms-eval: the `slowfast_hf` model of the stock `lmms_eval` command.

The package declares the entry point `slowfast_hf = slowfast_hf.evaluation:model_manifest` in lmms-eval's model group
`lmms_eval.models`, so after `pip install "slowfast_hf[eval]"` and `pip install --no-deps "lmms-eval>=0.7.3,<0.8"`
(lmms-eval's own requirements pin `av<16` and pull torchvision)

    python -m lmms_eval --model slowfast_hf --model_args pretrained=PATH --tasks videomme --batch_size 4

finds [`SlowFastLMMS`](lmms_model.py) without any file of lmms-eval edited. lmms-eval itself is imported only here and
in `lmms_model`, never by the rest of the package.
"""

MODEL_ID = "slowfast_hf"


def model_manifest():
    """The manifest lmms-eval's model registry loads from the `lmms_eval.models` entry point."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path="slowfast_hf.evaluation.lmms_model.SlowFastLMMS")


__all__ = ["MODEL_ID", "model_manifest"]
