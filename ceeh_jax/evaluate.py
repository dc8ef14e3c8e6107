r"""`run(config, workdir)`: evaluate one model on benchmarks with k samples per problem.

  python -m ceeh_jax.main --config=configs/eval_tiny.py --workdir=runs/eval_tiny
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval_r1 \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval_ceeh \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B \
      --config.eval.checkpoint_workdir=runs/r1 --config.eval.base_results=runs/eval_r1/results.json

Model: the latest params of a training workdir's orbax checkpoint (`eval.checkpoint_workdir`;
its architecture from `config.model` as the trainer builds it (`policy.model_config`); a LoRA
checkpoint's adapters merged into the base that `config.model` names), else
`config.model.hf_dir` (a HF directory or `synthetic:base_policy`), else a random preset.
Per benchmark: ACC (avg@k), LEN (mean response tokens, thinking included), unbiased Pass@k for
k = 1, 2, 4, ..., n, mean sampled-token entropy, L-Acc and NAG against `eval.base_results`
(a results.json of an earlier eval of the base model), all split hard/easy where known.
Hard/easy comes from the checkpoint's difficulty state (acc_h <= mean acc_h, for problems of
the training set; unseen ones count as hard, as in `difficulty`) or from rows' `meta.hard`.

Writes into workdir: results.json, samples.jsonl, results.md and acc_vs_len.png.

Multi-host: every process runs the same evaluation (same batches, seeds and collectives, in
the same order); rollouts come back to each host with `sharding_lib.to_host`, every process
grades and then takes process 0's grades, and only process 0 writes the files.
"""
import contextlib
import json
import math
import os
import time

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ceeh_jax import data as data_lib
from ceeh_jax import distributed as dist_lib
from ceeh_jax import errors
from ceeh_jax import grading as grading_lib
from ceeh_jax import hf_io
from ceeh_jax import metrics as metrics_lib
from ceeh_jax import policy as policy_lib
from ceeh_jax import preflight
from ceeh_jax import rollouts as rollouts_lib
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import paths as synthetic

PAPER_K_SMALL, PAPER_K_LARGE = 16, 4   # aime/amc (30-40 problems) vs math500 and larger sets


class EvalError(errors.UserError, ValueError):
  """A missing checkpoint, benchmark or base result; the message names what and where."""


def default_num_samples(benchmark: str) -> int:
  """Papers' k: 16 samples on the small AIME/AMC sets, 4 on the big ones."""
  name = os.path.basename(str(benchmark)).lower()
  return PAPER_K_SMALL if name.startswith(('aime', 'amc')) else PAPER_K_LARGE


def num_samples_for(spec, benchmark: str) -> int:
  """`eval.num_samples`: an int (0 = paper default) or a mapping benchmark -> k ('default')."""
  if hasattr(spec, 'get') and not isinstance(spec, (int, float)):
    k = spec.get(benchmark, spec.get('default', 0))
  else:
    k = spec
  k = int(k or 0) or default_num_samples(benchmark)
  if k < 1:
    raise EvalError(f'config.eval.num_samples for {benchmark!r} must be >= 1, got {k}')
  return k


def bench_name(source: str) -> str:
  """Display name: 'aime24', 'synthetic_test_64', or a file's stem."""
  if source in data_lib.BENCHMARKS:
    return source
  if source.startswith('synthetic:'):
    return source.replace(':', '_')
  return os.path.splitext(os.path.basename(source.rstrip('/')))[0]


# ---------------------------------------------------------------------------------------------
# Model.
# ---------------------------------------------------------------------------------------------

def _overrides(m) -> dict:
  return dict(dtype=m.dtype, param_dtype=m.param_dtype, remat_policy=m.remat_policy,
              decode_chunk=m.decode_chunk, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
              lora_targets=tuple(m.lora_targets), attention=m.get('attention', 'auto'))


def model_config(config) -> QwenConfig:
  """The architecture the trainer builds from `config.model` (no weights read)."""
  return policy_lib.model_config(config)


