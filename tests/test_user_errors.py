"""User errors through the real entry point: one line `error: <what to fix>`, exit status 2,
no traceback, and nothing created on disk.

Each case runs `python -m ceeh_jax.main ...` (or `python -m ceeh_jax.compare`) in a fresh
process, as a user would; the processes start together in setUpClass (each spends most of its
~3 s importing jax), and each test reads its own result.
"""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

REPO = test_util.REPO

# name -> (argv after `python -m`, expected stderr line). {tmp} is a scratch directory with:
# empty/ (an empty directory), afile (a file), bad.jsonl (line 2 is not JSON); {work} is a
# workdir path that must still not exist afterwards.
CASES = {
    'misspelled_key': (
        ['ceeh_jax.main', '--config.sampling.num_sample=4', '--workdir={work}'],
        'error: unknown config key sampling.num_sample; did you mean sampling.num_samples?'),
    'misspelled_key_packaged_config': (
        ['ceeh_jax.main', '--config=r1_1p5b', '--config.optim.lrr=1e-5', '--workdir={work}'],
        'error: unknown config key optim.lrr; did you mean optim.lr?'),
    'misspelled_section': (
        ['ceeh_jax.main', '--config.sampler.top_p=0.9', '--workdir={work}'],
        'error: unknown config key sampler.top_p; did you mean sampling.top_p?'),
    'value_of_wrong_type': (
        ['ceeh_jax.main', '--config.sampling.num_samples=abc', '--workdir={work}'],
        "error: flag --config.sampling.num_samples=abc: invalid literal for int() with base 10: "
        "'abc'"),
    'value_out_of_range': (
        ['ceeh_jax.main', '--config.sampling.top_p=1.5', '--workdir={work}'],
        'error: config.sampling.top_p must be in (0, 1], got 1.5'),
    'unknown_config_name': (
        ['ceeh_jax.main', '--config=r1_15b', '--workdir={work}'],
        "error: config 'r1_15b' not found: neither a file nor a packaged config (baselines/"),
    'missing_hf_dir': (
        ['ceeh_jax.main', '--config.model.hf_dir={tmp}/nope', '--workdir={work}'],
        "error: config.model.hf_dir='{tmp}/nope': no such directory"),
    'hf_dir_without_config_json': (
        ['ceeh_jax.main', '--config.model.hf_dir={tmp}/empty', '--workdir={work}'],
        "error: config.model.hf_dir='{tmp}/empty' has no config.json (not a Hugging Face model "
        'directory)'),
    'tokenizer_dir_without_files': (
        ['ceeh_jax.main', '--config.tokenizer_dir={tmp}/empty', '--workdir={work}'],
        "error: config.tokenizer_dir='{tmp}/empty' has no tokenizer files (tokenizer.json, "
        'tokenizer_config.json, vocab.json)'),
    'missing_data_file': (
        ['ceeh_jax.main', '--config.data.train={tmp}/nope.jsonl', '--workdir={work}'],
        "error: config.data.train='{tmp}/nope.jsonl': no such file (expected a "),
    'unreadable_data_row': (
        ['ceeh_jax.main', '--config.data.train={tmp}/bad.jsonl', '--workdir={work}'],
        'error: {tmp}/bad.jsonl:2: invalid JSON (Expecting property name enclosed in double '
        'quotes at column 2)'),
    'workdir_is_a_file': (
        ['ceeh_jax.main', '--workdir={tmp}/afile'],
        "error: workdir '{tmp}/afile' is a file, not a directory; pass another --workdir"),
    'eval_checkpoint_missing': (
        ['ceeh_jax.main', '--config=configs/eval_tiny.py', '--workdir={work}',
         '--config.eval.checkpoint_workdir={tmp}/nope'],
        "error: config.eval.checkpoint_workdir='{tmp}/nope' does not exist"),
    'eval_benchmark_missing': (
        ['ceeh_jax.main', '--config=eval_tiny', '--workdir={work}',
         "--config.eval.benchmarks=('aime99',)"],
        "error: benchmark 'aime99': no such file 'aime99' (known names: ['aime24', "),
    'compare_without_results': (
        ['ceeh_jax.compare', '{tmp}/empty'],
        'error: {tmp}/empty: no results.json (run `python -m ceeh_jax.main '),
}


def _run(argv, cwd, env):
  return subprocess.run([sys.executable, '-m', *argv], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600)


class UserErrorsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix='ceeh_user_errors_'))
    (cls.tmp / 'empty').mkdir()
    (cls.tmp / 'afile').write_text('not a directory\n')
    (cls.tmp / 'bad.jsonl').write_text(
        json.dumps({'id': '1', 'problem': 'p', 'answer': '1'}) + '\n{bad\n')
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
    env.pop('CEEH_DEBUG', None)
    env.pop('XLA_FLAGS', None)  # one device, as a user has
    cls.env = env
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
      for name, (argv, _) in CASES.items():
        argv = [a.format(tmp=cls.tmp, work=cls.tmp / f'work_{name}') for a in argv]
        jobs[name] = pool.submit(_run, argv, str(REPO), env)
      cls.results = {name: job.result() for name, job in jobs.items()}

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  @parameterized.named_parameters(*[(name, name) for name in CASES])
  def test_one_line_and_exit_2(self, name):
    out = self.results[name]
    want = CASES[name][1].format(tmp=self.tmp)
    lines = out.stderr.strip().splitlines()
    self.assertEqual(out.returncode, 2, out.stderr[-3000:])
    self.assertNotIn('Traceback', out.stderr)
    self.assertTrue(lines and lines[-1].startswith(want), f'{lines[-1:]} != {want!r}...')
    self.assertFalse((self.tmp / f'work_{name}').exists(), 'a failed run left its workdir')

  def test_debug_keeps_the_traceback(self):
    argv = ['ceeh_jax.main', f'--config.model.hf_dir={self.tmp}/nope',
            f'--workdir={self.tmp}/work_debug']
    for env in (dict(self.env, CEEH_DEBUG='1'), self.env):
      with self.subTest(debug_env=bool(env.get('CEEH_DEBUG'))):
        extra = [] if env.get('CEEH_DEBUG') else ['--verbosity=1']
        out = _run(argv + extra, str(REPO), env)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn('Traceback', out.stderr)
        self.assertIn('MissingFileError', out.stderr)


if __name__ == '__main__':
  absltest.main()
