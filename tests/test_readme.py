"""The README cannot rot: its code blocks run as written, its paths exist, CI runs its command.

Every fenced block in README.md carries a tag line (see scripts/readme_blocks.py): `fast`
blocks run here in the default tier, `slow` ones in the slow tier (the evaluation sequence
trains the default job first), `fresh-clone` ones in scripts/fresh_clone_check.sh, and `skip`
ones (a real checkpoint needed) say why. Each block runs in a fresh process in an empty
folder, with this checkout importable, as a user who followed the README would run it.
"""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import os
import pathlib
import re
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

REPO = test_util.REPO
sys.path.insert(0, str(REPO / 'scripts'))

import readme_blocks  # pylint: disable=g-import-not-at-top,wrong-import-position

TEXT = readme_blocks.README.read_text()
BLOCKS = readme_blocks.blocks(TEXT)


def _env():
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu',
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
  env.pop('XLA_FLAGS', None)  # one device, as a user has
  return env


def _run(block: dict, cwd: str, timeout: int) -> subprocess.CompletedProcess:
  argv = ([sys.executable, '-c', block['code']] if block['lang'] == 'python' else
          ['bash', '-euo', 'pipefail', '-c', block['code']])
  return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                        timeout=timeout)


class ReadmeTextTest(absltest.TestCase):

  def test_every_block_is_tagged(self):
    untagged = [b['line'] for b in BLOCKS if b['tag'] is None]
    self.assertEmpty(untagged, 'README blocks without a `<!-- readme-test: ... -->` line above '
                     '(fast, slow, fresh-clone or skip: <why>) at lines')
    self.assertNotEmpty([b for b in BLOCKS if b['tag'] == 'fast'])
    self.assertNotEmpty([b for b in BLOCKS if b['tag'] == 'slow'])

  def test_ci_runs_the_readme_test_command(self):
    install, train_cmd = readme_blocks.tagged('fresh-clone')
    self.assertEqual(install.strip(), 'pip install -r requirements.txt && python -m ceeh_jax.main')
    pip, pytest_cmd = train_cmd.strip().split(' && ')
    ci = (REPO / '.ci' / 'run').read_text().splitlines()
    self.assertIn(pytest_cmd, ci)  # the same pytest line, verbatim
    self.assertIn(pip.replace('pip install', 'pip install -q') + ' || exit 1', ci)

  def test_named_paths_exist(self):
    paths = set(re.findall(r'`([\w./-]+/[\w.-]+\.(?:md|py|ipynb|json|sh|txt))`', TEXT))
    paths |= set(re.findall(r'`((?:ceeh_jax|configs|data|experiments|notebooks|scripts|docs)'
                            r'/[\w./-]*)`', TEXT))
    self.assertNotEmpty(paths)
    missing = sorted(p for p in paths if not (REPO / p).exists() and not p.startswith('runs/'))
    self.assertEmpty(missing)

  def test_colab_links_open_the_notebooks(self):
    links = re.findall(r'https://colab\.research\.google\.com/github/OWNER/ceeh_jax/blob/main/'
                       r'([\w/.-]+\.ipynb)', TEXT)
    self.assertCountEqual(links, ['notebooks/quickstart.ipynb', 'notebooks/analysis.ipynb'])
    for notebook in links:
      self.assertIn("REPO_URL = 'https://github.com/OWNER/ceeh_jax'",
                    (REPO / notebook).read_text().replace('\\"', '"'))


class ReadmeFastBlocksTest(parameterized.TestCase):

  @parameterized.named_parameters(
      *[(f'line_{b["line"]}', b) for b in BLOCKS if b['tag'] == 'fast'])
  def test_runs(self, block):
    out = _run(block, self.create_tempdir().full_path, timeout=600)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    if 'cj.generate' in block['code']:  # the API example prints a graded-looking completion
      self.assertIn('\\boxed{', out.stdout)
      self.assertNotIn('<｜end▁of▁sentence｜>', out.stdout)


@test_util.slow
class ReadmeSlowBlocksTest(parameterized.TestCase):

  @parameterized.named_parameters(
      *[(f'line_{b["line"]}', b) for b in BLOCKS if b['tag'] == 'slow'])
  def test_runs(self, block):
    cwd = pathlib.Path(self.create_tempdir().full_path)
    out = _run(block, str(cwd), timeout=3000)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    if 'ceeh_jax.compare' in block['code']:  # the evaluation sequence: the table in the README
      table = (cwd / 'runs' / 'compare.md').read_text()
      rows = [line for line in table.splitlines() if line.startswith('| eval_')]
      self.assertLen(rows, 2)
      self.assertTrue(rows[0].startswith('| eval_base |') and rows[0].endswith('| — |'), table)
      self.assertRegex(rows[1], r'^\| eval_ceeh \| 0\.\d{3} \| \d+\.\d \| -?\d+\.\d\d \|$')


if __name__ == '__main__':
  absltest.main()
