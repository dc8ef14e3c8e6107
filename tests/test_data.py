"""Data: vendored benchmarks, malformed rows (file:line errors, counted skips), formats,
field_map, fingerprint, and the checkpointable epoch iterator."""
import hashlib
import json
import sys
import types

import numpy as np
import pytest

from ceeh_jax import data as data_lib

ROWS = {'gsm8k': 1319, 'math500': 500, 'aime24': 30, 'aime25': 30, 'amc23': 40, 'minerva': 272,
        'olympiadbench': 675, 'amc83': 83, 'deepscaler2k': 2000}


def _write_jsonl(path, lines):
  path.write_bytes(b'\n'.join(l if isinstance(l, bytes) else l.encode() for l in lines) + b'\n')
  return str(path)


def _row(i, **kw):
  return json.dumps({'id': f'q{i}', 'problem': f'What is {i}+1?', 'answer': str(i + 1), **kw})


# --- vendored benchmarks ---------------------------------------------------------------------

def test_vendored_benchmarks_match_manifest():
  manifest = json.loads((data_lib.DATA_DIR / 'manifest.json').read_text())
  for name, rows in ROWS.items():
    examples, stats = data_lib.load_examples(name)
    assert len(examples) == stats.loaded == stats.rows == rows and stats.skipped == 0
    path = data_lib.resolve(name)
    entry = next(v for v in manifest.values() if v['file'] == path.rsplit('/', 1)[1])
    assert entry['rows'] == rows
    with open(path, 'rb') as f:
      assert hashlib.sha256(f.read()).hexdigest() == entry['sha256']
  assert data_lib.resolve('minerva') == str(data_lib.DATA_DIR / 'minerva_math.jsonl')
  assert 'shared' not in str(data_lib.DATA_DIR)  # found beside the package, not via ../shared


def test_vendored_fields_and_meta():
  aime, _ = data_lib.load_examples('aime24')
  assert aime[0].id == 'aime24-0' and aime[0].answer == '204'
  assert sum(e.answer.startswith('0') for e in aime) == 7  # zero-padded, kept as strings
  assert {'url', 'source', 'solution'} <= set(aime[0].meta)  # nested meta flattened
  math500, _ = data_lib.load_examples('math500')
  assert math500[4].answer == '\\text{Evelyn}' and 'level' in math500[4].meta


# --- malformed rows --------------------------------------------------------------------------

BAD_ROWS = [  # (line 2 of a 3-line file, reason, words the message must contain)
    (b'{"id": "q1", "problem": "p", ', 'bad_json', 'invalid JSON'),
    (b'{"id": "q1", "problem": "caf\xe9", "answer": "1"}', 'bad_utf8', 'invalid UTF-8'),
    ('{"id": "q1", "problem": "p\\ud800", "answer": "1"}', 'bad_utf8', 'surrogate'),
    ('["q1", "p", "1"]', 'not_object', 'expected an object'),
    ('{"id": "q1", "answer": "1"}', 'missing_field', "missing field 'problem'"),
    ('{"id": "q1", "problem": "  ", "answer": "1"}', 'empty_field', "'problem' is empty"),
    ('{"id": "q1", "problem": "p", "answer": ""}', 'empty_field', "'answer' is empty"),
    ('{"id": "q1", "problem": 7, "answer": "1"}', 'wrong_type', "'problem' has type int"),
    ('{"id": "q1", "problem": "p", "answer": [1]}', 'wrong_type', "'answer' has type list"),
    ('{"id": "q1", "problem": "p", "answer": true}', 'wrong_type', "'answer' has type bool"),
    ('{"id": 1.5, "problem": "p", "answer": "1"}', 'wrong_type', "'id' has type float"),
    ('{"id": null, "problem": "p", "answer": "1"}', 'wrong_type', "'id' has type NoneType"),
    ('{"id": "q0", "problem": "p", "answer": "1"}', 'duplicate_id', "duplicate id 'q0'"),
    (json.dumps({'id': 'q1', 'problem': 'x' * 101, 'answer': '1'}), 'problem_too_long',
     '101 characters'),
]


