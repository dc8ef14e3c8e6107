"""Shared setup for trainer tests: a very small config on the synthetic task."""
import os

from ceeh_jax import default_config
from ceeh_jax.synthetic import tokenizer as syn_tok


def small_config(tmp_dir, method='ceeh_me', **overrides):
  """A random tiny Qwen2 on synthetic problems; a step takes well under a second."""
  c = default_config.get_config()
  c.method = method
  c.model.preset = 'tiny'
  c.model.hf_dir = ''
  c.model.sample_dtype = 'float32'
  c.model.decode_chunk = 16
  c.tokenizer_dir = syn_tok.ensure_tokenizer(os.path.join(tmp_dir, 'tok'))
  c.data.train = 'synthetic:train:24'
  c.data.eval = 'synthetic:eval:8'
  c.data.eval_size = 8
  c.data.instruction = ''
  c.data.max_prompt_tokens = 96
  c.sampling.num_samples = 4
  c.sampling.temperature = 1.0
  c.sampling.top_p = 1.0
  c.sampling.max_new_tokens = 12
  c.batch_size = 4
  c.minibatch_size = 8
  c.micro_batch_size = 4
  c.logp_chunk = 8
  c.optim.lr = 1e-3
  c.grpo.kl_coef = 0.001
  c.ceeh.entropy_coef = 0.01
  c.mesh.shape = (1, 1, 1)
  c.total_steps = 3
  c.eval_every = 2
  c.checkpoint_every = 2
  c.grading.num_workers = 0
  c.tensorboard = False
  c.progress = False
  for k, v in overrides.items():
    node = c
    parts = k.split('.')
    for p in parts[:-1]:
      node = node[p]
    node[parts[-1]] = v
  return c
