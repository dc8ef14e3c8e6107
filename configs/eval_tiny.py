r"""Evaluation on a laptop CPU: the shipped synthetic base policy on 64 generated test problems.

  python -m ceeh_jax.main --config=configs/eval_tiny.py --workdir=runs/eval_base
  # the trained default job (python -m ceeh_jax.main -> runs/tiny), against the base above:
  python -m ceeh_jax.main --config=configs/eval_tiny.py --workdir=runs/eval_ceeh \
      --config.eval.checkpoint_workdir=runs/tiny --config.eval.base_results=runs/eval_base
  python -m ceeh_jax.compare runs/eval_base runs/eval_ceeh --base=runs/eval_base

k = 4 samples per problem, 256 new tokens at most; hard/easy from the rows' `meta.hard`.
Writes results.json, samples.jsonl, results.md and acc_vs_len.png into the workdir.
"""
import importlib.util
import os

import ml_collections


def _tiny():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tiny.py')
  spec = importlib.util.spec_from_file_location('ceeh_configs_tiny', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def get_config(arg=None):
  c = _tiny().get_config(arg)   # the model/data/prompt settings the tiny training run uses
  c.mode = 'eval'
  c.eval = ml_collections.ConfigDict()
  c.eval.checkpoint_workdir = ''        # a training workdir; '' = evaluate model.hf_dir
  c.eval.benchmarks = ('synthetic:test:64',)
  c.eval.num_samples = 4                # int (0 = paper default: 16 aime/amc, 4 otherwise)
  c.eval.temperature = 0.6
  c.eval.top_p = 0.95
  c.eval.top_k = 0
  c.eval.max_new_tokens = 256           # 0 = config.sampling.max_new_tokens
  c.eval.batch_size = 64                # prompts per sampler call (x k rows)
  c.eval.limit = 0                      # first N problems of each benchmark (0 = all)
  c.eval.base_results = ''              # results.json of the base model's eval ('' = none)
  return c
