"""`tfds:` sources: any TFDS dataset prepared in a data dir, read by random access.

`tfds:<name>[:<version>][:<split>]` (`tfds:ceeh_math/math500`, `tfds:my_set/cfg:1.2.0:train`)
opens `<data_dir>/<name>/<version>` with `tfds.builder_from_directory` (no builder code needed,
so a user's own datasets work too) and reads it with `as_data_source`: array_record or parquet
files, random access, no TensorFlow and no `tf.data`. The rows come back in the dataset's
order, so `ceeh_jax.data`'s epoch iterator and fingerprint index them exactly as a JSONL file.

The data dir is `data.tfds_data_dir` when set, else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets` (TFDS's own default). The project's `ceeh_math/<config>` datasets are
prepared there on first use (seconds, offline, from the vendored JSONL); any other name must
be prepared beforehand, and an unprepared one is a one-line DataError saying how.
"""
import os
import pathlib
import re
import sys
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from ceeh_jax import data as data_lib

PROJECT = 'ceeh_math'
_VERSION = re.compile(r'^\d+\.\d+\.\d+$')
_READ_CHUNK = 1024  # rows per `__getitems__` call


def default_data_dir() -> str:
  """$TFDS_DATA_DIR, else ~/tensorflow_datasets: where TFDS itself looks by default."""
  return os.path.expanduser(os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


def _prepared_versions(data_dir: str, name: str) -> list[str]:
  """Versions of `name` with a finished build in data_dir, oldest first."""
  root = pathlib.Path(data_dir, *name.split('/'))
  if not root.is_dir():
    return []
  found = [d.name for d in root.iterdir()
           if _VERSION.match(d.name) and (d / 'dataset_info.json').is_file()]
  return sorted(found, key=lambda v: tuple(int(x) for x in v.split('.')))


def prepare_project(config_name: str, data_dir: str, *, overwrite: bool = False):
  """Builds `ceeh_math/<config_name>` into data_dir as array_record; returns its builder."""
  from ceeh_jax.datasets import ceeh_math  # pylint: disable=g-import-not-at-top
  names = [c.name for c in ceeh_math.CeehMath.BUILDER_CONFIGS]
  if config_name not in names:
    raise data_lib.DataError(f'tfds:{PROJECT}/{config_name}: no such config of {PROJECT} '
                             f'(configs: {", ".join(names)})')
  builder = ceeh_math.CeehMath(config=config_name, data_dir=data_dir,
                               file_format='array_record')
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=mode))
  except OSError:
    # Another process (a multi-host run on a shared filesystem) may have finished the same
    # build first and won the rename of the finished folder; its result is as good.
    done = _prepared_versions(data_dir, f'{PROJECT}/{config_name}')
    if overwrite or str(ceeh_math.CeehMath.VERSION) not in done:
      raise
  return builder


def _ensure_project(config_name: str, version: str | None, data_dir: str) -> str:
  """Prepares ceeh_math/<config> on first use (or when its vendored file changed)."""
  from ceeh_jax.datasets import ceeh_math  # pylint: disable=g-import-not-at-top
  current = str(ceeh_math.CeehMath.VERSION)
  if version not in (None, current):
    return version  # an older build someone kept: read it if it is there
  name = f'{PROJECT}/{config_name}'
  if current in _prepared_versions(data_dir, name):
    info = tfds.builder_from_directory(os.path.join(data_dir, name, current)).info
    built = info.metadata.get('source_sha256') if info.metadata else None
    path = ceeh_math.source_path(config_name) if config_name in data_lib.BENCHMARKS else None
    if path is not None and path.exists() and built != ceeh_math.file_sha256(path):
      raise data_lib.DataError(
          f'tfds:{name} in {data_dir} was built from another {path.name} than the one in '
          f'{data_lib.DATA_DIR}; rebuild it: python -m ceeh_jax.datasets.prepare '
          f'--data_dir={data_dir} --configs={config_name} --overwrite')
    return current
  print(f'data: preparing tfds:{name} {current} in {data_dir} (once; offline, from the '
        'vendored JSONL)', file=sys.stderr)
  prepare_project(config_name, data_dir)
  return current


def open_source(name: str, version: str | None, split: str | None, data_dir: str):
  """(data source, split) of a prepared dataset; DataError says how to prepare a missing one."""
  if name.startswith(f'{PROJECT}/'):
    version = _ensure_project(name.split('/', 1)[1], version, data_dir)
  versions = _prepared_versions(data_dir, name)
  if version is None and versions:
    version = versions[-1]
  if version not in versions:
    want = f'{name}:{version}' if version else name
    raise data_lib.DataError(
        f'tfds:{want} is not prepared in {data_dir} (no {name}/{version or "<version>"}/'
        f'dataset_info.json there); prepare it with tfds.builder({name!r}, data_dir='
        f"{data_dir!r}).download_and_prepare(file_format='array_record'), or point "
        'data.tfds_data_dir (or $TFDS_DATA_DIR) at the dir that has it; the project\'s own '
        f'sets: python -m ceeh_jax.datasets.prepare --data_dir={data_dir}')
  builder = tfds.builder_from_directory(os.path.join(data_dir, *name.split('/'), version))
  splits = list(builder.info.splits.keys())
  if split is None:
    # A benchmark with one split (test) needs no split name; otherwise train, as tfds does.
    split = splits[0] if len(splits) == 1 else 'train'
  try:
    return builder.as_data_source(split=split), split
  except NotImplementedError:
    fmt = builder.info.file_format.value if builder.info.file_format else 'unknown'
    raise data_lib.DataError(
        f'tfds:{name}:{version} in {data_dir} is stored as {fmt}, which has no random '
        "access; prepare it again with download_and_prepare(file_format='array_record') "
        '(tfds build --file_format=array_record)') from None
  except ValueError as e:  # an unknown split or a malformed slice
    raise data_lib.DataError(f'tfds:{name}:{version}: split {split!r}: {e} (splits: '
                             f'{", ".join(splits)})') from None


def _plain(value):
  """TFDS values as JSON-like Python: text as str (bytes if not UTF-8), arrays as lists."""
  if isinstance(value, bytes):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      return value  # the loader reports it as a bad_utf8 row
  if isinstance(value, np.ndarray):
    return [_plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_plain(v) for v in value]
  return value


def rows(source: str, name: str, version: str | None, split: str | None,
         data_dir: str | None) -> Iterator[tuple[str, Any]]:
  """(where, row) for every row of a prepared dataset, in its order."""
  ds, _ = open_source(name, version, split, os.path.expanduser(data_dir or default_data_dir()))
  n = len(ds)
  for start in range(0, n, _READ_CHUNK):
    chunk = ds.__getitems__(list(range(start, min(n, start + _READ_CHUNK))))
    for i, ex in enumerate(chunk, start + 1):
      yield f'{source}: row {i}', _plain(ex)
