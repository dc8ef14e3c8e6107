"""GRPO loss pieces against hand-computed numbers."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ceeh_jax import losses as losses_lib


def test_group_advantages_mean_and_std():
  r = jnp.asarray([1.0, 0.0, 0.0, 1.0, 0.5, 0.5])
  np.testing.assert_allclose(losses_lib.group_advantages(r, 3), [2 / 3, -1 / 3, -1 / 3, 1 / 3, -1 / 6, -1 / 6], atol=1e-6)
  # group 1: mean 1/3, std(ddof=1) = sqrt(((2/3)^2 + 2*(1/3)^2)/2) = sqrt(1/3)
  a = losses_lib.group_advantages(r, 3, std_normalize=True)
  np.testing.assert_allclose(a[:3], np.array([2 / 3, -1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + 1e-6), rtol=1e-5)
  # all-equal group: zero advantage, no NaN
  np.testing.assert_allclose(losses_lib.group_advantages(jnp.ones(4), 4, std_normalize=True), 0)


def test_ppo_clip_both_sides_and_dual():
  old = jnp.zeros((1, 5))
  logp = jnp.log(jnp.asarray([[1.5, 0.5, 1.1, 5.0, 0.5]]))
  adv = jnp.asarray([[1.0, -1.0, 1.0, -1.0, 1.0]])
  loss, clip = losses_lib.ppo_clip_loss(logp, old, adv, jnp.ones((1, 5), bool), eps_low=0.2,
                                        eps_high=0.28, dual_clip=3.0)
  # t0: A=1, ρ=1.5 -> max(-1.5, -1.28) = -1.28 (high clip)
  # t1: A=-1, ρ=0.5 -> max(0.5, 0.8) = 0.8 (low clip)
  # t2: A=1, ρ=1.1 -> -1.1 (inside)
  # t3: A=-1, ρ=5 -> max(5, 1.28) = 5 -> dual clip min(5, 3) = 3
  # t4: A=1, ρ=0.5 -> max(-0.5, -0.8) = -0.5 (unclipped: ratio below 1-eps helps nothing)
  np.testing.assert_allclose(loss, [[-1.28, 0.8, -1.1, 3.0, -0.5]], rtol=1e-6)
  np.testing.assert_array_equal(clip['high'], [[1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(clip['low'], [[0, 1, 0, 0, 0]])
  np.testing.assert_array_equal(clip['dual'], [[0, 0, 0, 1, 0]])
  # Mask zeroes the loss.
  loss_m, _ = losses_lib.ppo_clip_loss(logp, old, adv, jnp.zeros((1, 5), bool))
  np.testing.assert_array_equal(loss_m, 0)


def test_aggregation_modes_hand_computed():
  x = jnp.asarray([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
  m = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
  cases = {'token-mean': (10.0, 4.0), 'seq-mean-token-mean': (2.0 + 4.0, 2.0),
           'seq-mean-token-sum': (10.0, 2.0), 'seq-mean-token-sum-norm': (10.0 / 8, 2.0)}
  for mode, (s, d) in cases.items():
    got_s, got_d = losses_lib.aggregate(x, m, mode, max_len=8 if mode.endswith('norm') else None)
    assert float(got_s) == pytest.approx(s) and float(got_d) == pytest.approx(d), mode
  with pytest.raises(ValueError, match='unknown aggregation'):
    losses_lib.aggregate(x, m, 'mean')


@pytest.mark.parametrize('mode', losses_lib.AGGREGATIONS)
def test_micro_batched_sums_equal_full_batch(mode):
  x = jax.random.normal(jax.random.key(0), (8, 6))
  m = jax.random.bernoulli(jax.random.key(1), 0.7, (8, 6))
  s, d = losses_lib.aggregate(x, m, mode, max_len=6)
  parts = [losses_lib.aggregate(x[i:i + 2], m[i:i + 2], mode, max_len=6) for i in range(0, 8, 2)]
  assert float(sum(p[0] for p in parts) / sum(p[1] for p in parts)) == pytest.approx(float(s / d), rel=1e-6)


def test_kl_estimators_and_clamps():
  logp, ref = jnp.asarray([-1.0]), jnp.asarray([-1.5])
  d = 0.5  # logp - ref
  assert float(losses_lib.kl_penalty(logp, ref, 'k1')[0]) == pytest.approx(d)
  assert float(losses_lib.kl_penalty(logp, ref, 'k2')[0]) == pytest.approx(0.5 * d * d)
  assert float(losses_lib.kl_penalty(logp, ref, 'k3')[0]) == pytest.approx(math.exp(-d) + d - 1)
  # Clamps: ref - logp = 30 -> exp clamped at 20 -> e^20 - 20 - 1 -> clamped to 10.
  assert float(losses_lib.kl_penalty(jnp.asarray([-40.0]), jnp.asarray([-10.0]), 'k3')[0]) == 10.0
  # ref - logp = -30 -> -20 inside: e^-20 + 20 - 1 = 19 -> clamped to 10.
  assert float(losses_lib.kl_penalty(jnp.asarray([-10.0]), jnp.asarray([-40.0]), 'k3')[0]) == 10.0
  assert float(losses_lib.kl_penalty(logp, logp, 'k3')[0]) == 0.0


def test_entropy_matches_numpy():
  logits = jnp.asarray([[2.0, 1.0, 0.0, -1.0]])
  for t in (1.0, 0.6):
    z = np.asarray(logits[0]) / t
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    want = -(p * np.log(p)).sum()
    assert float(losses_lib.entropy_from_logits(logits, t)[0]) == pytest.approx(want, rel=1e-5)


def test_chunked_logprobs_entropy_equal_unchunked_values_and_grads():
  r, t, d, v = 3, 11, 8, 29
  h = jax.random.normal(jax.random.key(0), (r, t, d))
  w = jax.random.normal(jax.random.key(1), (d, v))
  y = jax.random.randint(jax.random.key(2), (r, t), 0, v)

  def full(h, w):
    z = h @ w / 0.7
    logp = jnp.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1)[..., 0]
    return logp, losses_lib.entropy_from_logits(h @ w, 0.7)

  chunked = lambda h, w: losses_lib.token_logprobs_and_entropy(h, w, y, temperature=0.7, chunk_size=4)
  for a, b in zip(full(h, w), chunked(h, w)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  obj = lambda fn: lambda h, w: (fn(h, w)[0].sum() + 0.3 * fn(h, w)[1].sum())
  g_full = jax.grad(obj(full), argnums=(0, 1))(h, w)
  g_chunk = jax.grad(obj(chunked), argnums=(0, 1))(h, w)
  for a, b in zip(g_full, g_chunk):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_ceeh_me_weights_and_schedules():
  ent = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
  mask = jnp.asarray([[1, 1], [1, 0]], bool)
  s, d = losses_lib.ceeh_me_bonus(ent, mask, jnp.asarray([1.0, 0.0]), hard_weight=5.0)
  # hard row: 5*(1+2) = 15, easy row: 3 -> 18; weights 5+5+1 = 11
  assert float(s) == 18.0 and float(d) == 11.0
  assert float(losses_lib.cosine_decay(0.001, 0, 100)) == pytest.approx(0.001)
  assert float(losses_lib.cosine_decay(0.001, 50, 100)) == pytest.approx(0.0005)
  assert float(losses_lib.cosine_decay(0.001, 100, 100)) == pytest.approx(0.0, abs=1e-12)
  assert float(losses_lib.hard_weight_anneal(0, 10)) == pytest.approx(5.0)
  assert float(losses_lib.hard_weight_anneal(5, 10)) == pytest.approx(3.0)
  assert float(losses_lib.hard_weight_anneal(10, 10)) == pytest.approx(1.0)


def test_ceeh_ea_bonus_capped_hard_only_and_stop_gradient():
  adv = jnp.asarray([[1.0, 1.0], [-0.5, 1.0]])
  ent = jnp.asarray([[0.5, 3.0], [2.0, 2.0]])
  out = losses_lib.ceeh_ea_advantages(adv, ent, jnp.asarray([1.0, 0.0]), alpha=0.4)
  # hard row: min(0.2, 0.5) = 0.2 -> 1.2; min(1.2, 0.5) = 0.5 -> 1.5. easy row unchanged.
  np.testing.assert_allclose(out, [[1.2, 1.5], [-0.5, 1.0]], rtol=1e-6)
  g = jax.grad(lambda e: losses_lib.ceeh_ea_advantages(adv, e, jnp.ones(2)).sum())(ent)
  np.testing.assert_array_equal(g, 0.0)
