"""Math problems from local files: loading with row validation, fingerprint, epoch iterator.

A source is a path (`.jsonl`, `.json` holding a list of objects, `.parquet`),
`tfds:<name>[:<version>][:<split>]` (a TFDS dataset prepared in the TFDS data dir, read by
random access without TensorFlow: datasets/tfds_source.py), or the short name of a vendored
benchmark in `data/` (BENCHMARKS). Rows become `Example(id, problem, answer, meta)`;
`field_map` renames the file's keys (dotted paths reach into nested objects, and `id: None`
numbers the rows `<stem>-<index>`). A malformed row raises DataError naming the file and the
1-based line (JSONL) or row; with `on_error='skip'` it is dropped and counted by reason. No
bytes can crash the loader: nesting too deep for the JSON parser, numbers too long to convert,
invalid UTF-8, lone surrogates, a byte-order mark, a truncated last line each become one of
REASONS (tests/test_loader_fuzz.py feeds it thousands of random and hostile rows).
"""
import collections
import dataclasses
import hashlib
import json
import math
import numbers
import pathlib
import re
from typing import Any, Iterator, Mapping

import numpy as np

from ceeh_jax import errors
from ceeh_jax import shipped

# The vendored benchmarks (data/README.md): the checkout's data/, or the installed package's copy.
DATA_DIR = shipped.path('data')
BENCHMARKS = {
    'gsm8k': 'gsm8k.jsonl', 'math500': 'math500.jsonl', 'aime24': 'aime24.jsonl',
    'aime25': 'aime25.jsonl', 'amc23': 'amc23.jsonl', 'minerva': 'minerva_math.jsonl',
    'minerva_math': 'minerva_math.jsonl', 'olympiadbench': 'olympiadbench.jsonl',
    'amc83': 'amc_deepscaler83.jsonl', 'amc_deepscaler83': 'amc_deepscaler83.jsonl',
    'deepscaler2k': 'deepscaler_sample2k.jsonl',
    'deepscaler_sample2k': 'deepscaler_sample2k.jsonl',
}
REASONS = ('bad_json', 'bad_utf8', 'too_deep', 'bad_number', 'not_object', 'missing_field',
           'empty_field', 'wrong_type', 'duplicate_id', 'problem_too_long', 'bad_value')
_BOM = b'\xef\xbb\xbf'
_FIELDS = ('id', 'problem', 'answer')
_TFDS = re.compile(r'tfds:(?P<name>[^:\[]+)(?::(?P<version>\d+(?:\.\d+)*))?'
                   r'(?::(?P<split>.+))?$')


class DataError(errors.UserError, ValueError):
  """A malformed data file or row; the message names the file and the line or row."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One problem: `meta` holds the row's other fields (a nested `meta` object flattened)."""
  id: str
  problem: str
  answer: str
  meta: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


@dataclasses.dataclass
class LoadStats:
  """What `load_examples` read: rows seen, examples kept, rows skipped by reason."""
  source: str = ''
  rows: int = 0
  loaded: int = 0
  reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def skipped(self) -> int:
    return sum(self.reasons.values())


class _RowError(Exception):

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def resolve(source: str) -> str:
  """A benchmark short name -> its vendored file; anything else unchanged."""
  return str(DATA_DIR / BENCHMARKS[source]) if source in BENCHMARKS else str(source)


def _parse_json(text: str):
  """json.loads, with each way it can fail on hostile text as a _RowError."""
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    return _RowError('bad_json', f'invalid JSON ({e.msg} at column {e.colno})')
  except RecursionError:  # e.g. [[[[...]]]] 100,000 deep: the parser recurses per level
    return _RowError('too_deep', 'JSON nested too deeply to parse')
  except ValueError as e:  # e.g. an integer over Python's 4,300-digit conversion limit
    return _RowError('bad_number', f'unreadable number ({" ".join(str(e).split())[:120]})')