def load_model(config, mesh, rules):
  """(QwenConfig without LoRA, params on the mesh, info dict, difficulty state or None)."""
  ev, m = config.eval, config.model
  ckpt_dir = ev.get('checkpoint_workdir', '')
  if ckpt_dir:
    if not os.path.isdir(ckpt_dir):
      raise EvalError(f'config.eval.checkpoint_workdir={ckpt_dir!r} does not exist')
    from ceeh_jax import fingerprint  # pylint: disable=g-import-not-at-top
    level = absl_logging.get_verbosity()
    if level <= absl_logging.WARNING:  # orbax warns that a read-only manager turns saving off
      absl_logging.set_verbosity(absl_logging.ERROR)  # (three W-lines in every eval): noise
    try:
      step, state = fingerprint.load_latest_state(ckpt_dir)
    except FileNotFoundError as e:
      raise EvalError(f'config.eval.checkpoint_workdir={ckpt_dir!r}: {e}') from None
    finally:
      absl_logging.set_verbosity(level)
    model_cfg = model_config(config)
    params = state['params']
    if model_cfg.lora_rank:  # the checkpoint holds the adapters; the base is config.model's
      policy_lib.check_base(policy_lib.read_meta(ckpt_dir, step), policy_lib.base_record(config),
                            ckpt_dir, lora=True)
      base = policy_lib.load_base(config, model_cfg, mesh, rules, bits=False)
      params = hf_io.merged_lora(policy_lib.with_base(params, base), model_cfg)
    model_cfg = model_cfg.replace(lora_rank=0)
    shardings = sharding_lib.param_shardings(model_cfg, mesh, rules)
    # Every process has the whole checkpoint on the host and puts only its own shards (the
    # base's merged kernels are on the mesh already).
    put = lambda x, s: jax.device_put(x, s) if isinstance(x, jax.Array) else (
        sharding_lib.put_global(x, s))
    try:
      params = jax.tree.map(put, params, shardings)
    except ValueError as e:
      raise EvalError(f'the checkpoint in {ckpt_dir} does not match config.model '
                      f'({model_cfg}): {e}') from None
    info = {'source': 'checkpoint', 'checkpoint_workdir': os.path.abspath(ckpt_dir),
            'step': int(step)}
    return model_cfg, params, info, state.get('difficulty')
  if m.hf_dir:
    path = synthetic.resolve_model_dir(m.hf_dir)
    if not os.path.isfile(os.path.join(path, 'config.json')):
      raise EvalError(f'config.model.hf_dir={m.hf_dir!r}: no HF model (config.json) at {path}')
    base_cfg, params = hf_io.load_hf(path, mesh=mesh, rules=rules)
    over = _overrides(m)
    over['lora_rank'] = 0
    return base_cfg.replace(**over), params, {'source': 'hf', 'hf_dir': m.hf_dir}, None
  model_cfg = QwenConfig.preset(m.preset, **{**_overrides(m), 'lora_rank': 0})
  params = sharding_lib.init_params(model_cfg, jax.random.key(config.seed), mesh, rules)
  return model_cfg, params, {'source': 'random', 'preset': m.preset}, None


# ---------------------------------------------------------------------------------------------
# Hard/easy.
# ---------------------------------------------------------------------------------------------

def difficulty_hard(config, examples, difficulty):
  """id -> hard from the checkpoint's acc_h (training-set problems only), or None."""
  if not difficulty or 'acc_h' not in difficulty or not config.data.train:
    return None
  acc_h = np.asarray(difficulty['acc_h'], np.float32)
  src = synthetic.resolve_data(config.data.train, config.eval.checkpoint_workdir, config.seed)
  try:
    train, _ = data_lib.load_examples(src, field_map=dict(config.data.field_map),
                                      on_error=config.data.on_error,
                                      tfds_data_dir=config.data.tfds_data_dir or None)
  except (OSError, data_lib.DataError):
    return None
  if len(train) != acc_h.shape[0]:
    return None
  index = {ex.id: q for q, ex in enumerate(train)}
  if not all(ex.id in index for ex in examples):
    return None
  seen = acc_h >= 0
  thresh = float(acc_h[seen].mean()) if seen.any() else 1.0
  return {ex.id: bool(acc_h[index[ex.id]] <= thresh) for ex in examples}


