"""Competing methods' rewards/advantages against hand-computed numbers, edge cases, jit."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ceeh_jax import methods as methods_lib
from ceeh_jax.methods import length as length_lib
from ceeh_jax.models import qwen2 as qwen2_lib

T, F = True, False
approx = test_util.assert_approx


def _inp(correct, lengths, boxed=None, truncated=None, qids=None, **tok):
  r = len(correct)
  return methods_lib.RewardInputs(
      correct=jnp.asarray(correct, bool),
      boxed=jnp.asarray(correct if boxed is None else boxed, bool),
      lengths=jnp.asarray(lengths, jnp.int32),
      truncated=jnp.asarray([F] * r if truncated is None else truncated, bool),
      qids=jnp.asarray([0] * r if qids is None else qids, jnp.int32), **tok)


def _run(method, inp, g, step=0, state=None, **hp):
  state = methods_lib.init_state(method, 4, hp) if state is None else state
  return methods_lib.compute(method, hp, inp, state, step, group_size=g)


def _close(a, b, atol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b, np.float32), atol=atol, rtol=0)


# --- Plain GRPO and Kimi k1.5 -------------------------------------------------------------

class GrpoAndKimiTest(parameterized.TestCase):

  def test_grpo_is_correctness_and_leaves_advantages_to_the_trainer(self):
    out = _run('grpo', _inp([T, F, T, F], [5, 6, 7, 8]), 2)
    _close(out.rewards, [1, 0, 1, 0])
    self.assertIsNone(out.advantages)
    self.assertFalse(out.positive_only)
    self.assertIsNone(out.temperature)

  @parameterized.named_parameters(
      # λ = 0.5 − (L − 100)/300 = [.5, 1/6, −1/6, −.5]; correct +λ, wrong +min(0, λ).
      ('mixed', [T, T, F, F], [100, 200, 300, 400], [1.5, 1 + 1 / 6, -1 / 6, -0.5]),
      ('all_correct', [T, T, T, T], [100, 100, 300, 500], [1.5, 1.5, 1.0, 0.5]),
      ('all_wrong', [F, F, F, F], [100, 200, 300, 400], [0, 0, -1 / 6, -0.5]),
      ('single_correct', [F, F, F, T], [100, 200, 300, 400], [0, 0, -1 / 6, 0.5]),
      ('equal_lengths', [T, F, T, F], [250, 250, 250, 250], [1, 0, 1, 0]),   # λ = 0
  )
  def test_kimi_length_penalty(self, correct, lengths, want):
    _close(_run('length_penalty', _inp(correct, lengths), 4).rewards, want)

  def test_kimi_weight_and_groups_are_separate(self):
    inp = _inp([T, T, T, T], [100, 300, 10, 10])
    _close(_run('length_penalty', inp, 2, weight=0.5).rewards, [1.25, 0.75, 1, 1])


# --- GRPO-λ -------------------------------------------------------------------------------

class GrpoLambdaTest(absltest.TestCase):

  def test_grpo_lambda_shapes_only_the_most_accurate_groups(self):
    # 5 groups of 2: accuracies 1, .5, .5, 0, 1.
    correct = [T, T, T, F, F, T, F, F, T, T]
    lengths = [100, 300, 100, 300, 100, 300, 100, 300, 200, 200]
    kimi = [1.5, 0.5, 1.5, -0.5, 0, 0.5, 0, -0.5, 1, 1]
    plain = [float(c) for c in correct]
    # top 20% -> k = 1; group 4 ties group 0 at accuracy 1 and is shaped too (equal lengths:
    # λ = 0).
    out = _run('grpo_lambda', _inp(correct, lengths), 2, top_fraction=0.2)
    _close(out.rewards, kimi[:2] + plain[2:8] + kimi[8:])
    approx(float(out.metrics['shaped_groups']), 0.4)
    # 60% -> k = 3: threshold .5 takes groups 0, 1, 2, 4 — never the all-wrong group 3.
    _close(_run('grpo_lambda', _inp(correct, lengths), 2, top_fraction=0.6).rewards,
           kimi[:6] + plain[6:8] + kimi[8:])
    _close(_run('grpo_lambda', _inp(correct, lengths), 2, top_fraction=1.0).rewards,
           kimi[:6] + plain[6:8] + kimi[8:])


# --- Arora & Zanette ----------------------------------------------------------------------

class AroraZanetteTest(absltest.TestCase):

  def test_arora_zanette_sigmoid_of_z_scored_correct_length(self):
    sig = lambda z: 1 / (1 + math.exp(-z))
    z = 100 / math.sqrt(20000 / 3)           # correct lengths 100, 200, 300: mean 200, pop. std
    out = _run('arora_zanette', _inp([T, T, T, F], [100, 200, 300, 50]), 4, alpha=0.2)
    _close(out.rewards, [1 - 0.2 * sig(-z), 0.9, 1 - 0.2 * sig(z), 0])
    # single correct and equal lengths: std 0 -> z = 0 -> 1 − α/2; all wrong -> 0.
    _close(_run('arora_zanette', _inp([F, T, F, F], [1, 2, 3, 4]), 4).rewards, [0, 0.9, 0, 0])
    _close(_run('arora_zanette', _inp([T] * 4, [7] * 4), 4).rewards, [0.9] * 4)
    _close(_run('arora_zanette', _inp([F] * 4, [1, 2, 3, 4]), 4).rewards, [0] * 4)


# --- LASER / LASER-D ----------------------------------------------------------------------

class LaserTest(absltest.TestCase):

  def test_laser_step_bonus_under_target(self):
    out = _run('laser', _inp([T, T, F, F], [250, 251, 10, 400]), 4, target=250, bonus=0.5)
    _close(out.rewards, [1.5, 1.0, 0, 0])

  def test_laser_d_bucket_targets_and_ecr_update(self):
    state = {'targets': jnp.asarray([5000.0, 6000.0, 7000.0])}
    hp = dict(rate=1.0, budget=8000.0, min_target=1000.0, interval=1000.0)
    correct = [T, T, T, T] + [T, T, F, F] + [T, F, F, F]      # acc 1 easy, .5 medium, .25 hard
    lengths = [1500, 2500, 3500, 9000] + [5500, 6500, 100, 200] + [7500, 10, 10, 10]
    out = _run('laser_d', _inp(correct, lengths), 4, state=state, **hp)
    # Targets before the update: 5000 / 6000 / 7000.
    _close(out.rewards, [1.5, 1.5, 1.5, 1] + [1.5, 1, 0, 0] + [1, 0, 0, 0])
    # G = 4: fewest correct per group c = (⌈8/3⌉, ⌈4/3⌉, 1) = (3, 2, 1). Easy: P(len ≤ L) ≥ 1/3
    # at the ⌈4/3⌉ = 2nd shortest (2500) -> grid 3000; medium: P ≥ 1/2 at the 2nd shortest (200)
    # -> the grid's floor 1000; hard needs P = 1: the longest (7500) -> 8000.
    _close(out.new_state['targets'], [3000, 1000, 8000])
    out = _run('laser_d', _inp(correct, lengths), 4, state=state, **dict(hp, budget=7500.0))
    _close(out.new_state['targets'], [3000, 1000, 7500])    # off the grid's end -> budget

  def test_laser_d_ema_and_buckets_without_groups_keep_targets(self):
    state = {'targets': jnp.asarray([5000.0, 6000.0, 7000.0])}
    out = _run('laser_d', _inp([T] * 8, [100, 200, 300, 400, 500, 600, 700, 800]), 4, state=state,
               rate=0.5, min_target=1000.0)
    # 8 easy responses, P ≥ 1/2 at the 4th shortest (400) -> grid floor 1000; EMA halfway.
    _close(out.new_state['targets'], [3000, 6000, 7000])
    _close(out.rewards, [1.5] * 8)
    _close(_run('laser_d', _inp([F] * 4, [1] * 4), 4, state=state).rewards, [0] * 4)


# --- ThinkPrune and DLER ------------------------------------------------------------------

class ThinkPruneAndDlerTest(absltest.TestCase):

  def test_thinkprune_staged_limits_host_and_traced(self):
    lim, bnd = (4096, 3072, 2048), (100, 200)
    for step, want in [(0, 4096), (99, 4096), (100, 3072), (199, 3072), (250, 2048)]:
      self.assertEqual(methods_lib.thinkprune_limit(step, lim, bnd), want)
      self.assertEqual(int(jax.jit(lambda s: length_lib.thinkprune_limit(s, lim, bnd))(step)), want)
    inp = _inp([T, T, T, F, T], [3000, 3072, 3073, 100, 10], truncated=[F, F, F, F, T])
    _close(_run('thinkprune', inp, 5, step=150).rewards, [1, 1, 0, 0, 0])
    self.assertEqual(methods_lib.generation_limit('thinkprune', {}, 150, 20480), 3072)
    self.assertEqual(methods_lib.generation_limit('thinkprune', {}, 150, 2000), 2000)

  def test_dler_truncation_and_batch_whitened_advantages(self):
    inp = _inp([T, T, F, F] + [T, T, T, T], [10, 20, 30, 40] + [10, 20, 30, 4001])
    out = _run('dler', inp, 4, max_len=4000)
    _close(out.rewards, [1, 1, 0, 0, 1, 1, 1, 0])
    centred = np.array([0.5, 0.5, -0.5, -0.5, 0.25, 0.25, 0.25, -0.75])
    _close(out.advantages, centred / math.sqrt(1.75 / 8), atol=1e-4)   # one std for the batch
    np.testing.assert_array_equal(methods_lib.informative_groups(out.rewards, 4), [T, T])
    # All groups uninformative: zero advantages, no NaN.
    flat = _run('dler', _inp([T] * 4 + [F] * 4, [10] * 8), 4)
    _close(flat.advantages, [0] * 8)
    np.testing.assert_array_equal(methods_lib.informative_groups(flat.rewards, 4), [F, F])
    flags = methods_lib.trainer_flags('dler')
    self.assertTrue(flags.dynamic_sampling)
    self.assertEqual(flags.max_rounds, 3)
    self.assertFalse(
        methods_lib.trainer_flags('dler', {'dynamic_sampling': False}).dynamic_sampling)
    self.assertEqual(methods_lib.trainer_flags('grpo').max_rounds, 1)
    self.assertEqual(methods_lib.generation_limit('dler', {}, 0, 20480), 4000)

  def test_dynamic_sampling_informative_and_selection(self):
    # DLER rewards: group 0 mixed (informative), group 1 all truncated (0, 0, 0, 0), group 2 all
    # correct within the limit (1, 1, 1, 1): only group 0 teaches anything.
    inp = _inp([T, F, T, F] + [T] * 4 + [T] * 4, [10] * 12, truncated=[F] * 4 + [T] * 4 + [F] * 4)
    info = methods_lib.informative('dler', {}, inp, {}, 0, group_size=4)
    np.testing.assert_array_equal(info, [T, F, F])
    # Informative groups first, then uninformative ones in draw order; result sorted.
    np.testing.assert_array_equal(methods_lib.select_groups([F, T, F, T, T, F], 3), [1, 3, 4])
    np.testing.assert_array_equal(methods_lib.select_groups([F, F, F, T], 2), [0, 3])
    np.testing.assert_array_equal(methods_lib.select_groups([T] * 4, 4), [0, 1, 2, 3])
    with self.assertRaisesRegex(ValueError, 'cannot fill'):
      methods_lib.select_groups([T, T], 3)
    with self.assertRaisesRegex(ValueError, 'unknown hyper-parameters'):
      methods_lib.resolve_hparams('dler', {'eps_high': 0.3})   # clip-higher is grpo.eps_high

  def test_dapo_overlong_penalty_and_switch(self):
    lengths = jnp.asarray([10, 16, 17, 18, 20, 21])
    _close(methods_lib.dapo_overlong_penalty(lengths, 20, 4), [0, 0, -0.25, -0.5, -1, -1])
    _close(methods_lib.apply_overlong(jnp.ones(6), lengths, 20, 4), [1, 1, 0.75, 0.5, 0, 0])
    _close(methods_lib.dapo_overlong_penalty(lengths, 20, 0), [0, 0, 0, 0, 0, -1])
    with self.assertRaisesRegex(ValueError, 'cache_len'):
      methods_lib.dapo_overlong_penalty(lengths, 20, 30)


# --- HAPO ---------------------------------------------------------------------------------

class HapoTest(absltest.TestCase):

  def test_hapo_cosine_reward_against_history_then_update(self):
    state = {'min_len': jnp.asarray([-1.0, 400.0, 200.0, -1.0])}
    # Group 0 asks q1 (h = 400), group 1 asks q0 (unset).
    inp = _inp([T, T, F, F] + [F, T, T, F], [200, 400, 800, 100] + [50, 300, 250, 900],
               qids=[1] * 4 + [0] * 4)
    out = _run('hapo', inp, 4, state=state)
    # L/h = .5 -> cos(π/4); = 1 -> 0; wrong at 2h -> min(0, −1); wrong short -> min(0, ·) = 0.
    _close(out.rewards, [1 + math.cos(math.pi / 4), 1, -1, 0] + [0, 1, 1, 0])
    _close(out.new_state['min_len'], [250, 200, 200, -1])

  def test_hapo_all_wrong_keeps_history_and_duplicates_act_grouped(self):
    state = {'min_len': jnp.asarray([-1.0, 400.0, -1.0, -1.0])}
    out = _run('hapo', _inp([F] * 4, [100, 400, 500, 900], qids=[1] * 4), 4, state=state)
    _close(out.rewards, [0, 0, math.cos(0.625 * math.pi), -1])
    _close(out.new_state['min_len'], state['min_len'])
    # Correct but long: the length term is clamped at −0.7, so it still beats any wrong answer.
    out = _run('hapo', _inp([T] * 4, [500, 700, 800, 900], qids=[1] * 4), 4, state=state)
    _close(out.rewards, [1 + math.cos(0.625 * math.pi), 0.3, 0.3, 0.3])
    # Two groups of q1 in one batch: both scored against the pre-batch h, h takes the joint min.
    inp = _inp([T, F, F, F] + [F, T, F, F], [100, 9, 9, 9] + [9, 300, 9, 9], qids=[1] * 8)
    out4 = _run('hapo', inp, 4, state=state)
    out8 = _run('hapo', inp, 8, state=state)
    want = [1 + math.cos(math.pi / 8), 1 + math.cos(3 * math.pi / 8)]    # L/h = 1/4, 3/4 of 400
    _close(np.asarray(out4.rewards)[[0, 5]], want)
    _close(out4.new_state['min_len'][1], 100)
    _close(out4.rewards, out8.rewards)
    _close(out4.new_state['min_len'], out8.new_state['min_len'])


# --- EGRC ---------------------------------------------------------------------------------

class EgrcTest(absltest.TestCase):

  def test_egrc_stage_switch_and_order(self):
    hp = methods_lib.resolve_hparams('egrc', {'stage_steps': 200})
    self.assertEqual([methods_lib.egrc_stage(s, hp) for s in (0, 199, 200, 999)], [0, 0, 1, 1])
    rev = dict(hp, compression_first=False)
    self.assertEqual([methods_lib.egrc_stage(s, rev) for s in (0, 200)], [1, 0])
    self.assertEqual(int(jax.jit(lambda s: methods_lib.egrc_stage(s, hp))(200)), 1)
    temp = lambda s, **kw: methods_lib.sampling_temperature('egrc', kw, s, 0.7)
    self.assertEqual((temp(199), temp(200), temp(0, compression_first=False)), (0.6, 1.0, 1.0))
    self.assertEqual(methods_lib.sampling_temperature('grpo', {}, 0, 0.7), 0.7)
    self.assertEqual(methods_lib.generation_limit('egrc', {}, 0, 20480), 4096)
    self.assertEqual(methods_lib.generation_limit('egrc', {}, 200, 20480), 20480)

  def test_egrc_compression_positive_only_absolute_advantage(self):
    inp = _inp([T, T, T, F] + [T, T, F, F], [2048, 4096, 4097, 1000] + [0, 100, 5, 5],
               truncated=[F] * 4 + [F, T, F, F])
    out = _run('egrc', inp, 4, step=199, beta=2.0)
    # λ = ln 2 / 4096: R(2048) = √.5, R(4096) = .5, over the clip 0; truncated 0; A = β·R.
    _close(out.rewards, [math.sqrt(0.5), 0.5, 0, 0, 1, 0, 0, 0])
    _close(out.advantages, [2 * math.sqrt(0.5), 1, 0, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(out.advantages)[[3, 6, 7]], 0.0)  # wrong: exactly 0
    self.assertTrue(out.positive_only)
    self.assertEqual(out.temperature, 0.6)
    np.testing.assert_array_equal(methods_lib.loss_mask(out), [T, T, F, F, T, F, F, F])
    # All-wrong group: zero, all-correct group: all positive (no group baseline).
    allc = _run('egrc', _inp([T] * 4 + [F] * 4, [10] * 8), 4)
    adv = np.asarray(allc.advantages)
    self.assertTrue(np.all(adv[:4] > 0))
    self.assertTrue(np.all(adv[4:] == 0))

  def test_egrc_exploration_stage_grpo_with_format_answer_length(self):
    inp = _inp([T, T, T, F], [2048, 4096, 6096, 1000], boxed=[T, T, T, F])
    out = _run('egrc', inp, 4, step=200)
    _close(out.rewards, [1.1, 1.1, 0.6, 0])            # 0.1 + 1 − 0.25·(2000/1000)
    dev = np.array([0.4, 0.4, -0.1, -0.7])
    _close(out.advantages, dev / (math.sqrt(0.82 / 3) + 1e-6))
    self.assertFalse(out.positive_only)
    self.assertIsNone(out.loss_mask)
    self.assertEqual(out.temperature, 1.0)
    batch = _run('egrc', _inp([T, F] * 2, [1, 1, 1, 1], boxed=[T, T, F, F]), 2, step=200,
                 explore_baseline='batch')
    r = np.array([1.1, 0.1, 1.0, 0.0])
    _close(batch.advantages, (r - r.mean()) / (r.std(ddof=1) + 1e-6))
    # Reversed order: step 0 explores, step 200 compresses.
    self.assertEqual(_run('egrc', inp, 4, step=0, compression_first=False).temperature, 1.0)
    self.assertTrue(_run('egrc', inp, 4, step=200, compression_first=False).positive_only)

  def test_egrc_traced_step_matches_host(self):
    inp = _inp([T, F, T, T], [100, 200, 5000, 300], truncated=[F, F, T, F])
    f = jax.jit(lambda s: methods_lib.compute('egrc', {}, inp, {}, s, group_size=4))
    for step in (0, 200):
      host, traced = _run('egrc', inp, 4, step=step), f(step)
      _close(traced.rewards, host.rewards)
      _close(traced.advantages, host.advantages)
      self.assertTrue(traced.positive_only)   # unknown stage at trace time: mask kept
      want = host.loss_mask if host.positive_only else np.ones(4, bool)
      np.testing.assert_array_equal(traced.loss_mask, want)
      approx(float(traced.temperature), host.temperature)


# --- ENTRA --------------------------------------------------------------------------------

_PROBS = jnp.asarray([[[[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0.6, 0.2, 0.2, 0],
                        [0.3, 0.3, 0.2, 0.2]]]])          # [R=1, N=1, T=4, T=4], causal rows
_LOGP = jnp.asarray([[-0.6, -2.0, -0.5, -1.0]])
_TOKENS = jnp.asarray([[5, 7, 7, 9]], jnp.int32)
_MASK = jnp.ones((1, 4), bool)


class EntraTest(absltest.TestCase):

  def test_entra_importance_and_normalised_entropy_by_hand(self):
    mu = methods_lib.attention_received(_PROBS, _MASK)
    # μ0 = (.9 + .6 + .3)/3, μ1 = (.2 + .3)/2, μ2 = .2/1, μ3 = 0 (no later token).
    _close(mu, [[0.6, 0.25, 0.2, 0.0]])
    imp = methods_lib.entra_importance(_LOGP, mu, _MASK, gamma=2.0)
    _close(imp, [[0.6, -1.5, -0.1, -1.0]])
    # fraction .75: keep 3, drop the most important (pos 0): tokens 7, 7, 9.
    score, sel = methods_lib.entra_redundancy(_TOKENS, imp, _MASK, fraction=0.75)
    np.testing.assert_array_equal(sel, [[F, T, T, T]])
    h = math.log(3) - (2 * math.log(2)) / 3                   # −(2/3 ln 2/3 + 1/3 ln 1/3)
    _close(score, [h / math.log(3)])                            # = 0.5794
    # γ = 0: importance is log p alone, pos 2 is dropped: tokens 5, 7, 9 all distinct -> 1.
    score0, _ = methods_lib.entra_redundancy(_TOKENS, _LOGP, _MASK, fraction=0.75)
    _close(score0, [1.0])
    # fraction .8 of 4 tokens keeps all 4: 5, 7, 7, 9 -> (ln 4 − ln 2 / 2) / ln 4 = .75.
    _close(methods_lib.entra_redundancy(_TOKENS, imp, _MASK)[0], [0.75])

  def test_entra_reward_through_compute(self):
    tok = dict(tokens=jnp.tile(_TOKENS, (2, 1)), token_logp=jnp.tile(_LOGP, (2, 1)),
               attn_received=jnp.tile(methods_lib.attention_received(_PROBS, _MASK), (2, 1)),
               token_mask=jnp.ones((2, 4), bool))
    s = (math.log(3) - 2 * math.log(2) / 3) / math.log(3)
    out = _run('entra', _inp([T, F], [4, 4], **tok), 2, fraction=0.75, gamma=2.0, weight=0.5)
    _close(out.rewards, [1 + 0.5 * s, 0])
    out = _run('entra', _inp([T, F], [4, 4], **tok), 2, fraction=0.75, correct_only=False)
    _close(out.rewards, [1 + s, s])
    with self.assertRaisesRegex(ValueError, 'per-token inputs'):
      _run('entra', _inp([T, F], [4, 4]), 2)

  def test_entra_entropy_edges_and_padding(self):
    mask = jnp.asarray([[T, T, T, T, F, F]] * 3)
    tokens = jnp.asarray([[3, 3, 3, 3, 9, 8], [1, 2, 3, 4, 4, 4], [6, 0, 0, 0, 0, 0]], jnp.int32)
    imp = jnp.zeros((3, 6))
    score, _ = methods_lib.entra_redundancy(tokens, imp, mask, fraction=1.0)
    _close(score, [0.0, 1.0, 1 - 0.75 * math.log(3) / math.log(4)])  # padding ignored
    one = methods_lib.entra_redundancy(tokens, imp, mask.at[:, 1:].set(False), fraction=1.0)[0]
    _close(one, [1.0, 1.0, 1.0])                       # a single token cannot repeat

  def test_token_type_entropy_matches_numpy_and_attention_matches_model(self):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, (5, 13)).astype(np.int32)
    select = rng.random((5, 13)) < 0.7
    h, n = methods_lib.token_type_entropy(jnp.asarray(tokens), jnp.asarray(select))
    for row in range(5):
      _, counts = np.unique(tokens[row][select[row]], return_counts=True)
      p = counts / counts.sum()
      _close(h[row], -(p * np.log(p)).sum())
      self.assertEqual(n[row], select[row].sum())
    # Same μ as the model's final-layer helper on [B, K, G, T, T] probabilities.
    logits = jnp.asarray(rng.normal(size=(2, 2, 3, 7, 7)), jnp.float32)
    causal = jnp.tril(jnp.ones((7, 7), bool))
    probs = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), -1)
    mask = jnp.asarray([[T] * 7, [T] * 5 + [F] * 2])
    ours = methods_lib.attention_received(probs.reshape(2, 6, 7, 7), mask)
    _close(ours[:, :5], qwen2_lib.attention_received(probs, mask)[:, :5])


# --- Dispatch, hyper-parameters, jit ------------------------------------------------------

class DispatchTest(parameterized.TestCase):

  def test_hparams_validation_and_state(self):
    with self.assertRaisesRegex(ValueError, 'unknown hyper-parameters'):
      methods_lib.resolve_hparams('hapo', {'wieght': 1.0})
    with self.assertRaisesRegex(ValueError, 'ratio_at_clip'):
      methods_lib.resolve_hparams('egrc', {'ratio_at_clip': 1.0})
    with self.assertRaisesRegex(ValueError, 'one positive limit'):
      methods_lib.resolve_hparams('thinkprune', {'limits': (10, 5)})
    with self.assertRaisesRegex(ValueError, 'unknown method'):
      methods_lib.default_hparams('nope')
    cfg = ml_collections.ConfigDict({'alpha': 0.4})
    self.assertEqual(methods_lib.resolve_hparams('arora_zanette', cfg)['alpha'], 0.4)
    for m in methods_lib.METHODS:
      self.assertIsInstance(methods_lib.default_hparams(m), dict)
    self.assertEqual(methods_lib.init_state('grpo', 3), {})
    _close(methods_lib.init_state('hapo', 3)['min_len'], [-1, -1, -1])
    _close(methods_lib.init_state('laser_d', 3)['targets'], [16384] * 3)
    with self.assertRaisesRegex(ValueError, 'difficulty.ceeh_step'):
      _run('ceeh_me', _inp([T, F], [1, 2]), 2, state={})
    with self.assertRaisesRegex(ValueError, 'groups of 3'):
      _run('grpo', _inp([T, F], [1, 2]), 3)
    with self.assertRaisesRegex(ValueError, 'lengths must have shape'):
      methods_lib.compute('grpo', {}, _inp([T, F], [1, 2])._replace(lengths=jnp.ones(3)), {}, 0,
                          group_size=2)
    with self.assertRaisesRegex(ValueError, 'init_state'):
      _run('hapo', _inp([T, F], [1, 2]), 2, state={})

  @parameterized.named_parameters(*[(m, m) for m in methods_lib.METHODS
                                    if m not in methods_lib.CEEH_METHODS])
  def test_jit_equals_eager(self, method):
    rng = np.random.default_rng(1)
    r, t = 12, 9
    inp = _inp(rng.random(r) < 0.5, rng.integers(1, 6000, r), truncated=rng.random(r) < 0.2,
               qids=rng.integers(0, 4, r),
               tokens=jnp.asarray(rng.integers(0, 5, (r, t)), jnp.int32),
               token_logp=jnp.asarray(-rng.random((r, t)), jnp.float32),
               attn_received=jnp.asarray(rng.random((r, t)), jnp.float32),
               token_mask=jnp.asarray(rng.random((r, t)) < 0.9))
    state = methods_lib.init_state(method, 4)
    if method == 'hapo':
      state = {'min_len': jnp.asarray([-1.0, 900.0, 3000.0, -1.0])}
    if method in ('egrc', 'thinkprune'):             # host-vs-traced step branches: op by op
      with jax.disable_jit():
        eager = methods_lib.compute(method, {}, inp, state, 150, group_size=4)
    else:
      eager = methods_lib.compute(method, {}, inp, state, 150, group_size=4)
    jitted = jax.jit(lambda i, s, k: methods_lib.compute(method, {}, i, s, k, group_size=4))(
        inp, state, jnp.int32(150))
    _close(jitted.rewards, eager.rewards)
    if eager.advantages is not None:
      _close(jitted.advantages, eager.advantages)
    jax.tree.map(_close, jitted.new_state, eager.new_state)
    self.assertEqual(set(jitted.metrics), set(eager.metrics))


if __name__ == '__main__':
  absltest.main()
