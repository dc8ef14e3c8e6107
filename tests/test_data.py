"""Data: vendored benchmarks, malformed rows (file:line errors, counted skips), formats,
field_map, fingerprint, and the checkpointable epoch iterator."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import hashlib
import json
import pathlib
import sys
import unittest
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from ceeh_jax import data as data_lib

try:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
except ImportError:
  pa = pq = None

ROWS = {'gsm8k': 1319, 'math500': 500, 'aime24': 30, 'aime25': 30, 'amc23': 40, 'minerva': 272,
        'olympiadbench': 675, 'amc83': 83, 'deepscaler2k': 2000}


def _tmp(test):
  return pathlib.Path(test.create_tempdir())


def _write_jsonl(path, lines):
  path.write_bytes(b'\n'.join(l if isinstance(l, bytes) else l.encode() for l in lines) + b'\n')
  return str(path)


def _row(i, **kw):
  return json.dumps({'id': f'q{i}', 'problem': f'What is {i}+1?', 'answer': str(i + 1), **kw})


class VendoredBenchmarksTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(name, name, rows) for name, rows in ROWS.items()])
  def test_vendored_benchmarks_match_manifest(self, name, rows):
    manifest = json.loads((data_lib.DATA_DIR / 'manifest.json').read_text())
    examples, stats = data_lib.load_examples(name)
    self.assertEqual((len(examples), stats.loaded, stats.rows, stats.skipped),
                     (rows, rows, rows, 0))
    path = data_lib.resolve(name)
    entry = next(v for v in manifest.values() if v['file'] == path.rsplit('/', 1)[1])
    self.assertEqual(entry['rows'], rows)
    with open(path, 'rb') as f:
      self.assertEqual(hashlib.sha256(f.read()).hexdigest(), entry['sha256'])

  def test_vendored_benchmarks_resolve_beside_the_package(self):
    self.assertEqual(data_lib.resolve('minerva'), str(data_lib.DATA_DIR / 'minerva_math.jsonl'))
    # Found beside the package, not via ../shared.
    self.assertNotIn('shared', str(data_lib.DATA_DIR))

  def test_vendored_fields_and_meta(self):
    aime, _ = data_lib.load_examples('aime24')
    self.assertEqual((aime[0].id, aime[0].answer), ('aime24-0', '204'))
    self.assertEqual(sum(e.answer.startswith('0') for e in aime), 7)  # zero-padded strings
    self.assertContainsSubset({'url', 'source', 'solution'}, set(aime[0].meta))  # flattened
    math500, _ = data_lib.load_examples('math500')
    self.assertEqual(math500[4].answer, '\\text{Evelyn}')
    self.assertIn('level', math500[4].meta)


# (case name, line 2 of a 3-line file, reason, words the message must contain)
BAD_ROWS = [
    ('bad_json', b'{"id": "q1", "problem": "p", ', 'bad_json', 'invalid JSON'),
    ('bad_utf8', b'{"id": "q1", "problem": "caf\xe9", "answer": "1"}', 'bad_utf8',
     'invalid UTF-8'),
    ('bad_utf8_surrogate', '{"id": "q1", "problem": "p\\ud800", "answer": "1"}', 'bad_utf8',
     'surrogate'),
    ('not_object', '["q1", "p", "1"]', 'not_object', 'expected an object'),
    ('missing_field', '{"id": "q1", "answer": "1"}', 'missing_field',
     "missing field 'problem'"),
    ('empty_problem', '{"id": "q1", "problem": "  ", "answer": "1"}', 'empty_field',
     "'problem' is empty"),
    ('empty_answer', '{"id": "q1", "problem": "p", "answer": ""}', 'empty_field',
     "'answer' is empty"),
    ('problem_int', '{"id": "q1", "problem": 7, "answer": "1"}', 'wrong_type',
     "'problem' has type int"),
    ('answer_list', '{"id": "q1", "problem": "p", "answer": [1]}', 'wrong_type',
     "'answer' has type list"),
    ('answer_bool', '{"id": "q1", "problem": "p", "answer": true}', 'wrong_type',
     "'answer' has type bool"),
    ('id_float', '{"id": 1.5, "problem": "p", "answer": "1"}', 'wrong_type',
     "'id' has type float"),
    ('id_null', '{"id": null, "problem": "p", "answer": "1"}', 'wrong_type',
     "'id' has type NoneType"),
    ('duplicate_id', '{"id": "q0", "problem": "p", "answer": "1"}', 'duplicate_id',
     "duplicate id 'q0'"),
    ('problem_too_long', json.dumps({'id': 'q1', 'problem': 'x' * 101, 'answer': '1'}),
     'problem_too_long', '101 characters'),
]


class MalformedRowsTest(parameterized.TestCase):

  @parameterized.named_parameters(*BAD_ROWS)
  def test_malformed_row_names_file_and_line(self, bad, reason, words):
    path = _write_jsonl(_tmp(self) / 'train.jsonl', [_row(0), bad, _row(2)])
    with self.assertRaises(data_lib.DataError) as e:
      data_lib.load_examples(path, max_problem_chars=100)
    self.assertStartsWith(str(e.exception), f'{path}:2: ')
    self.assertIn(words, str(e.exception))
    examples, stats = data_lib.load_examples(path, on_error='skip', max_problem_chars=100)
    self.assertEqual([x.id for x in examples], ['q0', 'q2'])
    self.assertEqual((stats.rows, stats.loaded, stats.skipped, dict(stats.reasons)),
                     (3, 2, 1, {reason: 1}))
    self.assertIn(reason, data_lib.REASONS)

  def test_skip_counts_by_reason_and_blank_lines(self):
    path = _write_jsonl(_tmp(self) / 'mixed.jsonl', [
        _row(0), b'', b'not json', _row(1), _row(1), b'\xff\xfe', '{"id": "q9"}', b'   ',
        _row(2)])
    examples, stats = data_lib.load_examples(path, on_error='skip')
    self.assertEqual([x.id for x in examples], ['q0', 'q1', 'q2'])
    self.assertEqual(dict(stats.reasons), {'bad_json': 1, 'duplicate_id': 1, 'bad_utf8': 1,
                                           'missing_field': 1})
    self.assertEqual(stats.rows, 7)  # blank lines are not rows
    with self.assertRaisesRegex(data_lib.DataError, r'mixed.jsonl:3: invalid JSON'):
      data_lib.load_examples(path)  # line numbers count the blank line

  def test_whole_file_errors(self):
    tmp_path = _tmp(self)
    with self.assertRaisesRegex(FileNotFoundError, 'benchmark names: .*aime24'):
      data_lib.load_examples(str(tmp_path / 'nope.jsonl'))
    with self.assertRaisesRegex(FileNotFoundError, 'is not a file'):
      data_lib.load_examples('aime2024')  # a typo of a short name
    (tmp_path / 'x.csv').write_text('id,problem,answer\n')
    with self.assertRaisesRegex(ValueError, "unsupported format '.csv'"):
      data_lib.load_examples(str(tmp_path / 'x.csv'))
    empty = _write_jsonl(tmp_path / 'empty.jsonl', ['{"id": "a"}'])
    with self.assertRaisesRegex(data_lib.DataError, 'no usable rows'):
      data_lib.load_examples(empty, on_error='skip')
    (tmp_path / 'obj.json').write_text('{"id": "a"}')
    with self.assertRaisesRegex(data_lib.DataError, 'must hold a list of objects'):
      data_lib.load_examples(str(tmp_path / 'obj.json'))
    (tmp_path / 'broken.json').write_text('[\n{"id": "a"},\n{oops}\n]')
    with self.assertRaisesRegex(data_lib.DataError, r'broken.json:3: invalid JSON'):
      data_lib.load_examples(str(tmp_path / 'broken.json'))
    with self.assertRaisesRegex(ValueError, "on_error must be 'raise' or 'skip'"):
      data_lib.load_examples('aime24', on_error='ignore')
    with self.assertRaisesRegex(ValueError, 'field_map maps our names'):
      data_lib.load_examples('aime24', field_map={'question': 'problem'})


def _records():
  return [{'idx': 7, 'question': 'What is 1/2 + 1/2?', 'final': '1', 'level': 2},
          {'idx': 8, 'question': 'Name the city.', 'final': 'Paris', 'level': 1},
          {'idx': 9, 'question': 'Half of 5?', 'final': '2.5', 'level': 3}]


FIELD_MAP = {'id': 'idx', 'problem': 'question', 'answer': 'final'}
EXPECTED = [data_lib.Example('7', 'What is 1/2 + 1/2?', '1', {'level': 2}),
            data_lib.Example('8', 'Name the city.', 'Paris', {'level': 1}),
            data_lib.Example('9', 'Half of 5?', '2.5', {'level': 3})]


def _write_jsonl_records(path):
  return _write_jsonl(path, [json.dumps(r) for r in _records()])


def _write_json_records(path):
  path.write_text(json.dumps(_records(), indent=1))
  return str(path)


def _write_parquet_records(path):
  if pq is None:  # covered by test_parquet_without_pyarrow_says_what_to_install
    raise unittest.SkipTest('pyarrow is optional; pip install pyarrow')
  pq.write_table(pa.Table.from_pylist(_records()), path)
  return str(path)


class FormatsTest(parameterized.TestCase):

  @parameterized.named_parameters(('jsonl', 'd.jsonl', _write_jsonl_records),
                                  ('json', 'd.json', _write_json_records),
                                  ('parquet', 'd.parquet', _write_parquet_records))
  def test_jsonl_json_parquet_round_trip(self, name, write):
    src = write(_tmp(self) / name)
    examples, stats = data_lib.load_examples(src, field_map=FIELD_MAP)
    self.assertEqual(examples, EXPECTED)
    self.assertEqual([e.meta for e in examples], [e.meta for e in EXPECTED])
    self.assertEqual(stats.loaded, 3)

  def test_numeric_answers_and_ids(self):
    tmp_path = _tmp(self)
    # amc sources store answers as JSON numbers (27.0): an integral float becomes '27'.
    path = _write_jsonl(tmp_path / 'n.jsonl', [json.dumps(
        {'id': i, 'problem': 'p', 'answer': a}) for i, a in enumerate([27.0, 2.5, -3, 1e20])])
    examples, _ = data_lib.load_examples(path)
    self.assertEqual([(e.id, e.answer) for e in examples], [
        ('0', '27'), ('1', '2.5'), ('2', '-3'), ('3', '100000000000000000000')])
    nan = _write_jsonl(tmp_path / 'nan.jsonl', ['{"id": "a", "problem": "p", "answer": NaN}'])
    with self.assertRaisesRegex(data_lib.DataError,
                                r'nan.jsonl:1: .*expected a finite number'):
      data_lib.load_examples(nan)

  @unittest.skipIf(pa is None, 'pyarrow is optional; pip install pyarrow')
  def test_parquet_nested_fields_and_generated_ids(self):
    tmp_path = _tmp(self)
    rows = [{'prompt': [{'role': 'user', 'content': 'What is 2+2?'}], 'q': 'What is 2+2?',
             'reward_model': {'ground_truth': '4', 'style': 'rule'}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / 'verl.parquet')
    (ex,), _ = data_lib.load_examples(
        str(tmp_path / 'verl.parquet'),
        field_map={'id': None, 'problem': 'q', 'answer': 'reward_model.ground_truth'})
    self.assertEqual((ex.id, ex.problem, ex.answer), ('verl-0', 'What is 2+2?', '4'))
    self.assertEqual(set(ex.meta), {'prompt'})
    with self.assertRaisesRegex(data_lib.DataError,
                                r"verl.parquet: row 1: missing field 'rm.x'"):
      data_lib.load_examples(str(tmp_path / 'verl.parquet'), field_map={
          'id': None, 'problem': 'q', 'answer': 'rm.x'})

  def test_parquet_without_pyarrow_says_what_to_install(self):
    tmp_path = _tmp(self)
    (tmp_path / 'd.parquet').write_bytes(b'PAR1')
    # import pyarrow -> ImportError
    self.enter_context(mock.patch.dict(sys.modules, {'pyarrow': None, 'pyarrow.parquet': None}))
    with self.assertRaisesRegex(ImportError, 'pip install pyarrow'):
      data_lib.load_examples(str(tmp_path / 'd.parquet'))

  def test_tfds_without_the_package_says_what_to_install(self):
    self.enter_context(mock.patch.dict(sys.modules, {'tensorflow_datasets': None}))
    with self.assertRaisesRegex(ImportError, 'pip install tensorflow-datasets'):
      data_lib.load_examples('tfds:gsm8k:test')


class FingerprintTest(absltest.TestCase):

  def test_fingerprint_detects_changed_or_reordered_ids(self):
    ex = [data_lib.Example(i, 'p', 'a') for i in ('a', 'b', 'c')]
    fp = data_lib.dataset_fingerprint(ex)
    self.assertEqual(
        fp, data_lib.dataset_fingerprint([data_lib.Example(e.id, 'other', 'x') for e in ex]))
    self.assertNotEqual(fp, data_lib.dataset_fingerprint(ex[::-1]))
    self.assertNotEqual(fp, data_lib.dataset_fingerprint(ex[:2]))
    ab_c = [data_lib.Example('ab', 'p', 'a'), data_lib.Example('c', 'p', 'a')]
    a_bc = [data_lib.Example('a', 'p', 'a'), data_lib.Example('bc', 'p', 'a')]
    self.assertNotEqual(data_lib.dataset_fingerprint(ab_c), data_lib.dataset_fingerprint(a_bc))
    self.assertLen(fp, 64)
    self.assertEqual(fp, data_lib.dataset_fingerprint(list(ex)))


class EpochIteratorTest(parameterized.TestCase):

  @parameterized.named_parameters(('n10_batch3', 10, 3), ('n12_batch4', 12, 4),
                                  ('n7_batch7', 7, 7), ('n100_batch32', 100, 32),
                                  ('n13_batch12', 13, 12))
  def test_iterator_epochs_cover_all_without_repeats(self, n, batch):
    it = data_lib.EpochIterator(n, batch, seed=3)
    batches = [it.next() for _ in range(60)]
    for b in batches:
      self.assertEqual((b.shape, b.dtype), ((batch,), np.int64))
      self.assertLen(set(b.tolist()), batch)  # also across epoch boundaries
    stream = np.concatenate(batches)
    for e in range(len(stream) // n):  # epoch e is stream[e*n:(e+1)*n], a permutation
      self.assertEqual(sorted(stream[e * n:(e + 1) * n].tolist()), list(range(n)), f'epoch {e}')
    self.assertEqual(it.epoch, len(stream) // n)

  def test_iterator_is_deterministic_and_epochs_differ(self):
    a = [data_lib.EpochIterator(50, 10, seed=1).next() for _ in range(2)]
    b = [data_lib.EpochIterator(50, 10, seed=1).next() for _ in range(2)]
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
    it = data_lib.EpochIterator(50, 50, seed=1)
    e0, e1 = it.next(), it.next()
    # Seeded by (seed, epoch).
    np.testing.assert_array_equal(e0, np.random.default_rng([1, 0]).permutation(50))
    self.assertFalse((e0 == e1).all())
    self.assertFalse((e0 == data_lib.EpochIterator(50, 50, seed=2).next()).all())

  @parameterized.named_parameters(('n10_batch3_cut4', 10, 3, 4), ('n13_batch12_cut5', 13, 12, 5),
                                  ('n100_batch32_cut7', 100, 32, 7), ('n5_batch8_cut3', 5, 8, 3))
  def test_iterator_resume_equals_uninterrupted(self, n, batch, cut):
    it = data_lib.EpochIterator(n, batch, seed=11)
    straight = [it.next() for _ in range(20)]
    first = data_lib.EpochIterator(n, batch, seed=11)
    for _ in range(cut):
      first.next()
    state = json.loads(json.dumps(first.get_state()))  # as stored in a checkpoint
    resumed = data_lib.EpochIterator(n, batch, seed=11)
    resumed.set_state(state)
    for i in range(20 - cut):
      np.testing.assert_array_equal(resumed.next(), straight[cut + i], err_msg=f'batch {i}')

  def test_iterator_batch_larger_than_dataset(self):
    it = data_lib.EpochIterator(3, 8, seed=0)
    b0, b1 = it.next(), it.next()
    perms = [np.random.default_rng([0, e]).permutation(3) for e in range(6)]
    # Successive epochs.
    np.testing.assert_array_equal(np.concatenate([b0, b1]), np.concatenate(perms)[:16])
    self.assertEqual(it.get_state()['epoch'], 5)
    self.assertEqual(it.get_state()['position'], 1)

  def test_iterator_refuses_a_foreign_state(self):
    state = data_lib.EpochIterator(10, 3, seed=0).get_state()
    with self.assertRaisesRegex(ValueError, 'num_examples=10, this run has 11'):
      data_lib.EpochIterator(11, 3, seed=0).set_state(state)
    with self.assertRaisesRegex(ValueError, 'batch_size=3, this run has 4'):
      data_lib.EpochIterator(10, 4, seed=0).set_state(state)
    with self.assertRaisesRegex(ValueError, 'num_examples >= 1'):
      data_lib.EpochIterator(0, 3, seed=0)


if __name__ == '__main__':
  absltest.main()
