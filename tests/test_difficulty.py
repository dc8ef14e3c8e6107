"""CEEH difficulty state and rewards on hand-computed cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ceeh_jax import difficulty as difficulty_lib


def step(state, qids, correct, boxed, lengths, g=4, **kw):
  return difficulty_lib.ceeh_step(state, jnp.asarray(qids, jnp.int32), jnp.asarray(correct),
                                  jnp.asarray(boxed), jnp.asarray(lengths, jnp.int32),
                                  group_size=g, **kw)


def state_of(acc_h, len_x):
  return {'acc_h': jnp.asarray(acc_h, jnp.float32), 'len_x': jnp.asarray(len_x, jnp.float32)}


def test_first_observation_sets_state_and_gives_base_rewards():
  s = difficulty_lib.init_state(3)
  new, rewards, hard, _ = step(s, [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [100, 60, 80, 90])
  # acc = 2/4 = 0.5 sets acc_h[1]; shortest correct 60 sets len_x[1]; others untouched.
  np.testing.assert_allclose(new['acc_h'], [-1, 0.5, -1])
  np.testing.assert_allclose(new['len_x'], [0, 60, 0])
  # len_x unset before the step -> no length reward: 1, 1, 0.1 (boxed wrong), 0 (no box).
  np.testing.assert_allclose(rewards, [1, 1, 0.1, 0])
  # Nothing seen before -> every question counts as hard.
  assert np.asarray(hard).all()


def test_length_reward_uses_state_before_update_and_clamps():
  s = state_of([-1, 0.5], [0, 100])
  # q1: acc 3/4 = 0.75 >= 0.5 passes the gate. Rewards for correct (len_x = 100, λ = 0.1):
  #   L=80 -> 1 + 0.1*(100-80)/100 = 1.02;  L=150 -> 1 + 0.1*(-50)/100 = 0.95;
  #   L=1100 -> 0.1*(100-1100)/100 = -1.0 -> clamped to -0.9 -> 0.1.
  new, rewards, _, _ = step(s, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [80, 150, 1100, 70])
  np.testing.assert_allclose(rewards, [1.02, 0.95, 0.1, 0.1], atol=1e-6)
  # len_x: shortest correct 80 < 100 -> 100 + 0.2*(80-100) = 96.
  # acc_h: 0.75 > 0.5 rises at 0.2 -> 0.5 + 0.2*0.25 = 0.55.
  np.testing.assert_allclose(new['len_x'][1], 96.0)
  np.testing.assert_allclose(new['acc_h'][1], 0.55)


def test_len_x_moves_slowly_toward_longer_and_acc_falls_slowly():
  s = state_of([0.8], [100])
  new, rewards, _, _ = step(s, [0] * 4, [1, 0, 0, 0], [1, 0, 0, 0], [200, 10, 10, 10])
  # shortest correct 200 > 100: 100 + 0.05*100 = 105; acc 0.25 < 0.8: 0.8 + 0.05*(-0.55).
  np.testing.assert_allclose(new['len_x'][0], 105.0)
  np.testing.assert_allclose(new['acc_h'][0], 0.8 - 0.05 * 0.55)
  # Strict gate: acc 0.25 < acc_h 0.8 -> no length reward at all.
  np.testing.assert_allclose(rewards, [1, 0, 0, 0])


def test_gate_passes_on_equality():
  s = state_of([0.5], [100])
  _, rewards, _, _ = step(s, [0] * 4, [1, 1, 0, 0], [1, 1, 0, 0], [50, 100, 5, 5])
  # acc 0.5 == acc_h 0.5 passes: 1 + 0.1*0.5 = 1.05 and 1 + 0 = 1.
  np.testing.assert_allclose(rewards, [1.05, 1.0, 0, 0], atol=1e-6)


def test_no_correct_leaves_len_x():
  s = state_of([0.5], [100])
  new, _, _, _ = step(s, [0] * 4, [0] * 4, [0] * 4, [5] * 4)
  assert float(new['len_x'][0]) == 100.0
  np.testing.assert_allclose(new['acc_h'][0], 0.5 - 0.05 * 0.5)


def test_hard_threshold_is_mean_over_seen_questions():
  # Seen: q0 0.2, q1 0.8 -> threshold 0.5 (q2 unseen is ignored).
  s = state_of([0.2, 0.8, -1], [10, 10, 0])
  qids = [0] * 4 + [1] * 4 + [2] * 4
  correct = [1, 1, 0, 0] + [1, 1, 1, 0] + [0, 0, 0, 0]  # acc 0.5 (hard: <=), 0.75 (easy), 0
  _, _, hard, m = step(s, qids, correct, correct, [5] * 12)
  np.testing.assert_allclose(m['ceeh/acc_threshold'], 0.5)
  np.testing.assert_array_equal(hard, [True] * 4 + [False] * 4 + [True] * 4)


def test_duplicated_ids_equal_one_group():
  s = state_of([0.5, -1], [100, 0])
  split = step(s, [0] * 4 + [0] * 4, [1, 0, 0, 0, 1, 1, 1, 0], [1] * 8, [90, 1, 1, 1, 70, 80, 95, 1])
  merged = step(s, [0] * 8, [1, 0, 0, 0, 1, 1, 1, 0], [1] * 8, [90, 1, 1, 1, 70, 80, 95, 1], g=8)
  for a, b in zip(jax.tree.leaves(split[:3]), jax.tree.leaves(merged[:3])):
    np.testing.assert_allclose(a, b)
  # acc = 4/8 = 0.5 == acc_h -> gate passes; shortest 70 -> len_x 100 + 0.2*(-30) = 94.
  np.testing.assert_allclose(split[0]['len_x'][0], 94.0)


def test_compat_quirks():
  s = state_of([0.0, 0.6, -1, -1], [50, 10, 0, 0])
  qids = [0] * 4 + [1] * 4
  correct = [1, 1, 0, 0] + [1, 0, 0, 0]
  new_c, _, hard_c, m_c = step(s, qids, correct, correct, [40] * 8, compat=True)
  new_d, _, hard_d, m_d = step(s, qids, correct, correct, [40] * 8)
  # compat mean over all 4 with -1 for unseen: (0 + 0.6 - 1 - 1)/4 = -0.35; default: 0.3.
  np.testing.assert_allclose(m_c['ceeh/acc_threshold'], -0.35)
  np.testing.assert_allclose(m_d['ceeh/acc_threshold'], 0.3)
  assert not np.asarray(hard_c).any()          # nothing is <= -0.35
  # compat: acc_h 0 is "unset" -> overwritten by 0.5; default: EMA 0 + 0.2*0.5 = 0.1.
  np.testing.assert_allclose(new_c['acc_h'][0], 0.5)
  np.testing.assert_allclose(new_d['acc_h'][0], 0.1)


def test_jit_matches_eager_and_bad_qids_raise():
  s = state_of([0.5, 0.2], [100, 30])
  args = ([0] * 4 + [1] * 4, [1, 0, 1, 0, 0, 0, 0, 1], [1] * 8, [80, 5, 120, 5, 3, 3, 3, 20])
  eager = step(s, *args)
  jitted = jax.jit(lambda st, *a: difficulty_lib.ceeh_step(st, *a, group_size=4))(
      s, *(jnp.asarray(a) for a in args))
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  with pytest.raises(ValueError, match='question id 7 is outside'):
    difficulty_lib.check_qids([0, 7], 2)
  with pytest.raises(ValueError, match='question id -1'):
    difficulty_lib.check_qids([-1], 2)
