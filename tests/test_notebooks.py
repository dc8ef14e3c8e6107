"""Both notebooks execute end to end on the tiny synthetic setup (quickstart trains 2 steps)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, env):
  nb = nbformat.read(os.path.join(REPO, 'notebooks', name), as_version=4)
  old = dict(os.environ)
  os.environ.update(env)
  os.environ.pop('XLA_FLAGS', None)  # one device in the kernel, like a laptop
  try:
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}}).execute()
  finally:
    os.environ.clear()
    os.environ.update(old)
  return nb


def _text(nb):
  return '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.get('outputs', []))


@pytest.mark.slow
def test_quickstart_then_analysis(tmp_path):
  env = {'CEEH_WORKDIR': str(tmp_path), 'PYTHONPATH': REPO, 'CEEH_SKIP_INSTALL': '1',
         'CEEH_HEADLESS': '1', 'JAX_PLATFORMS': 'cpu'}
  text = _text(_run('quickstart.ipynb', env))
  assert 'correct=' in text and 'metrics.jsonl' in text
  assert os.path.isdir(tmp_path / 'checkpoints')
  text = _text(_run('analysis.ipynb', env))
  assert 'metric records' in text and 'checkpoint step 2' in text and 'tokens)' in text
