#!/usr/bin/env bash
# Runs fuzz targets one after the other, one process each (the machine is
# shared), then minimises each corpus in place. Logs and crash artifacts go
# under $HOME/.cache/mailfleet/fuzz/; findings go in fuzz/regressions/ by hand
# (README.md).
#
#   fuzz/run.sh                       # every target, 600 s each
#   fuzz/run.sh 60 mime_policy        # one target, 60 s
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mailfleet/target-fuzz}"
seconds="${1:-600}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(policy_request lmtp_session mime_policy avro_decode)
out="$HOME/.cache/mailfleet/fuzz"
mkdir -p "$out"
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "$out/artifacts/$t"
  log="$out/$t-$(date +%Y%m%dT%H%M%S).log"
  echo "== $t: ${seconds}s, log $log"
  # -timeout: a unit slower than 10 s is a hang; -malloc_limit_mb: one
  # allocation over 256 MiB from an input of a few KiB is a finding.
  status=0
  cargo +nightly fuzz run -O "$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -artifact_prefix="$out/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if ((status)); then
    echo "$t: stopped with status $status; see $log and $out/artifacts/$t/"
    continue
  fi
  cargo +nightly fuzz cmin -O "$t" >>"$log" 2>&1
  echo "$t: corpus $(find "corpus/$t" -type f | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KiB"
done