def _jsonl_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  with open(path, 'rb') as f:
    for lineno, raw in enumerate(f, 1):
      where = f'{path}:{lineno}'
      if raw.startswith(_BOM):  # UTF-8 byte-order mark (any line: concatenated files)
        raw = raw[len(_BOM):]
      if not raw.strip():
        continue  # blank lines (a trailing newline) are not rows
      try:
        text = raw.decode('utf-8')
      except UnicodeDecodeError as e:
        yield where, _RowError('bad_utf8', f'invalid UTF-8 at byte {e.start} of the line')
        continue
      yield where, _parse_json(text)


def _json_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  raw = path.read_bytes()
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise DataError(f'{path}: invalid UTF-8 at byte {e.start}') from None
  try:
    rows = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f'{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})') from None
  except RecursionError:  # the file is one JSON value: nothing to skip
    raise DataError(f'{path}: JSON nested too deeply to parse') from None
  except ValueError as e:  # an integer over Python's 4,300-digit conversion limit
    raise DataError(f'{path}: unreadable number ({" ".join(str(e).split())[:120]})') from None
  if not isinstance(rows, list):
    raise DataError(f'{path}: a .json source must hold a list of objects, not a '
                    f'{type(rows).__name__} (use .jsonl for one object per line)')
  for i, row in enumerate(rows, 1):
    yield f'{path}: row {i}', row


def _parquet_rows(path: pathlib.Path) -> Iterator[tuple[str, Any]]:
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'reading {path} needs pyarrow, which is not installed: '
                      'pip install pyarrow') from e
  for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
    yield f'{path}: row {i}', row


def _tfds_rows(source: str, data_dir: str | None) -> Iterator[tuple[str, Any]]:
  m = _TFDS.match(source)
  if not m:
    raise DataError(f'{source!r}: expected tfds:<name>[:<version>][:<split>], e.g. '
                    'tfds:ceeh_math/math500 or tfds:my_set:1.0.0:train[:100]')
  try:
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise ImportError(f'{source} needs tensorflow-datasets, which is not installed: pip '
                      'install tensorflow-datasets array-record (see requirements.txt; '
                      'TensorFlow is not needed)') from e
  from ceeh_jax.datasets import tfds_source  # pylint: disable=g-import-not-at-top
  return tfds_source.rows(source, m['name'], m['version'], m['split'], data_dir)


def _rows(source: str, tfds_data_dir: str | None) -> Iterator[tuple[str, Any]]:
  if source.startswith('tfds:'):
    return _tfds_rows(source, tfds_data_dir)
  path = pathlib.Path(source)
  if not path.is_file():
    raise errors.MissingFileError(f'data source {source!r} is not a file (benchmark names: '
                                  f'{", ".join(sorted(BENCHMARKS))}; or tfds:<name>[:<split>])')
  readers = {'.jsonl': _jsonl_rows, '.ndjson': _jsonl_rows, '.json': _json_rows,
             '.parquet': _parquet_rows}
  if path.suffix not in readers:
    raise ValueError(f'{source}: unsupported format {path.suffix!r} '
                     f'(use {", ".join(readers)}, or tfds:<name>)')
  return readers[path.suffix](path)


def _lookup(row: dict, key: str):
  """row[key], or row['a']['b'] for key 'a.b' when 'a.b' itself is absent."""
  if key in row:
    return row[key]
  node = row
  for part in key.split('.'):
    if not isinstance(node, dict) or part not in node:
      raise _RowError('missing_field', f'missing field {key!r}')
    node = node[part]
  return node


def _as_text(value, key: str, ours: str) -> str:
  """A field as a non-empty UTF-8-encodable string; ids may be ints, answers numbers."""
  if isinstance(value, bytes):  # tensorflow-datasets gives bytes
    try:
      value = value.decode('utf-8')
    except UnicodeDecodeError:
      raise _RowError('bad_utf8', f'field {key!r} is not valid UTF-8') from None
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, numbers.Real)):
    raise _RowError('wrong_type', f'field {key!r} has type {type(value).__name__}, expected '
                    f'a string{"" if ours == "problem" else " or a number"}')
  if not isinstance(value, str):
    if ours == 'problem' or (ours == 'id' and not isinstance(value, numbers.Integral)):
      raise _RowError('wrong_type', f'field {key!r} has type {type(value).__name__}, expected '
                      f'a string{" or an integer" if ours == "id" else ""}')
    value = _number_text(value, key)
  if not value.strip():
    raise _RowError('empty_field', f'field {key!r} is empty')
  try:
    value.encode('utf-8')
  except UnicodeEncodeError:
    raise _RowError('bad_utf8', f'field {key!r} holds a lone surrogate (\\ud800-style '
                    'escape), which is not text') from None
  return value


