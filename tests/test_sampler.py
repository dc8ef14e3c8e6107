"""Sampler invariants: HF greedy parity, cached log-probs == full forward, exact sampling law."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from ceeh_jax import hf_io
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [100, 101, 102, 103, 104], [17]]
# Chi-square critical values at alpha = 1e-3 by degrees of freedom.
CHI2_CRIT_1E3 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 8: 26.12,
                 9: 27.88, 10: 29.59}


approx = test_util.assert_approx


@functools.cache
def _tiny():
  """(config, params): a random tiny Qwen2, built once per process on first use."""
  cfg = QwenConfig.tiny(decode_chunk=16)
  return cfg, qwen2_lib.init_params(cfg, jax.random.key(0))


def _full_forward_logps(cfg, params, prompts, rollout, temperature, g):
  toks, mask = sampler_lib.pad_prompts(prompts, 0)
  gen = np.asarray(rollout.tokens)
  full = np.concatenate([np.repeat(toks, g, 0), gen], 1)
  fmask = np.concatenate([np.repeat(mask, g, 0), np.ones_like(gen, bool)], 1)
  logits, _ = qwen2_lib.Qwen2(cfg).apply({'params': params}, jnp.asarray(full),
                                         qwen2_lib.positions_from_mask(jnp.asarray(fmask)),
                                         jnp.asarray(fmask))
  logp = jax.nn.log_softmax(logits / temperature, -1)[:, toks.shape[1] - 1:-1]
  return np.take_along_axis(np.asarray(logp), gen[..., None], -1)[..., 0]


class RolloutTest(parameterized.TestCase):

  def test_pad_prompts_left_pads_into_power_of_two_bucket(self):
    toks, mask = sampler_lib.pad_prompts([[1, 2, 3], [4]], pad_id=0)
    self.assertEqual(toks.shape, (2, 16))
    np.testing.assert_array_equal(toks[0, -3:], [1, 2, 3])
    np.testing.assert_array_equal(mask.sum(1), [3, 1])
    self.assertEqual(sampler_lib.bucket_length(17), 32)
    self.assertEqual(sampler_lib.bucket_length(32), 32)
    with self.assertRaisesRegex(ValueError, 'empty prompt'):
      sampler_lib.pad_prompts([[1], []], 0)

  def test_greedy_matches_hf_generate(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    cfg, params = _tiny()
    hf_io.save_hf(params, cfg, tmp_path)
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    toks, mask = sampler_lib.pad_prompts(PROMPTS, 0)
    sc = sampler_lib.SampleConfig(max_new_tokens=24, temperature=0.0, pad_id=0)
    ours = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=sc)
    with torch.no_grad():
      out = hf.generate(input_ids=torch.tensor(toks).long(),
                        attention_mask=torch.tensor(mask).long(), max_new_tokens=24,
                        do_sample=False, pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(ours.tokens), out[:, toks.shape[1]:].numpy())

  @parameterized.named_parameters(('temperature_0_7', 0.7, 1.0),
                                  ('temperature_1_3_top_p_0_9', 1.3, 0.9))
  def test_cached_logps_equal_full_forward(self, temperature, top_p):
    cfg, params = _tiny()
    g = 3
    sc = sampler_lib.SampleConfig(max_new_tokens=37, temperature=temperature, top_p=top_p,
                                  num_samples=g, pad_id=0)
    rollout = sampler_lib.generate(params, PROMPTS, jax.random.key(1), model_cfg=cfg, cfg=sc)
    ref = _full_forward_logps(cfg, params, PROMPTS, rollout, temperature, g)
    np.testing.assert_allclose(np.asarray(rollout.logps), ref, atol=2e-5)

  @parameterized.named_parameters(('untied', False), ('tied', True))
  def test_sampling_view_is_unrolled_and_samples_the_same(self, tied):
    """generate on the stacked params (converted inside) == on `sampling_params`' view (layers
    unrolled; tied: its own [D, V] head), with the scanned full forward's log-probs; the bf16
    view is bf16."""
    cfg, params = _tiny()
    if tied:
      cfg = cfg.replace(tie_embeddings=True)
      params = {k: v for k, v in params.items() if k != 'lm_head'}
    sc = sampler_lib.SampleConfig(max_new_tokens=20, temperature=0.9, num_samples=2, pad_id=0)
    view = sampler_lib.sampling_params(params, jnp.float32)
    self.assertFalse(qwen2_lib.is_scanned(view))
    self.assertIn('layer_2', view)
    if tied:
      np.testing.assert_array_equal(view['lm_head'], params['embedding'].T)
    a = sampler_lib.generate(params, PROMPTS, jax.random.key(3), model_cfg=cfg, cfg=sc)
    b = sampler_lib.generate(view, PROMPTS, jax.random.key(3), model_cfg=cfg, cfg=sc)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    np.testing.assert_array_equal(np.asarray(a.logps), np.asarray(b.logps))
    ref = _full_forward_logps(cfg, params, PROMPTS, a, 0.9, 2)
    np.testing.assert_allclose(np.asarray(a.logps), ref, atol=2e-5)
    low = sampler_lib.sampling_params(params)
    self.assertEqual({x.dtype for x in jax.tree.leaves(low)}, {jnp.dtype(jnp.bfloat16)})
    self.assertEqual(jax.tree.structure(low), jax.tree.structure(view))

  def test_scanned_decode_samples_what_the_unrolled_one_does(self):
    """unroll_layers=False keeps the layer scan (a stacked view, even from an unrolled one):
    the same tokens and log-probs as the default unrolled decode."""
    cfg, params = _tiny()
    kw = dict(max_new_tokens=20, temperature=0.9, num_samples=2, pad_id=0)
    scan_cfg = sampler_lib.SampleConfig(unroll_layers=False, **kw)
    stacked = sampler_lib.sampling_params(params, jnp.float32, unroll_layers=False)
    self.assertTrue(qwen2_lib.is_scanned(stacked))
    a = sampler_lib.generate(params, PROMPTS, jax.random.key(4), model_cfg=cfg,
                             cfg=sampler_lib.SampleConfig(**kw))
    for p in (stacked, sampler_lib.sampling_params(params, jnp.float32)):
      b = sampler_lib.generate(p, PROMPTS, jax.random.key(4), model_cfg=cfg, cfg=scan_cfg)
      np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
      np.testing.assert_allclose(np.asarray(a.logps), np.asarray(b.logps), atol=1e-5)

  def test_eos_kept_in_completion_and_mask(self):
    cfg, params = _tiny()
    greedy = sampler_lib.SampleConfig(max_new_tokens=12, temperature=0.0, pad_id=0)
    free = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=greedy)
    eos = int(free.tokens[0, 4])  # greedy row 0 emits this at step 4 (and maybe earlier)
    first = int(np.argmax(np.asarray(free.tokens[0]) == eos))
    sc = sampler_lib.SampleConfig(max_new_tokens=12, temperature=0.0, pad_id=0, eos_ids=(eos, 999))
    r = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=sc)
    self.assertEqual(int(r.lengths[0]), first + 1)
    self.assertEqual(int(r.tokens[0, first]), eos)
    self.assertTrue(bool(r.mask[0, first]))
    self.assertFalse(np.asarray(r.mask[0, first + 1:]).any())
    np.testing.assert_array_equal(np.asarray(r.tokens[0, first + 1:]), 0)
    self.assertTrue(bool(r.finished[0]))
    self.assertFalse(bool(r.truncated[0]))
    np.testing.assert_array_equal(np.asarray(r.mask).sum(1), np.asarray(r.lengths))
    # Rows that never emit EOS are truncated at max_new_tokens.
    for row in range(len(PROMPTS)):
      if not (np.asarray(free.tokens[row]) == eos).any():
        self.assertEqual(int(r.lengths[row]), 12)
        self.assertTrue(bool(r.truncated[row]))

  def test_keys_fresh_per_call_and_reproducible(self):
    cfg, params = _tiny()
    sc = sampler_lib.SampleConfig(max_new_tokens=16, temperature=1.0, top_p=1.0, num_samples=2)
    a = sampler_lib.generate(params, PROMPTS, jax.random.key(3), model_cfg=cfg, cfg=sc)
    b = sampler_lib.generate(params, PROMPTS, jax.random.key(3), model_cfg=cfg, cfg=sc)
    c = sampler_lib.generate(params, PROMPTS, jax.random.key(4), model_cfg=cfg, cfg=sc)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    self.assertTrue((np.asarray(a.tokens) != np.asarray(c.tokens)).any())
    # Each step draws fresh noise: the G samples of one prompt differ from each other.
    self.assertTrue((np.asarray(a.tokens[0]) != np.asarray(a.tokens[1])).any())


def _exact_truncated(logits, temperature, top_k, top_p):
  """Reference law by sorting: temperature, then top-k, then top-p (smallest nucleus)."""
  z = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-z)
  keep = np.zeros_like(z, bool)
  k = top_k or len(z)
  keep[order[:k]] = True
  p = np.where(keep, np.exp(z - z.max()), 0.0)
  p /= p.sum()
  cum = np.cumsum(p[order])
  n_keep = int(np.searchsorted(cum, top_p - 1e-12) + 1)
  nucleus = np.zeros_like(keep)
  nucleus[order[:n_keep]] = True
  p = np.where(nucleus, p, 0.0)
  return p / p.sum()


class SamplingLawTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('plain', 1.0, 0, 1.0), ('temperature_0_6_top_p_0_95', 0.6, 0, 0.95),
      ('temperature_1_5_top_k_5', 1.5, 5, 1.0), ('temperature_0_8_top_k_6_top_p_0_8', 0.8, 6, 0.8),
      ('temperature_2_top_p_0_7', 2.0, 0, 0.7))
  def test_sampling_law_chi_square(self, temperature, top_k, top_p):
    logits = jnp.asarray([2.0, 1.5, 1.2, 0.9, 0.3, 0.0, -0.4, -1.0, -2.0, 0.5, 1.1], jnp.float32)
    n = 20_000
    tokens, _ = sampler_lib.select(jnp.broadcast_to(logits, (n, logits.size)), jax.random.key(7),
                                   jnp.float32(temperature), top_k=top_k,
                                   top_p=None if top_p >= 1 else jnp.float32(top_p), greedy=False)
    expected = _exact_truncated(logits, temperature, top_k, top_p)
    counts = np.bincount(np.asarray(tokens), minlength=logits.size)
    self.assertEqual(counts[expected == 0].sum(), 0,
                     'sampled a token outside the truncated support')
    support = expected > 0
    e = expected[support] * n
    chi2 = float(((counts[support] - e) ** 2 / e).sum())
    dof = int(support.sum()) - 1
    self.assertGreaterEqual(dof, 1, (chi2, dof))
    self.assertLess(chi2, CHI2_CRIT_1E3[dof], (chi2, dof))

  def test_sampler_first_token_law_end_to_end(self):
    """10k samples of one prompt through prefill: frequencies match the model's own law."""
    cfg = QwenConfig.tiny(vocab_size=11, decode_chunk=16)
    params = qwen2_lib.init_params(cfg, jax.random.key(5))
    params = jax.tree.map(lambda x: x * 20 if x.ndim == 2 and x.shape[-1] == 11 else x, params)
    prompt = [[1, 2, 3]]
    toks, mask = sampler_lib.pad_prompts(prompt, 0)
    logits, _ = qwen2_lib.Qwen2(cfg).apply({'params': params}, jnp.asarray(toks),
                                           qwen2_lib.positions_from_mask(jnp.asarray(mask)),
                                           jnp.asarray(mask))
    temperature, top_k, top_p = 0.9, 8, 0.9
    expected = _exact_truncated(np.asarray(logits[0, -1]), temperature, top_k, top_p)
    n = 10_000
    sc = sampler_lib.SampleConfig(max_new_tokens=1, temperature=temperature, top_k=top_k,
                                  top_p=top_p, num_samples=n)
    r = sampler_lib.generate(params, prompt, jax.random.key(11), model_cfg=cfg, cfg=sc)
    counts = np.bincount(np.asarray(r.tokens[:, 0]), minlength=11)
    self.assertEqual(counts[expected == 0].sum(), 0)
    support = expected > 0
    e = expected[support] * n
    chi2 = float(((counts[support] - e) ** 2 / e).sum())
    dof = int(support.sum()) - 1
    self.assertGreaterEqual(dof, 1, (chi2, dof, expected))
    self.assertLess(chi2, CHI2_CRIT_1E3[dof], (chi2, dof, expected))

  @parameterized.named_parameters(('flat', 0.01), ('unit', 1.0), ('peaked', 8.0))
  def test_nucleus_threshold_equals_sort(self, scale):
    logits = jax.random.normal(jax.random.key(0), (6, 1000)) * scale
    probs = jax.nn.softmax(logits, -1)
    for top_p in (0.5, 0.9, 0.95):
      exact = np.asarray(sampler_lib._nucleus_threshold_exact(probs, jnp.float32(top_p)))
      for row in range(6):
        p = np.sort(np.asarray(probs[row]))[::-1]
        cum = np.cumsum(p)
        want = p[np.argmax(cum >= top_p)]
        approx(exact[row], want, rel=1e-6)

  def test_two_level_draw_law(self):
    """V = 6000 (> 4096): block by mass, then a token inside it. Zero weights (a whole block and
    scattered entries) are never drawn; the frequencies match the weights (chi-square, 10 bins)."""
    v, n = 6000, 40_000
    w = np.asarray(jax.random.uniform(jax.random.key(4), (v,))) ** 3
    w[::7] = 0.0
    w[1200:1400] = 0.0
    self.assertEqual(v % sampler_lib._draw_block(v), 0)
    self.assertLess(sampler_lib._draw_block(v), 1200)
    tokens = np.asarray(jax.jit(sampler_lib._draw)(jnp.broadcast_to(jnp.asarray(w, jnp.float32),
                                                                    (n, v)), jax.random.key(5)))
    counts = np.bincount(tokens, minlength=v)
    self.assertEqual(counts.size, v)
    self.assertEqual(counts[w == 0].sum(), 0)
    expected = w / w.sum()
    bins = np.minimum(np.cumsum(expected) * 10 // 1, 9).astype(int)
    obs = np.bincount(bins, weights=counts, minlength=10)
    exp = np.bincount(bins, weights=expected, minlength=10) * n
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    self.assertLess(chi2, CHI2_CRIT_1E3[9], (chi2, obs, exp))
    # Inside the blocks: each of the 50 heaviest tokens within 5 sigma of its expected count.
    top = np.argsort(-w)[:50]
    e = expected[top] * n
    self.assertTrue(np.all(np.abs(counts[top] - e) < 5 * np.sqrt(e)), np.c_[counts[top], e])

  @parameterized.named_parameters(
      # A > 256-token nucleus: proposals accepted ~0.9.
      ('flat', 1000, 40_000, 0.05, 0.9),
      # Accepted ~0.2: half the rows reach the exact threshold.
      ('flat_exact_fallback', 3000, 20_000, 0.05, 0.2),
      ('peaked', 1000, 40_000, 3.0, 0.9),   # a nucleus of a few tokens
  )
  def test_top_p_law_on_a_large_vocabulary(self, v, n, scale, top_p):
    """Top-p by rejection (V > 256): draws only inside the sorted nucleus, at its frequencies,
    for flat and peaked laws and when the exact fallback is reached."""
    logits = np.asarray(jax.random.normal(jax.random.key(3), (v,))) * scale
    expected = _exact_truncated(logits, 1.0, 0, top_p)
    self.assertEqual((expected > 0).sum() > 256, scale < 1)
    tokens, _ = sampler_lib.select(jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, v)),
                                   jax.random.key(9), jnp.float32(1.0), top_k=0,
                                   top_p=jnp.float32(top_p), greedy=False)
    counts = np.bincount(np.asarray(tokens), minlength=v)
    self.assertEqual(counts[expected == 0].sum(), 0, 'sampled outside the nucleus')
    # Chi-square over 10 bins of equal expected mass (by descending probability).
    order = np.argsort(-expected)
    bins = np.minimum((np.cumsum(expected[order]) - 1e-12) * 10 // expected.sum(), 9).astype(int)
    obs = np.bincount(bins, weights=counts[order], minlength=10)
    exp = np.bincount(bins, weights=expected[order], minlength=10) * n
    used = exp > 0
    chi2 = float(((obs[used] - exp[used]) ** 2 / exp[used]).sum())
    self.assertLess(chi2, CHI2_CRIT_1E3[int(used.sum()) - 1], (chi2, obs, exp))


class RolloutCompileAndShardingTest(parameterized.TestCase):

  def test_no_recompile_within_bucket(self):
    cfg, params = _tiny()
    sc = sampler_lib.SampleConfig(max_new_tokens=8, temperature=1.0, top_p=1.0, num_samples=2)
    counted_prefill = jax.jit(chex.assert_max_traces(sampler_lib._prefill, n=1),
                              static_argnames=sampler_lib._STATIC)
    counted_decode = jax.jit(chex.assert_max_traces(sampler_lib._decode, n=1),
                             static_argnames=sampler_lib._STATIC)
    for i, prompts in enumerate([[[1, 2, 3], [4, 5]], [[7] * 11, [8] * 16], [[9], [10] * 9]]):
      toks, mask = sampler_lib.pad_prompts(prompts, 0)
      state = counted_prefill(params, toks, mask, jax.random.key(i), jnp.float32(1.0),
                              jnp.float32(1.0), model_cfg=cfg, cfg=sc)
      counted_decode(params, state, jnp.float32(1.0), jnp.float32(1.0), model_cfg=cfg, cfg=sc)

  @parameterized.named_parameters(('mesh_2x2x2', (2, 2, 2)), ('mesh_1x1x8', (1, 1, 8)),
                                  ('mesh_4x1x2', (4, 1, 2)))
  def test_sharded_sampling_equals_single_device(self, mesh_shape):
    cfg, params = _tiny()
    mesh = sharding_lib.make_mesh(mesh_shape)
    sharded = sharding_lib.init_params(cfg, jax.random.key(0), mesh)
    sc = sampler_lib.SampleConfig(max_new_tokens=10, temperature=0.0, num_samples=2, pad_id=0)
    ref = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=sc)
    got = sampler_lib.generate(sharded, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=sc,
                               mesh=mesh)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(got.logps), np.asarray(ref.logps), atol=1e-5)

  def test_results_independent_of_cache_and_bucket_size(self):
    """Decode walks only the live cache prefix: a bigger bucket and a longer preallocated
    cache (several more chunks) give the same tokens and log-probs."""
    cfg, params = _tiny()
    short = sampler_lib.SampleConfig(max_new_tokens=8, temperature=0.0)
    long = sampler_lib.SampleConfig(max_new_tokens=200, temperature=0.0)
    a = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=short)
    b = sampler_lib.generate(params, PROMPTS, jax.random.key(0), model_cfg=cfg, cfg=long,
                             bucket=64)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens[:, :8]))
    np.testing.assert_allclose(np.asarray(a.logps), np.asarray(b.logps[:, :8]), atol=1e-5)

  def test_rollout_makes_no_implicit_transfer(self):
    """Prompts go in by one explicit device_put; prefill and the whole decode loop stay on device
    (no host sync per token): any implicit host<->device transfer inside `generate` raises."""
    cfg, params = _tiny()
    sc = sampler_lib.SampleConfig(max_new_tokens=12, temperature=0.7, top_p=0.9, num_samples=2,
                                  eos_ids=(3,))
    params = jax.device_put(params)
    key = jax.device_put(jax.random.key(0))
    jax.block_until_ready(sampler_lib.generate(params, PROMPTS, key, model_cfg=cfg, cfg=sc))
    with jax.transfer_guard('disallow'):
      rollout = sampler_lib.generate(params, PROMPTS, key, model_cfg=cfg, cfg=sc)
      jax.block_until_ready(rollout)
    self.assertEqual(np.asarray(rollout.tokens).shape, (2 * len(PROMPTS), 12))


if __name__ == '__main__':
  absltest.main()
