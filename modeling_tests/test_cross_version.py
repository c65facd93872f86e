"""A checkpoint saved under one supported Transformers release loads and generates, with `trust_remote_code=True`,
under another, in both directions.

Needs a second Python environment with another supported Transformers release: set `SLOWFAST_OTHER_PYTHON` to its
interpreter (`.ci/run` runs the suite on the lowest supported set with the newest environment's interpreter here).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import BLOCK_SLOWFAST_HF

TESTS_DIR = Path(__file__).resolve().parent
OTHER_PYTHON = os.environ.get("SLOWFAST_OTHER_PYTHON")

pytestmark = pytest.mark.skipif(
    not OTHER_PYTHON,
    reason="set SLOWFAST_OTHER_PYTHON to the Python of an environment with another supported Transformers "
    "release (.ci/run does)",
)

SAVE_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    sys.path.insert(0, sys.argv[1])
    import torch
    import transformers
    from conftest import activate_hybrid_layers, tiny_slowfast_model, video_prompt

    path, out_file = sys.argv[2:4]
    model = activate_hybrid_layers(tiny_slowfast_model(seed=5))
    model.save_pretrained(path)
    generator = torch.Generator().manual_seed(2)
    pixel_values_videos = torch.randn(1, 4, 3, 32, 32, generator=generator)
    input_ids = torch.tensor([video_prompt(model, 4)])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values_videos=pixel_values_videos).logits
        tokens = model.generate(
            input_ids=input_ids, pixel_values_videos=pixel_values_videos, max_new_tokens=12, do_sample=False,
            min_new_tokens=12,
        )
    torch.save(
        {"input_ids": input_ids, "pixel_values_videos": pixel_values_videos, "logits": logits, "tokens": tokens,
         "transformers": transformers.__version__},
        out_file,
    )
    """
)

LOAD_SCRIPT = BLOCK_SLOWFAST_HF + textwrap.dedent(
    """

    import torch
    import transformers
    from transformers import AutoModelForImageTextToText

    path, inputs_file, out_file = sys.argv[1:4]
    inputs = torch.load(inputs_file)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"]).logits
        tokens = model.generate(
            input_ids=inputs["input_ids"], pixel_values_videos=inputs["pixel_values_videos"], max_new_tokens=12,
            do_sample=False, min_new_tokens=12,
        )
    torch.save({"logits": logits, "tokens": tokens, "transformers": transformers.__version__}, out_file)
    """
)


def run(python: str, script: str, *arguments, work: Path):
    script_file = work / "script.py"
    script_file.write_text(script)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules_cache"), PYTHONPATH="")
    result = subprocess.run(
        [python, str(script_file), *map(str, arguments)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{python} failed:\n{result.stdout}\n{result.stderr}"


def transformers_version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import json, transformers; print(json.dumps(transformers.__version__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("direction", ["this_to_other", "other_to_this"])
def test_saved_checkpoint_loads_and_generates_under_the_other_release(tmp_path, direction):
    saver, loader = (sys.executable, OTHER_PYTHON) if direction == "this_to_other" else (OTHER_PYTHON, sys.executable)
    saved_version, loaded_version = transformers_version(saver), transformers_version(loader)
    assert saved_version != loaded_version, f"both environments have transformers {saved_version}"
    checkpoint, saved_out, loaded_out = tmp_path / "checkpoint", tmp_path / "saved.pt", tmp_path / "loaded.pt"
    (tmp_path / "save").mkdir()
    (tmp_path / "load").mkdir()
    run(saver, SAVE_SCRIPT, TESTS_DIR, checkpoint, saved_out, work=tmp_path / "save")
    run(loader, LOAD_SCRIPT, checkpoint, saved_out, loaded_out, work=tmp_path / "load")
    saved, loaded = torch.load(saved_out), torch.load(loaded_out)
    assert (saved["transformers"], loaded["transformers"]) == (saved_version, loaded_version)
    torch.testing.assert_close(loaded["logits"], saved["logits"], atol=1e-5, rtol=0)
    assert loaded["tokens"].shape[1] == saved["input_ids"].shape[1] + 12
    assert torch.equal(loaded["tokens"], saved["tokens"])
