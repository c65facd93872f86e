"""The README's commands run as written."""

import re
import shlex
from pathlib import Path

import pytest
import training_fixtures
from training_fixtures import run_train_script, save_tiny_checkpoint, video_entry, write_annotations, write_clips

README = Path(__file__).resolve().parents[1] / "README.md"

one_thread = training_fixtures.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def readme_train_command() -> list[str]:
    """The arguments of the README's first `python examples/train.py` command."""
    match = re.search(r"```bash\npython examples/train.py (.*?)\n```", README.read_text(), re.S)
    assert match, "README has no `python examples/train.py` block"
    return shlex.split(match.group(1).replace("\\\n", " "))


def test_the_readme_training_command_runs_as_written(tmp_path, tiny_tokenizer):
    arguments = readme_train_command()
    paths = {"--model_name_or_path": "my-slowfast", "--annotation_file": "data/train.json", "--video_root": "data"}
    for option, value in paths.items():
        assert arguments[arguments.index(option) + 1] == value, option
    save_tiny_checkpoint(tmp_path / "my-slowfast", tiny_tokenizer)
    names = write_clips(tmp_path / "data" / "clips", [4, 6, 5])
    entries = [video_entry(f"clips/{name}", "<video>\nwhat happens?", "a red square moves") for name in names]
    write_annotations(tmp_path / "data" / "train.json", entries)
    arguments = [str(tmp_path / argument) if argument in paths.values() else argument for argument in arguments]
    arguments[arguments.index("--output_dir") + 1] = str(tmp_path / "runs" / "video-sft")
    run_train_script(arguments + ["--report_to=none", "--disable_tqdm=true"])
    assert (tmp_path / "runs" / "video-sft" / "model.safetensors").is_file()
