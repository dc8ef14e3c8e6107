"""Math problems from local files: loaders, validation, fingerprint, epoch iterator.

Sources: a path (.jsonl, .json list, .parquet), `tfds:<name>[:<split>]` (tensorflow-datasets,
prepared locally), or a vendored benchmark name (see BENCHMARKS). Rows have the schema
{id, problem, answer} (field names mappable). A malformed row raises DataError naming the file
and 1-based line; with on_error='skip' it is skipped and counted by reason.
"""
import collections
import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
BENCHMARKS = {
    'gsm8k': 'gsm8k.jsonl', 'math500': 'math500.jsonl', 'aime24': 'aime24.jsonl',
    'aime25': 'aime25.jsonl', 'amc23': 'amc23.jsonl', 'minerva': 'minerva_math.jsonl',
    'olympiadbench': 'olympiadbench.jsonl', 'amc_deepscaler83': 'amc_deepscaler83.jsonl',
    'deepscaler2k': 'deepscaler_sample2k.jsonl',
}


class DataError(ValueError):
  """A malformed data row or file (the message names the file and line)."""


@dataclasses.dataclass(frozen=True)
class Example:
  id: str
  problem: str
  answer: str
  meta: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


@dataclasses.dataclass
class LoadStats:
  rows: int = 0
  loaded: int = 0
  reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def skipped(self) -> int:
    return sum(self.reasons.values())


def resolve(source: str) -> str:
  """Benchmark name -> vendored file path; other sources unchanged."""
  return os.path.join(DATA_DIR, BENCHMARKS[source]) if source in BENCHMARKS else source


def _rows(source: str):
  """Yields (line_number, raw row or exception) from a file or tfds source."""
  if source.startswith('tfds:'):
    yield from _tfds_rows(source)
    return
  if not os.path.exists(source):
    known = ', '.join(sorted(BENCHMARKS))
    raise FileNotFoundError(f'data source {source!r} does not exist (benchmark names: {known})')
  if source.endswith('.parquet'):
    try:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'reading {source} needs pyarrow: pip install pyarrow') from e
    for i, row in enumerate(pq.read_table(source).to_pylist(), 1):
      yield i, row
  elif source.endswith('.json'):
    with open(source, 'rb') as f:
      try:
        rows = json.loads(f.read().decode('utf-8'))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f'{source}: not a valid UTF-8 JSON file ({e})') from None
    if not isinstance(rows, list):
      raise DataError(f'{source}: a .json source must hold a list of objects')
    for i, row in enumerate(rows, 1):
      yield i, row
  else:
    with open(source, 'rb') as f:
      for i, raw in enumerate(f, 1):
        if not raw.strip():
          continue
        try:
          yield i, json.loads(raw.decode('utf-8'))
        except UnicodeDecodeError:
          yield i, DataError('invalid UTF-8')
        except json.JSONDecodeError as e:
          yield i, DataError(f'invalid JSON ({e.msg})')


def _tfds_rows(source: str):
  parts = source.split(':')
  name, split = parts[1], (parts[2] if len(parts) > 2 else 'test')
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'{source} needs tensorflow-datasets: pip install tensorflow-datasets') from e
  ds = tfds.load(name, split=split, download=False)
  for i, ex in enumerate(tfds.as_numpy(ds), 1):
    row = {k: (v.decode('utf-8') if isinstance(v, bytes) else v) for k, v in ex.items()}
    row.setdefault('id', f'{name}-{split}-{i - 1}')
    if 'question' in row and 'problem' not in row:
      row['problem'] = row['question']
    if isinstance(row.get('answer'), str) and '####' in row['answer']:  # gsm8k format
      row['answer'] = row['answer'].rsplit('####', 1)[1].strip()
    yield i, row


