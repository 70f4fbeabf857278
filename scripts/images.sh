#!/usr/bin/env bash
# Builds the three container images (deploy/docker/*.Dockerfile): r1-hybrid/r1-{gateway,edge,center}:TAG.
#
#   scripts/images.sh [TAG]          TAG defaults to dev
#   R1_IMAGES_NO_BUILD=1 scripts/images.sh    daemonless: use the release binaries already in target/release
#
# With a Docker engine (`docker info` answers): `docker build` of each Dockerfile's default target,
# which compiles from source in a Rust build stage (needs an image registry for the base images).
#
# Without one, daemonless (buildah, Debian's package, installed if missing): the runtime base is made
# from Debian's packages with mmdebstrap (no image registry needed), the binaries are built here once
# with `cargo build --release`, and each Dockerfile's `prebuilt` target copies them in. Then each image
# is smoke-tested inside (the binary starts, finds its libraries and ONNX Runtime, checks its config),
# and saved as a docker-archive under .r1/images/out/ (`docker load -i …` on a machine with Docker).
#   R1_IMAGES_BUILDER=docker|buildah   force one
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tag="${1:-dev}"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
stage="$root/.r1/images"
log() { printf 'images: %s\n' "$*" >&2; }
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"

builder="${R1_IMAGES_BUILDER:-}"
if [[ -z "$builder" ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker; else builder=buildah; fi
fi

if [[ "$builder" == docker ]]; then
  for name in gateway edge center; do
    log "docker build r1-hybrid/r1-$name:$tag (from source)"
    docker build -f "deploy/docker/$name.Dockerfile" -t "r1-hybrid/r1-$name:$tag" \
      --build-arg VERSION="$version" --build-arg REVISION="$revision" .
  done
  exit 0
fi

# --- daemonless: buildah + an mmdebstrap base --------------------------------------------------------
need=()
for pkg in buildah mmdebstrap; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if ((${#need[@]})); then
  log "installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# vfs: no overlay mounts needed (this also works inside an unprivileged container).
bh() { buildah --storage-driver vfs "$@"; }

# The name changes when the package list does, so a base cached before is not reused.
base=localhost/r1-hybrid/runtime-base:bookworm-libssl3
base_tar="$cache/images/runtime-base-bookworm-libssl3.tar"
if ! bh inspect --type image "$base" >/dev/null 2>&1; then
  if [[ ! -f "$base_tar" ]]; then
    log "making the runtime base from Debian packages (mmdebstrap, once)"
    mkdir -p "$(dirname "$base_tar")"
    sources="$(mktemp)"
    # The machine's own apt sources: the same Debian mirror apt uses here.
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null >"$sources" || true
    mmdebstrap --variant=essential --mode=root --format=tar \
      --include=ca-certificates,libstdc++6,zlib1g,libssl3 \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      bookworm "$base_tar.tmp" "$sources"
    rm -f "$sources"
    mv "$base_tar.tmp" "$base_tar"
  fi
  ctr="$(bh from scratch)"
  bh add "$ctr" "$base_tar" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  bh commit --quiet --format docker "$ctr" "$base" >/dev/null
  bh rm "$ctr" >/dev/null
fi

if [[ -z "${R1_IMAGES_NO_BUILD:-}" ]]; then
  log "cargo build --release (the three binaries, once)"
  cargo build --release --locked -p r1-gateway -p r1-edge -p r1-center
fi
target="${CARGO_TARGET_DIR:-$root/target}/release"
ort="$(scripts/fetch-onnxruntime.sh)"
rm -rf "$stage/bin" "$stage/onnxruntime"
mkdir -p "$stage/bin" "$stage/onnxruntime" "$stage/out"
# Debug info stays on the build machine (symbols stay, for backtraces): a third of the image otherwise.
for b in r1-gateway r1-edge r1-center; do objcopy --strip-debug "$target/$b" "$stage/bin/$b"; done
cp "$ort" "$stage/onnxruntime/libonnxruntime.so.1"
for b in r1-gateway r1-edge r1-center; do log "ldd $b: $(ldd "$stage/bin/$b" | awk '{print $1}' | tr '\n' ' ')"; done

for name in gateway edge center; do
  image="r1-hybrid/r1-$name:$tag"
  log "buildah bud $image (--target prebuilt)"
  bh bud --quiet --format docker --isolation chroot --target prebuilt \
    --build-arg RUNTIME_IMAGE="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    -f "deploy/docker/$name.Dockerfile" -t "$image" . >/dev/null
done

# Smoke tests inside each image, as its user: the dynamic loader finds every library, ONNX Runtime
# loads, and each binary accepts the configs the manifests mount.
smoke() { # image mount-dir command...
  local image="$1" mount="$2" ctr
  shift 2
  ctr="$(bh from --quiet "$image")"
  bh run --isolation chroot --user 10001:10001 ${mount:+--volume "$mount:/etc/r1:ro"} "$ctr" -- "$@"
  bh rm "$ctr" >/dev/null
}
smoke "r1-hybrid/r1-gateway:$tag" "$root/deploy/k8s/base" /usr/local/bin/r1-gateway --config /etc/r1/gateway.toml --check-config
smoke "r1-hybrid/r1-edge:$tag" "" /usr/local/bin/r1-edge --model /models/r1-edge-mini --batch_size_dynamic true --max_batch_size 32 --check
smoke "r1-hybrid/r1-center:$tag" "$root/deploy/k8s/overlays/dev" /usr/local/bin/r1-center --config /etc/r1/center.toml --check-config
log "smoke tests passed (gateway config check, edge model + ONNX Runtime load, center config + model check)"

# The image's own HEALTHCHECK, run inside it against r1-edge serving from the image (chroot isolation
# shares this machine's network, so the server takes its default port 8081: skipped if that is taken).
if ! (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then
  image="r1-hybrid/r1-edge:$tag"
  health="$(bh inspect --type image "$image" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]))')"
  server="$(bh from --quiet "$image")"
  # buildah itself in the background (not through bh: $! must be buildah, which passes SIGTERM on).
  buildah --storage-driver vfs run --isolation chroot --user 10001:10001 "$server" -- /usr/local/bin/r1-edge \
    --model /models/r1-edge-mini --listen 127.0.0.1:8081 >"$stage/edge-health.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + 120))
  until curl -fsS -o /dev/null http://127.0.0.1:8081/readyz 2>/dev/null; do
    ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null || { log "r1-edge did not come up in its image"; cat "$stage/edge-health.log" >&2; exit 1; }
    sleep 0.2
  done
  mapfile -t cmd < <(python3 -c 'import json,sys; t=json.loads(sys.argv[1]); print("\n".join(t[1:]))' "$health")
  probe="$(bh from --quiet "$image")"
  if bh run --isolation chroot --user 10001:10001 "$probe" -- "${cmd[@]}"; then
    log "HEALTHCHECK of r1-edge (${cmd[*]}) passes against the server in its image"
  else
    log "HEALTHCHECK of r1-edge failed"; kill -TERM "$pid"; exit 1
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  bh rm "$server" "$probe" >/dev/null
else
  log "port 8081 is taken here: the HEALTHCHECK run is skipped"
fi

for name in gateway edge center; do
  rm -f "$stage/out/r1-$name-$tag.tar"
  bh push --quiet "r1-hybrid/r1-$name:$tag" "docker-archive:$stage/out/r1-$name-$tag.tar:r1-hybrid/r1-$name:$tag"
  log "saved $stage/out/r1-$name-$tag.tar ($(du -h "$stage/out/r1-$name-$tag.tar" | cut -f1))"
done
bh images | grep -E 'r1-hybrid' >&2 || true
