#!/usr/bin/env bash
# The lmms-eval tests (modeling_tests/test_lmms_eval.py) in their own environment, .venv-eval: the package with its
# test and eval extras (CPU torch; the eval extra is what lmms-eval's command needs, pinned by
# modeling_tests/lmms_eval_constraints.txt), and lmms-eval installed without its own dependencies, which cannot be met
# beside this package (av<16) and pull torchvision: that cannot load beside the CPU torch wheel, and Transformers
# would then see a broken torchvision. pip lists lmms-eval's missing requirements after installing it: expected.
# The default environment (.venv) never gets lmms-eval.
# Extra arguments go to pytest. Used by `make test-eval`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-eval
LMMS_EVAL_VERSION=0.7.3
STAMP="$VENV/.installed-lmms-eval-$LMMS_EVAL_VERSION"
CONSTRAINTS=modeling_tests/lmms_eval_constraints.txt

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ constraints-cpu.txt -nt "$STAMP" ] || [ "$CONSTRAINTS" -nt "$STAMP" ]; then
    "$VENV/bin/pip" install -q -c constraints-cpu.txt -c "$CONSTRAINTS" -e ".[test,eval]"
    "$VENV/bin/pip" install -q --no-deps "lmms-eval==$LMMS_EVAL_VERSION"
    touch "$STAMP"
fi

if "$VENV/bin/python" -c "import torchvision" 2> /dev/null; then
    echo "ERROR: torchvision is installed in $VENV; it cannot load beside the CPU torch wheel." >&2
    exit 1
fi
# Fail here, not as a skip, if the environment cannot import the plugin.
"$VENV/bin/python" -c "import lmms_eval.api.model, slowfast_hf.evaluation.lmms_model"

HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/python" -m pytest modeling_tests/test_lmms_eval.py -q -rs "$@"
