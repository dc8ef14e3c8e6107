"""The package: pyproject.toml against requirements*.txt, what a wheel carries, and configs/data
found both in a checkout and in an installed package (no repository root there)."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import fnmatch
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

from absl.testing import absltest
from absl.testing import parameterized
from packaging.requirements import Requirement

REPO = test_util.REPO

from ceeh_jax import errors
from ceeh_jax import shipped

PYPROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())
# Folders whose every file a wheel must carry (the rest of the package is its .py modules).
SHIPPED_DIRS = ('configs', 'data', 'ceeh_jax/synthetic/base_policy', 'ceeh_jax/r1_tokenizer')


def _name(requirement: str) -> str:
  return re.sub(r'[-_.]+', '-', Requirement(requirement).name).lower()


def _pins(path: pathlib.Path) -> dict[str, str]:
  """name -> pinned version of a requirements file (its `-r` includes left out)."""
  pins = {}
  for line in path.read_text().splitlines():
    line = line.split('#')[0].strip()
    if line and not line.startswith('-'):
      name, version = line.split('==')
      pins[_name(name)] = version
  return pins


def wheel_files() -> set[str]:
  """Repository paths a wheel built from pyproject.toml carries, as setuptools selects them:
  each listed package's .py modules plus its package-data globs, from its package-dir."""
  tool = PYPROJECT['tool']['setuptools']
  mapping, data = tool.get('package-dir', {}), tool.get('package-data', {})
  out = set()
  for package in tool['packages']:
    src = REPO / mapping.get(package, package.replace('.', '/'))
    for f in src.iterdir():
      rel = f.relative_to(src).as_posix()
      if f.is_file() and (f.suffix == '.py' or any(fnmatch.fnmatch(rel, g)
                                                   for g in data.get(package, []))):
        out.add(f.relative_to(REPO).as_posix())
    for glob in data.get(package, []):
      out.update(p.relative_to(REPO).as_posix() for p in src.glob(glob) if p.is_file())
  return out


def _files(folder: str):
  for p in sorted((REPO / folder).rglob('*')):
    if p.is_file() and '__pycache__' not in p.parts:
      yield p.relative_to(REPO).as_posix()


class PyprojectTest(absltest.TestCase):

  def test_dependencies_are_the_requirements(self):
    deps = {_name(r): Requirement(r) for r in PYPROJECT['project']['dependencies']}
    pins = _pins(REPO / 'requirements.txt')
    self.assertEqual(set(deps), set(pins))
    for name, version in pins.items():
      self.assertIn(version, deps[name].specifier, f'{name}=={version} outside {deps[name]}')

  def test_test_extra_is_the_test_requirements(self):
    extra = {_name(r): Requirement(r) for r in PYPROJECT['project']['optional-dependencies']['test']}
    pins = _pins(REPO / 'requirements-test.txt')
    self.assertEqual(set(extra), set(pins))
    for name, version in pins.items():
      self.assertIn(version, extra[name].specifier)

  def test_accelerator_extras_pick_the_jax_build(self):
    extras = PYPROJECT['project']['optional-dependencies']
    jax_pin = _pins(REPO / 'requirements.txt')['jax']
    for extra, jax_extra in (('tpu', 'tpu'), ('cuda', 'cuda12'), ('cuda13', 'cuda13')):
      (req,) = [Requirement(r) for r in extras[extra]]
      self.assertEqual((req.name, req.extras), ('jax', {jax_extra}))
      self.assertIn(jax_pin, req.specifier)

  def test_console_script_is_main_run(self):
    self.assertEqual(PYPROJECT['project']['scripts'], {'ceeh-jax': 'ceeh_jax.main:run'})
    from ceeh_jax import main  # pylint: disable=g-import-not-at-top
    self.assertTrue(callable(main.run))

  def test_every_package_is_listed(self):
    listed = set(PYPROJECT['tool']['setuptools']['packages'])
    found = {p.parent.relative_to(REPO).as_posix().replace('/', '.')
             for p in (REPO / 'ceeh_jax').rglob('*.py') if '__pycache__' not in p.parts}
    self.assertEmpty(found - listed, 'a module folder missing from [tool.setuptools] packages '
                     'would be left out of the wheel')

  def test_wheel_carries_every_shipped_file(self):
    carried = wheel_files()
    for folder in SHIPPED_DIRS:
      missing = [f for f in _files(folder) if f not in carried]
      self.assertEmpty(missing, f'{folder}: not in the wheel')
    self.assertIn('ceeh_jax/r1_tokenizer/tokenizer.json', carried)
    self.assertNotIn('ceeh_jax/r1_tokenizer/vocab.json', carried)


class ShippedTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('name', 'r1_1p5b', 'configs/r1_1p5b.py'),
      ('name_py', 'r1_1p5b.py', 'configs/r1_1p5b.py'),
      ('repo_path', 'configs/r1_1p5b.py', 'configs/r1_1p5b.py'),
      ('baseline', 'baselines/grpo', 'configs/baselines/grpo.py'),
      ('with_arg', 'eval_tiny:x', 'configs/eval_tiny.py:x'))
  def test_config_file_from_elsewhere(self, spec, want):
    # From a directory with no configs/ (an installed package's user): the packaged config.
    cwd = os.getcwd()
    os.chdir(self.create_tempdir().full_path)
    try:
      self.assertEqual(shipped.config_file(spec), str(REPO / want))
    finally:
      os.chdir(cwd)

  def test_an_existing_file_wins(self):
    mine = self.create_tempfile('tiny.py', content='def get_config(arg=None):\n  return None\n')
    self.assertEqual(shipped.config_file(mine.full_path), mine.full_path)

  def test_unknown_config_names_the_packaged_ones(self):
    with self.assertRaisesRegex(errors.MissingFileError,
                                r"config 'r1_15b' not found.*baselines/grpo.*r1_1p5b.*tiny"):
      shipped.config_file('r1_15b')

  def test_config_names_are_the_config_files(self):
    files = sorted(p.relative_to(REPO / 'configs').with_suffix('').as_posix()
                   for p in (REPO / 'configs').rglob('*.py'))
    self.assertEqual(shipped.config_names(), files)
    self.assertEqual(shipped.load_config('eval_tiny').mode, 'eval')

  def test_installed_layout(self):
    """The wheel's layout (ceeh_jax/_shipped/{configs,data}, no repository root around it)."""
    site = pathlib.Path(self.create_tempdir('site').full_path)
    ignore = shutil.ignore_patterns('__pycache__')
    shutil.copytree(REPO / 'ceeh_jax', site / 'ceeh_jax', ignore=ignore)
    shutil.copytree(REPO / 'configs', site / 'ceeh_jax' / '_shipped' / 'configs', ignore=ignore)
    shutil.copytree(REPO / 'data', site / 'ceeh_jax' / '_shipped' / 'data')
    code = ('from ceeh_jax import data, shipped\n'
            'print(data.DATA_DIR)\n'
            "print(shipped.config_file('configs/r1_1p5b.py'))\n"
            "print(len(data.load_examples('aime24')[0]))\n")
    out = subprocess.run([sys.executable, '-c', code], cwd=self.create_tempdir('cwd').full_path,
                         env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True,
                         text=True, check=True).stdout.split()
    self.assertEqual(out, [str(site / 'ceeh_jax/_shipped/data'),
                           str(site / 'ceeh_jax/_shipped/configs/r1_1p5b.py'), '30'])


@test_util.slow
class WheelTest(absltest.TestCase):
  """A real wheel, installed apart from the checkout, runs the eval job from another folder."""

  def test_wheel_installs_and_runs(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    try:  # setuptools >= 70.1 builds wheels itself; else pip fetches it (build isolation)
      import setuptools  # pylint: disable=g-import-not-at-top
      isolation = [] if tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1) else [
          '--no-build-isolation']
    except ImportError:
      isolation = []
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', *isolation,
                    '-w', str(tmp / 'dist'), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp / 'dist').glob('ceeh_jax-*.whl')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(tmp / 'site'), str(wheel)], check=True, capture_output=True)
    shutil.rmtree(REPO / 'build', ignore_errors=True)  # setuptools' scratch folder
    env = dict(os.environ, PYTHONPATH=str(tmp / 'site'), JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    out = subprocess.run([str(tmp / 'site' / 'bin' / 'ceeh-jax'), '--config=eval_tiny',
                          '--workdir=ev', '--config.eval.limit=4'], cwd=tmp, env=env,
                         capture_output=True, text=True)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn('| synthetic_test_64 | all | 4 | 4 |', out.stdout)
    self.assertTrue((tmp / 'ev' / 'results.json').is_file())


if __name__ == '__main__':
  absltest.main()
