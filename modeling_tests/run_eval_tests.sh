#!/usr/bin/env bash
# The lmms-eval tests (modeling_tests/test_lmms_eval.py) in their own environment, .venv-eval: the package with its
# test and eval extras, installed as a user installs them (`pip install "slowfast_hf[eval]"`: lmms-eval with all of
# its requirements, PyAV 15 among them), with torch pinned to the CPU build (constraints-cpu.txt) and lmms-eval to
# the release these tests were written against (modeling_tests/lmms_eval_constraints.txt).
# One step differs from a user's install: lmms-eval requires torchvision, and PyPI's torchvision cannot load beside
# the CPU torch wheel of this machine (`operator torchvision::nms does not exist`; on a CPU-only machine a user takes
# both from the PyTorch CPU index). Transformers would then see a broken torchvision, so it is uninstalled here;
# nothing the slowfast_hf model or these tasks run uses it.
# The default environment (.venv) never gets lmms-eval. Extra arguments go to pytest. Used by `make test-eval`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-eval
CONSTRAINTS=modeling_tests/lmms_eval_constraints.txt
STAMP="$VENV/.installed"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ ! -f "$STAMP" ] || [ setup.cfg -nt "$STAMP" ] || [ constraints-cpu.txt -nt "$STAMP" ] || [ "$CONSTRAINTS" -nt "$STAMP" ]; then
    "$VENV/bin/pip" install -q -c constraints-cpu.txt -c "$CONSTRAINTS" -e ".[test,eval]"
    "$VENV/bin/pip" uninstall -q -y torchvision
    touch "$STAMP"
fi

if "$VENV/bin/python" -c "import torchvision" 2> /dev/null; then
    echo "ERROR: torchvision is installed in $VENV; it cannot load beside the CPU torch wheel." >&2
    exit 1
fi
# Fail here, not as a skip, if the environment cannot import the plugin.
"$VENV/bin/python" -c "import lmms_eval.api.model, slowfast_hf.evaluation.lmms_model"
"$VENV/bin/python" -c "import av, lmms_eval, importlib.metadata as m; print('lmms-eval', m.version('lmms-eval'), 'av', av.__version__)"

HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/python" -m pytest modeling_tests/test_lmms_eval.py -q -rs "$@"