def _number_text(value, key: str) -> str:
  """An int as its digits (never through float: 10**400 overflows it); amc answers come as
  27.0, so an integral float is written as the integer."""
  try:
    if isinstance(value, numbers.Integral):
      return str(int(value))
    value = float(value)
    if not math.isfinite(value):
      raise _RowError('wrong_type', f'field {key!r} is {value}, expected a finite number')
    return str(int(value)) if value.is_integer() else repr(value)
  except (ValueError, OverflowError) as e:  # over the int -> str digit limit
    raise _RowError('bad_number', f'field {key!r}: unreadable number ({e})') from None


def _example(row, index: int, fields: dict, stem: str, max_problem_chars) -> Example:
  if isinstance(row, _RowError):
    raise row
  if not isinstance(row, dict):
    raise _RowError('not_object', f'row has type {type(row).__name__}, expected an object')
  vals = {}
  for ours in _FIELDS:
    key = fields[ours]
    vals[ours] = f'{stem}-{index}' if key is None else _as_text(_lookup(row, key), key, ours)
  if max_problem_chars is not None and len(vals['problem']) > max_problem_chars:
    raise _RowError('problem_too_long', f'problem has {len(vals["problem"])} characters, '
                    f'over max_problem_chars={max_problem_chars}')
  used = {k.split('.')[0] if k not in row else k for k in fields.values() if k is not None}
  meta = {k: v for k, v in row.items() if k not in used and k != 'meta'}
  if isinstance(row.get('meta'), dict) and 'meta' not in used:
    meta.update({k: v for k, v in row['meta'].items() if k not in meta})
  elif 'meta' in row and 'meta' not in used:
    meta['meta'] = row['meta']
  return Example(vals['id'], vals['problem'], vals['answer'], meta)


def load_examples(source: str, *, field_map: Mapping[str, str | None] | None = None,
                  on_error: str = 'raise', max_problem_chars: int | None = None,
                  tfds_data_dir: str | None = None) -> tuple[list[Example], LoadStats]:
  """Reads and validates every row of `source` -> (examples in file order, LoadStats).

  Args:
    source: a path, `tfds:<name>[:<version>][:<split>]`, or a benchmark name (BENCHMARKS).
    field_map: our name ('id', 'problem', 'answer') -> the file's key (dotted for nested);
      unnamed fields map to themselves; `'id': None` numbers rows `<stem>-<0-based index>`.
    on_error: 'raise' (DataError naming file and line) or 'skip' (counted in LoadStats).
    max_problem_chars: longer problems are malformed rows ('problem_too_long').
    tfds_data_dir: where `tfds:` datasets are prepared (None: $TFDS_DATA_DIR, else
      ~/tensorflow_datasets).
  """
  if on_error not in ('raise', 'skip'):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  fields = {k: k for k in _FIELDS}
  for ours, theirs in dict(field_map or {}).items():
    if ours not in _FIELDS or (theirs is None and ours != 'id'):
      raise ValueError(f'field_map maps our names {_FIELDS} to the file\'s keys (only id may '
                       f'be None); got {ours!r}: {theirs!r}')
    fields[ours] = theirs
  path = resolve(source)
  stem = pathlib.Path(path).stem if not path.startswith('tfds:') else path[5:]
  examples, first_seen = [], {}
  stats = LoadStats(source=path)
  for where, row in _rows(path, tfds_data_dir):
    try:
      try:
        ex = _example(row, stats.rows, fields, stem, max_problem_chars)
      except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # A value no check above foresaw (e.g. an exotic type from parquet or tfds): still
        # this row's fault, so it is named or counted, never a crash.
        raise _RowError('bad_value', f'{type(e).__name__}: {" ".join(str(e).split())[:200]}')
      if ex.id in first_seen:
        raise _RowError('duplicate_id', f'duplicate id {ex.id!r} (first at {first_seen[ex.id]})')
    except _RowError as e:
      if on_error == 'raise':
        raise DataError(f'{where}: {e}') from None
      stats.reasons[e.reason] += 1
      continue
    finally:
      stats.rows += 1
    first_seen[ex.id] = where
    examples.append(ex)
  stats.loaded = len(examples)
  if not examples:
    raise DataError(f'{path}: no usable rows ({stats.rows} read, skipped by reason: '
                    f'{dict(stats.reasons)})')
  return examples, stats


