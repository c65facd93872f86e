"""The end-to-end demo (`make demo`, `examples/demo.py`) in its `--fast` variant: base parts, a video dataset,
fine-tuning with the Trainer, Hub-ready folders, reloading with the Auto classes, answers and the table. The accuracy
targets belong to the full demo and are not checked here."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
ROWS = ("slow-fast", "fast-only", "all-frames")


def test_demo_fast_variant_runs_end_to_end(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(DEMO), "--fast", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "100%|" in result.stderr  # the Trainer's progress bar

    # the table: one row per model with accuracy (%), context length (tokens), slow tokens and prefill MFLOPs
    rows = {
        match["name"]: match.groupdict()
        for match in re.finditer(
            r"^(?P<name>\S+) +(?P<accuracy>\d+\.\d) % +(?P<context>\d+) +(?P<slow>\d+) +(?P<flops>\d+\.\d)$",
            result.stdout,
            re.MULTILINE,
        )
    }
    assert set(rows) == set(ROWS), result.stdout
    assert "name the colour of the bright square" in result.stdout and "chance level 25.0%" in result.stdout
    assert rows["slow-fast"]["context"] == rows["fast-only"]["context"]
    assert int(rows["all-frames"]["context"]) > int(rows["slow-fast"]["context"])
    assert int(rows["slow-fast"]["slow"]) > 0 and rows["fast-only"]["slow"] == rows["all-frames"]["slow"] == "0"

    # the training data: real mp4 files and annotations in the released format
    data = tmp_path / "data"
    entries = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert all((data / entry["video"]).is_file() and entry["video"].endswith(".mp4") for entry in entries)
    assert entries[0]["conversations"][0]["value"].startswith("<video>\n")

    results = json.loads((tmp_path / "results.json").read_text())
    num_questions = len((data / "test.jsonl").read_text().splitlines())
    for name in ROWS:
        folder = tmp_path / "models" / name
        assert {"config.json", "processor_config.json", "README.md", "modeling_slowfast.py"} <= set(os.listdir(folder))
        assert ModelCard.load(folder / "README.md").data.library_name == "transformers"
        # the reloaded model answered every held-out question
        answers = results[name]["answers"]
        assert len(answers) == num_questions
        assert all(isinstance(answer["answer"], str) and answer["truth"] for answer in answers)
        assert float(rows[name]["accuracy"]) == round(results[name]["accuracy"], 1)
