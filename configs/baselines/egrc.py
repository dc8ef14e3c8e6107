r"""Entropy-Guided Reasoning Compression (arXiv 2511.14258): compression stage (length clip, positive-only A = beta*R, exp shaping) then exploration stage at a higher temperature.

The 1.5B recipe of configs/r1_1p5b.py with only the method swapped, so runs compare on equal
terms. Hyper-parameters are the paper defaults in ceeh_jax/methods (override with
--config.method_hparams.<name>=...).

  python -m ceeh_jax.main --config=configs/baselines/egrc.py \
      --workdir=runs/r1_1p5b_egrc --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from r1_1p5b import get_config as _base  # noqa: E402


def get_config(arg=None):
  c = _base(arg)
  c.method = 'egrc'
  return c