def meta_hard(examples):
  if all('hard' in ex.meta for ex in examples):
    return {ex.id: bool(ex.meta['hard']) for ex in examples}
  return None


# ---------------------------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------------------------

def _check_benchmark(source: str) -> None:
  if source.startswith(('synthetic:', 'tfds:')):
    preflight.check_source('config.eval.benchmarks', source)  # the form; generated or fetched
    return
  resolved = data_lib.resolve(source)
  if not os.path.exists(resolved):
    raise EvalError(f'benchmark {source!r}: no such file {resolved!r} (known names: '
                    f'{sorted(data_lib.BENCHMARKS)}, or synthetic:<split>:<n>, or a path)')


def check_inputs(config, workdir: str) -> None:
  """Everything `run` reads, checked before it writes anything (a bad input leaves no workdir)."""
  ev = config.eval
  preflight.check_workdir(workdir)
  ckpt = ev.get('checkpoint_workdir', '')
  if ckpt and not os.path.isdir(ckpt):
    raise EvalError(f'config.eval.checkpoint_workdir={ckpt!r} does not exist')
  preflight.check_model(config, weights=not ckpt)  # a checkpoint takes its architecture from it
  for source in ev.benchmarks:
    _check_benchmark(source)
  load_base(ev.get('base_results', ''))


def _load_benchmark(source: str, config, workdir: str):
  _check_benchmark(source)
  path = synthetic.resolve_data(source, workdir, config.seed)
  examples, _ = data_lib.load_examples(path, field_map=dict(config.data.field_map),
                                       on_error=config.data.on_error,
                                       tfds_data_dir=config.data.tfds_data_dir or None)
  limit = int(config.eval.get('limit', 0) or 0)
  return examples[:limit] if limit else examples


def _with_base(summary: dict, base: dict | None) -> dict:
  """Adds L-Acc / NAG overall and per split against a base benchmark summary."""
  if not base:
    return summary
  for prefix in ('', 'hard/', 'easy/'):
    if f'{prefix}acc' in summary and f'{prefix}acc' in base and f'{prefix}len' in base:
      acc, length = summary[f'{prefix}acc'], summary[f'{prefix}len']
      summary[f'{prefix}l_acc'] = float(metrics_lib.l_acc(acc, length, base[f'{prefix}len']))
      summary[f'{prefix}nag'] = float(metrics_lib.nag(acc, base[f'{prefix}acc'], length,
                                                      base[f'{prefix}len']))
  return summary


def load_base(path: str) -> dict:
  if not path:
    return {}
  if os.path.isdir(path):
    path = os.path.join(path, 'results.json')
  if not os.path.isfile(path):
    raise EvalError(f'config.eval.base_results={path!r} does not exist (a results.json of an '
                    'earlier eval of the base model)')
  with open(path) as f:
    return json.load(f).get('benchmarks', {})


def agreed_grades(grades: list) -> list:
  """Process 0's grades on every process (a grading timeout can differ between hosts).

  Extraction is a pure function of the text, which every process has whole; only the
  bounded verification (correct, status) can differ.
  """
  correct, status = dist_lib.agree((np.array([gr.correct for gr in grades], bool),
                                    np.array([grading_lib.STATUSES.index(gr.status)
                                              for gr in grades], np.int32)))
  return [gr._replace(correct=bool(c), status=grading_lib.STATUSES[s])
          for gr, c, s in zip(grades, correct, status)]


