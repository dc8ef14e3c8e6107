"""train_and_evaluate: smoke, resume == uninterrupted, corrupt checkpoints, data integrity, NaNs."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import contextlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import config_check
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import losses as losses_lib
from ceeh_jax import metric_writers
from ceeh_jax import train as train_lib


class ResumeTest(absltest.TestCase):
  """Against one uninterrupted 4-step run (`uninterrupted`: its dir, config and last record)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    d = test_util.class_tempdir(cls)
    config = test_util.small_config(str(d), total_steps=4)
    record = train_lib.train_and_evaluate(config, str(d / 'w'))
    cls.uninterrupted = d, config, record

  def test_smoke_logs_every_step_once(self):
    d, _, record = self.uninterrupted
    self.assertEqual(record['step'], 4)
    steps = [r['step'] for r in metric_writers.read_metrics(str(d / 'w'))]
    self.assertEqual(steps, [1, 2, 3, 4])
    self.assertTrue((d / 'w' / 'report.md').exists())
    self.assertIn('easy', (d / 'w' / 'report.md').read_text())
    for key in ('acc', 'length', 'entropy', 'hard_fraction', 'clip/high', 'kl', 'grad_norm',
                'tokens_per_s', 'time/rollout', 'time/grade', 'time/train', 'reward/mean',
                'train/easy/length', 'train/hard/entropy', 'train/hard/pass@k'):
      self.assertIn(key, record, key)
    evals = [r for r in metric_writers.read_metrics(str(d / 'w')) if 'eval/acc' in r]
    self.assertEqual([r['step'] for r in evals], [2, 4])

  def test_resume_equals_uninterrupted(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    d, config, _ = self.uninterrupted
    w = str(tmp_path / 'w')
    config4 = test_util.small_config(str(tmp_path), total_steps=4)
    train_lib.train_and_evaluate(config4, w, stop_after=2)   # "preempted" after step 2
    self.assertEqual(fingerprint_lib.fingerprint(w)['step'], 2)
    # The same command resumes at step 2 with the difficulty state intact.
    train_lib.train_and_evaluate(config4, w)
    a = fingerprint_lib.fingerprint(w)
    b = fingerprint_lib.fingerprint(str(d / 'w'))
    self.assertEqual(a['step'], b['step'])
    self.assertEqual(b['step'], 4)
    self.assertEqual(a['parts'], b['parts'], 'resumed run diverged from the uninterrupted one')
    steps = [r['step'] for r in metric_writers.read_metrics(w)]
    self.assertEqual(steps, [1, 2, 3, 4])
    _, state = fingerprint_lib.load_latest_state(w)
    self.assertGreater((state['difficulty']['acc_h'] >= 0).sum(), 0)  # questions were seen and kept

  def test_corrupt_latest_checkpoint_falls_back(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    d, _, _ = self.uninterrupted
    w = tmp_path / 'w'
    shutil.copytree(d / 'w', w)
    latest = w / 'checkpoints' / '4'
    for root, _, files in os.walk(latest / 'state'):
      for f in files:
        p = os.path.join(root, f)
        with open(p, 'r+b') as fh:
          fh.truncate(max(0, os.path.getsize(p) // 3))
    fp = fingerprint_lib.fingerprint(str(w))
    self.assertEqual(fp['step'], 2)                     # the previous good one
    config = test_util.small_config(str(tmp_path), total_steps=4)
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      train_lib.train_and_evaluate(config, str(w))
    self.assertIn('unreadable', stdout.getvalue())
    self.assertEqual(fingerprint_lib.fingerprint(str(w))['parts'],
                     fingerprint_lib.fingerprint(str(d / 'w'))['parts'])

  def test_resume_against_other_data_is_an_error(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    d, _, _ = self.uninterrupted
    w = tmp_path / 'w'
    shutil.copytree(d / 'w', w)
    config = test_util.small_config(str(tmp_path), total_steps=5)
    # Reorder the training file: same ids, different order.
    src = w / 'data' / 'synthetic_train_24_seed0.jsonl'
    rows = open(src).read().splitlines()
    other = tmp_path / 'reordered.jsonl'
    other.write_text('\n'.join(rows[::-1]) + '\n')
    config.data.train = str(other)
    with self.assertRaisesRegex(ckpt_lib.DataMismatchError, 'fingerprint'):
      train_lib.train_and_evaluate(config, str(w))


class RunFailuresTest(parameterized.TestCase):

  def test_nan_updates_skipped_then_run_stops(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    real = losses_lib.group_advantages
    self.enter_context(mock.patch.object(losses_lib, 'group_advantages',
                                         lambda r, g, **kw: real(r, g, **kw) * np.nan))
    config = test_util.small_config(str(tmp_path), total_steps=6, max_skipped_updates=3)
    with self.assertRaisesRegex(train_lib.TooManySkippedUpdates, 'non-finite'):
      train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    recs = metric_writers.read_metrics(str(tmp_path / 'w'))
    for r in recs:
      if 'update_skipped' in r:
        self.assertEqual(r['update_skipped'], 1.0, r)

  @parameterized.named_parameters(
      ('batch_size', 'batch_size', 0, 'batch_size must be a positive'),
      ('num_samples', 'sampling.num_samples', 1, 'num_samples must be >= 2'),
      ('minibatch_size', 'minibatch_size', 7, 'divisible by config.minibatch_size'),
      ('mesh_does_not_divide', 'mesh.shape', (3, 1, 1), 'does not divide'),
      ('mesh_data_axes', 'mesh.shape', (1, 2, 1), 'divisible by the data axes'),
      ('method', 'method', 'ceeh_mee', 'config.method must be one of'),
      ('kl_kind', 'grpo.kl_kind', 'k4', 'kl_kind'),
  )
  def test_config_validation_names_the_key(self, key, value, match):
    tmp_path = pathlib.Path(self.create_tempdir())
    overrides = {key: value}
    if key == 'mesh.shape' and value == (1, 2, 1):
      overrides['batch_size'] = 3
      overrides['minibatch_size'] = 12
    config = test_util.small_config(str(tmp_path), **overrides)
    with self.assertRaisesRegex(config_check.ConfigError, match):
      config_check.validate(config)

  def test_misspelled_override_fails_loudly(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    out = subprocess.run([sys.executable, '-m', 'ceeh_jax.main', '--config=configs/tiny.py',
                          '--config.sampling.num_sample=4', f'--workdir={tmp_path}'],
                         cwd=test_util.REPO, capture_output=True, text=True, timeout=120)
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('num_sample', out.stderr)


# ~20 s each on 2 cores: three representative methods stay in the default run, the others are
# in the slow tier.
DEFAULT_TIER_METHODS = ('egrc', 'entra', 'hapo')
SLOW_TIER_METHODS = ('grpo', 'length_penalty', 'ceeh_ea', 'thinkprune', 'dler', 'laser', 'laser_d',
                     'grpo_lambda', 'arora_zanette')


class EveryMethodTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(m, m) for m in DEFAULT_TIER_METHODS])
  def test_every_method_trains_end_to_end(self, method):
    self._train_two_steps(method)

  @parameterized.named_parameters(*[(m, m) for m in SLOW_TIER_METHODS])
  @test_util.slow
  def test_every_method_trains_end_to_end_slow(self, method):
    self._train_two_steps(method)

  def _train_two_steps(self, method):
    tmp_path = pathlib.Path(self.create_tempdir())
    config = test_util.small_config(str(tmp_path), method=method, total_steps=2, eval_every=0,
                                    **{'data.eval_size': 0, 'overlong.enabled': method == 'dler',
                                       'overlong.max_len': 12, 'overlong.cache_len': 4})
    if method == 'egrc':  # one compression step, then one exploration step
      config.method_hparams = {'stage_steps': 1}
    record = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    self.assertEqual(record['step'], 2)
    self.assertTrue(np.isfinite(record['loss']))
    if method == 'egrc':
      recs = metric_writers.read_metrics(str(tmp_path / 'w'))
      self.assertNotEqual(recs[0]['temperature'], recs[1]['temperature'])


if __name__ == '__main__':
  absltest.main()
