r"""GRPO-lambda (arXiv 2505.18086): length reward only for high-correctness groups (exact rule unpublished; see docs/methods_table.md).

The 1.5B recipe of configs/r1_1p5b.py with only the method swapped, so runs compare on equal
terms. Hyper-parameters are the paper defaults in ceeh_jax/methods (override with
--config.method_hparams.<name>=...).

  python -m ceeh_jax.main --config=configs/baselines/grpo_lambda.py \
      --workdir=runs/r1_1p5b_grpo_lambda --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from r1_1p5b import get_config as _base  # noqa: E402


def get_config(arg=None):
  c = _base(arg)
  c.method = 'grpo_lambda'
  return c
