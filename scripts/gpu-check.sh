#!/usr/bin/env bash
# GPU check for align-fl's CubeCL kernels on an NVIDIA machine without Rust or network access.
#
#   scripts/gpu-check.sh build          On an x86-64 Linux machine with Rust: builds the CUDA-enabled
#                                       binaries into target/gpu-check/ (carry that folder with the tree).
#   scripts/gpu-check.sh [STAGE...]     On the GPU machine, from the repository root: runs the stages
#                                       (all four when none is named), then prints one table of timings.
#
# Stages: tests (every kernel against the CPU backend), train (training, DP-SGD, decode and GEMM
# benches on CUDA and on this machine's CPU), inception (the FID network's forward pass; needs the
# weights: $ALIGN_FL_MODELS or ./models), runs (configs/quick.toml, and the paper protocol when the
# full MNIST and Fashion-MNIST are in $ALIGN_FL_DATA or ./data). A failing kernel test is reported
# and the other stages still run; the script then exits 1.
#
# The CUDA runtime compiles its kernels when they first run: it needs the NVIDIA driver library
# (libcuda), NVRTC, and the CUDA headers ($CUDA_PATH, else /usr/local/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check

if [ "${1:-}" = build ]; then
  mkdir -p "$out"
  # cudarc binds the CUDA driver API of one release, read from nvcc here or from this variable;
  # without nvcc it would bind the newest it knows, which an older driver lacks. A driver runs
  # code bound to its own release or an older one, so the default is CUDA 13.0 (driver 580 on).
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
  cargo build --release -p align-fl --features cuda
  cp target/release/align-fl "$out/align-fl"
  exe() { sed -n "s/.*Executable $1 (\(.*\))/\1/p" | head -n 1; }
  tests=$(cargo test --release -p tensor-kernels --features cuda --no-run 2>&1 | exe 'unittests src\/lib.rs')
  training=$(cargo bench -p align-fl-benches --features cuda --bench training --no-run 2>&1 | exe 'benches\/training.rs')
  inception=$(cargo bench -p align-fl-benches --features cuda --bench inception --no-run 2>&1 | exe 'benches\/inception.rs')
  for f in "$tests" "$training" "$inception"; do
    [ -n "$f" ] && [ -x "$f" ] || { echo "gpu-check build: a test or bench executable was not found" >&2; exit 1; }
  done
  cp "$tests" "$out/kernel-tests"
  cp "$training" "$out/bench-training"
  cp "$inception" "$out/bench-inception"
  strip "$out"/*
  echo "built into $out/: carry it with the working tree and run scripts/gpu-check.sh there"
  exit 0
fi

stages="${*:-tests train inception runs}"
for stage in $stages; do
  case "$stage" in tests | train | inception | runs) ;; *) echo "gpu-check: unknown stage '$stage' (tests, train, inception, runs)" >&2; exit 2 ;; esac
done
wants() { [[ " $stages " == *" $1 "* ]]; }

for f in align-fl kernel-tests bench-training bench-inception; do
  [ -x "$out/$f" ] || { echo "gpu-check: $out/$f is missing; run 'scripts/gpu-check.sh build' on a machine with Rust first" >&2; exit 1; }
done

# The driver library and the headers, with what to do when either is missing.
if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; } && ! ls /usr/lib/x86_64-linux-gnu/libcuda.so* /usr/lib64/libcuda.so* /usr/local/nvidia/lib64/libcuda.so* >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA driver library (libcuda.so): this machine has no usable NVIDIA GPU driver" >&2
  exit 1
fi
cuda_root="${CUDA_PATH:-/usr/local/cuda}"
if [ ! -f "$cuda_root/include/cuda.h" ]; then
  echo "gpu-check: CUDA headers not found at $cuda_root/include; set CUDA_PATH to the CUDA toolkit" >&2
  exit 1
fi
export CUDA_PATH="$cuda_root"
# NVRTC is loaded by name at run time; the toolkit's own copy when the loader does not know one.
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cuda_root/lib64"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) threads"

# Raw logs of this invocation, beside the binaries.
logs="$out/logs"
mkdir -p "$logs"
log="$logs/kernel-tests.log" bench="$logs/bench.log"
: >"$bench"

failed=""
if wants tests; then
  echo "== kernels against the CPU backend (CUDA)"
  "$out/kernel-tests" cube::tests::cuda --test-threads=1 --nocapture 2>&1 | tee "$log" || true
  if grep -q 'skipped' "$log"; then
    failed="the CUDA kernel tests were skipped (see above)"
  elif ! grep -q 'test result: ok' "$log"; then
    failed="kernel tests failed (see above)"
  fi
  [ -z "$failed" ] || echo "gpu-check: $failed; the timings below still run" >&2
fi

# A bench binary's output goes to the raw log; only skips and failures are shown as it runs.
# Criterion's times are kept short: this is one table of a machine, not a regression series.
run_bench() { "$out/$1" --bench --warm-up-time 1 "${@:2}" 2>&1 | tee -a "$bench" | grep -E 'skipped|panicked|rror' || true; }
if wants train; then
  echo "== training, DP-SGD, decode and GEMM benches"
  run_bench bench-training --measurement-time 3 '/cuda'
  run_bench bench-training --measurement-time 3 '/cpu'
fi
if wants inception; then
  echo "== Inception v3 forward pass"
  run_bench bench-inception
fi

quick="" paper=""
if wants runs; then
  echo "== whole runs"
  start=$(date +%s%N)
  "$out/align-fl" run --config configs/quick.toml --backend cuda --no-fid --out "$(mktemp -d)" >/dev/null
  quick=$(( ($(date +%s%N) - start) / 1000000 ))
  # The paper protocol (ALIGN-FL alone, no FID) when the full data is here ($ALIGN_FL_DATA or ./data).
  data_dir="${ALIGN_FL_DATA:-data}"
  if ls "$data_dir"/mnist/train-images-idx3-ubyte* "$data_dir"/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
    start=$(date +%s%N)
    "$out/align-fl" run --backend cuda --no-fid --compare none --data-dir "$data_dir" --out "$(mktemp -d)" >/dev/null
    paper=$(( ($(date +%s%N) - start) / 1000000 ))
  else
    echo "paper protocol skipped: no full MNIST and Fashion-MNIST in $data_dir (set ALIGN_FL_DATA)"
  fi
fi

# Criterion prints "name  time:   [low median high]" (the name may sit on the line before).
echo "== table"
awk -v quick="$quick" -v paper="$paper" '
  function seconds(v, u) { return u == "ns" ? v * 1e-9 : u == "µs" || u == "us" ? v * 1e-6 : u == "ms" ? v * 1e-3 : v }
  /time:/ {
    line = $0; name = $1
    if (name == "time:") { name = prev }
    sub(/.*\[/, "", line); split(line, f, " ")
    s = seconds(f[3], f[4])
    extra = ""
    if (name ~ /^gemm_4096/) extra = sprintf("%.2f TFLOP/s", 2 * 4096^3 / s / 1e12)
    else if (name ~ /^gemm_1024/) extra = sprintf("%.2f TFLOP/s", 2 * 1024^3 / s / 1e12)
    else if (name ~ /^inception_forward/) extra = sprintf("%.0f images/s", 1 / s)
    printf "| %-34s | %12.4f ms | %s\n", name, s * 1e3, extra
  }
  { prev = $1 }
  END {
    if (quick != "") printf "| %-34s | %12.1f s  | configs/quick.toml, --backend cuda, no FID\n", "quick run", quick / 1000
    if (paper != "") printf "| %-34s | %12.1f s  | paper protocol, ALIGN-FL only, --backend cuda, no FID\n", "paper run", paper / 1000
  }
' "$bench"
if [ -n "$failed" ]; then echo "gpu-check: $failed" >&2; exit 1; fi
