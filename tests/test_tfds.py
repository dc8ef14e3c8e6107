"""tensorflow-datasets, installed and used without TensorFlow: the project's `ceeh_math`
builder, `tfds:` sources read by random access, a user's own prepared dataset, and training
from a `tfds:` source with resume.

Every dataset is built into a temporary data dir; nothing touches ~/tensorflow_datasets.
"""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import pathlib
import shutil
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow_datasets as tfds

from ceeh_jax import data as data_lib
from ceeh_jax import errors
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import metric_writers
from ceeh_jax.synthetic import paths as synthetic_paths
from ceeh_jax import train as train_lib
from ceeh_jax.datasets import ceeh_math
from ceeh_jax.datasets import prepare as prepare_lib
from ceeh_jax.datasets import tfds_source

CONFIGS = [c.name for c in ceeh_math.CeehMath.BUILDER_CONFIGS]


def _jsonl_rows(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


class CeehTestArith(tfds.core.GeneratorBasedBuilder):
  """A user's own dataset: the synthetic task's rows, meta fields as top-level features.

  `ROWS` (set by the test) maps split -> rows of a synthetic JSONL file.
  """
  VERSION = tfds.core.Version('1.2.0')
  ROWS = {}

  def _info(self):
    text = tfds.features.Text
    return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=(
        tfds.features.FeaturesDict({'id': text(), 'problem': text(), 'answer': text(),
                                    'steps': np.int64, 'hard': np.bool_})))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(rows) for split, rows in self.ROWS.items()}

  def _generate_examples(self, rows):
    for i, r in enumerate(rows):
      yield i, {'id': r['id'], 'problem': r['problem'], 'answer': r['answer'], **r['meta']}


class CeehTestOdd(tfds.core.GeneratorBasedBuilder):
  """Other field names, one row whose problem bytes are not UTF-8, a second split."""
  VERSION = tfds.core.Version('0.1.0')

  def _info(self):
    raw = tfds.features.Tensor(shape=(), dtype=np.object_)  # bytes, not checked as text
    return tfds.core.DatasetInfo(builder=self, disable_shuffling=True, features=(
        tfds.features.FeaturesDict({'question': raw, 'final': np.float32})))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(['What is 3*3?', 'caf\xe9', 'Half of 5?'],
                                             [9.0, 1.0, 2.5]),
            'validation': self._generate_examples(['1+1?'], [2.0])}

  def _generate_examples(self, questions, finals):
    for i, (q, a) in enumerate(zip(questions, finals)):
      yield i, {'question': q.encode('latin-1'), 'final': a}


