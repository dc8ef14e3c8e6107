"""Runs that survive kills, bad data and bad outputs (issue: reliability)."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import numpy as np

from ceeh_jax import data as data_lib
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import grading
from ceeh_jax import metric_writers

REPO = str(test_util.REPO)
STEPS = 6

CONFIG_FILE = '''
import sys
sys.path.insert(0, {tests!r})
import test_util


def get_config():
  return test_util.small_config({tmp!r}, total_steps={steps}, checkpoint_every=1)
'''


def _launch(config_path, workdir):
  """Starts a run; its stderr goes to `<workdir>.stderr` (a pipe nobody reads could fill up)."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  with open(f'{workdir}.stderr', 'w') as stderr:
    return subprocess.Popen([sys.executable, '-m', 'ceeh_jax.main', f'--config={config_path}',
                             f'--workdir={workdir}'], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def _finish(proc, workdir):
  """Waits for a run; (exit code, the end of its stderr)."""
  rc = proc.wait(timeout=900)
  return rc, pathlib.Path(f'{workdir}.stderr').read_text()[-3000:]


def _logged_step(workdir) -> int:
  """The newest step in the metrics log (0 if none); a line still being written is ignored."""
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = f.readlines()
  except FileNotFoundError:
    return 0
  step = 0
  for line in lines:
    try:
      step = max(step, json.loads(line)['step'])
    except (ValueError, KeyError):
      pass
  return step


def _checkpointed_step(workdir) -> int:
  """The newest finished checkpoint (orbax renames a checkpoint to its step when complete)."""
  steps = [int(p.name) for p in pathlib.Path(workdir, 'checkpoints').glob('*') if p.name.isdigit()]
  return max(steps, default=0)


def _wait_for_step(proc, workdir, step, limit=None):
  """Waits until `step` is logged, the process exits or `limit` seconds pass; the seconds waited."""
  t0 = time.monotonic()
  while proc.poll() is None and _logged_step(workdir) < step:
    waited = time.monotonic() - t0
    if limit is not None and waited >= limit:
      break
    if waited > 900:
      raise TimeoutError(f'step {step} not logged in 900 s')
    time.sleep(0.02)
  return time.monotonic() - t0


class KillResumeTest(absltest.TestCase):

  @test_util.slow
  def test_sigkill_anywhere_then_resume_equals_uninterrupted(self):
    """SIGKILL the trainer at 5 random moments (start-up, sampling, grading, update, checkpoint
    writes); each restart resumes; the final state is bitwise the uninterrupted one, the log has
    each step once.

    The moments are drawn against the run's own progress, not the clock (a fast machine finishes
    the whole run in seconds): either during start-up and the first step, or during the step
    after the first one a restart logs, and never later than the log line of the step after
    that. So a restart gains at most a step before its kill and all five kills land, however
    fast or slow the machine is.
    """
    tmp_path = pathlib.Path(self.create_tempdir())
    config_path = tmp_path / 'kill_config.py'
    config_path.write_text(CONFIG_FILE.format(tests=str(test_util.TESTS), tmp=str(tmp_path),
                                              steps=STEPS))
    ref_dir = tmp_path / 'ref'
    proc = _launch(config_path, ref_dir)
    logged_at = [_wait_for_step(proc, ref_dir, s) for s in range(1, STEPS + 1)]
    rc, stderr = _finish(proc, ref_dir)
    self.assertEqual(rc, 0, stderr)
    ref = fingerprint_lib.fingerprint(str(ref_dir))
    first_step_s = logged_at[0]                   # start-up + compile + step 1
    step_s = float(np.median(logged_at[1:]))      # one later step, its checkpoint included

    work = tmp_path / 'killed'
    rng = random.Random(0)
    kills = 0
    for _ in range(40):
      proc = _launch(config_path, work)
      if kills < 5:
        first = _checkpointed_step(work) + 1  # the first step this restart runs
        if rng.random() < 0.4:  # start-up, restore, compile or the first step
          _wait_for_step(proc, work, first, limit=rng.uniform(0.1, 0.9) * first_step_s)
        else:                   # the next step: sampling, grading, update or checkpoint write
          _wait_for_step(proc, work, first)
          _wait_for_step(proc, work, first + 1, limit=rng.uniform(0.0, 1.0) * step_s)
        if proc.poll() is None:
          proc.send_signal(signal.SIGKILL)
          proc.wait()
          kills += 1
          continue
      rc, stderr = _finish(proc, work)
      self.assertEqual(rc, 0, stderr)
      if fingerprint_lib.fingerprint(str(work))['step'] == STEPS:
        break
    self.assertEqual(kills, 5)
    got = fingerprint_lib.fingerprint(str(work))
    self.assertEqual(got['step'], STEPS)
    self.assertEqual(got['parts'], ref['parts'])
    steps = [r['step'] for r in metric_writers.read_metrics(str(work))]
    self.assertEqual(steps, list(range(1, STEPS + 1)))


def _malformed_rows(n, rng):
  kinds = [
      lambda i: b'{"id": "x%d", "problem": "p"}' % i,                       # missing answer
      lambda i: b'{"id": "x%d", "problem": 5, "answer": "1"}' % i,          # wrong type
      lambda i: b'{"id": "x%d", "problem": "p", "answer": ""}' % i,         # empty answer
      lambda i: b'{"id": "x%d", "problem": "\xff\xfe", "answer": "1"}' % i,  # invalid UTF-8
      lambda i: b'{"id": "x%d", "problem": "p", "answer": "1"' % i,          # cut JSON
      lambda i: b'[1, 2, 3]',                                               # not an object
      lambda i: b'{"id": "dup", "problem": "p", "answer": "1"}',            # duplicate ids
      lambda i: b'{"id": "x%d", "problem": "%s", "answer": "1"}' % (i, b'y' * 1_000_000),
  ]
  return [kinds[rng.randrange(len(kinds))](i) for i in range(n)]


class MalformedDataTest(absltest.TestCase):

  def test_200_malformed_rows_error_or_counted_skip(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    rng = random.Random(1)
    good = [json.dumps({'id': f'g{i}', 'problem': f'{i}+1?', 'answer': str(i + 1)}).encode()
            for i in range(20)]
    bad = _malformed_rows(200, rng)
    lines = good + bad
    rng.shuffle(lines)
    path = tmp_path / 'bad.jsonl'
    path.write_bytes(b'\n'.join(lines) + b'\n')
    with self.assertRaisesRegex(data_lib.DataError, r'bad\.jsonl:\d+'):
      data_lib.load_examples(str(path), max_problem_chars=100_000)
    examples, stats = data_lib.load_examples(str(path), on_error='skip', max_problem_chars=100_000)
    n_dup = sum(b'"dup"' in b for b in bad)
    self.assertLen(examples, 20 + (1 if n_dup else 0))
    self.assertEqual(stats.skipped, 200 - (1 if n_dup else 0))


def _adversarial(i, rng):
  junk = ''.join(chr(rng.randrange(1, 0x2FFF)) for _ in range(200))
  pieces = [
      '</think>\\boxed{' + '9' * rng.randrange(1000, 12000) + '}',
      '</think>\\boxed{' + '{' * 5000 + '1' + '}' * 4999,
      '</think>' + '\\frac{' * 3000 + '\\boxed{2}',
      '</think>\\boxed{2^{2^{2^{2^{2^{2^{2^{2}}}}}}}}',
      '</think>\\boxed{\\int_0^\\infty e^{-x^{' + str(i) + '}} dx}',
      '</think>\\boxed{' + junk + '}',
      '</think>\\boxed{}' * 50,
      '<think>' + 'x' * 100_000,
      '</think>\\boxed{\\sqrt{' + '2+' * 2000 + '2}}',
      '</think>\\boxed{' + 'x' * 1_000_000 + '}',
  ]
  return pieces[i % len(pieces)]


class AdversarialOutputsTest(absltest.TestCase):

  # ~2 minutes on 2 cores; tests/test_grading.py covers each kind by default.
  @test_util.slow
  def test_1000_adversarial_outputs_bounded_never_raise_never_correct(self):
    rng = random.Random(2)
    outputs = [_adversarial(i, rng) for i in range(1000)]
    timeout = 2.0
    with grading.Grader(num_workers=2, timeout_s=timeout) as grader:
      t0 = time.monotonic()
      grades = grader.grade_batch(outputs, ['17'] * len(outputs))
      elapsed = time.monotonic() - t0
    self.assertLen(grades, 1000)
    self.assertFalse(any(g.correct for g in grades))
    # Bounded: at worst every response costs its timeout (+ kill grace), over 2 workers.
    self.assertLess(elapsed, len(outputs) * (timeout + 1.5) / 2)


if __name__ == '__main__':
  absltest.main()
