"""Files shipped with the package: the experiment configs and the vendored benchmark data.

In a checkout (and under `pip install -e .`) they are the repository's top-level `configs/`
and `data/`; an installed wheel (`pip install .`, `pip install git+<url>`) has no repository
root, so pyproject.toml copies them into the package as `ceeh_jax/_shipped/configs` and
`ceeh_jax/_shipped/data`. `path(name)` finds whichever exists, so the same code runs both ways.

A config is named by a path (`configs/r1_1p5b.py`, `/my/exp.py`) or by its packaged name
(`r1_1p5b`, `baselines/grpo`), optionally with ml_collections' `:arg` suffix.
"""
import importlib.util
import os
import pathlib

from ceeh_jax import errors

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


def path(name: str) -> pathlib.Path:
  """The shipped folder `name` ('configs' or 'data'): inside a wheel, else the checkout's."""
  installed = PACKAGE_DIR / '_shipped' / name
  return installed if installed.is_dir() else PACKAGE_DIR.parent / name


def config_names() -> list[str]:
  """The packaged configs by name: 'tiny', 'r1_1p5b', 'baselines/grpo', ..."""
  root = path('configs')
  return sorted(p.relative_to(root).with_suffix('').as_posix() for p in root.rglob('*.py')
                if not p.name.startswith('_'))


def config_file(spec: str) -> str:
  """A `--config` value with its path resolved: an existing file as given, else a packaged
  config by name (`r1_1p5b`, `r1_1p5b.py`, `configs/r1_1p5b.py`); the `:arg` suffix is kept.

  Raises errors.MissingFileError naming the packaged configs when neither exists.
  """
  file, sep, arg = spec.partition(':')
  if os.path.isfile(file):
    return spec
  name = file[len('configs/'):] if file.startswith('configs/') else file
  packaged = path('configs') / (name if name.endswith('.py') else name + '.py')
  if packaged.is_file():
    return str(packaged) + sep + arg
  raise errors.MissingFileError(f'config {file!r} not found: neither a file nor a packaged '
                                f'config ({", ".join(config_names())})')


def load_config(spec: str):
  """`get_config(arg)` of a config named as `config_file` takes it (`'tiny'`, `'eval_tiny'`)."""
  file, sep, arg = config_file(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location(
      'ceeh_config_' + pathlib.Path(file).stem, file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()  # as ml_collections calls it
