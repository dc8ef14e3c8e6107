"""train_and_evaluate: smoke, resume == uninterrupted, corrupt checkpoints, data integrity, NaNs."""
import json
import os
import shutil

import numpy as np
import pytest

import train_util
from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import config_check
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import losses as losses_lib
from ceeh_jax import metric_writers
from ceeh_jax import train as train_lib


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  d = tmp_path_factory.mktemp('full')
  config = train_util.small_config(str(d), total_steps=4)
  record = train_lib.train_and_evaluate(config, str(d / 'w'))
  return d, config, record


def test_smoke_logs_every_step_once(uninterrupted):
  d, _, record = uninterrupted
  assert record['step'] == 4
  steps = [r['step'] for r in metric_writers.read_metrics(str(d / 'w'))]
  assert steps == [1, 2, 3, 4]
  assert (d / 'w' / 'report.md').exists() and 'easy' in (d / 'w' / 'report.md').read_text()
  for key in ('acc', 'length', 'entropy', 'hard_fraction', 'clip/high', 'kl', 'grad_norm',
              'tokens_per_s', 'time/rollout', 'time/grade', 'time/train', 'reward/mean',
              'train/easy/length', 'train/hard/entropy', 'train/hard/pass@k'):
    assert key in record, key
  evals = [r for r in metric_writers.read_metrics(str(d / 'w')) if 'eval/acc' in r]
  assert [r['step'] for r in evals] == [2, 4]


def test_resume_equals_uninterrupted(uninterrupted, tmp_path):
  d, config, _ = uninterrupted
  w = str(tmp_path / 'w')
  config4 = train_util.small_config(str(tmp_path), total_steps=4)
  train_lib.train_and_evaluate(config4, w, stop_after=2)   # "preempted" after step 2
  assert fingerprint_lib.fingerprint(w)['step'] == 2
  # The same command resumes at step 2 with the difficulty state intact.
  train_lib.train_and_evaluate(config4, w)
  a = fingerprint_lib.fingerprint(w)
  b = fingerprint_lib.fingerprint(str(d / 'w'))
  assert a['step'] == b['step'] == 4
  assert a['parts'] == b['parts'], 'resumed run diverged from the uninterrupted one'
  steps = [r['step'] for r in metric_writers.read_metrics(w)]
  assert steps == [1, 2, 3, 4]
  _, state = fingerprint_lib.load_latest_state(w)
  assert (state['difficulty']['acc_h'] >= 0).sum() > 0  # questions were seen and kept


def test_corrupt_latest_checkpoint_falls_back(uninterrupted, tmp_path, capsys):
  d, _, _ = uninterrupted
  w = tmp_path / 'w'
  shutil.copytree(d / 'w', w)
  latest = w / 'checkpoints' / '4'
  for root, _, files in os.walk(latest / 'state'):
    for f in files:
      p = os.path.join(root, f)
      with open(p, 'r+b') as fh:
        fh.truncate(max(0, os.path.getsize(p) // 3))
  fp = fingerprint_lib.fingerprint(str(w))
  assert fp['step'] == 2                     # the previous good one
  config = train_util.small_config(str(tmp_path), total_steps=4)
  train_lib.train_and_evaluate(config, str(w))
  assert 'unreadable' in capsys.readouterr().out
  assert fingerprint_lib.fingerprint(str(w))['parts'] == fingerprint_lib.fingerprint(
      str(d / 'w'))['parts']


def test_resume_against_other_data_is_an_error(uninterrupted, tmp_path):
  d, _, _ = uninterrupted
  w = tmp_path / 'w'
  shutil.copytree(d / 'w', w)
  config = train_util.small_config(str(tmp_path), total_steps=5)
  # Reorder the training file: same ids, different order.
  src = w / 'data' / 'synthetic_train_24_seed0.jsonl'
  rows = open(src).read().splitlines()
  other = tmp_path / 'reordered.jsonl'
  other.write_text('\n'.join(rows[::-1]) + '\n')
  config.data.train = str(other)
  with pytest.raises(ckpt_lib.DataMismatchError, match='fingerprint'):
    train_lib.train_and_evaluate(config, str(w))


def test_nan_updates_skipped_then_run_stops(tmp_path, monkeypatch):
  real = losses_lib.group_advantages
  monkeypatch.setattr(losses_lib, 'group_advantages', lambda r, g, **kw: real(r, g, **kw) * np.nan)
  config = train_util.small_config(str(tmp_path), total_steps=6, max_skipped_updates=3)
  with pytest.raises(train_lib.TooManySkippedUpdates, match='non-finite'):
    train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
  recs = metric_writers.read_metrics(str(tmp_path / 'w'))
  assert all(r['update_skipped'] == 1.0 for r in recs if 'update_skipped' in r)


@pytest.mark.parametrize('key,value,match', [
    ('batch_size', 0, 'batch_size must be a positive'),
    ('sampling.num_samples', 1, 'num_samples must be >= 2'),
    ('minibatch_size', 7, 'divisible by config.minibatch_size'),
    ('mesh.shape', (3, 1, 1), 'does not divide'),
    ('mesh.shape', (1, 2, 1), 'divisible by the data axes'),
    ('method', 'ceeh_mee', 'config.method must be one of'),
    ('grpo.kl_kind', 'k4', 'kl_kind'),
])
def test_config_validation_names_the_key(tmp_path, key, value, match):
  overrides = {key: value}
  if key == 'mesh.shape' and value == (1, 2, 1):
    overrides['batch_size'] = 3
    overrides['minibatch_size'] = 12
  config = train_util.small_config(str(tmp_path), **overrides)
  with pytest.raises(config_check.ConfigError, match=match):
    config_check.validate(config)


def test_misspelled_override_fails_loudly(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'ceeh_jax.main', '--config=configs/tiny.py',
                        '--config.sampling.num_sample=4', f'--workdir={tmp_path}'],
                       cwd=root, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert 'num_sample' in out.stderr


_SLOW = pytest.mark.slow  # ~20 s each on 2 cores; three representative ones stay in the default run


@pytest.mark.parametrize('method', ['egrc', 'entra', 'hapo'] + [
    pytest.param(m, marks=_SLOW) for m in ('grpo', 'length_penalty', 'ceeh_ea', 'thinkprune',
                                           'dler', 'laser', 'laser_d', 'grpo_lambda',
                                           'arora_zanette')])
def test_every_method_trains_end_to_end(tmp_path, method):
  config = train_util.small_config(str(tmp_path), method=method, total_steps=2, eval_every=0,
                                   **{'data.eval_size': 0, 'overlong.enabled': method == 'dler',
                                      'overlong.max_len': 12, 'overlong.cache_len': 4})
  if method == 'egrc':  # one compression step, then one exploration step
    config.method_hparams = {'stage_steps': 1}
  record = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
  assert record['step'] == 2 and np.isfinite(record['loss'])
  if method == 'egrc':
    recs = metric_writers.read_metrics(str(tmp_path / 'w'))
    assert recs[0]['temperature'] != recs[1]['temperature']
