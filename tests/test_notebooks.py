"""Both notebooks execute end to end on the tiny synthetic setup (quickstart trains 2 steps)."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import os
from unittest import mock

from absl.testing import absltest
import nbformat
from nbclient import NotebookClient

REPO = str(test_util.REPO)


def _run(name, env):
  nb = nbformat.read(os.path.join(REPO, 'notebooks', name), as_version=4)
  with mock.patch.dict(os.environ, env):
    os.environ.pop('XLA_FLAGS', None)  # one device in the kernel, like a laptop
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}}).execute()
  return nb


def _text(nb):
  return '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.get('outputs', []))


@test_util.slow
class NotebooksTest(absltest.TestCase):

  def test_quickstart_then_analysis(self):
    tmp_path = self.create_tempdir().full_path
    env = {'CEEH_WORKDIR': tmp_path, 'PYTHONPATH': REPO, 'CEEH_SKIP_INSTALL': '1',
           'CEEH_HEADLESS': '1', 'JAX_PLATFORMS': 'cpu'}
    text = _text(_run('quickstart.ipynb', env))
    self.assertIn('correct=', text)
    self.assertIn('metrics.jsonl', text)
    self.assertTrue(os.path.isdir(os.path.join(tmp_path, 'checkpoints')))
    text = _text(_run('analysis.ipynb', env))
    self.assertIn('metric records', text)
    self.assertIn('checkpoint step 2', text)
    self.assertIn('tokens)', text)


if __name__ == '__main__':
  absltest.main()
