"""Shared test setup and builders. Every test file imports this module FIRST (before jax):

  import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

so `python tests/test_x.py` runs under the same conditions as pytest (conftest.py imports it
too): 8 fake CPU devices (the sharding tests need them), JAX on CPU, the repository on
sys.path, and a persistent XLA compilation cache. It also holds what several test files build:
the tiny trainer config, random Qwen2 params, a tiny transformers Qwen2 checkpoint, and the
path of the real R1-Distill tokenizer.

Slow tests (minute-long) carry `@test_util.slow` (see `slow`).
"""
import inspect
import os
import pathlib
import shutil
import sys
import tempfile
import unittest

# Must be set before jax initialises its backends; sharding tests need 8 devices.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = REPO / 'tests'
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402  (after XLA_FLAGS / JAX_PLATFORMS)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

try:
  import pytest  # only for the `slow` marker; a direct run works without pytest
except ImportError:  # pragma: no cover
  pytest = None
# pylint: enable=g-import-not-at-top,wrong-import-position

# Trainer tests rebuild the same jitted programs many times: a persistent compilation cache
# turns the repeats into disk hits (CEEH_JAX_TEST_CACHE=<empty dir> measures a cold run).
XLA_CACHE = os.environ.get('CEEH_JAX_TEST_CACHE',
                           os.path.join(tempfile.gettempdir(), 'ceeh_jax_test_xla_cache'))