def run(config, workdir: str) -> dict:
  """Evaluates the configured model on `config.eval.benchmarks`; returns the results dict.

  Multi-host: call it on every process; each returns the same results, process 0 writes.
  """
  if 'eval' not in config:
    raise EvalError('the config has no `eval` section (see configs/eval_tiny.py)')
  ev = config.eval
  benchmarks = list(ev.benchmarks)
  if not benchmarks:
    raise EvalError('config.eval.benchmarks is empty')
  # Every input checked before anything is written: a bad one leaves no workdir behind.
  check_inputs(config, workdir)
  tokenizer = preflight.load_tokenizer(config)
  main = dist_lib.is_main()  # the one process that writes samples, results and plots
  base = load_base(ev.get('base_results', ''))
  rules = sharding_lib.rules_from_config(config.mesh.rules)
  mesh = sharding_lib.make_mesh(config.mesh.shape)

  # Data first: a missing benchmark fails before the model is read.
  loaded = [(src, bench_name(src), _load_benchmark(src, config, workdir)) for src in benchmarks]
  model_cfg, params, info, difficulty = load_model(config, mesh, rules)
  os.makedirs(workdir, exist_ok=True)
  stops = tuple(tokenizer_lib.stop_ids(tokenizer))
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
  sample_cfg = model_cfg.replace(dtype=config.model.sample_dtype)
  unroll = sampler_lib.resolve_unroll(config.sampling.get('unroll_layers', 'auto'))
  view = sampler_lib.sampling_params(params, jnp.dtype(config.model.sample_dtype), unroll)
  temperature = float(ev.get('temperature', 0.6))
  top_p = float(ev.get('top_p', 0.95))
  max_new = int(ev.get('max_new_tokens', 0) or config.sampling.max_new_tokens)
  bsz = int(ev.batch_size)
  grader = grading_lib.Grader(num_workers=config.grading.num_workers,
                              timeout_s=config.grading.timeout_s,
                              require_think_close=config.data.think_prefix)
  encode_kw = dict(instruction=config.data.instruction, think_prefix=config.data.think_prefix,
                   max_tokens=config.data.max_prompt_tokens,
                   overflow=config.data.prompt_overflow)
  plan = [(src, name, exs, num_samples_for(ev.num_samples, src)) for src, name, exs in loaded]
  total = sum(math.ceil(len(exs) / bsz) for _, _, exs, _ in plan)
  bar = tqdm.tqdm(total=total, desc='eval', dynamic_ncols=True,
                  disable=not (config.get('progress', True) and main))
  results = {'model': info, 'settings': {'temperature': temperature, 'top_p': top_p,
                                         'max_new_tokens': max_new, 'batch_size': bsz,
                                         'seed': config.seed}, 'benchmarks': {}}
  t_start = time.perf_counter()
  samples_tmp = os.path.join(workdir, 'samples.jsonl.tmp')
  try:
    with (open(samples_tmp, 'w') if main else contextlib.nullcontext()) as out:
      for b_idx, (src, name, exs, k) in enumerate(plan):
        prompts, _ = rollouts_lib.encode_prompts(tokenizer, exs, source=src, **encode_kw)
        bucket = sampler_lib.bucket_length(max(len(p) for p in prompts))
        cfg = sampler_lib.SampleConfig(max_new_tokens=max_new, temperature=temperature,
                                       top_p=top_p, top_k=int(ev.get('top_k', 0)),
                                       num_samples=k, eos_ids=stops, pad_id=pad_id,
                                       unroll_layers=unroll)
        hard = difficulty_hard(config, exs, difficulty) if difficulty else None
        hard_source = 'difficulty' if hard is not None else None
        if hard is None and (hard := meta_hard(exs)) is not None:
          hard_source = 'meta'
        records = []
        for start in range(0, len(exs), bsz):
          chunk = exs[start:start + bsz]
          batch = prompts[start:start + bsz]
          batch = batch + [batch[-1]] * (bsz - len(batch))  # fixed shape: one compilation
          rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), b_idx), start)
          ro = sampler_lib.generate(view, batch, rng, model_cfg=sample_cfg, cfg=cfg, mesh=mesh,
                                    rules=rules, bucket=bucket)
          n = len(chunk) * k
          # Rows span processes on a multi-host mesh: an all-gather (every process, in order).
          tokens, lengths, logps, mask, finished = (x[:n] for x in sharding_lib.to_host(
              (ro.tokens, ro.lengths, ro.logps, ro.mask, ro.finished)))
          texts = tokenizer_lib.decode_completions(tokenizer, tokens, lengths)
          grades = agreed_grades(
              grader.grade_batch(texts, [ex.answer for ex in chunk for _ in range(k)]))
          ent = -(logps * mask).sum(1) / np.maximum(mask.sum(1), 1)
          for i, (text, gr) in enumerate(zip(texts, grades)):
            ex = chunk[i // k]
            rec = {'benchmark': name, 'id': ex.id, 'sample': i % k, 'response': text,
                   'extracted': gr.extracted, 'reference': ex.answer, 'correct': bool(gr.correct),
                   'boxed': bool(gr.boxed), 'length': int(lengths[i]),
                   'truncated': bool(not finished[i]), 'entropy': float(ent[i]),
                   'status': gr.status}
            if hard is not None:
              rec['hard'] = hard[ex.id]
            records.append(rec)
            if out is not None:
              out.write(json.dumps(rec, ensure_ascii=False) + '\n')
          bar.update(1)
          bar.set_postfix_str(f'{name} acc {np.mean([r["correct"] for r in records]):.3f}')
        summary = metrics_lib.summarize(records, hard_mask=hard)
        summary.update({'source': src, 'hard_source': hard_source,
                        'grade_timeouts': sum(r['status'] == 'timeout' for r in records),
                        'grade_errors': sum(r['status'] == 'error' for r in records)})
        results['benchmarks'][name] = _with_base(summary, base.get(name))
  finally:
    bar.close()
    grader.close()
  results['seconds'] = time.perf_counter() - t_start
  results['base_results'] = ev.get('base_results', '') or None
  if not main:
    return results
  os.replace(samples_tmp, os.path.join(workdir, 'samples.jsonl'))
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  table = markdown_table(results)
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(table + '\n')
  plot_acc_vs_len(results, os.path.join(workdir, 'acc_vs_len.png'))
  print(table)
  return results


# ---------------------------------------------------------------------------------------------
# Reports.
# ---------------------------------------------------------------------------------------------

def _fmt(v, digits=3):
  if v is None:
    return '—'
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return f'{v:.{digits}f}' if isinstance(v, float) else str(v)


def markdown_table(results: dict) -> str:
  """One row per benchmark and split: ACC, LEN, Pass@k, L-Acc, NAG, entropy."""
  benches = results['benchmarks']
  ks = sorted({int(key.split('@')[1]) for s in benches.values() for key in s
               if key.startswith('pass@')})
  head = (['benchmark', 'split', 'n', 'k', 'ACC', 'LEN'] + [f'Pass@{k}' for k in ks] +
          ['L-Acc', 'NAG', 'entropy'])
  rows = ['| ' + ' | '.join(head) + ' |', '| --- | --- |' + ' ---: |' * (len(head) - 2)]
  for name, s in benches.items():
    for split in ('', 'hard/', 'easy/'):
      if f'{split}acc' not in s:
        continue
      cells = [name, split.rstrip('/') or 'all', str(s[f'{split}num_problems']),
               str(s[f'{split}samples_per_problem']), _fmt(s[f'{split}acc']),
               _fmt(s[f'{split}len'], 1)]
      cells += [_fmt(s.get(f'{split}pass@{k}')) for k in ks]
      cells += [_fmt(s.get(f'{split}l_acc')), _fmt(s.get(f'{split}nag'), 2),
                _fmt(s.get(f'{split}entropy'))]
      rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def plot_acc_vs_len(results: dict, path: str) -> None:
  """ACC vs LEN per benchmark (hard/easy as hollow markers)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for i, (name, s) in enumerate(results['benchmarks'].items()):
    color = f'C{i % 10}'
    ax.scatter([s['len']], [s['acc']], color=color, label=name, s=50)
    for split, marker in (('hard', 'v'), ('easy', '^')):
      if f'{split}/acc' in s:
        ax.scatter([s[f'{split}/len']], [s[f'{split}/acc']], facecolors='none',
                   edgecolors=color, marker=marker, s=50, label=f'{name} ({split})')
  ax.set_xlabel('LEN (mean response tokens)')
  ax.set_ylabel('ACC (avg@k)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
