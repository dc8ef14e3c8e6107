"""The eval job and the comparison table, on a random tiny model and a tiny synthetic benchmark:
every output file, metrics that agree with `metrics` recomputed from samples.jsonl, the
checkpoint path (params + difficulty split), compare's table and plot, and clear errors."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

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


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """(model dir, benchmark path, params): a random tiny Qwen2 with the synthetic tokenizer."""
  root = tmp_path_factory.mktemp('eval')
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


@pytest.fixture(scope='module')
def base_run(setup, tmp_path_factory):
  model_dir, bench, _ = setup
  workdir = str(tmp_path_factory.mktemp('base'))
  return workdir, evaluate.run(_config(model_dir, bench), workdir)


def test_end_to_end_writes_every_output(base_run):
  workdir, results = base_run
  for f in ('results.json', 'samples.jsonl', 'results.md', 'acc_vs_len.png'):
    assert os.path.getsize(os.path.join(workdir, f)) > 0, f
  samples = _samples(workdir)
  assert len(samples) == NUM_PROBLEMS * K  # 6 problems, batch 4: a padded last batch dropped
  for s in samples:
    assert {'id', 'response', 'extracted', 'correct', 'length'} <= set(s)
    assert 1 <= s['length'] <= 16
  assert sorted({s['sample'] for s in samples}) == list(range(K))
  with open(os.path.join(workdir, 'results.json')) as f:
    on_disk = json.load(f)
  assert on_disk['benchmarks'] == json.loads(json.dumps(results['benchmarks']))
  (name, summary), = on_disk['benchmarks'].items()
  assert name == 'bench' and summary['hard_source'] == 'meta'
  assert summary['num_problems'] == NUM_PROBLEMS and summary['samples_per_problem'] == K
  assert {'pass@1', 'pass@2', 'pass@4', 'hard/acc', 'easy/len'} <= set(summary)
  assert 'nag' not in summary  # no base given
  md = open(os.path.join(workdir, 'results.md')).read()
  assert md.count('| bench |') == 3 and 'Pass@4' in md


def test_metrics_agree_with_samples(setup, base_run, tmp_path, monkeypatch):
  model_dir, bench, _ = setup
  # A random model is never right: grade by response parity so every metric is non-trivial.
  monkeypatch.setattr(grading_lib.Grader, 'grade_batch', lambda self, responses, refs: [
      grading_lib.Grade(len(r) % 3 == 0, True, str(len(r)), 'ok') for r in responses])
  base_dir, base_results = base_run
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
  assert 0 < correct.mean() < 1 and 0 < correct[hard].mean() < 1
  assert s['acc'] == pytest.approx(correct.mean())
  assert s['len'] == pytest.approx(length.mean())
  for k in (1, 2, 4):
    assert s[f'pass@{k}'] == pytest.approx(metrics_lib.mean_pass_at_k(correct, k))
    assert s[f'hard/pass@{k}'] == pytest.approx(metrics_lib.mean_pass_at_k(correct[hard], k))
  # pass@1 is ACC; the product form agrees with the per-problem estimator.
  assert s['pass@2'] == pytest.approx(np.mean([metrics_lib.pass_at_k(K, int(c), 2)
                                               for c in correct.sum(1)]))
  assert s['l_acc'] == pytest.approx(float(metrics_lib.l_acc(s['acc'], s['len'], b['len'])))
  want_nag = metrics_lib.nag(s['acc'], b['acc'], s['len'], b['len'])
  assert s['nag'] == pytest.approx(want_nag, nan_ok=True)
  assert s['easy/l_acc'] == pytest.approx(
      float(metrics_lib.l_acc(correct[~hard].mean(), length[~hard].mean(), b['easy/len'])))


def test_checkpoint_params_and_difficulty_split(setup, tmp_path):
  model_dir, bench, params = setup
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
  assert results['model'] == {'source': 'checkpoint', 'checkpoint_workdir': train_dir, 'step': 3}
  s = results['benchmarks']['bench']
  assert s['hard_source'] == 'difficulty'
  want = [False, True, False, True, True, False]  # acc_h <= 0.54, unseen counts as hard
  ids = list(dict.fromkeys(r['id'] for r in _samples(workdir)))
  got = {r['id']: r['hard'] for r in _samples(workdir)}
  assert [got[i] for i in ids] == want
  assert s['hard/num_problems'] == 3 and s['easy/num_problems'] == 3


def test_compare_prints_every_run_and_plots(base_run, tmp_path, capsys):
  base_dir, base_results = base_run
  other = tmp_path / 'other'
  other.mkdir()
  fake = json.loads(json.dumps(base_results))
  fake['benchmarks']['bench'].update(acc=0.5, len=base_results['benchmarks']['bench']['len'] / 2)
  (other / 'results.json').write_text(json.dumps(fake))
  out = tmp_path / 'cmp'
  assert compare.main([base_dir, str(other), f'--base={base_dir}', f'--out={out}']) == 0
  printed = capsys.readouterr().out
  assert os.path.basename(base_dir) in printed and '| other |' in printed
  assert 'bench ACC' in printed and 'bench NAG' in printed
  assert os.path.getsize(out / 'pareto.png') > 0
  assert (out / 'compare.md').read_text().strip() == printed.strip()
  b = base_results['benchmarks']['bench']
  want = metrics_lib.nag(0.5, b['acc'], b['len'] / 2, b['len'])
  row = [line for line in printed.splitlines() if line.startswith('| other |')][0]
  assert row.split('|')[-2].strip() == (f'{want:.2f}' if np.isfinite(want) else str(want))
  assert compare.main([str(tmp_path / 'missing')]) == 2
  assert 'no results.json' in capsys.readouterr().err


def test_num_samples_defaults():
  assert evaluate.num_samples_for(0, 'aime24') == 16
  assert evaluate.num_samples_for(0, 'amc23') == 16
  assert evaluate.num_samples_for(0, 'math500') == 4
  spec = ml_collections.ConfigDict({'default': 2, 'aime24': 8})
  assert evaluate.num_samples_for(spec, 'aime24') == 8
  assert evaluate.num_samples_for(spec, 'math500') == 2


def test_missing_checkpoint_or_benchmark_is_a_clear_error(setup, tmp_path):
  model_dir, bench, _ = setup
  with pytest.raises(evaluate.EvalError, match='checkpoint_workdir.*does not exist'):
    evaluate.run(_config(model_dir, bench, checkpoint_workdir=str(tmp_path / 'nope')),
                 str(tmp_path / 'a'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(evaluate.EvalError, match='no checkpoints'):
    evaluate.run(_config(model_dir, bench, checkpoint_workdir=str(tmp_path / 'empty')),
                 str(tmp_path / 'b'))
  with pytest.raises(evaluate.EvalError, match="benchmark 'aime2099'.*no such file"):
    evaluate.run(_config(model_dir, bench, benchmarks=('aime2099',)), str(tmp_path / 'c'))
  with pytest.raises(evaluate.EvalError, match='base_results'):
    evaluate.run(_config(model_dir, bench, base_results=str(tmp_path / 'x.json')),
                 str(tmp_path / 'd'))
