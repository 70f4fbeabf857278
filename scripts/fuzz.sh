#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes under libFuzzer (cargo fuzz, the nightly toolchain, ASan):
# the targets of testkit/fuzz-targets — request bodies in each API's shape, SSE framing, Kafka envelopes,
# the gateway's config, JWT headers. Each starts from its seed corpus (fuzz/corpus/<target>, copied to
# the cache so the repository's corpus only changes on purpose) and runs SECONDS (default 20).
#   scripts/fuzz.sh            every target, 20 s each
#   scripts/fuzz.sh 300        five minutes each
#   scripts/fuzz.sh 60 sse_decoder
# A crash leaves its input under fuzz/artifacts/<target>/ and fails the script; add it to the corpus as a
# regression seed once fixed (the corpus runs on stable in the regular tests: testkit/fuzz-targets).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${R1_CACHE_DIR:-$HOME/.cache/r1-hybrid}"
seconds="${1:-20}"
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
export PATH="$cache/cargo-fuzz/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into $cache/cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root "$cache/cargo-fuzz"
fi

cd "$root/fuzz"
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "==> building the fuzz targets (nightly, ASan)"
cargo +nightly fuzz build --release
for target in "${targets[@]}"; do
  work="$cache/fuzz-corpus/$target"
  mkdir -p "$work"
  cp -n "$root/fuzz/corpus/$target/"* "$work/" 2>/dev/null || true
  echo "==> fuzz $target (${seconds}s)"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run --release "$target" "$work" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed: the crashing input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')"
  echo "    $runs runs, coverage $cov edges, corpus $(ls "$work" | wc -l) inputs"
  rm -f "$log"
done