def _check(row: Any, fields: dict, max_problem_chars) -> tuple[str | None, Example | None]:
  if isinstance(row, DataError):
    return str(row), None
  if not isinstance(row, dict):
    return f'row is a {type(row).__name__}, expected an object', None
  vals = {}
  for ours, theirs in fields.items():
    if theirs not in row:
      return f'missing field {theirs!r}', None
    v = row[theirs]
    if ours == 'id' and isinstance(v, int) and not isinstance(v, bool):
      v = str(v)
    if ours == 'answer' and isinstance(v, (int, float)) and not isinstance(v, bool):
      v = str(v)
    if not isinstance(v, str):
      return f'field {theirs!r} is a {type(v).__name__}, expected a string', None
    if not v.strip():
      return f'field {theirs!r} is empty', None
    vals[ours] = v
  if max_problem_chars and len(vals['problem']) > max_problem_chars:
    return f'problem has {len(vals["problem"])} characters (limit {max_problem_chars})', None
  meta = row.get('meta') if isinstance(row.get('meta'), dict) else {}
  return None, Example(vals['id'], vals['problem'], vals['answer'], meta)


def load_examples(source: str, *, field_map=None, on_error: str = 'raise',
                  max_problem_chars: int | None = 200_000):
  """-> (list[Example], LoadStats). Raises DataError (file:line) or skips and counts."""
  if on_error not in ('raise', 'skip'):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  fields = {'id': 'id', 'problem': 'problem', 'answer': 'answer'}
  fields.update(dict(field_map or {}))
  path = resolve(source)
  out, seen, stats = [], set(), LoadStats()
  for line, row in _rows(path):
    stats.rows += 1
    err, ex = _check(row, fields, max_problem_chars)
    if err is None and ex.id in seen:
      err = f'duplicate id {ex.id!r}'
    if err is not None:
      if on_error == 'raise':
        raise DataError(f'{path}:{line}: {err}')
      stats.reasons[err.split(' (')[0] if 'JSON' in err else err.split("'")[0].strip()] += 1
      continue
    seen.add(ex.id)
    out.append(ex)
  stats.loaded = len(out)
  if not out:
    raise DataError(f'{path}: no usable rows ({stats.rows} read, {stats.skipped} skipped)')
  return out, stats


def dataset_fingerprint(examples) -> str:
  """sha256 over the ids in order: the difficulty state is indexed by this order."""
  h = hashlib.sha256()
  for ex in examples:
    h.update(ex.id.encode('utf-8', 'surrogatepass'))
    h.update(b'\0')
  return h.hexdigest()


class EpochIterator:
  """Batches of indices; each epoch a fresh permutation (no repeats within an epoch).

  A batch larger than what is left of an epoch continues into the next epoch's permutation,
  so a batch repeats an index only when the dataset is smaller than the batch.
  The state (epoch, position) is JSON-serialisable and checkpointed with the TrainState.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples <= 0 or batch_size <= 0:
      raise ValueError(f'need num_examples > 0 and batch_size > 0, got {num_examples}, {batch_size}')
    self.n, self.batch_size, self.seed = num_examples, batch_size, seed
    self.epoch, self.position = 0, 0

  def _perm(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.n)

  def next(self) -> np.ndarray:
    out = []
    while len(out) < self.batch_size:
      perm = self._perm(self.epoch)
      take = min(self.batch_size - len(out), self.n - self.position)
      out.extend(perm[self.position:self.position + take].tolist())
      self.position += take
      if self.position == self.n:
        self.epoch, self.position = self.epoch + 1, 0
    return np.asarray(out, np.int64)

  __next__ = next

  def __iter__(self):
    return self

  def get_state(self) -> dict:
    return {'epoch': self.epoch, 'position': self.position, 'seed': self.seed, 'n': self.n,
            'batch_size': self.batch_size}

  def set_state(self, state: dict) -> None:
    if state.get('n', self.n) != self.n:
      raise DataError(f"iterator state is for {state['n']} examples, the data has {self.n}")
    self.epoch, self.position = int(state['epoch']), int(state['position'])