@pytest.mark.parametrize('bad, reason, words', BAD_ROWS, ids=[r for _, r, _ in BAD_ROWS])
def test_malformed_row_names_file_and_line(tmp_path, bad, reason, words):
  path = _write_jsonl(tmp_path / 'train.jsonl', [_row(0), bad, _row(2)])
  with pytest.raises(data_lib.DataError) as e:
    data_lib.load_examples(path, max_problem_chars=100)
  assert str(e.value).startswith(f'{path}:2: ') and words in str(e.value)
  examples, stats = data_lib.load_examples(path, on_error='skip', max_problem_chars=100)
  assert [x.id for x in examples] == ['q0', 'q2']
  assert (stats.rows, stats.loaded, stats.skipped, dict(stats.reasons)) == (3, 2, 1, {reason: 1})
  assert reason in data_lib.REASONS


def test_skip_counts_by_reason_and_blank_lines(tmp_path):
  path = _write_jsonl(tmp_path / 'mixed.jsonl', [
      _row(0), b'', b'not json', _row(1), _row(1), b'\xff\xfe', '{"id": "q9"}', b'   ', _row(2)])
  examples, stats = data_lib.load_examples(path, on_error='skip')
  assert [x.id for x in examples] == ['q0', 'q1', 'q2']
  assert dict(stats.reasons) == {'bad_json': 1, 'duplicate_id': 1, 'bad_utf8': 1,
                                 'missing_field': 1}
  assert stats.rows == 7  # blank lines are not rows
  with pytest.raises(data_lib.DataError, match=r'mixed.jsonl:3: invalid JSON'):
    data_lib.load_examples(path)  # line numbers count the blank line


def test_whole_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='benchmark names: .*aime24'):
    data_lib.load_examples(str(tmp_path / 'nope.jsonl'))
  with pytest.raises(FileNotFoundError, match='is not a file'):
    data_lib.load_examples('aime2024')  # a typo of a short name
  (tmp_path / 'x.csv').write_text('id,problem,answer\n')
  with pytest.raises(ValueError, match="unsupported format '.csv'"):
    data_lib.load_examples(str(tmp_path / 'x.csv'))
  empty = _write_jsonl(tmp_path / 'empty.jsonl', ['{"id": "a"}'])
  with pytest.raises(data_lib.DataError, match='no usable rows'):
    data_lib.load_examples(empty, on_error='skip')
  (tmp_path / 'obj.json').write_text('{"id": "a"}')
  with pytest.raises(data_lib.DataError, match='must hold a list of objects'):
    data_lib.load_examples(str(tmp_path / 'obj.json'))
  (tmp_path / 'broken.json').write_text('[\n{"id": "a"},\n{oops}\n]')
  with pytest.raises(data_lib.DataError, match=r'broken.json:3: invalid JSON'):
    data_lib.load_examples(str(tmp_path / 'broken.json'))
  with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
    data_lib.load_examples('aime24', on_error='ignore')
  with pytest.raises(ValueError, match='field_map maps our names'):
    data_lib.load_examples('aime24', field_map={'question': 'problem'})


# --- formats and field_map -------------------------------------------------------------------

def _records():
  return [{'idx': 7, 'question': 'What is 1/2 + 1/2?', 'final': '1', 'level': 2},
          {'idx': 8, 'question': 'Name the city.', 'final': 'Paris', 'level': 1},
          {'idx': 9, 'question': 'Half of 5?', 'final': '2.5', 'level': 3}]


FIELD_MAP = {'id': 'idx', 'problem': 'question', 'answer': 'final'}
EXPECTED = [data_lib.Example('7', 'What is 1/2 + 1/2?', '1', {'level': 2}),
            data_lib.Example('8', 'Name the city.', 'Paris', {'level': 1}),
            data_lib.Example('9', 'Half of 5?', '2.5', {'level': 3})]


def test_jsonl_json_parquet_round_trip(tmp_path):
  recs = _records()
  jsonl = _write_jsonl(tmp_path / 'd.jsonl', [json.dumps(r) for r in recs])
  (tmp_path / 'd.json').write_text(json.dumps(recs, indent=1))
  sources = [jsonl, str(tmp_path / 'd.json')]
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / 'd.parquet')
    sources.append(str(tmp_path / 'd.parquet'))
  except ImportError:
    pass  # covered by test_parquet_without_pyarrow_says_what_to_install
  for src in sources:
    examples, stats = data_lib.load_examples(src, field_map=FIELD_MAP)
    assert examples == EXPECTED and [e.meta for e in examples] == [e.meta for e in EXPECTED]
    assert stats.loaded == 3, src


