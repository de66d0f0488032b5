#!/usr/bin/env bash
# The GPU measurements of issues 6 and 7 in one go (the device tool lends a GPU for minutes, not hours):
#   1. the benchmark (coursework's way vs the project's path) for the seed, quick and best presets;
#   2. the seed preset, 25 epochs, alone on the GPU (timed), then scripts/seed_gap_check.py on it;
#   3. the best preset, 25 epochs, alone (timed);
#   4. the ablation: best minus each ingredient, four runs at a time on the one GPU (accuracy; their times
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
PHASES=${PHASES:-"bench seed best ablations"}
BENCH_PRESETS=${BENCH_PRESETS:-"seed quick best"}
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
[ -d data/cifar10-jpeg ] || tar -xzf "$ARCHIVE" -C data
$PY -m cifar_app.data --data-dir data 2>&1 | tee "$LOGS/data.log"
echo "$(stamp) data ready" | tee -a "$LOGS/timeline.txt"

has() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }
if has bench; then
  # shellcheck disable=SC2086
  $PY -m cifar_app.bench --preset $BENCH_PRESETS --data-dir data "${BENCH[@]}" 2>&1 | tee "$LOGS/bench.log"
  # a CUDA graph that does not make the eager updates must not train anything: fall back to eager
  grep -q "CUDA graph vs eager.*MISMATCH" "$LOGS/bench.log" && EXTRA+=(--no-cuda-graphs)
  echo "$(stamp) bench done ${EXTRA[*]}" | tee -a "$LOGS/timeline.txt"
fi

train() {  # name, then options
  local name=$1; shift
  /usr/bin/time -f "wall %e s" $PY -m cifar_app.train --data-dir data --runs-dir "$RUNS" --name "$name" --quiet "$@" "${EXTRA[@]}" \
    > "$LOGS/$name.log" 2>&1
}
bundle
if has seed; then
  train seed --preset seed
  echo "$(stamp) seed done" | tee -a "$LOGS/timeline.txt"
  tail -n 6 "$LOGS/seed.log"
  # where the seed loses its test accuracy: BatchNorm statistics, the train/test gap, attention saturation
  PYTHONPATH=. $PY scripts/seed_gap_check.py "$RUNS" seed --data-dir data 2>&1 | tee "$LOGS/seed-gap.log"
  bundle
fi
if has best; then
  train best --preset best
  echo "$(stamp) best done" | tee -a "$LOGS/timeline.txt"
  tail -n 6 "$LOGS/best.log"
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
