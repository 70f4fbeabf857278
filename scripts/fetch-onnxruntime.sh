#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library once, from PyPI's `onnxruntime` wheel, into r1-hybrid's cache.
#
# Our binaries load ONNX Runtime at run time (ort's `load-dynamic`); they look for it in this order:
#   1. $ORT_DYLIB_PATH (a file path; an error if it is set but missing)
#   2. the cache this script fills: ${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}/onnxruntime/<version>/
#   3. the system's dynamic loader path (libonnxruntime.so.1, then libonnxruntime.so)
#
# Usage: scripts/fetch-onnxruntime.sh            fetch if missing, print the library's path
#        ORT_VERSION=1.32.0 scripts/fetch-onnxruntime.sh
# Nothing else downloads ONNX Runtime: no build script does.
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.32.0}"
CACHE_DIR="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
DEST_DIR="$CACHE_DIR/onnxruntime/$ORT_VERSION"
LIB="$DEST_DIR/libonnxruntime.so.$ORT_VERSION"

if [[ -f "$LIB" ]]; then
  echo "$LIB"
  exit 0
fi

case "$(uname -m)" in
  x86_64) platform=manylinux_2_28_x86_64 ;;
  aarch64) platform=manylinux_2_28_aarch64 ;;
  *) echo "fetch-onnxruntime: no onnxruntime wheel for $(uname -m); set ORT_DYLIB_PATH to a library you built" >&2; exit 1 ;;
esac

python="$(command -v python3 || true)"
if [[ -z "$python" ]]; then
  echo "fetch-onnxruntime: python3 (with pip) is needed to download the onnxruntime wheel" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-onnxruntime: downloading onnxruntime==$ORT_VERSION ($platform) from PyPI" >&2
# The wheel's shared library does not depend on the Python version: pin one tag so the choice is deterministic.
if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform "$platform" --python-version 3.11 --implementation cp \
    -d "$work" "onnxruntime==$ORT_VERSION" >&2; then
  echo "fetch-onnxruntime: pip could not download onnxruntime==$ORT_VERSION; check the package index, or set ORT_DYLIB_PATH" >&2
  exit 1
fi

wheel="$(ls "$work"/onnxruntime-*.whl)"
"$python" - "$wheel" "$work/out" <<'PY'
import pathlib, re, sys, zipfile
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
out.mkdir(parents=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so\.1[0-9.]*", n)]
    if not names:
        sys.exit("fetch-onnxruntime: the wheel carries no onnxruntime/capi/libonnxruntime.so.1.*")
    for n in names:
        (out / pathlib.Path(n).name).write_bytes(z.read(n))
PY

if [[ ! -f "$work/out/libonnxruntime.so.$ORT_VERSION" ]]; then
  echo "fetch-onnxruntime: expected libonnxruntime.so.$ORT_VERSION in the wheel, found: $(ls "$work/out")" >&2
  exit 1
fi
chmod 0755 "$work/out/libonnxruntime.so.$ORT_VERSION"
# Atomic: a half-extracted library is never visible under the cache path.
mkdir -p "$(dirname "$DEST_DIR")"
rm -rf "$DEST_DIR.tmp.$$"
mv "$work/out" "$DEST_DIR.tmp.$$"
rm -rf "$DEST_DIR"
mv "$DEST_DIR.tmp.$$" "$DEST_DIR"
echo "$LIB"
