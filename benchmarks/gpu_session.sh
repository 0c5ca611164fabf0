#!/usr/bin/env bash
# Every GPU check of the project in one go, on a CUDA machine with PyTorch (see BENCHMARKS.md):
#   benchmarks/gpu_session.sh OUTDIR [part]     part: tests | 1.7b | spec | 8b | mem8b | bf16 | all (default)
# Writes the test log and one JSON record per benchmark under OUTDIR.
set -euo pipefail
out=${1:?usage: gpu_session.sh OUTDIR [tests|1.7b|spec|8b|mem8b|bf16|all]}; part=${2:-all}
mkdir -p "$out"; export PYTHONUNBUFFERED=1
fx=${NEAGARI_FIXTURES:-/tmp/neagari-fixtures}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
bench() { "$py" benchmarks/bench_search.py --device cuda "$@" 2>&1 | tee -a "$out/bench.log"; }
if [[ $part == tests || $part == all ]]; then
  "$py" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/test_gpu.log"
fi
if [[ $part == 1.7b || $part == all ]]; then
  bench --shape embedded --iterations 1000 --plain-iterations 200 --out "$out/search-embedded-cuda.json"
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --iterations 400 --plain-iterations 40 --out "$out/search-1.7b-cuda.json"
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --iterations 400 --plain-iterations 20 --speculate 8 --out "$out/search-1.7b-cuda-spec8.json"
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --iterations 400 --plain-iterations 20 --dtype bf16 --out "$out/search-1.7b-cuda-bf16.json"
fi
if [[ $part == 8b || $part == all ]]; then
  bench --shape bonsai-8b --fixture "$fx/8b.gguf" --layers 1,2,3,4,34 --iterations 200 --plain-iterations 10 --out "$out/search-8b-cuda.json"
  bench --shape bonsai-8b --fixture "$fx/8b.gguf" --iterations 100 --plain-iterations 5 --out "$out/search-8b-cuda-all.json"
fi
if [[ $part == spec || $part == all ]]; then  # speculation: one merged pass for K proposals
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --iterations 300 --plain-iterations 0 --trial-sizes 1,4,8,16,32,64 \
    --out "$out/search-1.7b-cuda-trials.json"
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --iterations 400 --plain-iterations 0 --speculate 8 \
    --out "$out/search-1.7b-cuda-spec8.json"
fi
if [[ $part == mem8b || $part == all ]]; then  # the paper's 8B search: ~75 probes of chat length, fp32 cache
  bench --shape bonsai-8b --fixture "$fx/8b.gguf" --layers 1,2,3,4,34 --probes 76 --repeat 6 --iterations 60 \
    --plain-iterations 0 --out "$out/search-8b-cuda-76probes.json"
fi
if [[ $part == bf16 || $part == all ]]; then  # tensor cores: bf16 weight cache, large speculative batches
  bench --shape bonsai-1.7b --fixture "$fx/1.7b.gguf" --dtype bf16 --iterations 300 --plain-iterations 0 \
    --trial-sizes 1,8,32 --out "$out/search-1.7b-cuda-bf16-trials.json"
  bench --shape bonsai-8b --fixture "$fx/8b.gguf" --dtype bf16 --layers 1,2,3,4,34 --probes 76 --repeat 6 \
    --iterations 40 --plain-iterations 0 --out "$out/search-8b-cuda-bf16-76probes.json"
fi
