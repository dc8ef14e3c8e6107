"""GRPO loss pieces against hand-computed numbers, and their invariants."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from ceeh_jax import losses as losses_lib

approx = test_util.assert_approx
# One named case per aggregation mode: 'token-mean' -> test_..._token_mean.
AGGREGATIONS = [(mode.replace('-', '_'), mode) for mode in losses_lib.AGGREGATIONS]


class GroupAdvantagesTest(absltest.TestCase):

  def test_group_advantages_mean_and_std(self):
    r = jnp.asarray([1.0, 0.0, 0.0, 1.0, 0.5, 0.5])
    # group 0: mean 1/3 -> 2/3, -1/3, -1/3; group 1: mean 2/3 -> 1/3, -1/6, -1/6.
    np.testing.assert_allclose(losses_lib.group_advantages(r, 3),
                               [2 / 3, -1 / 3, -1 / 3, 1 / 3, -1 / 6, -1 / 6], atol=1e-6)
    # group 0: std(ddof=1) = sqrt(((2/3)^2 + 2*(1/3)^2)/2) = sqrt(1/3).
    a = losses_lib.group_advantages(r, 3, std_normalize=True)
    np.testing.assert_allclose(a[:3], np.array([2 / 3, -1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + 1e-6),
                               rtol=1e-5)
    # Groups are rows g*G .. g*G+G-1: each sums to zero.
    np.testing.assert_allclose(np.asarray(a).reshape(2, 3).sum(1), 0, atol=1e-6)
    # All-equal group: zero advantage, no NaN.
    np.testing.assert_allclose(losses_lib.group_advantages(jnp.ones(4), 4, std_normalize=True), 0)
    with self.assertRaisesRegex(ValueError, 'whole groups'):
      losses_lib.group_advantages(r, 4)


def _ppo(logp_ratio, adv, **kw):
  logp = jnp.log(jnp.asarray([logp_ratio], jnp.float32))
  return losses_lib.ppo_clip_loss(logp, jnp.zeros_like(logp), jnp.asarray([adv], jnp.float32),
                                  jnp.ones_like(logp, bool), **kw)


class PpoClipTest(absltest.TestCase):

  def test_ppo_clip_both_sides_and_dual(self):
    loss, clip = _ppo([1.5, 0.5, 1.1, 5.0, 0.5, 0.7], [1.0, -1.0, 1.0, -1.0, 1.0, 1.0])
    # t0: A=1,  ρ=1.5 -> max(-1.5, -1.28) = -1.28             (high clip)
    # t1: A=-1, ρ=0.5 -> max(0.5, 0.8) = 0.8                  (low clip)
    # t2: A=1,  ρ=1.1 -> -1.1                                 (inside)
    # t3: A=-1, ρ=5   -> max(5, 1.28) = 5 -> min(5, 3) = 3    (dual clip, c = 3)
    # t4: A=1,  ρ=0.5 -> max(-0.5, -0.8) = -0.5               (unclipped: pessimistic side)
    # t5: A=1,  ρ=0.7 -> -0.7                                 (inside on the low side)
    np.testing.assert_allclose(loss, [[-1.28, 0.8, -1.1, 3.0, -0.5, -0.7]], rtol=1e-6)
    np.testing.assert_array_equal(clip['high'], [[1, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(clip['low'], [[0, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(clip['dual'], [[0, 0, 0, 1, 0, 0]])
    # dual_clip=None: t3 keeps 5; a cap not above 1 is refused.
    loss, clip = _ppo([5.0], [-1.0], dual_clip=None)
    np.testing.assert_allclose(loss, [[5.0]], rtol=1e-6)
    self.assertEqual(float(clip['dual'].sum()), 0)
    with self.assertRaisesRegex(ValueError, 'dual_clip'):
      _ppo([1.0], [1.0], dual_clip=1.0)
    # Ratio exponent clipped at ±20: ρ = e^20, finite; A=-1 -> dual cap 3.
    loss, _ = losses_lib.ppo_clip_loss(jnp.asarray([[50.0]]), jnp.zeros((1, 1)),
                                       jnp.asarray([-1.0]), jnp.ones((1, 1), bool))
    self.assertEqual(float(loss[0, 0]), 3.0)

  def test_ppo_clip_gradients_and_mask(self):
    ratios, adv = [1.5, 0.5, 1.1, 5.0, 0.5], [1.0, -1.0, 1.0, -1.0, 1.0]
    logp = jnp.log(jnp.asarray([ratios]))
    mask = jnp.ones((1, 5), bool)
    g = jax.grad(lambda lp: losses_lib.ppo_clip_loss(lp, jnp.zeros_like(lp), jnp.asarray([adv]),
                                                     mask)[0].sum())(logp)
    # d(-Aρ)/dlogp = -Aρ where the unclipped branch wins; clipped and dual-clipped tokens: 0.
    np.testing.assert_allclose(g, [[0.0, 0.0, -1.1, 0.0, -0.5]], rtol=1e-6)
    # Masked tokens give 0 even with non-finite inputs there; [R] advantages broadcast per row.
    lp = jnp.asarray([[0.1, jnp.nan], [0.2, 0.3]])
    loss, clip = losses_lib.ppo_clip_loss(lp, jnp.zeros((2, 2)), jnp.asarray([1.0, -2.0]),
                                          jnp.asarray([[1, 0], [1, 1]], bool))
    # Row 1 has A = -2: loss = 2·max(ρ, clip(ρ)) = 2ρ (e^0.3 ≈ 1.35 > 1.28 is not clipped for
    # A < 0: the pessimistic branch keeps the larger loss).
    np.testing.assert_allclose(
        loss, [[-math.exp(0.1), 0.0], [2 * math.exp(0.2), 2 * math.exp(0.3)]], rtol=1e-6)
    self.assertTrue(np.isfinite(np.asarray(clip['low'])).all())


def _agg_inputs():
  x = jnp.asarray([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
  m = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
  return x, m


class AggregationTest(parameterized.TestCase):

  # Row 2 is all padding: ignored by every mode (its 7s are masked, it is not a sequence).
  @parameterized.named_parameters(
      ('token_mean', 'token-mean', 1 + 2 + 3 + 4, 4.0),               # 10 / 4 tokens
      ('seq_mean_token_mean', 'seq-mean-token-mean', 6 / 3 + 4 / 1, 2.0),  # (2 + 4) / 2 seqs
      ('seq_mean_token_sum', 'seq-mean-token-sum', 10.0, 2.0),        # (6 + 4) / 2 seqs
      ('seq_mean_token_sum_norm', 'seq-mean-token-sum-norm', 10.0 / 8, 2.0))  # (6/8 + 4/8) / 2
  def test_aggregation_modes_hand_computed(self, mode, s, d):
    x, m = _agg_inputs()
    got_s, got_d = losses_lib.aggregate(x, m, mode, max_len=8)  # T_max = 8
    approx(float(got_s), s)
    approx(float(got_d), d)

  def test_aggregation_default_max_len_and_errors(self):
    x, m = _agg_inputs()
    # Dr.GRPO's constant defaults to the batch width T = 4.
    approx(float(losses_lib.aggregate(x, m, 'seq-mean-token-sum-norm')[0]), 2.5)
    with self.assertRaisesRegex(ValueError, 'unknown aggregation'):
      losses_lib.aggregate(x, m, 'mean')
    with self.assertRaisesRegex(ValueError, 'max_len'):
      losses_lib.aggregate(x, m, 'seq-mean-token-sum-norm', max_len=0)

  @parameterized.named_parameters(*AGGREGATIONS)
  def test_micro_batched_sums_equal_full_batch(self, mode):
    x = jax.random.normal(jax.random.key(0), (8, 6))
    m = jax.random.bernoulli(jax.random.key(1), 0.7, (8, 6)).at[3].set(False)  # one empty row
    s, d = losses_lib.aggregate(x, m, mode, max_len=10)
    parts = [losses_lib.aggregate(x[i:i + 2], m[i:i + 2], mode, max_len=10)
             for i in range(0, 8, 2)]
    np.testing.assert_allclose(sum(p[0] for p in parts), s, rtol=1e-6)
    np.testing.assert_allclose(sum(p[1] for p in parts), d, rtol=1e-6)
    approx(float(sum(p[0] for p in parts) / sum(p[1] for p in parts)), float(s / d), rel=1e-6)


class KlAndEntropyTest(absltest.TestCase):

  def test_kl_estimators_and_clamps(self):
    logp, ref = jnp.asarray([-1.0]), jnp.asarray([-1.5])
    d = 0.5  # logp - ref
    approx(float(losses_lib.kl_penalty(logp, ref, 'k1')[0]), d)
    approx(float(losses_lib.kl_penalty(logp, ref, 'k2')[0]), 0.5 * d * d)
    # k3 = e^(ref-logp) - (ref-logp) - 1 = e^-0.5 + 0.5 - 1 ≈ 0.10653
    approx(float(losses_lib.kl_penalty(logp, ref, 'k3')[0]), math.exp(-d) + d - 1)
    # k3 of equal policies is 0 and its gradient too; k3 >= 0 everywhere.
    self.assertEqual(float(losses_lib.kl_penalty(logp, logp, 'k3')[0]), 0.0)
    self.assertEqual(
        float(jax.grad(lambda a: losses_lib.kl_penalty(a, ref + 0.5, 'k3').sum())(logp)[0]), 0)
    kl = lambda a, b, kind: float(losses_lib.kl_penalty(jnp.asarray([a]), jnp.asarray([b]),
                                                        kind)[0])
    # Clamps: ref - logp = 30 -> 20 inside: e^20 - 20 - 1 -> clamped to 10.
    self.assertEqual(kl(-40.0, -10.0, 'k3'), 10.0)
    # ref - logp = -30 -> -20 inside: e^-20 + 20 - 1 ≈ 19 -> clamped to 10.
    self.assertEqual(kl(-10.0, -40.0, 'k3'), 10.0)
    # ref - logp = -5: e^-5 + 5 - 1 ≈ 4.0067, inside both clamps.
    approx(kl(-1.0, -6.0, 'k3'), math.exp(-5) + 4, rel=1e-6)
    # k1 and k2 are not clamped: d = 30 -> 30 and 450.
    self.assertEqual(kl(-10.0, -40.0, 'k1'), 30)
    self.assertEqual(kl(-10.0, -40.0, 'k2'), 450)
    with self.assertRaisesRegex(ValueError, 'kl kind'):
      losses_lib.kl_penalty(logp, ref, 'k4')

  def test_entropy_matches_numpy_and_is_differentiable(self):
    logits = np.asarray([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    for t in (1.0, 0.6):
      z = logits / t
      p = np.exp(z - z.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      want = -(p * np.log(p)).sum(-1)
      np.testing.assert_allclose(losses_lib.entropy_from_logits(jnp.asarray(logits), t), want,
                                 rtol=1e-5)
    # Uniform over 4: log 4. bf16 logits are computed in fp32.
    self.assertEqual(losses_lib.entropy_from_logits(jnp.zeros((4,), jnp.bfloat16)).dtype,
                     jnp.float32)
    # dH/dz_j = -p_j (z_j - Σ p z): zero at the uniform point, and matches numpy elsewhere.
    g = jax.jit(jax.grad(lambda x: losses_lib.entropy_from_logits(x).sum()))(jnp.asarray(logits))
    z = logits[0]
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(g[0], -p * (z - (p * z).sum()), rtol=1e-5)
    np.testing.assert_allclose(g[1], 0, atol=1e-7)


def _all_shapes(jaxpr):
  """Every intermediate shape of a jaxpr, inside scans, remat and pjit bodies included."""
  out = []
  for eqn in jaxpr.eqns:
    out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, 'shape')]
    for sub in jex.core.jaxprs_in_params(eqn.params):
      out += _all_shapes(sub)
  return out


def _unchunked(h, w, y, temperature):
  z = jnp.einsum('RTD,DV->RTV', h, w.astype(h.dtype), preferred_element_type=jnp.float32)
  logp = jnp.take_along_axis(jax.nn.log_softmax(z / temperature), y[..., None], -1)[..., 0]
  return logp, losses_lib.entropy_from_logits(z, temperature)


class ChunkedLogprobsTest(parameterized.TestCase):

  # 4 ∤ 11 (padded), one exact chunk, chunk > T.
  @parameterized.named_parameters(('chunk4', 4), ('chunk11', 11), ('chunk64', 64))
  def test_chunked_logprobs_entropy_equal_unchunked_values_and_grads(self, chunk):
    r, t, d, v = 3, 11, 8, 29  # primes where possible, so a swapped axis fails
    h = jax.random.normal(jax.random.key(0), (r, t, d))
    w = jax.random.normal(jax.random.key(1), (d, v))
    y = jax.random.randint(jax.random.key(2), (r, t), 0, v)
    full = lambda h, w: _unchunked(h, w, y, 0.7)
    chunked = lambda h, w: losses_lib.token_logprobs_and_entropy(h, w, y, temperature=0.7,
                                                                 chunk_size=chunk)
    for a, b in zip(jax.jit(full)(h, w), jax.jit(chunked)(h, w)):
      self.assertEqual(b.shape, (r, t))
      self.assertEqual(b.dtype, jnp.float32)
      np.testing.assert_allclose(a, b, atol=1e-5)
    obj = lambda fn: lambda h, w: (fn(h, w)[0] * jnp.arange(t)).sum() + 0.3 * fn(h, w)[1].sum()
    g_full = jax.jit(jax.grad(obj(full), argnums=(0, 1)))(h, w)
    g_chunk = jax.jit(jax.grad(obj(chunked), argnums=(0, 1)))(h, w)
    for a, b in zip(g_full, g_chunk):
      np.testing.assert_allclose(a, b, atol=1e-4)

  def test_chunked_bf16_hidden_matches_unchunked(self):
    h = jax.random.normal(jax.random.key(0), (2, 7, 8)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (8, 13))
    y = jax.random.randint(jax.random.key(2), (2, 7), 0, 13)
    got = jax.jit(lambda h, w: losses_lib.token_logprobs_and_entropy(h, w, y, chunk_size=3))(h, w)
    for a, b in zip(jax.jit(lambda h, w: _unchunked(h, w, y, 1.0))(h, w), got):
      self.assertEqual(b.dtype, jnp.float32)
      np.testing.assert_allclose(a, b, atol=1e-5)

  def test_chunked_never_materialises_full_logits(self):
    r, t, d, v, c = 3, 11, 5, 29, 4
    h, w = jnp.ones((r, t, d)), jnp.ones((d, v))
    y = jnp.zeros((r, t), jnp.int32)

    def loss(h, w, fn):
      logp, ent = fn(h, w)
      return logp.sum() + ent.sum()

    chunked = lambda h, w: losses_lib.token_logprobs_and_entropy(h, w, y, chunk_size=c)
    biggest = lambda fn: max(math.prod(s) for s in _all_shapes(
        jax.make_jaxpr(jax.grad(functools.partial(loss, fn=fn), argnums=(0, 1)))(h, w).jaxpr))
    # Forward + backward of the chunked pass: nothing near [R, T, V] (largest is [R, C, V]);
    # the unchunked reference does hold [R, T, V], so the probe is not vacuous.
    self.assertEqual(biggest(chunked), r * c * v)
    self.assertLess(r * c * v, r * t * v)
    self.assertGreaterEqual(biggest(lambda h, w: _unchunked(h, w, y, 1.0)), r * t * v)

  def test_chunked_input_checks(self):
    with self.assertRaisesRegex(ValueError, 'shapes do not fit'):
      losses_lib.token_logprobs_and_entropy(jnp.ones((2, 3, 4)), jnp.ones((5, 7)),
                                            jnp.zeros((2, 3), jnp.int32))
    with self.assertRaisesRegex(ValueError, 'chunk_size'):
      losses_lib.token_logprobs_and_entropy(jnp.ones((2, 3, 4)), jnp.ones((4, 7)),
                                            jnp.zeros((2, 3), jnp.int32), chunk_size=0)


class CeehBonusTest(absltest.TestCase):

  def test_ceeh_me_weights(self):
    ent = jnp.asarray([[1.0, 2.0], [3.0, jnp.nan]])  # masked NaN must not leak
    mask = jnp.asarray([[1, 1], [1, 0]], bool)
    s, d = losses_lib.ceeh_me_bonus(ent, mask, jnp.asarray([1.0, 0.0]), hard_weight=5.0)
    # hard row: 5*(1+2) = 15, easy row: 1*3 -> 18; weights 5+5+1 = 11.
    self.assertEqual(float(s), 18.0)
    self.assertEqual(float(d), 11.0)
    # bool flags work; weight 1 everywhere is the plain token mean (1+2+3)/3.
    s, d = losses_lib.ceeh_me_bonus(ent, mask, jnp.asarray([True, False]), hard_weight=1.0)
    self.assertEqual(float(s / d), 2.0)

  def test_entropy_schedules(self):
    # cosine: coef·½(1 + cos(π·s/S)): 0.001 at 0, 0.0005 at S/2, 0 at S and beyond.
    cos = lambda s: float(losses_lib.cosine_decay(0.001, s, 100))
    approx(cos(0), 0.001)
    approx(cos(50), 0.0005)
    approx(cos(100), 0.0, abs=1e-12)
    approx(cos(150), 0.0, abs=1e-12)
    approx(cos(25), 0.001 * 0.5 * (1 + math.cos(math.pi / 4)))  # ≈ 0.000854
    # hard weight 5 -> 1 (cosine): 5 at 0, 3 at half, 1 at the end; 1 + 4·½(1 + cos(π/4)) at 1/4.
    hw = lambda s: float(losses_lib.hard_weight_anneal(s, 10))
    approx((hw(0), hw(5), hw(10)), (5.0, 3.0, 1.0))
    approx(float(losses_lib.hard_weight_anneal(1, 4, start=3.0, end=2.0)),
           2 + 0.5 * (1 + math.cos(math.pi / 4)))
    # Traced step under jit.
    approx(float(jax.jit(losses_lib.cosine_decay, static_argnums=2)(0.001, jnp.int32(50), 100)),
           0.0005)

  def test_ceeh_ea_bonus_capped_hard_only_and_stop_gradient(self):
    adv = jnp.asarray([[1.0, 1.0], [-0.5, 1.0], [-1.0, -1.0]])
    ent = jnp.asarray([[0.5, 3.0], [2.0, 2.0], [0.5, 4.0]])
    hard = jnp.asarray([1.0, 0.0, 1.0])
    out = losses_lib.ceeh_ea_advantages(adv, ent, hard, alpha=0.4)
    # row 0 (hard): min(0.4*0.5, 1/2) = 0.2 -> 1.2; min(0.4*3, 1/2) = 0.5 (cap) -> 1.5.
    # row 1 (easy): unchanged.
    # row 2 (hard, A = -1): min(0.2, 0.5) -> -0.8; min(1.6, 0.5) -> -0.5 (cap keeps the sign).
    np.testing.assert_allclose(out, [[1.2, 1.5], [-0.5, 1.0], [-0.8, -0.5]], rtol=1e-6)
    # [R] advantages broadcast per row: A = 0 gets nothing (cap |A|/2 = 0).
    out = losses_lib.ceeh_ea_advantages(jnp.asarray([1.0, 0.0]), ent[:2], jnp.ones(2))
    np.testing.assert_allclose(out, [[1.2, 1.5], [0.0, 0.0]], rtol=1e-6)
    # Stop-gradient: the bonus carries no gradient to the entropy.
    g = jax.grad(lambda e: losses_lib.ceeh_ea_advantages(adv, e, jnp.ones(3)).sum())(ent)
    np.testing.assert_array_equal(g, 0.0)


def _toy_batch():
  mask = jnp.asarray([[1, 1], [1, 0]], bool)
  logp = jnp.zeros((2, 2))
  entropy = jnp.asarray([[1.0, 2.0], [3.0, 99.0]])
  return logp, entropy, mask


class GrpoLossTest(parameterized.TestCase):

  def test_grpo_loss_hand_computed(self):
    logp, entropy, mask = _toy_batch()
    total, aux = losses_lib.grpo_loss(
        logp, entropy, logp, jnp.asarray([1.0, -1.0]), mask, hard=jnp.asarray([1.0, 0.0]),
        ref_logp=logp - 0.5, kl_coef=0.1, kl_kind='k1', entropy_coef=0.01, hard_weight=5.0)
    # ρ = 1: pg tokens -1, -1 (A = 1), +1 (A = -1) -> -1 / 3 tokens.
    # k1 = 0.5 per token -> 1.5 / 3 = 0.5, β·0.5 = 0.05.
    # CEEH-ME: (5·(1 + 2) + 3) / (5 + 5 + 1) = 18/11, times c = 0.01.
    approx(float(aux['pg_loss']), -1 / 3)
    approx(float(aux['kl']), 0.5)
    approx(float(aux['entropy_bonus']), 18 / 11)
    approx(float(total), -1 / 3 + 0.05 - 0.01 * 18 / 11)
    approx(float(aux['entropy']), 2.0)
    approx(float(aux['ratio']), 1.0)
    self.assertEqual(float(aux['clip/low'] + aux['clip/high'] + aux['clip/dual']), 0.0)
    # Terms switched off statically: no KL (β = 0 or no reference), no entropy bonus.
    total, aux = losses_lib.grpo_loss(logp, entropy, logp, jnp.asarray([1.0, -1.0]), mask,
                                      ref_logp=logp - 0.5, kl_coef=0.0, entropy_coef=0.0)
    self.assertEqual(set(aux),
                     {'pg_loss', 'entropy', 'ratio', 'clip/low', 'clip/high', 'clip/dual'})
    approx(float(total), -1 / 3)
    _, aux = losses_lib.grpo_loss(logp, entropy, logp, jnp.asarray([1.0, -1.0]), mask, kl_coef=0.1)
    self.assertNotIn('kl', aux)

  def test_grpo_loss_ea_and_gradients(self):
    logp, entropy, mask = _toy_batch()
    adv = jnp.asarray([1.0, -1.0])
    fn = lambda lp, e: losses_lib.grpo_loss(lp, e, logp, adv, mask, hard=jnp.asarray([1.0, 0.0]),
                                            ea_alpha=0.4)
    total, aux = fn(logp, entropy)
    # Hard row 0: A + min(0.4·H, 1/2) = 1.4, 1.5; row 1 easy: -1. ρ = 1 -> (-1.4 - 1.5 + 1)/3.
    approx(float(total), -1.9 / 3)
    approx(float(aux['ea_bonus']), 0.9 / 3)
    g_lp, g_e = jax.grad(lambda lp, e: fn(lp, e)[0], argnums=(0, 1))(logp, entropy)
    # d/dlogp of -Aρ/3 at ρ = 1 is -A/3 on valid tokens; EA carries no entropy gradient.
    np.testing.assert_allclose(g_lp, [[-1.4 / 3, -1.5 / 3], [1 / 3, 0.0]], rtol=1e-6)
    np.testing.assert_array_equal(g_e, 0.0)
    # CEEH-ME's gradient on the entropy is -c·w/Σw per valid token.
    g_e = jax.grad(lambda e: losses_lib.grpo_loss(logp, e, logp, adv, mask,
                                                  hard=jnp.asarray([1.0, 0.0]),
                                                  entropy_coef=0.01)[0])(entropy)
    np.testing.assert_allclose(g_e, [[-0.05 / 11, -0.05 / 11], [-0.01 / 11, 0.0]], rtol=1e-5)
    with self.assertRaisesRegex(ValueError, 'needs the hard'):
      losses_lib.grpo_loss(logp, entropy, logp, adv, mask, ea_alpha=0.4)

  @parameterized.named_parameters(*AGGREGATIONS)
  def test_grpo_loss_micro_batches_add_up_exactly(self, mode):
    r, t = 8, 6
    ks = jax.random.split(jax.random.key(3), 6)
    logp = -jax.random.uniform(ks[0], (r, t)) * 2
    old = logp + 0.4 * jax.random.normal(ks[1], (r, t))   # some tokens clip
    ref = logp + 0.3 * jax.random.normal(ks[2], (r, t))
    ent = jax.random.uniform(ks[3], (r, t)) * 3
    adv = jax.random.normal(ks[4], (r,))
    mask = jax.random.bernoulli(ks[5], 0.7, (r, t)).at[5].set(False)
    hard = jnp.asarray([1, 0, 0, 1, 1, 0, 1, 0], jnp.float32)
    kw = dict(aggregation=mode, max_len=10, kl_coef=0.05, entropy_coef=jnp.float32(0.01),
              hard_weight=jnp.float32(5.0), ea_alpha=0.4)

    def fn(lp, e, o, a, m, h, rf, denoms):
      return losses_lib.grpo_loss(lp, e, o, a, m, hard=h, ref_logp=rf, denoms=denoms, **kw)

    full = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))
    args = (logp, ent, old, adv, mask, hard, ref)
    (total, aux), grads = full(*args, None)
    denoms = losses_lib.loss_denominators(mask, hard, aggregation=mode, max_len=10,
                                          hard_weight=5.0)
    parts = [full(*(x[i:i + 2] for x in args), denoms) for i in range(0, r, 2)]
    np.testing.assert_allclose(sum(p[0][0] for p in parts), total, rtol=1e-5)
    for k in aux:
      np.testing.assert_allclose(sum(p[0][1][k] for p in parts), aux[k], rtol=1e-5, atol=1e-7)
    for j in range(2):
      np.testing.assert_allclose(jnp.concatenate([p[1][j] for p in parts]), grads[j], rtol=1e-5,
                                 atol=1e-7)
    # Clipping exercised.
    self.assertGreater(float(aux['clip/low'] + aux['clip/high'] + aux['clip/dual']), 0)


if __name__ == '__main__':
  absltest.main()