def dataset_fingerprint(examples) -> str:
  """sha256 over the ids in order: the difficulty state is indexed by this order."""
  h = hashlib.sha256()
  for ex in examples:
    b = ex.id.encode('utf-8', 'surrogatepass')
    h.update(len(b).to_bytes(8, 'little') + b)  # length-prefixed: ('ab','c') != ('a','bc')
  return h.hexdigest()


class EpochIterator:
  """Endless batches of example indices, int64[batch_size], reshuffled every epoch.

  Epoch e is a permutation drawn from `np.random.default_rng([seed, e])`. Batches run through
  the epochs back to back, so every epoch covers every example exactly once. When a batch
  straddles two epochs, the new epoch starts with examples not already in that batch (a
  reordering inside its first `batch_size` places; `exclude` in the state), so no batch
  repeats an index unless the dataset is smaller than a batch, in which case batches are
  plain runs of successive permutations. `get_state()` is JSON-serialisable; `set_state` of a
  saved state continues with exactly the batches of an uninterrupted run.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < 1 or batch_size < 1 or seed < 0:
      raise ValueError('EpochIterator needs num_examples >= 1, batch_size >= 1, seed >= 0; '
                       f'got {num_examples}, {batch_size}, {seed}')
    self.num_examples, self.batch_size, self.seed = int(num_examples), int(batch_size), int(seed)
    self.epoch, self.position, self._exclude = 0, 0, []
    self._order = self._epoch_order(0, [])

  def _epoch_order(self, epoch: int, exclude: list[int]) -> np.ndarray:
    perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
    if not exclude:
      return perm
    # The batch still needs `need` indices: the first `need` of this epoch not in `exclude`.
    # Only the first batch_size places move, and they hold at least `need` such indices.
    need, block = self.batch_size - len(exclude), perm[:self.batch_size]
    fresh = ~np.isin(block, exclude)
    head = np.flatnonzero(fresh)[:need]
    rest = np.setdiff1d(np.arange(self.batch_size), head, assume_unique=True)
    return np.concatenate([block[head], block[rest], perm[self.batch_size:]])

  def next(self) -> np.ndarray:
    """The next batch: int64[batch_size] indices into the examples."""
    out = []
    while len(out) < self.batch_size:
      take = min(self.batch_size - len(out), self.num_examples - self.position)
      out.extend(self._order[self.position:self.position + take].tolist())
      self.position += take
      if self.position == self.num_examples:
        straddle = len(out) < self.batch_size and self.num_examples >= self.batch_size
        self.epoch, self.position, self._exclude = self.epoch + 1, 0, out[:] if straddle else []
        self._order = self._epoch_order(self.epoch, self._exclude)
    return np.asarray(out, np.int64)

  __next__ = next

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return {'epoch': self.epoch, 'position': self.position, 'exclude': list(self._exclude),
            'seed': self.seed, 'num_examples': self.num_examples, 'batch_size': self.batch_size}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores `get_state()`; refuses a state saved for other data, batch size or seed."""
    for key in ('num_examples', 'batch_size', 'seed'):
      if key in state and int(state[key]) != getattr(self, key):
        raise ValueError(f'iterator state was saved with {key}={state[key]}, this run has '
                         f'{getattr(self, key)}; resuming would give different batches')
    epoch, position = int(state['epoch']), int(state['position'])
    if epoch < 0 or not 0 <= position < self.num_examples:
      raise ValueError(f'iterator state out of range: epoch={epoch}, position={position} '
                       f'for {self.num_examples} examples')
    self.epoch, self.position = epoch, position
    self._exclude = [int(i) for i in state.get('exclude', [])]
    self._order = self._epoch_order(epoch, self._exclude)