jax.config.update('jax_compilation_cache_dir', XLA_CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

from ceeh_jax import tokenizer as tokenizer_lib  # noqa: E402  pylint: disable=g-import-not-at-top

# The real DeepSeek-R1-Distill-Qwen tokenizer, vendored in the package (tokenizer files only):
# no test reads outside the repository. Tests that need it call `r1_tokenizer()`.
R1_TOKENIZER_DIR = pathlib.Path(tokenizer_lib.R1_TOKENIZER_DIR)

# A direct run (`python tests/test_x.py`) runs slow tests too unless this is set (to 1).
SKIP_SLOW = os.environ.get('CEEH_SKIP_SLOW', '') not in ('', '0')


def slow(test):
  """Marks a minute-long test class or test method as slow.

  Under pytest it carries the `slow` marker: `python -m pytest -q -m "not slow"` (the default
  tier, .ci/run) leaves it out and `-m slow` runs only such tests. A direct
  `python tests/test_x.py` runs it, unless the environment has CEEH_SKIP_SLOW=1. Under
  `@parameterized.named_parameters` put it below (nearest the def), so every case inherits it.
  """
  if not (isinstance(test, type) or inspect.isfunction(test)):
    raise TypeError('test_util.slow decorates a test class or a test method; under '
                    '@parameterized.named_parameters put it below, nearest the def')
  test = unittest.skipIf(SKIP_SLOW, 'slow test and CEEH_SKIP_SLOW is set')(test)
  return pytest.mark.slow(test) if pytest is not None else test


def r1_tokenizer():
  """The real R1 tokenizer (vendored: a missing copy is a failure, never a skip)."""
  return tokenizer_lib.load_tokenizer(str(R1_TOKENIZER_DIR))


def class_tempdir(cls):
  """A temporary directory for a whole test class (from setUpClass), removed after it."""
  path = tempfile.mkdtemp(prefix=f'{cls.__name__}_')
  cls.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
  return pathlib.Path(path)


def override(config, **overrides):
  """Sets dotted keys of a ConfigDict in place: override(c, **{'sampling.top_p': 0.9})."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def small_config(tmp_dir, method='ceeh_me', **overrides):
  """A random tiny Qwen2 on synthetic problems; a step takes well under a second."""
  # pylint: disable=g-import-not-at-top
  from ceeh_jax import default_config
  from ceeh_jax.synthetic import tokenizer as syn_tok
  # pylint: enable=g-import-not-at-top
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
  return override(c, **overrides)


def random_params(config, seed=0):
  """Random params of `config` from numpy (no init compile): norms ~1, non-zero biases and B."""
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def one(path, x):
    scale, shift = {'scale': (0.3, 1.0), 'bias': (0.3, 0.0)}.get(path[-1].key, (0.1, 0.0))
    return jnp.asarray(shift + scale * rng.standard_normal(x.shape), x.dtype)

  return jax.tree_util.tree_map_with_path(one, sharding_lib.abstract_params(config))


def tiny_hf_model(*, tied=False):
  """A random transformers Qwen2ForCausalLM shaped like QwenConfig.tiny() (V 257, D 48, F 67,
  N 6, K 2, L 3), in eval mode, with non-trivial biases and norms (HF inits them to 0 and 1)."""
  # pylint: disable=g-import-not-at-top
  import torch
  import transformers
  # pylint: enable=g-import-not-at-top
  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(vocab_size=257, hidden_size=48, intermediate_size=67,
                                 num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                                 rope_theta=10000.0, tie_word_embeddings=tied,
                                 max_position_embeddings=512)
  model = transformers.Qwen2ForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith('bias') or 'norm' in name:
        p.copy_(torch.randn_like(p) * 0.3 + (1.0 if 'norm' in name else 0.0))
  return model


def tiny_hf_dir(path, *, tied=False, dtype='float32', shard_size=None):
  """`tiny_hf_model(tied=tied)` in `dtype`, written by save_pretrained (sharded at
  `shard_size`, e.g. '30KB'); returns `path` as a pathlib.Path."""
  import torch  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  model = tiny_hf_model(tied=tied).to(getattr(torch, dtype))
  kw = {} if shard_size is None else {'max_shard_size': shard_size}
  model.save_pretrained(path, **kw)
  return path


# pylint: disable-next=redefined-builtin  (`rel` and `abs` as pytest.approx names them)
def random_batch(rows, prompt_len, completion_len, seed=0, vocab=257):
  """A random steps.Batch: left-padded prompts (at least 3 real tokens), right-padded
  completions (at least 2), old log-probs, advantages and hard flags; ids in [1, vocab)."""
  from ceeh_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  prompt_mask = (np.arange(prompt_len)[None]
                 >= rng.integers(0, prompt_len - 2, rows)[:, None])          # left padding
  mask = np.arange(completion_len)[None] < rng.integers(2, completion_len + 1, rows)[:, None]
  return steps_lib.Batch(
      prompt=jnp.asarray(rng.integers(1, vocab, (rows, prompt_len)) * prompt_mask, jnp.int32),
      prompt_mask=jnp.asarray(prompt_mask),
      completion=jnp.asarray(rng.integers(1, vocab, (rows, completion_len)) * mask, jnp.int32),
      mask=jnp.asarray(mask),
      old_logp=jnp.asarray(-rng.uniform(3, 7, (rows, completion_len)) * mask, jnp.float32),
      advantages=jnp.asarray(rng.normal(size=rows), jnp.float32),
      hard=jnp.asarray(rng.integers(0, 2, rows), jnp.float32))


def assert_approx(actual, expected, *, rel=None, abs=None, nan_ok=False, msg=''):
  """What `actual == pytest.approx(expected, rel=, abs=)` checks, elementwise: equal, or
  |actual - expected| <= max(rel * |expected|, abs); rel is 1e-6 unless only abs is given,
  abs is 1e-12 by default. Infinities must match exactly; NaN equals NaN only if nan_ok."""
  a = np.asarray(actual, np.float64)
  e = np.asarray(expected, np.float64)
  tol_abs = 1e-12 if abs is None else abs
  tol_rel = (0.0 if abs is not None else 1e-6) if rel is None else rel
  tol = np.maximum(tol_rel * np.abs(e), tol_abs)
  with np.errstate(invalid='ignore'):
    ok = (a == e) | (np.isfinite(e) & (np.abs(a - e) <= tol))
  if nan_ok:
    ok |= np.isnan(a) & np.isnan(e)
  if not np.all(ok):
    raise AssertionError(f'{msg + ": " if msg else ""}{actual!r} != {expected!r} '
                         f'(rel {tol_rel:g}, abs {tol_abs:g})')