class CeehMathTest(parameterized.TestCase):
  """The project's builder: every config equals its vendored JSONL, row for row."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = str(test_util.class_tempdir(cls))
    prepare_lib.prepare(cls.data_dir)  # all configs, about a second each here

  @parameterized.named_parameters(*[(name, name) for name in CONFIGS])
  def test_config_equals_its_jsonl(self, name):
    via_tfds, stats = data_lib.load_examples(f'tfds:ceeh_math/{name}',
                                             tfds_data_dir=self.data_dir)
    via_jsonl, _ = data_lib.load_examples(name)
    rows = _jsonl_rows(data_lib.resolve(name))
    self.assertEqual(stats.rows, len(rows))
    self.assertLen(via_tfds, len(rows))
    self.assertEqual([(e.id, e.problem, e.answer) for e in via_tfds],
                     [(e.id, e.problem, e.answer) for e in via_jsonl])
    self.assertEqual(data_lib.dataset_fingerprint(via_tfds),
                     data_lib.dataset_fingerprint(via_jsonl))
    # The other fields: source, solution ('' where absent) and meta as a JSON object.
    for ex, row in zip(via_tfds, rows):
      self.assertEqual(ex.meta['source'], row['source'])
      self.assertEqual(ex.meta['solution'], row.get('solution', ''))
      self.assertEqual(json.loads(ex.meta['meta']), row.get('meta', {}))

  def test_info_has_license_citation_version_and_source_hash(self):
    manifest = json.loads((data_lib.DATA_DIR / 'manifest.json').read_text(encoding='utf-8'))
    builder = tfds.builder_from_directory(
        os.path.join(self.data_dir, 'ceeh_math', 'gsm8k', '1.0.0'))
    info = builder.info
    self.assertEqual(str(info.version), '1.0.0')
    self.assertEqual(info.redistribution_info.license, 'MIT, (c) 2021 OpenAI')
    self.assertIn('arXiv:2110.14168', info.citation)
    self.assertIn(manifest['gsm8k']['sources'][0]['snapshot_commit'], info.citation)
    self.assertEqual(info.metadata['source_sha256'], manifest['gsm8k']['sha256'])
    self.assertTrue(info.disable_shuffling)
    self.assertEqual(info.file_format.value, 'array_record')
    self.assertEqual(list(info.splits.keys()), ['test'])
    self.assertEqual(info.splits['test'].num_examples, manifest['gsm8k']['rows'])

  def test_every_benchmark_short_name_has_a_config(self):
    files = {data_lib.BENCHMARKS[n] for n in CONFIGS}
    self.assertEqual(files, set(data_lib.BENCHMARKS.values()))

  def test_random_access_without_tensorflow(self):
    ds = tfds.data_source('ceeh_math/math500', split='test', data_dir=self.data_dir)
    rows = _jsonl_rows(data_lib.resolve('math500'))
    self.assertLen(ds, 500)
    for i in (499, 0, 250):  # any order: random access, not a stream
      self.assertEqual(ds[i]['id'].decode(), rows[i]['id'])
    self.assertNotIn('tensorflow', sys.modules)  # nothing above imported TensorFlow

  def test_split_slice_and_explicit_version(self):
    head, _ = data_lib.load_examples('tfds:ceeh_math/deepscaler2k:1.0.0:train[:5]',
                                     tfds_data_dir=self.data_dir)
    rows = _jsonl_rows(data_lib.resolve('deepscaler2k'))
    self.assertEqual([e.id for e in head], [r['id'] for r in rows[:5]])


class TfdsSourceTest(absltest.TestCase):
  """`tfds:` sources: preparation on first use, errors, a user's own dataset."""

  def setUp(self):
    super().setUp()
    self.data_dir = self.create_tempdir().full_path

  def test_project_dataset_is_prepared_on_first_use_then_reused(self):
    first, _ = data_lib.load_examples('tfds:ceeh_math/aime24', tfds_data_dir=self.data_dir)
    info = pathlib.Path(self.data_dir, 'ceeh_math', 'aime24', '1.0.0', 'dataset_info.json')
    mtime = info.stat().st_mtime_ns
    again, _ = data_lib.load_examples('tfds:ceeh_math/aime24', tfds_data_dir=self.data_dir)
    self.assertEqual(info.stat().st_mtime_ns, mtime)  # not rebuilt
    self.assertEqual(first, again)
    self.assertEqual([e.id for e in first], [f'aime24-{i}' for i in range(30)])

  def test_default_data_dir_is_tfds_data_dir_env(self):
    with mock.patch.dict(os.environ, {'TFDS_DATA_DIR': self.data_dir}):
      self.assertEqual(tfds_source.default_data_dir(), self.data_dir)
      examples, _ = data_lib.load_examples('tfds:ceeh_math/amc23')
    self.assertLen(examples, 40)
    self.assertTrue(pathlib.Path(self.data_dir, 'ceeh_math', 'amc23', '1.0.0').is_dir())
    with mock.patch.dict(os.environ, {'TFDS_DATA_DIR': ''}):
      self.assertEqual(tfds_source.default_data_dir(),
                       os.path.expanduser('~/tensorflow_datasets'))

  def test_not_prepared_is_one_line_saying_how(self):
    with self.assertRaises(data_lib.DataError) as cm:
      data_lib.load_examples('tfds:no_such_set_ceeh:test', tfds_data_dir=self.data_dir)
    msg = str(cm.exception)
    self.assertIsInstance(cm.exception, errors.UserError)
    self.assertNotIn('\n', msg)
    self.assertIn('tfds:no_such_set_ceeh is not prepared in ' + self.data_dir, msg)
    self.assertIn("download_and_prepare(file_format='array_record')", msg)
    self.assertIn('python -m ceeh_jax.datasets.prepare', msg)
    self.assertEqual(os.listdir(self.data_dir), [])  # looking wrote nothing

  def test_unknown_project_config_lists_the_configs(self):
    with self.assertRaisesRegex(data_lib.DataError, r'no such config of ceeh_math \(configs: '
                                r'gsm8k, math500, .*deepscaler2k\)'):
      data_lib.load_examples('tfds:ceeh_math/math5000', tfds_data_dir=self.data_dir)

  def test_changed_vendored_file_asks_for_a_rebuild(self):
    data = pathlib.Path(self.create_tempdir().full_path)
    shutil.copy(data_lib.DATA_DIR / 'aime25.jsonl', data)
    self.enter_context(mock.patch.object(data_lib, 'DATA_DIR', data))
    data_lib.load_examples('tfds:ceeh_math/aime25', tfds_data_dir=self.data_dir)
    rows = _jsonl_rows(data / 'aime25.jsonl')
    rows[0]['answer'] = '71'
    (data / 'aime25.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    with self.assertRaisesRegex(data_lib.DataError, 'was built from another aime25.jsonl.*'
                                '--configs=aime25 --overwrite'):
      data_lib.load_examples('tfds:ceeh_math/aime25', tfds_data_dir=self.data_dir)
    prepare_lib.prepare(self.data_dir, ['aime25'], overwrite=True)
    examples, _ = data_lib.load_examples('tfds:ceeh_math/aime25', tfds_data_dir=self.data_dir)
    self.assertEqual(examples[0].answer, '71')

  def test_users_own_dataset_with_field_map_and_skipped_rows(self):
    CeehTestOdd(data_dir=self.data_dir, file_format='array_record').download_and_prepare()
    fm = {'id': None, 'problem': 'question', 'answer': 'final'}
    examples, stats = data_lib.load_examples('tfds:ceeh_test_odd', field_map=fm,
                                             on_error='skip', tfds_data_dir=self.data_dir)
    # Two splits and no split named: train. Row 2 is latin-1, not UTF-8: skipped, counted.
    self.assertEqual([(e.id, e.problem, e.answer) for e in examples],
                     [('ceeh_test_odd-0', 'What is 3*3?', '9'),
                      ('ceeh_test_odd-2', 'Half of 5?', '2.5')])
    self.assertEqual(dict(stats.reasons), {'bad_utf8': 1})
    with self.assertRaisesRegex(data_lib.DataError,
                                r'^tfds:ceeh_test_odd: row 2: .*not valid UTF-8'):
      data_lib.load_examples('tfds:ceeh_test_odd', field_map=fm, tfds_data_dir=self.data_dir)
    val, _ = data_lib.load_examples('tfds:ceeh_test_odd:0.1.0:validation', field_map=fm,
                                    tfds_data_dir=self.data_dir)
    self.assertEqual([(e.problem, e.answer) for e in val], [('1+1?', '2')])
    with self.assertRaisesRegex(data_lib.DataError, r"split 'test'.*splits: train, validation"):
      data_lib.load_examples('tfds:ceeh_test_odd:test', field_map=fm,
                             tfds_data_dir=self.data_dir)
    with self.assertRaisesRegex(data_lib.DataError, r'tfds:ceeh_test_odd:0\.2\.0 is not '
                                'prepared'):
      data_lib.load_examples('tfds:ceeh_test_odd:0.2.0', field_map=fm,
                             tfds_data_dir=self.data_dir)

  def test_a_format_without_random_access_says_so(self):
    CeehTestOdd(data_dir=self.data_dir, file_format='array_record').download_and_prepare()
    # A dataset prepared by tfds.load with TensorFlow is stored as tfrecord (writing one here
    # would need TensorFlow, so the recorded format is changed instead).
    info = pathlib.Path(self.data_dir, 'ceeh_test_odd', '0.1.0', 'dataset_info.json')
    meta = json.loads(info.read_text())
    meta['fileFormat'] = 'tfrecord'
    info.write_text(json.dumps(meta))
    with self.assertRaisesRegex(data_lib.DataError, 'stored as tfrecord, which has no random '
                                "access; .*file_format='array_record'"):
      data_lib.load_examples('tfds:ceeh_test_odd', field_map={'problem': 'question'},
                             tfds_data_dir=self.data_dir)

  def test_bad_source_syntax(self):
    with self.assertRaisesRegex(data_lib.DataError, 'expected tfds:<name>'):
      data_lib.load_examples('tfds:', tfds_data_dir=self.data_dir)


