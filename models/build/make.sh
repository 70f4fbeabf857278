#!/usr/bin/env bash
# Builds models/r1-edge-mini/ (FP32), models/r1-edge-mini-int8/ (INT8) and
# models/r1-edge-mini-fp16/ (FP16) from scratch: corpus -> tokenizer -> JAX
# training -> ONNX export -> quantization / FP16 conversion -> verification.
# Creates the Python venv if missing (outside the repo).  Deterministic: a rerun
# with the same pinned packages on the same CPU type produces byte-identical files.
#
#   bash models/build/make.sh                # full build (~15 min on 2 cores)
#   bash models/build/make.sh --steps 0      # untrained weights, same interface (~15 s)
#   bash models/build/make.sh --fp16-only    # only r1-edge-mini-fp16/ from the committed FP32 file
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${R1_MODEL_VENV:-${HOME}/.cache/r1-hybrid/model-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "${VENV}/bin/python" ]; then
  echo "[make.sh] creating venv ${VENV}"
  "${PY}" -m venv "${VENV}"
fi
if ! "${VENV}/bin/python" -m pip freeze 2>/dev/null | sort | diff -q - <(grep -v '^#' "${HERE}/requirements.txt" | sort) >/dev/null; then
  echo "[make.sh] installing ${HERE}/requirements.txt"
  "${VENV}/bin/python" -m pip install --quiet --upgrade pip
  "${VENV}/bin/python" -m pip install --quiet -r "${HERE}/requirements.txt"
fi

export JAX_PLATFORMS=cpu
export PYTHONHASHSEED=0
export TF_CPP_MIN_LOG_LEVEL=2
exec "${VENV}/bin/python" "${HERE}/make_model.py" "$@"
