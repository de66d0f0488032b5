#!/usr/bin/env bash
# Cut a lossless CIFAR-10 (the binary release) into parts the device tool can carry one call at a time
# (at most 64 MiB a call, the working tree included): .device/lossless.part-aa, -ab, -ac, ... (git-ignored). scripts/gpu_measure.sh joins
# them on the device machine. Usage: bash scripts/device_lossless_parts.sh DATA_ROOT_WITH_cifar-10-batches-bin
set -euo pipefail
root=${1:?the data root holding cifar-10-batches-bin/}
mkdir -p .device
rm -f .device/lossless.part-*
tar -czf - -C "$root" cifar-10-batches-bin | split -b 57M - .device/lossless.part-
ls -l .device/lossless.part-*
