# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Transformers' own common test mixins (`tests/test_*_common.py`), taken from the source distribution of the installed
Transformers release at run time; nothing of them is committed here.

The sdist carries the top-level `tests/*_common.py` files but not the few modules they import relatively
(`tests/generation/`, `tests/exporters/`, `tests/utils/`) nor the repository's `utils/fetch_hub_objects_for_ci.py`.
`transformers_tests_path` writes minimal stand-ins for those, each saying what it stands for; the tests that would
need the real ones are skipped in `test_transformers_common.py`, with that reason.

Run it as a script to pre-fetch (CI does, so the common tests never skip):

    .venv/bin/python modeling_tests/fetch_transformers_tests.py
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE_ROOT = Path(__file__).resolve().parent.parent / ".cache" / "transformers-tests"

STAND_INS = {
    "tests/__init__.py": "",
    "tests/generation/__init__.py": "",
    "tests/generation/test_utils.py": (
        '"""Stand-in: the sdist does not ship `tests/generation/`; slowfast_hf covers generation in its own tests."""\n'
        "\n\nclass GenerationTesterMixin:\n    pass\n"
    ),
    "tests/exporters/__init__.py": "",
    "tests/exporters/test_export.py": (
        '"""Stand-in: the sdist does not ship `tests/exporters/`, so no torch.export test runs."""\n'
        "\n\nclass ExportTesterMixin:\n    pass\n"
    ),
    "tests/utils/__init__.py": "",
    "tests/utils/test_configuration_utils.py": (
        '"""Stand-in: the sdist does not ship `tests/utils/`. `config_common_kwargs` is read only by\n'
        '`ConfigTester.check_config_arguments_init`, which returns early for composite configs such as ours."""\n'
        "\nconfig_common_kwargs = {}\n"
    ),
    "utils/fetch_hub_objects_for_ci.py": (
        '"""Stand-in: the repository\'s `utils/` is not in the sdist. URLs stay URLs; no test here reads them."""\n'
        "\n\ndef url_to_local_path(url, **kwargs):\n    return url\n"
    ),
}


def transformers_tests_path(version: str | None = None, cache_root: Path = CACHE_ROOT) -> Path:
    """
    The folder to put on `sys.path` so that `tests.test_modeling_common` & co. import: the sdist's top-level
    `tests/*.py` of Transformers `version` (the installed one by default), downloaded once with pip and cached.
    Raises `RuntimeError` saying why when the sdist cannot be had.
    """
    if version is None:
        import transformers

        version = transformers.__version__
    target = cache_root / version
    if (target / "tests" / "test_modeling_common.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
        command += ["--dest", download_dir, f"transformers=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(download_dir).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"Could not download the transformers=={version} source distribution "
                f"(`{' '.join(command)}` exited {result.returncode}): {result.stderr.strip()[-500:]}"
            )
        cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{version}-"))
        try:
            with tarfile.open(archives[0]) as archive:
                for member in archive.getmembers():
                    parts = Path(member.name).parts  # ("transformers-X", "tests", "test_x_common.py")
                    if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                        destination = staging / "tests" / parts[2]
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.extractfile(member).read())
            if not (staging / "tests" / "test_modeling_common.py").is_file():
                raise RuntimeError(f"The transformers=={version} sdist has no tests/test_modeling_common.py.")
            for relative_path, text in STAND_INS.items():
                path = staging / relative_path
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    path.write_text(text)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)  # atomic: a concurrent run sees either nothing or the whole folder
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def main() -> int:
    try:
        path = transformers_tests_path()
    except RuntimeError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
