#!/usr/bin/env bash
# Run many embedded_sweep.py variants at once (one process each) on one device:
#   benchmarks/embedded_sweep.sh VARIANTS_FILE OUTDIR [device]
# VARIANTS_FILE: one variant a line, "NAME [--variant fp] [--set KEY=VALUE ...]"; '#' starts a comment.
# OUTDIR/all.jsonl collects the finished records every 10 s (so a run cut short keeps them).
set -uo pipefail
variants=${1:?usage: embedded_sweep.sh VARIANTS_FILE OUTDIR [device]}; out=${2:?}; device=${3:-cuda}
work=$(mktemp -d); mkdir -p "$out"; export PYTHONUNBUFFERED=1
pids=()
while read -r name rest; do
  [[ -z $name || $name == \#* ]] && continue
  # shellcheck disable=SC2086
  python3 benchmarks/embedded_sweep.py --name "$name" --device "$device" --out "$work" $rest > "$work/$name.log" 2>&1 &
  pids+=($!)
done < "$variants"
while kill -0 "${pids[@]}" 2>/dev/null; do
  sleep 10; cat "$work"/*.json > "$out/all.jsonl" 2>/dev/null
  tail -qn1 "$work"/*.log > "$out/progress.txt" 2>/dev/null
done
wait; cat "$work"/*.json > "$out/all.jsonl" 2>/dev/null
for f in "$work"/*.log; do grep -q '"name"' "$f" || { echo "== $f"; tail -5 "$f"; }; done
