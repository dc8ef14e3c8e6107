"""What the trainer does for particular methods: DLER dynamic sampling, per-step length limits."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import pathlib
from unittest import mock

from absl.testing import absltest
import numpy as np

from ceeh_jax import data as data_lib
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import methods as methods_lib
from ceeh_jax import metric_writers
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import train as train_lib

B = 4  # prompts per batch in test_util.small_config


def _record_batches(test):
  """Wraps EpochIterator.next so the test sees every batch of prompts the trainer draws."""
  drawn = []
  original = data_lib.EpochIterator.next

  def next_batch(iterator):
    out = original(iterator)
    drawn.append(out.tolist())
    return out

  test.enter_context(mock.patch.object(data_lib.EpochIterator, 'next', next_batch))
  return drawn


def _dler_config(tmp_path, **hparams):
  config = test_util.small_config(str(tmp_path), method='dler', total_steps=2, eval_every=0,
                                  **{'data.eval_size': 0})
  config.method_hparams = hparams
  return config


class TrainerMethodsTest(absltest.TestCase):

  def test_dler_draws_at_most_max_rounds_when_no_group_is_informative(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    # A random model never ends its answer, so every DLER reward is 0: no group is informative,
    # and each step draws exactly max_rounds batches of prompts, then trains on the first B.
    drawn = _record_batches(self)
    train_lib.train_and_evaluate(_dler_config(tmp_path, max_rounds=3), str(tmp_path / 'w'))
    records = metric_writers.read_metrics(str(tmp_path / 'w'))
    self.assertEqual([r['dynamic/draws'] for r in records], [3, 3])
    self.assertEqual([r['dynamic/informative_groups'] for r in records], [0.0, 0.0])
    self.assertLen(drawn, 6)
    # The first step trained on the first draw's prompts (all groups equally uninformative).
    _, state = fingerprint_lib.load_latest_state(str(tmp_path / 'w'))
    seen = set(np.flatnonzero(np.asarray(state['difficulty']['acc_h']) >= 0).tolist())
    self.assertEqual(set(drawn[0]) | set(drawn[3]), seen)

  def test_dler_keeps_informative_groups_from_later_draws(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    # Stub the informativeness check: draw 1 has one informative group (its 1st), draw 2 three
    # (its 1st, 2nd, 4th). Four reach B, so the step stops after 2 draws and trains on exactly
    # those four groups: the difficulty state then knows exactly those questions.
    drawn = _record_batches(self)
    patterns = iter([[True, False, False, False], [True, True, False, True]])
    self.enter_context(mock.patch.object(methods_lib, 'informative',
                                         lambda *a, **k: np.asarray(next(patterns))))
    config = _dler_config(tmp_path, max_rounds=3)
    config.total_steps = 1
    train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    (record,) = metric_writers.read_metrics(str(tmp_path / 'w'))
    self.assertEqual(record['dynamic/draws'], 2)
    self.assertEqual(record['dynamic/informative_groups'], 1.0)
    self.assertLen(drawn, 2)
    want = {drawn[0][0], drawn[1][0], drawn[1][1], drawn[1][3]}
    _, state = fingerprint_lib.load_latest_state(str(tmp_path / 'w'))
    seen = set(np.flatnonzero(np.asarray(state['difficulty']['acc_h']) >= 0).tolist())
    self.assertEqual(seen, want)

  def test_dler_without_dynamic_sampling_draws_once(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    drawn = _record_batches(self)
    train_lib.train_and_evaluate(_dler_config(tmp_path, dynamic_sampling=False),
                                 str(tmp_path / 'w'))
    self.assertLen(drawn, 2)
    self.assertNotIn('dynamic/draws', metric_writers.read_metrics(str(tmp_path / 'w'))[0])

  @test_util.slow
  def test_thinkprune_stage_limits_cap_the_sampler(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    # Limits 6 then 4 tokens from step 1 (max_new_tokens is 12): the sampler is asked for no
    # more than the stage's limit, and a random model, which rarely stops, fills most of it.
    asked = []
    generate = sampler_lib.generate

    def spy(*args, cfg, **kwargs):
      asked.append(cfg.max_new_tokens)
      return generate(*args, cfg=cfg, **kwargs)

    self.enter_context(mock.patch.object(sampler_lib, 'generate', spy))
    config = test_util.small_config(str(tmp_path), method='thinkprune', total_steps=2,
                                    eval_every=0, **{'data.eval_size': 0})
    config.method_hparams = {'limits': (6, 4), 'boundaries': (1,)}
    train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
    self.assertEqual(asked, [6, 4])
    first, second = metric_writers.read_metrics(str(tmp_path / 'w'))
    self.assertGreater(first['length'], 4)
    self.assertLessEqual(first['length'], 6)
    self.assertLessEqual(second['length'], 4)


if __name__ == '__main__':
  absltest.main()
