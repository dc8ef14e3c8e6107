"""The update guard covers the update itself, and a run never ends as a silent success with a
broken final state (issue 19): NaN/Inf in the optimizer state (as a corrupt restore would
leave) never reaches the params, and the run stops instead of finishing with garbage."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import io
import json
import os
import sys
from unittest import mock


from absl.testing import absltest
from absl.testing import parameterized
import functools
import jax
import jax.numpy as jnp
import numpy as np

import train_util
from ceeh_jax import default_config
from ceeh_jax import errors
from ceeh_jax import main as main_lib
from ceeh_jax import metric_writers
from ceeh_jax import steps as steps_lib
from ceeh_jax import train as train_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig


R, P, M, Q = 4, 6, 5, 3


def _batch(vocab):
  rng = np.random.default_rng(0)
  mask = np.arange(M)[None] < rng.integers(2, M + 1, R)[:, None]
  return steps_lib.Batch(
      prompt=jnp.asarray(rng.integers(1, vocab, (R, P)), jnp.int32),
      prompt_mask=jnp.ones((R, P), bool),
      completion=jnp.asarray(rng.integers(1, vocab, (R, M)) * mask, jnp.int32),
      mask=jnp.asarray(mask), old_logp=jnp.zeros((R, M)),
      advantages=jnp.asarray(rng.normal(size=R), jnp.float32), hard=jnp.zeros(R))


def _poison(opt_state, moment: str, value: float):
  """The optimizer state with `value` written into one entry of every `moment` leaf."""
  def one(path, x):
    if any(getattr(p, 'name', None) == moment for p in path):
      return x.at[(0,) * x.ndim].set(value)
    return x
  return jax.tree_util.tree_map_with_path(one, opt_state)


class TrainStepGuardTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.config = default_config.get_config()
    self.config.batch_size, self.config.sampling.num_samples = 1, R
    self.config.minibatch_size = self.config.micro_batch_size = R
    self.config.optim.lr = 1e-2
    self.config.grpo.kl_coef = 0.0  # no frozen reference to pass (KL: test_kl_reference.py)
    self.model_cfg = QwenConfig.tiny(num_layers=1)
    params = qwen2_lib.init_params(self.model_cfg, jax.random.key(0))
    self.optimizer = steps_lib.make_optimizer(self.config)
    self.state = steps_lib.init_train_state(params, self.optimizer, Q, 0, False, 'ceeh_me', {})
    self.state = self.state.replace(step=jnp.int32(1))
    self.step = jax.jit(functools.partial(steps_lib.train_step, config=self.config,
                                          model_cfg=self.model_cfg, optimizer=self.optimizer))
    self.batch = _batch(self.model_cfg.vocab_size)

  def test_clean_state_updates(self):
    new, m = self.step(self.state, self.batch, jnp.float32(1.0))
    self.assertEqual(int(new.skipped), 0)
    self.assertEqual(float(m['update_skipped']), 0.0)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), new.params, self.state.params)
    self.assertTrue(any(jax.tree.leaves(changed)))

  @parameterized.named_parameters(('nan_first_moment', 'mu', np.nan),
                                  ('inf_second_moment', 'nu', np.inf),
                                  ('nan_second_moment', 'nu', np.nan))
  def test_non_finite_optimizer_state_skips_the_update(self, moment, value):
    state = self.state.replace(opt_state=_poison(self.state.opt_state, moment, value))
    new, m = self.step(state, self.batch, jnp.float32(1.0))
    # The loss and the gradient are finite: a guard on those alone lets this update through.
    self.assertTrue(np.isfinite(float(m['loss'])) and np.isfinite(float(m['grad_norm'])))
    self.assertEqual(float(m['update_skipped']), 1.0)
    self.assertEqual(int(new.skipped), 1)
    self.assertTrue(bool(steps_lib.all_finite(new.params)))
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)       # bitwise kept
    jax.tree.map(np.testing.assert_array_equal, new.opt_state, state.opt_state)  # (NaN == NaN)

  def test_all_finite(self):
    self.assertTrue(bool(steps_lib.all_finite({'a': jnp.ones(3), 'n': jnp.int32(5)})))
    self.assertFalse(bool(steps_lib.all_finite({'a': jnp.ones(3), 'b': jnp.array([1, np.inf])})))
    self.assertTrue(bool(steps_lib.all_finite({})))


class TrainerStopsTest(absltest.TestCase):

  def test_nan_optimizer_state_stops_the_run_with_params_finite(self):
    """NaN moments from the start (as after a corrupt restore): every update is skipped, the
    params stay finite at every checkpoint boundary, no checkpoint is written, and the run
    stops with TooManySkippedUpdates after max_skipped_updates (2 updates a step here)."""
    tmp = self.create_tempdir().full_path
    config = train_util.small_config(tmp, total_steps=5, checkpoint_every=1,
                                     max_skipped_updates=3, **{'data.eval': ''})
    real_init, seen = steps_lib.init_train_state, []

    def poisoned_init(*args, **kwargs):
      state = real_init(*args, **kwargs)
      return state.replace(opt_state=_poison(state.opt_state, 'mu', np.nan))

    def spy_finite(state):
      seen.append((bool(steps_lib.all_finite(state.params)),
                   bool(steps_lib.all_finite(state.opt_state))))
      return real_finite(state)

    real_finite = train_lib.state_finite
    with mock.patch.object(steps_lib, 'init_train_state', poisoned_init), \
        mock.patch.object(train_lib, 'state_finite', spy_finite), \
        self.assertRaisesRegex(train_lib.TooManySkippedUpdates,
                               r'4 updates had a non-finite .* stopping at step 2'):
      train_lib.train_and_evaluate(config, os.path.join(tmp, 'w'))
    self.assertEqual(seen, [(True, False)])  # step 1's checkpoint: params clean, moments NaN
    self.assertEqual(os.listdir(os.path.join(tmp, 'w', 'checkpoints')), [])  # nothing saved
    recs = metric_writers.read_metrics(os.path.join(tmp, 'w'))
    self.assertEqual([r['update_skipped'] for r in recs], [1.0])
    self.assertIsInstance(train_lib.TooManySkippedUpdates('x'), errors.RunError)


class FinalStateCheckTest(parameterized.TestCase):

  def _check(self, params, final_acc, base_acc):
    workdir = self.create_tempdir().full_path
    base_path = os.path.join(workdir, 'base_eval.json')
    with open(base_path, 'w') as f:
      json.dump({'eval/acc': base_acc}, f)
    state = mock.Mock(params=params)
    train_lib.check_final_state(state, {'eval/acc': final_acc}, base_path, workdir)

  @parameterized.named_parameters(('healthy', 0.4, 0.5), ('zero_base', 0.0, 0.0),
                                  ('improved_from_zero', 0.25, 0.0))
  def test_passes(self, final_acc, base_acc):
    self._check({'w': jnp.ones(3)}, final_acc, base_acc)

  def test_accuracy_collapse_is_a_run_failure(self):
    with self.assertRaisesRegex(train_lib.BrokenFinalState, 'collapsed to 0 from 0.500'):
      self._check({'w': jnp.ones(3)}, 0.0, 0.5)

  def test_non_finite_params_are_a_run_failure(self):
    with self.assertRaisesRegex(train_lib.BrokenFinalState, 'NaN or Inf'):
      self._check({'w': jnp.array([1.0, np.nan])}, 0.4, 0.5)

  def test_run_failure_is_one_line_and_exit_1_through_main(self):
    """main.run prints a RunError as `error: <message>` and exits 1 (a UserError: 2)."""
    for exc, code in ((train_lib.BrokenFinalState('the final params hold NaN'), 1),
                      (errors.UserError('bad config'), 2)):
      err = io.StringIO()
      with mock.patch.object(sys, 'argv', ['ceeh_jax.main', '--mode=train']), \
          mock.patch.object(train_lib, 'train_and_evaluate', side_effect=exc), \
          mock.patch.object(main_lib.distributed, 'initialize'), \
          mock.patch.object(sys, 'stderr', err), self.assertRaises(SystemExit) as ctx:
        main_lib.run()
      self.assertEqual(ctx.exception.code, code)
      self.assertEqual(err.getvalue(), f'error: {exc}\n')


if __name__ == '__main__':
  absltest.main()
