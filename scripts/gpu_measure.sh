#!/usr/bin/env bash
# The GPU queue (issue 15) in one go, most important first, so a run cut short still answers the first
# questions (the device tool lends a GPU for minutes, not hours):
#   1. calibration: airbench94 (the PyPI package, carried in as .device/airbench-*.tar.gz) on the same data;
#   2. the best preset, 25 epochs, alone on the GPU (timed);
#   3. the seed preset at each width in SEED_WIDTHS, 25 epochs, alone (timed), then scripts/seed_gap_check.py;
#   4. the benchmark (coursework's way vs the project's path) with a torch.profiler table of one seed step;
#   5. the ablation: best minus each ingredient, several runs at a time on the one GPU (accuracy; their times
#      are not comparable with 2 and 3 because they share the card).
# Logs and per-epoch metrics land in $OUT (default ./artifacts/gpu) as two archives, refreshed as the script
# goes, so a run cut short still brings back what finished. DRY=1 runs the whole script on a tiny
# configuration on the CPU, to check it before spending GPU time.
set -u
OUT=${OUT:-artifacts/gpu}
PY=${PY:-python3}
ARCHIVE=${ARCHIVE:-.device/cifar10-jpeg.tar.gz}
RUNS=${RUNS:-/tmp/gpu-runs}
LOGS=${LOGS:-/tmp/gpu-logs}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$LOGS" "$RUNS" data
PHASES=${PHASES:-"airbench best seed bench ablations"}
BENCH_PRESETS=${BENCH_PRESETS:-"seed quick best"}
SEED_WIDTHS=${SEED_WIDTHS:-"64 32"}  # the seed preset's own width first, then the one until issue 12 (docs/fidelity.md)
AIRBENCH=${AIRBENCH:-$(ls .device/airbench-*.tar.gz 2>/dev/null | head -1)}
EXTRA=()
BENCH=(--batches 30)
PARALLEL=8
if [ "${DRY:-0}" = 1 ]; then
  EXTRA=(--width 8 --k 2 --blocks 3 --epochs 2 --train-subset 1024 --device cpu --warmup-epochs 0.5 --attn-anneal-epochs 1)
  BENCH=(--batches 2 --width 8 --blocks 3 --device cpu)
  PARALLEL=2
fi
stamp() { date +%H:%M:%S; }
bundle() {  # what has finished so far, into $OUT (at most a few files come back from the device)
  tar -czf "$OUT/logs.tgz" -C "$LOGS" .
  (cd "$RUNS" && find . -name 'metrics.csv' -o -name 'meta.json' -o -name 'config.json' | tar -czf - -T -) > "$OUT/runs.tgz"
}

echo "$(stamp) start" | tee "$LOGS/timeline.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOGS/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$LOGS/gpu.txt"
# The lossless copy (184 MB) is larger than one call can carry (64 MiB): scripts/device_lossless_parts.sh cuts it
# into .device/lossless.part-* of 57 MiB, which earlier calls bring one by one (an ignored file stays on
# the machine between calls); when all are here, the data is lossless (the loader prefers it), else JPEG.
if ls .device/lossless.part-* >/dev/null 2>&1 && [ ! -d data/cifar-10-batches-bin ]; then
  cat .device/lossless.part-* | tar -xzf - -C data || echo "the lossless parts are incomplete: training on the JPEG copy"
fi
[ -d data/cifar-10-batches-bin ] || [ -d data/cifar10-jpeg ] || tar -xzf "$ARCHIVE" -C data
$PY -m cifar_app.data --data-dir data 2>&1 | tee "$LOGS/data.log"
echo "$(stamp) data ready" | tee -a "$LOGS/timeline.txt"

has() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }
train() {  # name, then options
  local name=$1; shift
  /usr/bin/time -f "wall %e s" $PY -m cifar_app.train --data-dir data --runs-dir "$RUNS" --name "$name" --quiet "$@" "${EXTRA[@]}" \
    > "$LOGS/$name.log" 2>&1
}
bundle
if has airbench; then
  if [ "${DRY:-0}" = 1 ] || [ -z "$AIRBENCH" ]; then  # airbench needs CUDA: the CPU checks the adapter only
    $PY scripts/airbench_calibration.py --data-dir data --prepare-only 2>&1 | tee "$LOGS/airbench.log"
  else
    mkdir -p /tmp/airbench-pkg && tar -xzf "$AIRBENCH" -C /tmp/airbench-pkg --strip-components=1
    PYTHONPATH=/tmp/airbench-pkg $PY scripts/airbench_calibration.py --data-dir data --runs 5 2>&1 | tee "$LOGS/airbench.log"
  fi
  echo "$(stamp) airbench done" | tee -a "$LOGS/timeline.txt"
  bundle
fi
if has best; then
  train best --preset best
  echo "$(stamp) best done" | tee -a "$LOGS/timeline.txt"
  tail -n 6 "$LOGS/best.log"
  bundle
fi
if has seed; then
  for width in $SEED_WIDTHS; do
    train "seed-w$width" --preset seed --width "$width"
    echo "$(stamp) seed width $width done" | tee -a "$LOGS/timeline.txt"
    tail -n 6 "$LOGS/seed-w$width.log"
    # where the seed loses its test accuracy: BatchNorm statistics, the train/test gap, attention saturation
    PYTHONPATH=. $PY scripts/seed_gap_check.py "$RUNS" "seed-w$width" --data-dir data 2>&1 | tee "$LOGS/seed-gap-w$width.log"
    bundle
  done
fi
if has bench; then
  # shellcheck disable=SC2086
  $PY -m cifar_app.bench --preset $BENCH_PRESETS --data-dir data --profile "${BENCH[@]}" 2>&1 | tee "$LOGS/bench.log"
  echo "$(stamp) bench done" | tee -a "$LOGS/timeline.txt"
  bundle
fi
has ablations || { $PY -m cifar_app.report "$RUNS" 2>&1 | tee "$LOGS/summary.txt"; bundle; exit 0; }
ablations=(
  "no-crop-flip --no-augment"
  "no-cutout --cutout 0"
  "no-label-smoothing --label-smoothing 0"
  "no-schedule --schedule none --warmup-epochs 0"
  "adam-not-sgd --optimizer adam --lr 1e-3"
  "no-attn-temperature --attn-temperature 1 --attn-anneal-epochs 0"
  "no-zero-init --no-zero-init-bn"
  "width-32 --width 32"
  "no-flip-tta --no-tta-flip"
)
for spec in "${ablations[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 5; bundle; done
  read -r name options <<< "$spec"
  # shellcheck disable=SC2086
  train "$name" --preset best $options &
done
while [ -n "$(jobs -rp)" ]; do sleep 10; bundle; done
wait
echo "$(stamp) ablations done" | tee -a "$LOGS/timeline.txt"

$PY -m cifar_app.report "$RUNS" 2>&1 | tee "$LOGS/summary.txt"
bundle
