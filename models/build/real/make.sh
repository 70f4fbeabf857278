#!/usr/bin/env bash
# Random-weight checkpoints of published Qwen2 configurations (published.py), exported as r1-edge's
# operators would: Optimum text-generation-with-past (FP32, FP16, INT8) and the onnxruntime-genai
# model builder (FP32, INT4). Outputs go to the cache, never into the repository, except --tiny.
#
# Two venvs (outside the repo), created if missing and kept equal to their pinned requirements:
# optimum-onnx 0.1.0 needs transformers < 4.58, onnxruntime-genai 0.18's builder needs transformers 5.
#
#   bash models/build/real/make.sh                                  # both models, all layouts (long)
#   bash models/build/real/make.sh --only qwen2.5-0.5b-instruct     # one model
#   bash models/build/real/make.sh --only qwen2.5-0.5b-instruct --optimum-dtypes fp32,int8 --genai-dtypes fp32
#   bash models/build/real/make.sh --tiny                           # models/qwen2-tiny-{optimum,genai}/
#   bash models/build/real/make.sh --out DIR                        # another output root
#
# Outputs: ${R1_CACHE_DIR:-~/.cache/r1-hybrid}/real-models/<name>-<layout>-<dtype>/ and report.json;
# checkpoints in .../real-work/<name>-checkpoint/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${R1_REAL_VENV:-${HOME}/.cache/r1-hybrid/real-venv}"
GENAI_VENV="${R1_REAL_GENAI_VENV:-${HOME}/.cache/r1-hybrid/real-genai-venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  local venv="$1" requirements="$2"
  if [ ! -x "${venv}/bin/python" ]; then
    echo "[make.sh] creating venv ${venv}"
    "${PY}" -m venv "${venv}"
  fi
  if ! "${venv}/bin/python" -m pip freeze 2>/dev/null | sort -f | diff -q - <(grep -v '^#' "${requirements}" | sort -f) >/dev/null; then
    echo "[make.sh] installing ${requirements} into ${venv}"
    "${venv}/bin/python" -m pip install --quiet --upgrade pip
    "${venv}/bin/python" -m pip install --quiet -r "${requirements}"
  fi
}
ensure_venv "${VENV}" "${HERE}/requirements.txt"
ensure_venv "${GENAI_VENV}" "${HERE}/requirements-genai.txt"

export PYTHONHASHSEED=0
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export CUDA_VISIBLE_DEVICES=""
export R1_GENAI_PYTHON="${GENAI_VENV}/bin/python"
cd "${HERE}"
exec "${VENV}/bin/python" "${HERE}/export.py" "$@"
