#!/usr/bin/env bash
# The lmms-eval tests (modeling_tests/test_lmms_eval.py) in their own environment, .venv-eval: the package with its
# test extra (CPU torch), lmms-eval installed without its dependencies, and only the pinned packages its command
# needs (modeling_tests/lmms_eval_requirements.txt). No torchvision: it cannot load beside the CPU torch wheel, and
# Transformers would then see a broken torchvision. The default environment (.venv) never gets lmms-eval.
# Extra arguments go to pytest. Used by `make test-eval`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-eval
LMMS_EVAL_VERSION=0.7.3
STAMP="$VENV/.installed-lmms-eval-$LMMS_EVAL_VERSION"
REQUIREMENTS=modeling_tests/lmms_eval_requirements.txt

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ constraints-cpu.txt -nt "$STAMP" ] || [ "$REQUIREMENTS" -nt "$STAMP" ]; then
    "$VENV/bin/pip" install -q -c constraints-cpu.txt -e ".[test]"
    "$VENV/bin/pip" install -q --no-deps "lmms-eval==$LMMS_EVAL_VERSION"
    "$VENV/bin/pip" install -q -c constraints-cpu.txt -r "$REQUIREMENTS"
    touch "$STAMP"
fi

if "$VENV/bin/python" -c "import torchvision" 2> /dev/null; then
    echo "ERROR: torchvision is installed in $VENV; it cannot load beside the CPU torch wheel." >&2
    exit 1
fi
# Fail here, not as a skip, if the environment cannot import the plugin.
"$VENV/bin/python" -c "import lmms_eval.api.model, slowfast_hf.evaluation.lmms_model"

HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/python" -m pytest modeling_tests/test_lmms_eval.py -q -rs "$@"