def test_numeric_answers_and_ids(tmp_path):
  # amc sources store answers as JSON numbers (27.0): an integral float becomes '27'.
  path = _write_jsonl(tmp_path / 'n.jsonl', [json.dumps(
      {'id': i, 'problem': 'p', 'answer': a}) for i, a in enumerate([27.0, 2.5, -3, 1e20])])
  examples, _ = data_lib.load_examples(path)
  assert [(e.id, e.answer) for e in examples] == [
      ('0', '27'), ('1', '2.5'), ('2', '-3'), ('3', '100000000000000000000')]
  nan = _write_jsonl(tmp_path / 'nan.jsonl', ['{"id": "a", "problem": "p", "answer": NaN}'])
  with pytest.raises(data_lib.DataError, match=r'nan.jsonl:1: .*expected a finite number'):
    data_lib.load_examples(nan)


def test_parquet_nested_fields_and_generated_ids(tmp_path):
  pa = pytest.importorskip('pyarrow', reason='pyarrow is optional; pip install pyarrow')
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  rows = [{'prompt': [{'role': 'user', 'content': 'What is 2+2?'}], 'q': 'What is 2+2?',
           'reward_model': {'ground_truth': '4', 'style': 'rule'}}]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / 'verl.parquet')
  (ex,), _ = data_lib.load_examples(
      str(tmp_path / 'verl.parquet'),
      field_map={'id': None, 'problem': 'q', 'answer': 'reward_model.ground_truth'})
  assert (ex.id, ex.problem, ex.answer) == ('verl-0', 'What is 2+2?', '4')
  assert set(ex.meta) == {'prompt'}
  with pytest.raises(data_lib.DataError, match=r"verl.parquet: row 1: missing field 'rm.x'"):
    data_lib.load_examples(str(tmp_path / 'verl.parquet'), field_map={
        'id': None, 'problem': 'q', 'answer': 'rm.x'})


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
  (tmp_path / 'd.parquet').write_bytes(b'PAR1')
  monkeypatch.setitem(sys.modules, 'pyarrow', None)  # import pyarrow -> ImportError
  monkeypatch.setitem(sys.modules, 'pyarrow.parquet', None)
  with pytest.raises(ImportError, match='pip install pyarrow'):
    data_lib.load_examples(str(tmp_path / 'd.parquet'))


def test_tfds_source_with_a_stand_in_module(monkeypatch):
  # tensorflow-datasets is optional (it needs tensorflow); a stand-in checks our side of it.
  calls = []

  def load(name, split):
    calls.append((name, split))
    return [{'question': b'What is 3*3?', 'answer': b'9'},
            {'question': 'caf\xe9'.encode('latin-1'), 'answer': b'1'}]

  fake = types.SimpleNamespace(load=load, as_numpy=lambda ds: ds)
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', fake)
  fm = {'id': None, 'problem': 'question'}
  examples, stats = data_lib.load_examples('tfds:gsm8k:1.0.0:test[:10]', field_map=fm,
                                           on_error='skip')
  assert calls == [('gsm8k:1.0.0', 'test[:10]')]
  assert [(e.id, e.problem, e.answer) for e in examples] == [
      ('gsm8k:1.0.0:test[:10]-0', 'What is 3*3?', '9')]
  assert dict(stats.reasons) == {'bad_utf8': 1}
  data_lib.load_examples('tfds:gsm8k', field_map=fm, on_error='skip')
  assert calls[-1] == ('gsm8k', 'train')
  with pytest.raises(data_lib.DataError, match=r'tfds:gsm8k: row 2: .*not valid UTF-8'):
    data_lib.load_examples('tfds:gsm8k', field_map=fm)


def test_tfds_without_the_package_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ImportError, match='pip install tensorflow-datasets'):
    data_lib.load_examples('tfds:gsm8k:test')


@pytest.mark.skipif(__import__('importlib').util.find_spec('tensorflow_datasets') is None,
                    reason='tensorflow-datasets is not installed (optional; needs tensorflow)')
def test_real_tfds_import_path():
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
  with pytest.raises(Exception):  # an unknown builder must fail loudly, not return nothing
    data_lib.load_examples('tfds:no_such_dataset_ceeh:test')


