"""The files a run names, checked before it writes anything: one clear error for each.

`train.train_and_evaluate` and `evaluate.run` (its `check_inputs`) call these after
`config_check.validate` and before the workdir is created, so a wrong `model.hf_dir`, a missing data file or a workdir
that is a file fails as `error: <message>` (see `main.run`) and leaves nothing on disk.
"""
import os

from ceeh_jax import data as data_lib
from ceeh_jax import errors
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.synthetic import paths as synthetic

WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json')
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'vocab.json')
_SOURCES = ('a .jsonl/.json/.parquet file, a vendored benchmark (' +
            ', '.join(sorted(data_lib.BENCHMARKS)) + '), synthetic:<split>:<n> or '
            'tfds:<name>[:<split>]')


class PreflightError(errors.UserError, ValueError):
  """A named input that cannot work (a workdir that is a file, a malformed source)."""


def check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise PreflightError(f'workdir {workdir!r} is a file, not a directory; pass another '
                         '--workdir')


def _model_dir(key: str, value: str) -> str:
  """The resolved directory of `value` (config key `key`), or MissingFileError."""
  try:
    path = synthetic.resolve_model_dir(value)
  except FileNotFoundError as e:
    raise errors.MissingFileError(f'{key}={value!r}: {e}') from None
  if not os.path.isdir(path):
    raise errors.MissingFileError(f'{key}={value!r}: no such directory')
  return path


def check_model(config, weights: bool = True) -> None:
  """`model.hf_dir` (when set) is a HF directory: config.json and (`weights`) safetensors."""
  hf_dir = config.model.hf_dir
  if not hf_dir:
    return
  path = _model_dir('config.model.hf_dir', hf_dir)
  if not os.path.isfile(os.path.join(path, 'config.json')):
    raise errors.MissingFileError(f'config.model.hf_dir={hf_dir!r} has no config.json (not a '
                                  'Hugging Face model directory)')
  if weights and not any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES):
    raise errors.MissingFileError(f'config.model.hf_dir={hf_dir!r} has no weights '
                                  f'({" or ".join(WEIGHT_FILES)})')


def load_tokenizer(config):
  """The run's tokenizer (`tokenizer_dir`, else `model.hf_dir`), its chat template rendered once.

  Rendering here makes a missing template dependency (jinja2) fail before anything is written.
  """
  key = 'config.tokenizer_dir' if config.tokenizer_dir else 'config.model.hf_dir'
  value = config.tokenizer_dir or config.model.hf_dir
  path = _model_dir(key, value)
  if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
    hint = '' if config.tokenizer_dir else '; set config.tokenizer_dir'
    raise errors.MissingFileError(f'{key}={value!r} has no tokenizer files '
                                  f'({", ".join(TOKENIZER_FILES)}){hint}')
  tok = tokenizer_lib.load_tokenizer(path)
  try:
    tokenizer_lib.build_prompt(tok, 'ping', instruction=None)
  except ImportError as e:  # transformers renders chat templates with jinja2
    raise errors.UserError(f'{e} (install the requirements: pip install -r requirements.txt)') \
        from None
  return tok


def check_source(key: str, source: str) -> None:
  """A data source names something that exists (files) or has the right form (generated)."""
  if source.startswith('tfds:'):
    return
  if source.startswith('synthetic:'):
    parts = source.split(':')
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
      raise PreflightError(f'{key}={source!r}: expected synthetic:<split>:<n>, e.g. '
                           'synthetic:train:128')
    return
  if not os.path.isfile(data_lib.resolve(source)):
    raise errors.MissingFileError(f'{key}={source!r}: no such file (expected {_SOURCES})')


def check_train(config, workdir: str) -> None:
  """Everything `train.train_and_evaluate` reads: workdir, model, data sources."""
  check_workdir(workdir)
  check_model(config)
  check_source('config.data.train', config.data.train)
  if config.data.eval and config.data.eval_size:
    check_source('config.data.eval', config.data.eval)