class TrainFromTfdsTest(absltest.TestCase):
  """Training from a `tfds:` source = training from the same rows as JSONL, resume included."""

  def test_two_steps_then_resume_with_the_jsonl_equals_the_run(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    data_dir = str(tmp / 'tfds')
    # The synthetic task's JSONL rows, as a user's own TFDS dataset.
    jsonl = synthetic_paths.resolve_data('synthetic:train:24', str(tmp), 0)
    CeehTestArith.ROWS = {'train': _jsonl_rows(jsonl)}
    CeehTestArith(data_dir=data_dir, file_format='array_record').download_and_prepare()
    overrides = {'total_steps': 2, 'checkpoint_every': 1, 'eval_every': 0,
                 'data.tfds_data_dir': data_dir}
    config = test_util.small_config(str(tmp), **overrides,
                                    **{'data.train': 'tfds:ceeh_test_arith'})
    train_lib.train_and_evaluate(config, str(tmp / 'tfds_run'))
    full = fingerprint_lib.fingerprint(str(tmp / 'tfds_run'))
    self.assertEqual(full['step'], 2)
    # "Preempted" after step 1, resumed from the same rows as a JSONL file: the trainer
    # accepts the checkpoint only if the data fingerprint is the same, and step 2 then draws
    # the same batch (the iterator state indexes rows by position) to the same state.
    shutil.copytree(tmp / 'tfds_run', tmp / 'resumed')
    shutil.rmtree(tmp / 'resumed' / 'checkpoints' / '2')
    self.assertEqual(fingerprint_lib.fingerprint(str(tmp / 'resumed'))['step'], 1)
    train_lib.train_and_evaluate(test_util.small_config(str(tmp), **overrides, **{
        'data.train': jsonl}), str(tmp / 'resumed'))
    resumed = fingerprint_lib.fingerprint(str(tmp / 'resumed'))
    self.assertEqual(resumed['step'], 2)
    self.assertEqual(resumed['parts'], full['parts'], 'the resumed run diverged')
    self.assertEqual([r['step'] for r in metric_writers.read_metrics(str(tmp / 'resumed'))],
                     [1, 2])

if __name__ == '__main__':
  absltest.main()
