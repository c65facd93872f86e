# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""The Transformers releases this package supports, and the one name that differs across them.

Transformers 5.24 renamed the decoder cache from `past_key_values` to `cache` (model forwards, `ModelOutput` fields,
generation kwargs). The code here uses whichever name the installed release declares, read from Transformers' own
output classes, so saved checkpoints (which ship this file) work on every supported release.
"""

import warnings
from dataclasses import fields

import transformers
from packaging.version import Version
from transformers.modeling_outputs import CausalLMOutputWithPast

MIN_TRANSFORMERS_VERSION = "5.23.0"
# The newest minor release the test suite ran on; newer minors are allowed, with a warning.
NEWEST_TESTED_TRANSFORMERS_MINOR = "5.24"

# "cache" on Transformers >= 5.24, "past_key_values" before.
CACHE_KWARG = "cache" if "cache" in {field.name for field in fields(CausalLMOutputWithPast)} else "past_key_values"


class UnsupportedTransformersVersionError(ImportError):
    pass


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Raise below the supported range; warn above the newest tested minor release."""
    version = Version(installed)
    supported = f">={MIN_TRANSFORMERS_VERSION} (tested up to {NEWEST_TESTED_TRANSFORMERS_MINOR}.x)"
    if version < Version(MIN_TRANSFORMERS_VERSION):
        raise UnsupportedTransformersVersionError(
            f"slowfast_hf needs transformers{supported}, but transformers {installed} is installed; "
            f'upgrade it with `pip install "transformers>={MIN_TRANSFORMERS_VERSION}"`.'
        )
    if version.release[:2] > Version(NEWEST_TESTED_TRANSFORMERS_MINOR).release[:2]:
        warnings.warn(
            f"transformers {installed} is newer than the releases slowfast_hf was tested with "
            f"(transformers{supported}); if something fails, pin `transformers<"
            f"{Version(NEWEST_TESTED_TRANSFORMERS_MINOR).major}.{Version(NEWEST_TESTED_TRANSFORMERS_MINOR).minor + 1}`.",
            stacklevel=2,
        )


def resolve_cache_argument(cache, past_key_values):
    """The decoder cache a caller passed under either name (`past_key_values` before Transformers 5.24)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the decoder cache as either `cache` or `past_key_values`, not both.")
    if past_key_values is not None and CACHE_KWARG == "cache":  # as Transformers' own models warn
        warnings.warn(
            "`past_key_values` is deprecated, pass the decoder cache as `cache`.", FutureWarning, stacklevel=3
        )
    return cache if cache is not None else past_key_values
