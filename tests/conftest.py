"""pytest's side of the absltest suites.

Every tests/test_*.py is an absltest suite that imports tests/test_util.py first; that module
sets the process up (8 fake CPU devices, JAX on CPU, the repository on sys.path, the XLA
compilation cache), so `python tests/test_x.py` and pytest run the same way. This file imports
it for pytest too and marks absl's flags parsed (pytest never parses them, and absltest's
`self.create_tempdir()` reads --test_tmpdir).

The slow tier: `@test_util.slow` on a test class or test method adds pytest's `slow` marker.
`python -m pytest -q -m "not slow"` (the README's command, .ci/run) runs the default tier,
`python -m pytest -q -m slow` the slow one. A direct `python tests/test_x.py` runs a file's
slow tests too, unless CEEH_SKIP_SLOW=1 is set.
"""
from absl import flags

import test_util
from test_util import REPO, XLA_CACHE  # noqa: F401  pylint: disable=unused-import

flags.FLAGS.mark_as_parsed()

collect_ignore = ['test_util.py']  # the shared helper module, not a suite
