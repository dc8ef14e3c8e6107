r"""Writes a random-weight HF Qwen2 directory of a preset's shape, one tensor at a time.

  python experiments/lean_lora/make_random_hf.py --preset=r1_distill_1p5b --out=runs/r1_random

The tensors are those `hf_io.expected_hf_shapes` names (what `hf_io.load_hf` and transformers
read), fp32 by default: N(0, 0.02) weights, norms ~1, small biases. The host holds one
safetensors shard (<= --shard_gb) at a time, so a 7 GB model is written in ~2 GB of memory.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ceeh_jax import hf_io  # noqa: E402
from ceeh_jax.models.config import QwenConfig  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--preset', default='r1_distill_1p5b')
  ap.add_argument('--out', required=True)
  ap.add_argument('--dtype', default='float32', choices=('float32',))
  ap.add_argument('--shard_gb', type=float, default=2.0)
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args()
  cfg = QwenConfig.preset(args.preset)
  shapes = hf_io.expected_hf_shapes(cfg)
  rng = np.random.default_rng(args.seed)
  os.makedirs(args.out, exist_ok=True)
  limit = int(args.shard_gb * 2 ** 30)
  sizes = [(name, int(np.prod(shape)) * 4) for name, shape in shapes.items()]
  shards = hf_io._plan_shards(sizes, limit)  # pylint: disable=protected-access
  files = [f'model-{k + 1:05d}-of-{len(shards):05d}.safetensors' for k in range(len(shards))]
  weight_map = {}
  for k, names in enumerate(shards):
    tensors = {}
    for name in names:
      shape = shapes[name]
      if name.endswith('norm.weight'):
        x = 1.0 + 0.1 * rng.standard_normal(shape, np.float32)
      elif name.endswith('bias'):
        x = 0.1 * rng.standard_normal(shape, np.float32)
      else:
        x = 0.02 * rng.standard_normal(shape, np.float32)
      tensors[name] = x
      weight_map[name] = files[k]
    save_file(tensors, os.path.join(args.out, files[k]), metadata={'format': 'pt'})
    print(f'wrote {files[k]} ({sum(t.nbytes for t in tensors.values()) / 2 ** 30:.2f} GiB)',
          flush=True)
    del tensors
  with open(os.path.join(args.out, hf_io.INDEX_FILE), 'w') as f:
    json.dump({'metadata': {'total_size': sum(n for _, n in sizes)}, 'weight_map': weight_map},
              f, indent=1)
  with open(os.path.join(args.out, 'config.json'), 'w') as f:
    json.dump(cfg.to_hf(torch_dtype=args.dtype), f, indent=1)
  print(f'{cfg.num_params / 1e9:.3f}B params in {args.out}')


if __name__ == '__main__':
  main()
