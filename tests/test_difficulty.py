"""CEEH difficulty state and rewards on hand-computed cases."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np

from ceeh_jax import difficulty as difficulty_lib


# Jitted with every keyword static: one compile per case instead of one per op (fast suite);
# eager behaviour is covered by the jit-vs-eager and bad-id tests.
_KW = ('group_size', 'lam', 'min_len_reward', 'acc_up', 'acc_down', 'len_shorter', 'len_longer',
       'reward_correct', 'reward_boxed', 'reward_none', 'compat', 'check_ids')
_jitted_step = jax.jit(difficulty_lib.ceeh_step, static_argnames=_KW)


def step(state, qids, correct, boxed, lengths, g=4, eager=False, **kw):
  fn = difficulty_lib.ceeh_step if eager else _jitted_step
  return fn(state, jnp.asarray(qids, jnp.int32), jnp.asarray(correct, bool),
                                  jnp.asarray(boxed, bool), jnp.asarray(lengths, jnp.int32),
                                  group_size=g, **kw)


def state_of(acc_h, len_x):
  return {'acc_h': jnp.asarray(acc_h, jnp.float32), 'len_x': jnp.asarray(len_x, jnp.float32)}


def _random_batch(seed, q=5, r=24):
  rng = np.random.default_rng(seed)
  qids = rng.integers(0, q, r).astype(np.int32)   # duplicates across groups on purpose
  correct = rng.random(r) < 0.5
  boxed = correct | (rng.random(r) < 0.5)
  lengths = rng.integers(1, 500, r).astype(np.int32)
  return qids, correct, boxed, lengths


class DifficultyTest(parameterized.TestCase):

  def test_init_state(self):
    s = difficulty_lib.init_state(3)
    np.testing.assert_array_equal(s['acc_h'], [-1, -1, -1])
    np.testing.assert_array_equal(s['len_x'], [0, 0, 0])
    self.assertEqual(s['acc_h'].dtype, s['len_x'].dtype)
    self.assertEqual(s['len_x'].dtype, jnp.float32)
    with self.assertRaisesRegex(ValueError, 'positive'):
      difficulty_lib.init_state(0)

  def test_first_observation_sets_state_and_gives_base_rewards(self):
    s = difficulty_lib.init_state(3)
    new, rewards, hard, m = step(s, [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [100, 60, 80, 90])
    # acc = 2/4 = 0.5 sets acc_h[1]; shortest correct 60 sets len_x[1]; others untouched.
    np.testing.assert_allclose(new['acc_h'], [-1, 0.5, -1])
    np.testing.assert_allclose(new['len_x'], [0, 60, 0])
    # len_x unset before the step -> no length reward: 1, 1, 0.1 (boxed wrong), 0 (no box).
    np.testing.assert_allclose(rewards, [1, 1, 0.1, 0])
    # Nothing seen before -> threshold 1 -> every question counts as hard.
    self.assertEqual(float(m['ceeh/acc_threshold']), 1.0)
    self.assertTrue(np.asarray(hard).all())
    self.assertEqual(hard.dtype, bool)
    self.assertEqual(float(m['ceeh/seen']), 1)
    self.assertEqual(float(m['ceeh/new_questions']), 1)
    self.assertEqual(float(m['ceeh/acc_mean']), 0.5)
    self.assertEqual(float(m['ceeh/hard_questions']), 1.0)

  def test_base_rewards_are_arguments(self):
    # The authors' earlier reward: 1 / -0.5 / -1.
    _, rewards, _, _ = step(difficulty_lib.init_state(1), [0] * 3, [1, 0, 0], [1, 1, 0], [5] * 3,
                            g=3, reward_correct=1.0, reward_boxed=-0.5, reward_none=-1.0)
    np.testing.assert_allclose(rewards, [1.0, -0.5, -1.0])

  def test_acc_h_rises_fast_and_falls_slow(self):
    s = state_of([0.5, 0.5], [10, 10])
    qids = [0] * 4 + [1] * 4
    correct = [1, 1, 1, 1] + [0, 0, 0, 0]  # acc(0) = 1.0, acc(1) = 0.0
    new, _, _, _ = step(s, qids, correct, correct, [5] * 8)
    # q0 rises: 0.5 + 0.2*(1 - 0.5) = 0.6.  q1 falls: 0.5 + 0.05*(0 - 0.5) = 0.475.
    np.testing.assert_allclose(new['acc_h'], [0.6, 0.475], rtol=1e-6)
    # Rates are arguments: rise 0.5 -> 0.75, fall 0.1 -> 0.45.
    new, _, _, _ = step(s, qids, correct, correct, [5] * 8, acc_up=0.5, acc_down=0.1)
    np.testing.assert_allclose(new['acc_h'], [0.75, 0.45], rtol=1e-6)

  def test_len_x_toward_shorter_fast_and_longer_slow(self):
    s = state_of([0.5, 0.5], [100, 100])
    qids = [0] * 4 + [1] * 4
    correct = [1, 1, 0, 0] + [1, 1, 0, 0]
    lengths = [80, 90, 10, 10] + [200, 300, 10, 10]  # wrong answers' lengths never count
    new, _, _, _ = step(s, qids, correct, correct, lengths)
    # q0: shortest correct 80 < 100 -> 100 + 0.2*(80 - 100) = 96.
    # q1: shortest correct 200 > 100 -> 100 + 0.05*(200 - 100) = 105.
    np.testing.assert_allclose(new['len_x'], [96.0, 105.0])

  def test_length_reward_uses_state_before_update_and_clamps(self):
    s = state_of([-1, 0.5], [0, 100])
    # q1: acc 3/4 = 0.75 >= 0.5 passes the gate. Rewards for correct (len_x = 100, λ = 0.1):
    #   L=80   -> 1 + 0.1*(100-80)/100 = 1.02;  L=150 -> 1 + 0.1*(-50)/100 = 0.95;
    #   L=1100 -> 0.1*(100-1100)/100 = -1.0 -> clamped to -0.9 -> 1 - 0.9 = 0.1.
    # The wrong boxed answer gets 0.1 and no length term (L=70 is short but wrong).
    new, rewards, _, m = step(s, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [80, 150, 1100, 70])
    np.testing.assert_allclose(rewards, [1.02, 0.95, 0.1, 0.1], atol=1e-6)
    # Length rewards 0.02 - 0.05 - 0.9 = -0.93: mean over 4 rows, and over the 3 correct ones.
    np.testing.assert_allclose(m['ceeh/length_reward'], -0.93 / 4, rtol=1e-5)
    np.testing.assert_allclose(m['ceeh/length_reward_correct'], -0.93 / 3, rtol=1e-5)
    self.assertEqual(float(m['ceeh/length_reward_gated']), 0.75)
    # Rewards used len_x = 100 (before); afterwards len_x = 100 + 0.2*(80-100) = 96 and
    # acc_h = 0.5 + 0.2*(0.75-0.5) = 0.55.
    np.testing.assert_allclose(new['len_x'][1], 96.0)
    np.testing.assert_allclose(new['acc_h'][1], 0.55)
    # λ and the clamp are arguments: λ = 1, clamp -0.5 -> 1 + 0.2, 1 - 0.5 (clamped), 1 - 0.5.
    _, rewards, _, _ = step(s, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [80, 150, 1100, 70],
                            lam=1.0, min_len_reward=-0.5)
    np.testing.assert_allclose(rewards, [1.2, 0.5, 0.5, 0.1], atol=1e-6)

  def test_strict_gate(self):
    # acc 0.5 == acc_h 0.5 passes: L=50 -> 1 + 0.1*0.5 = 1.05, L=100 -> 1 + 0 = 1.
    _, rewards, _, _ = step(state_of([0.5], [100]), [0] * 4, [1, 1, 0, 0], [1, 1, 0, 0],
                            [50, 100, 5, 5])
    np.testing.assert_allclose(rewards, [1.05, 1.0, 0, 0], atol=1e-6)
    # acc 0.5 < acc_h 0.6 fails: plain base rewards even for the short correct answer.
    _, rewards, _, _ = step(state_of([0.6], [100]), [0] * 4, [1, 1, 0, 0], [1, 1, 0, 0],
                            [50, 100, 5, 5])
    np.testing.assert_allclose(rewards, [1.0, 1.0, 0, 0])

  def test_unset_states(self):
    # acc_h set but len_x unset: no length reward; the first correct length sets len_x.
    new, rewards, _, _ = step(state_of([0.2], [0]), [0] * 4, [1, 0, 0, 0], [1] * 4, [40, 5, 5, 5])
    np.testing.assert_allclose(rewards, [1.0, 0.1, 0.1, 0.1])
    self.assertEqual(float(new['len_x'][0]), 40.0)
    # No correct response: len_x stays as it was (set or unset), acc_h still moves.
    new, _, _, _ = step(state_of([0.5, -1], [100, 0]), [0] * 4 + [1] * 4, [0] * 8, [0] * 8,
                        [5] * 8)
    np.testing.assert_array_equal(new['len_x'], [100, 0])
    np.testing.assert_allclose(new['acc_h'], [0.5 - 0.05 * 0.5, 0.0])  # q1 first seen at acc 0
    # Questions outside the batch are untouched.
    new, _, _, _ = step(state_of([0.3, 0.7, -1], [9, 11, 0]), [1] * 4, [1] * 4, [1] * 4, [4] * 4)
    np.testing.assert_allclose(np.asarray(new['acc_h'])[[0, 2]], [0.3, -1])
    np.testing.assert_allclose(np.asarray(new['len_x'])[[0, 2]], [9, 0])

  def test_hard_threshold_is_mean_over_seen_questions(self):
    # Seen: q0 0.2, q1 0.8 -> threshold 0.5 (q2 unseen is ignored).
    s = state_of([0.2, 0.8, -1], [10, 10, 0])
    qids = [0] * 4 + [1] * 4 + [2] * 4
    correct = [1, 1, 0, 0] + [1, 1, 1, 0] + [0, 0, 0, 0]  # acc 0.5 (hard: <=), 0.75 (easy), 0
    _, _, hard, m = step(s, qids, correct, correct, [5] * 12)
    np.testing.assert_allclose(m['ceeh/acc_threshold'], 0.5)
    np.testing.assert_array_equal(hard, [True] * 4 + [False] * 4 + [True] * 4)
    np.testing.assert_allclose(m['ceeh/hard_questions'], 2 / 3)
    np.testing.assert_allclose(m['ceeh/hard_responses'], 8 / 12)
    # acc_h 0 is a seen question in the default mode: (0 + 0.6)/2 = 0.3.
    _, _, _, m = step(state_of([0.0, 0.6], [0, 0]), [0] * 4, [0] * 4, [0] * 4, [5] * 4)
    np.testing.assert_allclose(m['ceeh/acc_threshold'], 0.3)

  def test_duplicated_ids_equal_one_group(self):
    s = state_of([0.5, -1, 0.4], [100, 0, 50])
    correct = [1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    lengths = [90, 1, 1, 1, 7, 7, 20, 30, 70, 80, 95, 1]
    # q0 in groups 0 and 2, q2 in group 1: same as q0 in one group of 8.
    split = step(s, [0] * 4 + [2] * 4 + [0] * 4, correct, [1] * 12, lengths)
    order = [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7]
    merged = step(s, [0] * 8 + [2] * 4, np.take(correct, order), [1] * 12, np.take(lengths, order),
                  g=4)
    jax.tree.map(np.testing.assert_allclose, split[0], merged[0])
    jax.tree.map(np.testing.assert_allclose, split[3], merged[3])
    np.testing.assert_allclose(np.take(split[1], order), merged[1])
    np.testing.assert_array_equal(np.take(split[2], order), merged[2])
    # q0: acc = 4/8 = 0.5 == acc_h -> gate passes (1 + 0.1*(100-70)/100 = 1.03 for L=70);
    # shortest 70 -> len_x 100 + 0.2*(70-100) = 94. q2: acc 2/4 = 0.5 >= 0.4, shortest 20.
    np.testing.assert_allclose(split[1][8], 1.03, rtol=1e-6)
    np.testing.assert_allclose(split[0]['len_x'], [94.0, 0.0, 50 + 0.2 * (20 - 50)])
    np.testing.assert_allclose(split[0]['acc_h'], [0.5, -1, 0.4 + 0.2 * 0.1])

  def test_compat_threshold_counts_unseen_as_minus_one(self):
    s = state_of([0.2, 0.6, -1, -1], [10, 10, 0, 0])
    qids = [0] * 4 + [1] * 4
    correct = [0, 0, 0, 0] + [1, 0, 0, 0]  # acc 0 and 0.25
    _, _, hard_c, m_c = step(s, qids, correct, correct, [40] * 8, compat=True)
    _, _, hard_d, m_d = step(s, qids, correct, correct, [40] * 8)
    # compat: (0.2 + 0.6 - 1 - 1)/4 = -0.3 -> nothing is hard; default: (0.2 + 0.6)/2 = 0.4.
    np.testing.assert_allclose(m_c['ceeh/acc_threshold'], -0.3, rtol=1e-6)
    np.testing.assert_allclose(m_d['ceeh/acc_threshold'], 0.4, rtol=1e-6)
    self.assertFalse(np.asarray(hard_c).any())
    self.assertTrue(np.asarray(hard_d).all())
    # compat with nothing seen: threshold -1, nothing hard (default: everything hard).
    _, _, hard_c, _ = step(difficulty_lib.init_state(2), [0] * 4, [1] * 4, [1] * 4, [5] * 4,
                           compat=True)
    self.assertFalse(np.asarray(hard_c).any())

  def test_compat_acc_h_zero_is_unset(self):
    s = state_of([0.0], [100])
    args = ([0] * 4, [1, 1, 0, 0], [1] * 4, [50, 100, 5, 5])
    new_c, rew_c, _, _ = step(s, *args, compat=True)
    new_d, rew_d, _, _ = step(s, *args)
    # compat: acc_h 0 is unset -> overwritten by acc 0.5; default: EMA 0 + 0.2*0.5 = 0.1.
    np.testing.assert_allclose(new_c['acc_h'], [0.5])
    np.testing.assert_allclose(new_d['acc_h'], [0.1])
    # Gate: both pass (0.5 >= 0, len_x set): L=50 -> 1.05. The released gate checks only
    # current_acc < acc_records, so compat does not ask for a set acc_h either.
    np.testing.assert_allclose(rew_d, [1.05, 1.0, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(rew_c, [1.05, 1.0, 0.1, 0.1], atol=1e-6)

  @parameterized.named_parameters(('default', False), ('compat', True))
  def test_jit_matches_eager_over_several_batches(self, compat):
    fn = functools.partial(difficulty_lib.ceeh_step, group_size=4, compat=compat)
    jitted = jax.jit(fn)
    se = sj = difficulty_lib.init_state(5)
    for seed in range(3):
      batch = tuple(jnp.asarray(x) for x in _random_batch(seed))
      eager = fn(se, *batch)
      jit_out = jitted(sj, *batch)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jit_out)
      se, sj = eager[0], jit_out[0]
    self.assertGreater(float((se['acc_h'] >= 0).sum()), 0)

  def test_bad_qids_are_errors(self):
    with self.assertRaisesRegex(ValueError, 'question id 7 is outside'):
      difficulty_lib.check_qids([0, 7], 2)
    with self.assertRaisesRegex(ValueError, 'question id -1'):
      difficulty_lib.check_qids([-1], 2)
    with self.assertRaisesRegex(TypeError, 'integers'):
      difficulty_lib.check_qids(np.asarray([0.0]), 2)
    difficulty_lib.check_qids(np.asarray([0, 1], np.int32), 2)
    s = state_of([0.5, 0.5], [10, 10])
    args = ([0, 0, 2, 2], [1, 0, 1, 0], [1] * 4, [5] * 4)
    # Eager: checked on the host right away.
    with self.assertRaisesRegex(ValueError, 'question id 2 is outside'):
      step(s, *args, g=2, eager=True)
    # Under jit with checkify: a runtime error naming the id.
    fn = checkify.checkify(functools.partial(difficulty_lib.ceeh_step, group_size=2,
                                             check_ids=True))
    err, _ = jax.jit(fn)(s, *(jnp.asarray(a) for a in args))
    with self.assertRaisesRegex(checkify.JaxRuntimeError, 'question id 2 is outside'):
      err.throw()
    err, _ = jax.jit(fn)(s, *(jnp.asarray(a) for a in ([0, 0, 1, 1],) + args[1:]))
    err.throw()  # valid ids: no error
    # Plain jit: the bad rows get NaN rewards (never a clipped id) and the state is untouched
    # for them; q0 still updates.
    new, rewards, _, m = jax.jit(functools.partial(difficulty_lib.ceeh_step, group_size=2))(
        s, *(jnp.asarray(a) for a in args))
    # q0: acc 1/2 == acc_h -> gate passes: L=5 -> 1 + 0.1*(10-5)/10 = 1.05, wrong boxed 0.1;
    # len_x 10 + 0.2*(5-10) = 9, acc_h stays 0.5. q1 is not in the batch.
    self.assertTrue(np.isnan(rewards[2:]).all())
    np.testing.assert_allclose(rewards[:2], [1.05, 0.1], rtol=1e-6)
    np.testing.assert_allclose(new['acc_h'], [0.5, 0.5])
    np.testing.assert_allclose(new['len_x'], [9.0, 10.0])
    self.assertEqual(float(m['ceeh/bad_qids']), 2)

  def test_input_checks(self):
    s = difficulty_lib.init_state(2)
    with self.assertRaisesRegex(ValueError, 'whole groups'):
      step(s, [0] * 6, [1] * 6, [1] * 6, [5] * 6, g=4)
    with self.assertRaisesRegex(ValueError, 'lengths has shape'):
      difficulty_lib.ceeh_step(s, jnp.zeros(4, jnp.int32), jnp.ones(4, bool), jnp.ones(4, bool),
                               jnp.ones(3, jnp.int32), group_size=4)
    with self.assertRaisesRegex(TypeError, 'integers'):
      difficulty_lib.ceeh_step(s, jnp.zeros(4), jnp.ones(4, bool), jnp.ones(4, bool),
                               jnp.ones(4, jnp.int32), group_size=4)
    with self.assertRaisesRegex(ValueError, 'positive Python int'):
      step(s, [0] * 4, [1] * 4, [1] * 4, [5] * 4, g=0)


if __name__ == '__main__':
  absltest.main()
