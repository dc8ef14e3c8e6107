"""Fidelity fixes checked against hand-computed numbers: flat groups get A = 0 exactly, DAPO
overlong shaping reaches every method's advantages, LASER-D's fewest-correct counts, HAPO's
unset marker, and the CEEH-ME schedule's released indexing (batch t of T at t/T)."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import math

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import config_check
from ceeh_jax import default_config
from ceeh_jax import difficulty as difficulty_lib
from ceeh_jax import losses as losses_lib
from ceeh_jax import methods as methods_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.methods import history as history_lib
from ceeh_jax.methods import length as length_lib

# Rewards a flat group can have: CEEH's 1 + length reward, boxed-but-wrong 0.1, EGRC's
# exp-shaped values, negative penalties. 1.1 at G = 12 is the issue's example.
_FLAT_VALUES = (0.0, 0.1, 0.9, 1.0, 1.1, 1.05, 0.3, -0.5, 1.9, 0.7071, 1e-3, 37.25)


def _config(method, **kw):
  c = default_config.get_config()
  c.method = method
  c.total_steps = 10
  return test_util.override(c, **kw)


def _state(method, num_questions=4, step=0):
  difficulty = difficulty_lib.init_state(num_questions)
  difficulty['method'] = methods_lib.init_state(method, num_questions)
  return steps_lib.TrainState(step=jnp.int32(step), params={}, opt_state=(),
                              difficulty=difficulty, rng=jnp.zeros((2,), jnp.uint32),
                              skipped=jnp.int32(0))


def _update(method, correct, lengths, qids, group_size, **kw):
  """rollout_update -> (rewards, advantages) as numpy."""
  config = _config(method, **kw)
  r = len(correct)
  _, rewards, adv, _, _, _ = steps_lib.rollout_update(
      _state(method), jnp.asarray(qids, jnp.int32), jnp.asarray(correct, bool),
      jnp.asarray(correct, bool), jnp.asarray(lengths, jnp.int32), jnp.zeros((r,), bool),
      config=config, group_size=group_size)
  return np.asarray(rewards), np.asarray(adv)


class FlatGroupTest(parameterized.TestCase):
  """An all-equal group has advantage exactly 0 (bitwise), with and without std."""

  def test_the_naive_formula_leaves_a_residue(self):
    # Guards the sweep below: without the fix, 1.1 x 12 would give A = -0.106 each.
    r = jnp.full((1, 12), 1.1, jnp.float32)
    residue = r - r.mean(1, keepdims=True)
    self.assertTrue(np.any(np.asarray(residue) != 0))
    naive = residue / (jnp.std(r, axis=1, ddof=1, keepdims=True) + 1e-6)
    self.assertGreater(float(jnp.abs(naive).max()), 0.05)

  @parameterized.named_parameters(
      *[(f'g{g}_{"std" if std else "mean"}', g, std)
        for g in (2, 3, 5, 7, 8, 12, 16) for std in (False, True)])
  def test_group_advantages_flat_groups_are_zero(self, g, std):
    for v in _FLAT_VALUES:
      with self.subTest(value=v):
        # A flat group between two informative ones: only it must be exactly 0.
        rewards = np.concatenate([np.linspace(0, 1, g), np.full(g, v), np.linspace(1, 0, g)])
        adv = np.asarray(losses_lib.group_advantages(jnp.asarray(rewards, jnp.float32), g,
                                                     std_normalize=std))
        np.testing.assert_array_equal(adv[g:2 * g], np.zeros(g, np.float32))
        self.assertTrue(np.all(adv[:g] != 0) or g % 2)  # informative groups keep their signal

  @parameterized.named_parameters(('group', 'group'), ('batch', 'batch'))
  def test_egrc_exploration_all_correct_is_zero(self, baseline):
    # Exploration always normalises by the std: 12 correct, boxed, equal-length answers.
    inp = methods_lib.RewardInputs(correct=[True] * 12, boxed=[True] * 12, lengths=[77] * 12,
                                   truncated=[False] * 12, qids=[0] * 12)
    out = methods_lib.compute('egrc', {'stage_steps': 0, 'explore_baseline': baseline}, inp,
                              {}, 5, group_size=12)
    np.testing.assert_allclose(out.rewards, 1.1, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.advantages), np.zeros(12, np.float32))

  def test_grpo_std_normalize_all_correct_through_rollout_update(self):
    _, adv = _update('grpo', [True] * 12, [50] * 12, [1] * 12, 12, **{'grpo.std_normalize': True})
    np.testing.assert_array_equal(adv, np.zeros(12, np.float32))

  def test_ceeh_flat_group_is_zero(self):
    # A gated CEEH group whose answers all have len_x's length: rewards 1 + 0 each.
    _, adv = _update('ceeh_me', [True] * 8, [40] * 8, [2] * 8, 8)
    np.testing.assert_array_equal(adv, np.zeros(8, np.float32))

  def test_dler_all_flat_batch_is_zero_and_flat_groups_leave_the_std(self):
    flat = length_lib.dler_advantages(jnp.asarray([1.0, 1.0, 0.0, 0.0]), 2)
    np.testing.assert_array_equal(np.asarray(flat), np.zeros(4, np.float32))
    # [1, 0] beside [1, 1] at G = 2: the std comes from the informative group only.
    adv = length_lib.dler_advantages(jnp.asarray([1.0, 0.0, 1.0, 1.0]), 2)
    np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0], atol=1e-5)


class OverlongShapingTest(parameterized.TestCase):
  """DAPO's penalty enters the rewards before any method computes its advantages."""

  # max 4000, cache 2000: L = 3900 gets (2000 - 3900) / 2000 = -0.95.
  _KW = {'overlong.enabled': True, 'overlong.max_len': 4000, 'overlong.cache_len': 2000}
  _CORRECT = [True, True, False, False]
  _LENGTHS = [100, 3900, 100, 100]

  def test_dler_advantages_see_the_penalty(self):
    rewards, adv = _update('dler', self._CORRECT, self._LENGTHS, [0] * 4, 4, **self._KW)
    shaped = np.array([1.0, 0.05, 0.0, 0.0])
    np.testing.assert_allclose(rewards, shaped, atol=1e-6)
    centred = shaped - shaped.mean()
    want = centred / (np.sqrt(np.mean(centred ** 2)) + 1e-6)
    np.testing.assert_allclose(adv, want, atol=1e-5)
    np.testing.assert_allclose(adv, [1.73, -0.50, -0.62, -0.62], atol=6e-3)  # the issue's

  def test_dler_informative_test_sees_the_penalty(self):
    # [1, 1] with lengths [100, 3900]: equal rewards without shaping, informative with it.
    inp = methods_lib.RewardInputs(correct=[True, True], boxed=[True, True], lengths=[100, 3900],
                                   truncated=[False, False], qids=[0, 0])
    hp = {'max_len': 4000}
    plain = methods_lib.informative('dler', hp, inp, {}, 0, group_size=2)
    shaped = methods_lib.informative(
        'dler', hp, inp._replace(shaping=jnp.asarray([0.0, -0.95])), {}, 0, group_size=2)
    self.assertEqual(plain.tolist(), [False])
    self.assertEqual(shaped.tolist(), [True])

  @parameterized.named_parameters(('grpo', 'grpo'), ('length_penalty', 'length_penalty'),
                                  ('hapo', 'hapo'), ('laser', 'laser'))
  def test_group_baseline_methods(self, method):
    plain, _ = _update(method, self._CORRECT, self._LENGTHS, [0] * 4, 4)
    rewards, adv = _update(method, self._CORRECT, self._LENGTHS, [0] * 4, 4, **self._KW)
    penalty = np.array([0.0, -0.95, 0.0, 0.0])
    np.testing.assert_allclose(rewards, plain + penalty, atol=1e-6)
    np.testing.assert_allclose(adv, rewards - rewards.mean(), atol=1e-6)

  def test_grpo_hand_computed(self):
    _, adv = _update('grpo', self._CORRECT, self._LENGTHS, [0] * 4, 4, **self._KW)
    # rewards [1, 0.05, 0, 0], mean 0.2625.
    np.testing.assert_allclose(adv, [0.7375, -0.2125, -0.2625, -0.2625], atol=1e-6)

  @parameterized.named_parameters(('ceeh_me', 'ceeh_me'), ('ceeh_ea', 'ceeh_ea'))
  def test_ceeh(self, method):
    # First batch: no length reward yet; base rewards 1, 1, 0.1 (boxed), 0.1.
    rewards, adv = _update(method, self._CORRECT, self._LENGTHS, [0] * 4, 4, **self._KW)
    np.testing.assert_allclose(rewards, [1.0, 0.05, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(adv, [0.7375, -0.2125, -0.2625, -0.2625], atol=1e-6)

  def test_egrc_refuses_overlong(self):
    with self.assertRaisesRegex(config_check.ConfigError, 'egrc'):
      config_check.validate(_config('egrc', **self._KW), num_devices=1)
    inp = methods_lib.RewardInputs(correct=[True] * 2, boxed=[True] * 2, lengths=[1, 2],
                                   truncated=[False] * 2, qids=[0, 0], shaping=[0.0, -1.0])
    with self.assertRaisesRegex(ValueError, 'egrc'):
      methods_lib.compute('egrc', {}, inp, {}, 0, group_size=2)


class LaserDTest(parameterized.TestCase):

  @parameterized.named_parameters(('g8', 8, (6, 3, 1)), ('g12', 12, (8, 4, 1)),
                                  ('g4', 4, (3, 2, 1)), ('g3', 3, (2, 1, 1)))
  def test_fewest_correct(self, g, want):
    self.assertEqual(history_lib.laser_d_min_correct(g), want)
    # Each count is the smallest k whose accuracy k/G still lands in the bucket.
    easy, medium, _ = want
    self.assertGreaterEqual(easy / g, 2 / 3 - 1e-9)
    self.assertLess((easy - 1) / g, 2 / 3 - 1e-9)
    self.assertGreaterEqual(medium / g, 1 / 3 - 1e-9)
    self.assertLess((medium - 1) / g, 1 / 3 - 1e-9)

  def test_issue_example_g8(self):
    # 24 easy-bucket lengths (3 all-correct groups of 8); 4th shortest 4000, 5th 6000.
    # c = 6: P(len <= L) >= 1/6 needs ceil(24/6) = 4 responses -> 4000 -> grid 4096.
    lengths = np.full(24, 9000.0)
    lengths[:5] = [1000, 2000, 3000, 4000, 6000]
    bucket = jnp.zeros(24, jnp.int32)
    targets = history_lib.laser_d_batch_targets(jnp.asarray(lengths), bucket, 8, budget=16384.0,
                                                min_target=1024.0, interval=1024.0)
    self.assertEqual(float(targets[0]), 4096.0)

  def test_g12_medium(self):
    # 12 medium-bucket lengths (c = 4): ceil(12/4) = 3rd shortest, 2500 -> grid 3072.
    lengths = jnp.asarray([100.0, 2000, 2500] + [8000] * 9)
    targets = history_lib.laser_d_batch_targets(lengths, jnp.ones(12, jnp.int32), 12,
                                                budget=16384.0, min_target=1024.0,
                                                interval=1024.0)
    self.assertEqual(float(targets[1]), 3072.0)


class HapoUnsetTest(absltest.TestCase):

  def test_zero_length_history_is_set_not_reset(self):
    state = {'min_len': jnp.asarray([history_lib.UNSET, 0.0])}
    # q1 holds a real 0-length history: a correct answer of 0 tokens scores f = cos(0) = 1,
    # a longer one the floor; q0 is unset and gets no length term.
    rewards, new = history_lib.hapo_rewards(jnp.asarray([True, True, True]),
                                            jnp.asarray([0, 5, 7]), jnp.asarray([1, 1, 0]), state)
    np.testing.assert_allclose(rewards, [2.0, 0.3, 1.0], atol=1e-6)
    np.testing.assert_allclose(new['min_len'], [7.0, 0.0])

  def test_unset_marker_is_not_a_length(self):
    state = history_lib.init_hapo_state(3)
    self.assertFalse(np.any(np.asarray(history_lib.hapo_is_set(state['min_len']))))


class CeehMeScheduleTest(parameterized.TestCase):
  """Batch t of T trains at progress t/T (the released actor's global_steps / T)."""

  @parameterized.named_parameters(
      ('cosine_first', 'cosine', 1, 0.001 * 0.5 * (1 + math.cos(math.pi / 10)), 5.0),
      ('cosine_last', 'cosine', 10, 0.0, 5.0),
      ('anneal_first', 'anneal_weight', 1, 0.001, 1 + 4 * 0.5 * (1 + math.cos(math.pi / 10))),
      ('anneal_last', 'anneal_weight', 10, 0.001, 1.0))
  def test_schedule_values(self, schedule, t, coef, weight):
    config = _config('ceeh_me', **{'ceeh.entropy_schedule': schedule})
    got_coef, got_weight = steps_lib.entropy_schedule(config, jnp.int32(t))
    np.testing.assert_allclose(got_coef, coef, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_weight, weight, rtol=1e-5)

  def test_released_numbers(self):
    config = _config('ceeh_me')
    np.testing.assert_allclose(steps_lib.entropy_schedule(config, 1)[0], 0.000976, atol=5e-7)
    config = _config('ceeh_me', **{'ceeh.entropy_schedule': 'anneal_weight'})
    np.testing.assert_allclose(steps_lib.entropy_schedule(config, 1)[1], 4.90, atol=5e-3)

  @parameterized.named_parameters(('first', 0, 1), ('last', 9, 10))
  def test_train_step_uses_the_batch_index(self, step_before, t):
    """rollout_update moves step to t; train_step's coefficient is the schedule at t."""
    from ceeh_jax.models import qwen2 as qwen2_lib  # pylint: disable=g-import-not-at-top
    from ceeh_jax.models.config import QwenConfig  # pylint: disable=g-import-not-at-top
    model_cfg = QwenConfig.tiny()
    config = _config('ceeh_me', batch_size=1, minibatch_size=4, micro_batch_size=4,
                     **{'sampling.num_samples': 4, 'grpo.kl_coef': 0.0, 'logp_chunk': 4})
    params = flax.linen.unbox(qwen2_lib.Qwen2(model_cfg).init(
        jax.random.key(0), jnp.ones((1, 4), jnp.int32), jnp.arange(4)[None],
        jnp.ones((1, 4), bool))['params'])
    opt = steps_lib.make_optimizer(config)
    state = steps_lib.init_train_state(params, opt, 4, 0, False, 'ceeh_me', {})
    state = state.replace(step=jnp.int32(step_before))
    state, _, adv, hard, _, _ = steps_lib.rollout_update(
        state, jnp.zeros(4, jnp.int32), jnp.asarray([True, False, True, False]),
        jnp.ones(4, bool), jnp.asarray([3, 4, 2, 4], jnp.int32), jnp.zeros(4, bool),
        config=config, group_size=4)
    self.assertEqual(int(state.step), t)
    batch = steps_lib.Batch(
        prompt=jnp.ones((4, 3), jnp.int32), prompt_mask=jnp.ones((4, 3), bool),
        completion=jnp.full((4, 4), 2, jnp.int32), mask=jnp.ones((4, 4), bool),
        old_logp=jnp.zeros((4, 4)), advantages=adv, hard=hard)
    _, metrics = steps_lib.train_step(state, batch, jnp.float32(1.0), config=config,
                                      model_cfg=model_cfg, optimizer=opt)
    want, _ = steps_lib.entropy_schedule(config, t)
    np.testing.assert_allclose(metrics['entropy_coef'], want, rtol=1e-6, atol=1e-12)


if __name__ == '__main__':
  absltest.main()
