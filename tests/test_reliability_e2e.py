"""Issue 19 end to end, through `python -m ceeh_jax.main` (subprocesses; minutes, slow tier):
a checkpoint corrupted in place falls back to the bitwise-same final state; hostile data, an
unencodable row and non-finite updates each end as one `error:` line with the right status."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import subprocess
import sys

from absl.testing import absltest
import numpy as np

from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import metric_writers


REPO = str(test_util.REPO)

# Nothing in this config depends on total_steps (constant lr without warmup, constant entropy
# coefficient), so 4 steps then a rerun with 6 equals 6 straight.
CONFIG_FILE = '''
import sys
sys.path.insert(0, {tests!r})
import train_util


def get_config():
  c = train_util.small_config({tmp!r}, total_steps=4, checkpoint_every=2)
  c.ceeh.entropy_schedule = 'constant'
  return c
'''


def corrupt_middle(step_dir: str, nbytes: int = 4096, seed: int = 0) -> str:
  """Overwrites `nbytes` random bytes in the middle of the step's largest file, size kept."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  biggest = max(files, key=os.path.getsize)
  size = os.path.getsize(biggest)
  with open(biggest, 'r+b') as f:
    f.seek(size // 2 - nbytes // 2)
    f.write(np.random.default_rng(seed).integers(0, 256, nbytes, np.uint8).tobytes())
  assert os.path.getsize(biggest) == size
  return biggest


@test_util.slow
class EndToEndTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    self.config = os.path.join(self.tmp, 'config.py')
    with open(self.config, 'w') as f:
      f.write(CONFIG_FILE.format(tests=os.path.join(REPO, 'tests'), tmp=self.tmp))

  def main(self, workdir, *overrides, mode=None, config=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    env.pop('CEEH_DEBUG', None)
    cmd = [sys.executable, '-m', 'ceeh_jax.main', f'--config={config or self.config}',
           f'--workdir={workdir}', *overrides] + ([f'--mode={mode}'] if mode else [])
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)

  def assert_one_line_error(self, proc, status, *words):
    self.assertEqual(proc.returncode, status, proc.stderr[-3000:])
    self.assertNotIn('Traceback', proc.stderr)
    errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
    self.assertLen(errors, 1, proc.stderr[-3000:])
    for w in words:
      self.assertIn(w, errors[0])
    return errors[0]

  def test_checkpoint_corrupted_in_place_falls_back_to_the_same_final_state(self):
    ref = os.path.join(self.tmp, 'ref')
    proc = self.main(ref, '--config.total_steps=6')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])

    work = os.path.join(self.tmp, 'work')
    proc = self.main(work)                                      # 4 steps: checkpoints 2 and 4
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    corrupt_middle(os.path.join(work, 'checkpoints', '4'))

    fp = self.main(work, mode='fingerprint')                    # read-only: says what it read
    self.assertEqual(fp.returncode, 0, fp.stderr[-3000:])
    self.assertTrue(fp.stdout.startswith('step 2 sha256 '), fp.stdout)
    self.assertIn('skipped checkpoint step 4', fp.stderr)

    proc = self.main(work, '--config.total_steps=6')            # rerun with more steps
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertRegex(proc.stdout, r'WARNING: checkpoint step 4 \(.*checkpoints/4\) is '
                                  r'(corrupted|unreadable)')
    self.assertIn('resumed from step 2', proc.stdout)
    aside = os.listdir(os.path.join(work, 'checkpoints_corrupt'))
    self.assertLen(aside, 1)
    self.assertTrue(aside[0].startswith('4-'))

    got, want = fingerprint_lib.fingerprint(work), fingerprint_lib.fingerprint(ref)
    self.assertEqual((got['step'], got['skipped']), (6, {}))
    self.assertEqual(got['parts'], want['parts'])               # bitwise the same state
    self.assertEqual([r['step'] for r in metric_writers.read_metrics(work)], list(range(1, 7)))

  def test_hostile_data_row_is_one_line_error(self):
    data = os.path.join(self.tmp, 'train.jsonl')
    rows = [json.dumps({'id': f'q{i}', 'problem': f'a={i} find a', 'answer': str(i)}).encode()
            for i in range(4)]
    rows.insert(2, b'[' * 100_000 + b']' * 100_000)
    with open(data, 'wb') as f:
      f.write(b'\n'.join(rows) + b'\n')
    proc = self.main(os.path.join(self.tmp, 'w'), f'--config.data.train={data}')
    line = self.assert_one_line_error(proc, 2)
    self.assertEqual(line, f'error: {data}:3: JSON nested too deeply to parse')

  def test_unencodable_row_is_one_line_error(self):
    from test_loader_fuzz import _no_unk_tokenizer  # pylint: disable=g-import-not-at-top
    tok_dir = os.path.join(self.tmp, 'tok_no_unk')
    _no_unk_tokenizer(tok_dir)
    data = os.path.join(self.tmp, 'train.jsonl')
    with open(data, 'w') as f:
      for i, problem in enumerate(['a=1 find a', 'What is 7*8?', 'b=2 find b']):
        f.write(json.dumps({'id': f'q{i}', 'problem': problem, 'answer': '1'}) + '\n')
    proc = self.main(os.path.join(self.tmp, 'w'), f'--config.data.train={data}',
                     f'--config.tokenizer_dir={tok_dir}')
    self.assert_one_line_error(proc, 2, f"{data}: row 2 (id 'q1') cannot be encoded",
                               'What is 7*8?')

  def test_non_finite_updates_stop_the_run_with_exit_1(self):
    """lr = 1e39 is inf in float32: every update's new params are non-finite (the loss and
    gradient are not), so each is skipped, and the run stops instead of going on."""
    work = os.path.join(self.tmp, 'w')
    proc = self.main(work, '--config.optim.lr=1e39', '--config.max_skipped_updates=3')
    self.assert_one_line_error(proc, 1, '4 updates had a non-finite loss, gradient or result',
                               'stopping at step 2')
    recs = metric_writers.read_metrics(work)
    self.assertEqual([(r['step'], r['update_skipped']) for r in recs], [(1, 1.0)])
    self.assertTrue(all(np.isfinite(r['loss']) and np.isfinite(r['grad_norm']) for r in recs))

  def test_collapsed_final_accuracy_is_a_failure_with_exit_1(self):
    """The default job's shipped base policy (ACC ~0.63 on these 32 questions) trained with
    lr = 1: the params stay finite but the policy breaks (ACC 0, every answer runs to the
    token limit); the run ends with exit 1 and one line, after writing its report."""
    work = os.path.join(self.tmp, 'w')
    proc = self.main(work, '--config.total_steps=2', '--config.optim.lr=1.0',
                     '--config.data.eval_size=32', '--config.eval_every=0',
                     '--config.progress=False', config=os.path.join(REPO, 'configs', 'tiny.py'))
    with open(os.path.join(work, 'base_eval.json')) as f:
      base_acc = json.load(f)['eval/acc']
    self.assertGreater(base_acc, 0.3)
    self.assert_one_line_error(proc, 1, f'final eval accuracy collapsed to 0 from {base_acc:.3f}')
    with open(os.path.join(work, 'final_eval.json')) as f:
      self.assertEqual(json.load(f)['eval/acc'], 0.0)
    self.assertTrue(os.path.exists(os.path.join(work, 'report.md')))


if __name__ == '__main__':
  absltest.main()
