"""The eval job and the comparison table, on a random tiny model and a tiny synthetic benchmark:
every output file, metrics that agree with `metrics` recomputed from samples.jsonl, the
checkpoint path (params + difficulty split), compare's table and plot, and clear errors."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import contextlib
import io
import json
import os
import pathlib
from unittest import mock

from absl.testing import absltest
import jax
import ml_collections
import numpy as np

from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import compare
from ceeh_jax import default_config
from ceeh_jax import evaluate
from ceeh_jax import grading as grading_lib
from ceeh_jax import hf_io
from ceeh_jax import metrics as metrics_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import task
from ceeh_jax.synthetic import tokenizer as syn_tok

K = 4
NUM_PROBLEMS = 6
approx = test_util.assert_approx


def _setup(root):
  """(model dir, benchmark path, params): a random tiny Qwen2 with the synthetic tokenizer."""
  tok = syn_tok.ensure_tokenizer(str(root / 'tok'))
  cfg = QwenConfig.tiny(vocab_size=len(syn_tok.vocab()))
  mesh = sharding_lib.make_mesh((1, 1, 1))
  params = sharding_lib.init_params(cfg, jax.random.key(0), mesh, sharding_lib.DEFAULT_RULES)
  model_dir = str(root / 'model')
  hf_io.save_hf(params, cfg, model_dir, tokenizer_dir=tok)
  rows = task.make_dataset(NUM_PROBLEMS, seed=5)
  for i, r in enumerate(rows):
    r['meta']['hard'] = i % 2 == 0  # both splits present
  bench = task.write_jsonl(rows, str(root / 'bench.jsonl'))
  return model_dir, bench, params


def _config(model_dir, bench, **eval_overrides):
  c = default_config.get_config()
  c.mode = 'eval'
  c.model.hf_dir = model_dir
  c.model.sample_dtype = 'float32'
  c.model.decode_chunk = 16
  c.data.instruction = ''
  c.data.max_prompt_tokens = 96
  c.data.train = bench
  c.mesh.shape = (1, 1, 1)
  c.grading.num_workers = 0
  c.progress = False
  c.eval = ml_collections.ConfigDict(dict(
      checkpoint_workdir='', benchmarks=(bench,), num_samples=K, temperature=1.0, top_p=1.0,
      top_k=0, max_new_tokens=16, batch_size=4, limit=0, base_results=''))
  for k, v in eval_overrides.items():
    c.eval[k] = v
  return c


def _samples(workdir):
  with open(os.path.join(workdir, 'samples.jsonl')) as f:
    return [json.loads(line) for line in f]


class EvaluateTest(absltest.TestCase):
  """One tiny model and benchmark (`eval_setup`) and one eval run on it (`base_run`) per class."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = test_util.class_tempdir(cls)
    cls.eval_setup = _setup(root)
    model_dir, bench, _ = cls.eval_setup
    workdir = str(root / 'base')
    cls.base_run = workdir, evaluate.run(_config(model_dir, bench), workdir)

  def test_end_to_end_writes_every_output(self):
    workdir, results = self.base_run
    for f in ('results.json', 'samples.jsonl', 'results.md', 'acc_vs_len.png'):
      self.assertGreater(os.path.getsize(os.path.join(workdir, f)), 0, f)
    samples = _samples(workdir)
    self.assertLen(samples, NUM_PROBLEMS * K)  # 6 problems, batch 4: a padded last batch dropped
    for s in samples:
      self.assertContainsSubset({'id', 'response', 'extracted', 'correct', 'length'}, set(s))
      self.assertBetween(s['length'], 1, 16)
    self.assertEqual(sorted({s['sample'] for s in samples}), list(range(K)))
    with open(os.path.join(workdir, 'results.json')) as f:
      on_disk = json.load(f)
    self.assertEqual(on_disk['benchmarks'], json.loads(json.dumps(results['benchmarks'])))
    (name, summary), = on_disk['benchmarks'].items()
    self.assertEqual(name, 'bench')
    self.assertEqual(summary['hard_source'], 'meta')
    self.assertEqual(summary['num_problems'], NUM_PROBLEMS)
    self.assertEqual(summary['samples_per_problem'], K)
    self.assertContainsSubset({'pass@1', 'pass@2', 'pass@4', 'hard/acc', 'easy/len'},
                              set(summary))
    self.assertNotIn('nag', summary)  # no base given
    md = open(os.path.join(workdir, 'results.md')).read()
    self.assertEqual(md.count('| bench |'), 3)
    self.assertIn('Pass@4', md)

  def test_metrics_agree_with_samples(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    model_dir, bench, _ = self.eval_setup
    # A random model is never right: grade by response parity so every metric is non-trivial.
    self.enter_context(mock.patch.object(
        grading_lib.Grader, 'grade_batch', lambda grader, responses, refs: [
            grading_lib.Grade(len(r) % 3 == 0, True, str(len(r)), 'ok') for r in responses]))
    base_dir, base_results = self.base_run
    workdir = str(tmp_path / 'run')
    # A different temperature: other samples, scored against the base run.
    results = evaluate.run(_config(model_dir, bench, temperature=0.7,
                                   base_results=os.path.join(base_dir, 'results.json')), workdir)
    s = results['benchmarks']['bench']
    b = base_results['benchmarks']['bench']
    samples = _samples(workdir)
    ids = list(dict.fromkeys(r['id'] for r in samples))
    correct = np.array([[r['correct'] for r in samples if r['id'] == i] for i in ids])
    length = np.array([[r['length'] for r in samples if r['id'] == i] for i in ids], float)
    hard = np.array([next(r['hard'] for r in samples if r['id'] == i) for i in ids])
    self.assertGreater(correct.mean(), 0)
    self.assertLess(correct.mean(), 1)
    self.assertGreater(correct[hard].mean(), 0)
    self.assertLess(correct[hard].mean(), 1)
    approx(s['acc'], correct.mean())
    approx(s['len'], length.mean())
    for k in (1, 2, 4):
      approx(s[f'pass@{k}'], metrics_lib.mean_pass_at_k(correct, k))
      approx(s[f'hard/pass@{k}'], metrics_lib.mean_pass_at_k(correct[hard], k))
    # pass@1 is ACC; the product form agrees with the per-problem estimator.
    approx(s['pass@2'], np.mean([metrics_lib.pass_at_k(K, int(c), 2) for c in correct.sum(1)]))
    approx(s['l_acc'], float(metrics_lib.l_acc(s['acc'], s['len'], b['len'])))
    want_nag = metrics_lib.nag(s['acc'], b['acc'], s['len'], b['len'])
    approx(s['nag'], want_nag, nan_ok=True)
    approx(s['easy/l_acc'], float(metrics_lib.l_acc(correct[~hard].mean(),
                                                    length[~hard].mean(), b['easy/len'])))

  def test_checkpoint_params_and_difficulty_split(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    model_dir, bench, params = self.eval_setup
    train_dir = str(tmp_path / 'train')
    acc_h = np.array([0.9, 0.1, 0.8, 0.2, -1.0, 0.7], np.float32)  # mean of seen = 0.54
    state = {'params': jax.device_get(params),
             'difficulty': {'acc_h': acc_h, 'len_x': np.zeros(NUM_PROBLEMS, np.float32)},
             'step': np.int32(3)}
    ckpt = ckpt_lib.Checkpointer(train_dir)
    ckpt.save(3, state, {'note': 'test'})
    ckpt.wait()
    workdir = str(tmp_path / 'eval')
    results = evaluate.run(_config(model_dir, bench, checkpoint_workdir=train_dir), workdir)
    self.assertEqual(results['model'],
                     {'source': 'checkpoint', 'checkpoint_workdir': train_dir, 'step': 3})
    s = results['benchmarks']['bench']
    self.assertEqual(s['hard_source'], 'difficulty')
    want = [False, True, False, True, True, False]  # acc_h <= 0.54, unseen counts as hard
    ids = list(dict.fromkeys(r['id'] for r in _samples(workdir)))
    got = {r['id']: r['hard'] for r in _samples(workdir)}
    self.assertEqual([got[i] for i in ids], want)
    self.assertEqual(s['hard/num_problems'], 3)
    self.assertEqual(s['easy/num_problems'], 3)

  def test_compare_prints_every_run_and_plots(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    base_dir, base_results = self.base_run
    other = tmp_path / 'other'
    other.mkdir()
    fake = json.loads(json.dumps(base_results))
    fake['benchmarks']['bench'].update(acc=0.5, len=base_results['benchmarks']['bench']['len'] / 2)
    (other / 'results.json').write_text(json.dumps(fake))
    out = tmp_path / 'cmp'
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
      self.assertEqual(compare.main([base_dir, str(other), f'--base={base_dir}', f'--out={out}']),
                       0)
    printed = stdout.getvalue()
    self.assertIn(os.path.basename(base_dir), printed)
    self.assertIn('| other |', printed)
    self.assertIn('bench ACC', printed)
    self.assertIn('bench NAG', printed)
    self.assertGreater(os.path.getsize(out / 'pareto.png'), 0)
    self.assertEqual((out / 'compare.md').read_text().strip(), printed.strip())
    b = base_results['benchmarks']['bench']
    want = metrics_lib.nag(0.5, b['acc'], b['len'] / 2, b['len'])
    row = [line for line in printed.splitlines() if line.startswith('| other |')][0]
    self.assertEqual(row.split('|')[-2].strip(),
                     f'{want:.2f}' if np.isfinite(want) else str(want))
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
      self.assertEqual(compare.main([str(tmp_path / 'missing')]), 2)
    self.assertIn('no results.json', stderr.getvalue())


  def test_missing_checkpoint_or_benchmark_is_a_clear_error(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    model_dir, bench, _ = self.eval_setup
    with self.assertRaisesRegex(evaluate.EvalError, 'checkpoint_workdir.*does not exist'):
      evaluate.run(_config(model_dir, bench, checkpoint_workdir=str(tmp_path / 'nope')),
                   str(tmp_path / 'a'))
    (tmp_path / 'empty').mkdir()
    with self.assertRaisesRegex(evaluate.EvalError, 'no checkpoints'):
      evaluate.run(_config(model_dir, bench, checkpoint_workdir=str(tmp_path / 'empty')),
                   str(tmp_path / 'b'))
    with self.assertRaisesRegex(evaluate.EvalError, "benchmark 'aime2099'.*no such file"):
      evaluate.run(_config(model_dir, bench, benchmarks=('aime2099',)), str(tmp_path / 'c'))
    with self.assertRaisesRegex(evaluate.EvalError, 'base_results'):
      evaluate.run(_config(model_dir, bench, base_results=str(tmp_path / 'x.json')),
                   str(tmp_path / 'd'))


class NumSamplesTest(absltest.TestCase):

  def test_num_samples_defaults(self):
    self.assertEqual(evaluate.num_samples_for(0, 'aime24'), 16)
    self.assertEqual(evaluate.num_samples_for(0, 'amc23'), 16)
    self.assertEqual(evaluate.num_samples_for(0, 'math500'), 4)
    spec = ml_collections.ConfigDict({'default': 2, 'aime24': 8})
    self.assertEqual(evaluate.num_samples_for(spec, 'aime24'), 8)
    self.assertEqual(evaluate.num_samples_for(spec, 'math500'), 2)


if __name__ == '__main__':
  absltest.main()