# --- fingerprint -----------------------------------------------------------------------------

def test_fingerprint_detects_changed_or_reordered_ids():
  ex = [data_lib.Example(i, 'p', 'a') for i in ('a', 'b', 'c')]
  fp = data_lib.dataset_fingerprint(ex)
  assert fp == data_lib.dataset_fingerprint([data_lib.Example(e.id, 'other', 'x') for e in ex])
  assert fp != data_lib.dataset_fingerprint(ex[::-1])
  assert fp != data_lib.dataset_fingerprint(ex[:2])
  ab_c = [data_lib.Example('ab', 'p', 'a'), data_lib.Example('c', 'p', 'a')]
  a_bc = [data_lib.Example('a', 'p', 'a'), data_lib.Example('bc', 'p', 'a')]
  assert data_lib.dataset_fingerprint(ab_c) != data_lib.dataset_fingerprint(a_bc)
  assert len(fp) == 64 and fp == data_lib.dataset_fingerprint(list(ex))


# --- epoch iterator --------------------------------------------------------------------------

@pytest.mark.parametrize('n, batch', [(10, 3), (12, 4), (7, 7), (100, 32), (13, 12)])
def test_iterator_epochs_cover_all_without_repeats(n, batch):
  it = data_lib.EpochIterator(n, batch, seed=3)
  batches = [it.next() for _ in range(60)]
  assert all(b.shape == (batch,) and b.dtype == np.int64 for b in batches)
  assert all(len(set(b.tolist())) == batch for b in batches)  # also across epoch boundaries
  stream = np.concatenate(batches)
  for e in range(len(stream) // n):  # epoch e is stream[e*n:(e+1)*n], a permutation
    assert sorted(stream[e * n:(e + 1) * n].tolist()) == list(range(n))
  assert it.epoch == len(stream) // n


def test_iterator_is_deterministic_and_epochs_differ():
  a = [data_lib.EpochIterator(50, 10, seed=1).next() for _ in range(2)]
  b = [data_lib.EpochIterator(50, 10, seed=1).next() for _ in range(2)]
  assert all((x == y).all() for x, y in zip(a, b))
  it = data_lib.EpochIterator(50, 50, seed=1)
  e0, e1 = it.next(), it.next()
  assert (e0 == np.random.default_rng([1, 0]).permutation(50)).all()  # seeded by (seed, epoch)
  assert not (e0 == e1).all()
  assert not (e0 == data_lib.EpochIterator(50, 50, seed=2).next()).all()


@pytest.mark.parametrize('n, batch, cut', [(10, 3, 4), (13, 12, 5), (100, 32, 7), (5, 8, 3)])
def test_iterator_resume_equals_uninterrupted(n, batch, cut):
  it = data_lib.EpochIterator(n, batch, seed=11)
  straight = [it.next() for _ in range(20)]
  first = data_lib.EpochIterator(n, batch, seed=11)
  for _ in range(cut):
    first.next()
  state = json.loads(json.dumps(first.get_state()))  # as stored in a checkpoint
  resumed = data_lib.EpochIterator(n, batch, seed=11)
  resumed.set_state(state)
  assert all((resumed.next() == straight[cut + i]).all() for i in range(20 - cut))


def test_iterator_batch_larger_than_dataset():
  it = data_lib.EpochIterator(3, 8, seed=0)
  b0, b1 = it.next(), it.next()
  perms = [np.random.default_rng([0, e]).permutation(3) for e in range(6)]
  assert (np.concatenate([b0, b1]) == np.concatenate(perms)[:16]).all()  # successive epochs
  assert it.get_state()['epoch'] == 5 and it.get_state()['position'] == 1


def test_iterator_refuses_a_foreign_state():
  state = data_lib.EpochIterator(10, 3, seed=0).get_state()
  with pytest.raises(ValueError, match='num_examples=10, this run has 11'):
    data_lib.EpochIterator(11, 3, seed=0).set_state(state)
  with pytest.raises(ValueError, match='batch_size=3, this run has 4'):
    data_lib.EpochIterator(10, 4, seed=0).set_state(state)
  with pytest.raises(ValueError, match='num_examples >= 1'):
    data_lib.EpochIterator(0, 3, seed=0)
