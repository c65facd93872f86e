"""The supported Transformers range: checked at import, declared consistently, and followed without deprecations."""

import configparser
import inspect
import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from conftest import activate_hybrid_layers, tiny_slowfast_model, video_prompt
from packaging.requirements import Requirement
from packaging.version import Version

from slowfast_hf.transformers_compat import (
    CACHE_KWARG,
    MIN_TRANSFORMERS_VERSION,
    NEWEST_TESTED_TRANSFORMERS_MINOR,
    UnsupportedTransformersVersionError,
    check_transformers_version,
)

ROOT = Path(__file__).resolve().parents[1]


def declared_floors() -> dict[str, str]:
    """`name -> floor` of every requirement in setup.cfg's install_requires and its `test` extra."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines() + parser["options.extras_require"]["test"].splitlines()
    floors = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = [spec for spec in requirement.specifier if spec.operator == ">="]
            floors[requirement.name.lower().replace("-", "_")] = specifier.version
    return floors


def pinned_minimum() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("-", "_")] = version
    return pins


def test_every_floor_is_pinned_in_constraints_min():
    assert declared_floors() == pinned_minimum()


def test_the_import_check_uses_the_declared_transformers_floor():
    assert declared_floors()["transformers"] == MIN_TRANSFORMERS_VERSION


def test_the_installed_transformers_is_in_the_supported_range():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transformers_version(transformers.__version__)


@pytest.mark.parametrize("installed", ["5.22.2", "4.57.6", "5.23.0rc1"])
def test_an_older_transformers_is_refused_naming_both_versions(installed):
    with pytest.raises(UnsupportedTransformersVersionError) as error:
        check_transformers_version(installed)
    message = str(error.value)
    assert f"transformers {installed} is installed" in message
    assert f">={MIN_TRANSFORMERS_VERSION}" in message


def test_a_newer_untested_minor_warns_naming_both_versions():
    major, minor = map(int, NEWEST_TESTED_TRANSFORMERS_MINOR.split("."))
    with pytest.warns(UserWarning, match=rf"transformers {major}\.{minor + 1}\.0 is newer .*tested up to"):
        check_transformers_version(f"{major}.{minor + 1}.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_transformers_version(f"{NEWEST_TESTED_TRANSFORMERS_MINOR}.9")
        check_transformers_version(MIN_TRANSFORMERS_VERSION)


def test_import_under_an_unsupported_transformers_fails_with_the_versions():
    script = "import transformers; transformers.__version__ = '5.2.0'; import slowfast_hf"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("slowfast_hf.transformers_compat.UnsupportedTransformersVersionError"), last_line
    assert "transformers 5.2.0 is installed" in last_line and MIN_TRANSFORMERS_VERSION in last_line


def test_the_cache_name_is_the_one_transformers_declares():
    assert CACHE_KWARG in inspect.signature(transformers.LlamaModel.forward).parameters
    renamed = Version(transformers.__version__) >= Version("5.24.0")
    assert CACHE_KWARG == ("cache" if renamed else "past_key_values")


def test_forward_and_generate_raise_no_deprecation(caplog):
    """Transformers logs `past_key_values ... deprecated` (5.24+) when the old cache name is used anywhere."""
    model = activate_hybrid_layers(tiny_slowfast_model(seed=1))
    pixel_values_videos = torch.randn(1, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    input_ids = torch.tensor([video_prompt(model, 4)])
    transformers.utils.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            output = model(input_ids=input_ids, pixel_values_videos=pixel_values_videos, use_cache=True)
            step = model(
                input_ids=output.logits[:, -1:].argmax(-1),
                **{CACHE_KWARG: getattr(output, CACHE_KWARG)},  # it holds the slow keys/values too
            )
            model.generate(
                input_ids=input_ids, pixel_values_videos=pixel_values_videos, max_new_tokens=4, do_sample=False
            )
    finally:
        transformers.utils.logging.disable_propagation()
    assert step.logits.shape == (1, 1, model.config.text_config.vocab_size)
    deprecations = [r.getMessage() for r in caplog.records if re.search("deprecat", r.getMessage(), re.I)]
    deprecations += [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert deprecations == []


def test_the_old_cache_name_is_still_accepted():
    model = tiny_slowfast_model(seed=2)
    input_ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        output = model(input_ids=input_ids, use_cache=True)
        cache = getattr(output, CACHE_KWARG)
        by_old_name = model(input_ids=torch.tensor([[5]]), past_key_values=cache).logits
        cache.crop(-1)
        by_new_name = model(input_ids=torch.tensor([[5]]), cache=cache).logits
    assert torch.equal(by_old_name, by_new_name)
    with pytest.raises(ValueError, match="either `cache` or `past_key_values`"):
        model(input_ids=input_ids, cache=cache, past_key_values=cache)
