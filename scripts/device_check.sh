#!/usr/bin/env bash
# The paper's recipe on one TPU or GPU in under 8 minutes: the backend, the device-only tests,
# the sampler at 0.5B and 1.5B (bf16) against the device's roofline, and one 1.5B-recipe train
# step scaled to one device with its peak memory next to the memory plan and its MFU.
# Writes <out>/device_check.json and <out>/device_check.md. See scripts/device_check.py.
#
#   scripts/device_check.sh                  # on the device (writes runs/device_check/)
#   scripts/device_check.sh --dry_run        # tiny shapes, any backend (CPU: the slow tier)
#   scripts/device_check.sh --out=runs/dc
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/device_check.py "$@"
