#!/usr/bin/env bash
# Peak host RSS of the r1_1p5b recipe (LoRA r32) at the real 1.5B shape on CPU: first start
# (2 steps) and resume (1 more step), each under /usr/bin/time -v. See README.md.
#   experiments/lean_lora/rss_1p5b.sh runs/r1_random runs/r1_rss_work [--config.x=y ...]
# Writes $WORK.first.time and $WORK.resume.time; prints their peak RSS and wall time.
set -euo pipefail
cd "$(dirname "$0")/../.."
HF=${1:-runs/r1_random}
WORK=${2:-runs/r1_rss_work}
shift 2 || true
TOK=${TOKENIZER_DIR:-ceeh_jax/r1_tokenizer}  # the vendored R1 tokenizer
run() {
  /usr/bin/time -v python -m ceeh_jax.main --config=configs/r1_1p5b.py --workdir="$WORK" \
    --config.model.hf_dir="$HF" --config.tokenizer_dir="$TOK" \
    --config.batch_size=2 --config.sampling.num_samples=2 --config.sampling.max_new_tokens=16 \
    --config.minibatch_size=4 --config.micro_batch_size=4 --config.mesh.shape='(1,1,1)' \
    --config.sampling.rows_per_chunk=0 --config.data.eval_size=0 --config.checkpoint_every=1 \
    --config.grading.num_workers=0 --config.progress=False --config.total_steps="$1" "${EXTRA[@]}"
}
EXTRA=("$@")
run 2 2> "$WORK.first.time" || { tail -30 "$WORK.first.time"; exit 1; }
run 3 2> "$WORK.resume.time" || { tail -30 "$WORK.resume.time"; exit 1; }
grep -H -E 'Maximum resident|Elapsed' "$WORK.first.time" "$WORK.resume.time"
