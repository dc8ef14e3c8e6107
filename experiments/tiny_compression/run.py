r"""Base vs GRPO, Length-Penalty, CEEH-ME/EA, EGRC, ENTRA (and HAPO, DLER) on the synthetic task.

  python experiments/tiny_compression/run.py                    # every method, 3 seeds
  python experiments/tiny_compression/run.py --methods=grpo,ceeh_me --seeds=0 --steps=10

Each run is `configs/tiny.py` with only the method and seed swapped in (same base policy, data,
budget, learning rate), evaluated on the same 128 held-out questions before and after training
with `--eval_samples` samples per question (Pass@k). Runs go to runs/<method>_s<seed>/ here
(a finished run is reused; delete it to rerun), `--jobs` of them at a time in subprocesses;
the table (results.md) and the plots (acc_vs_len.png, curves.png) are written here.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

METHODS = ('grpo', 'length_penalty', 'ceeh_me', 'ceeh_ea', 'egrc', 'entra', 'hapo', 'dler')
SPLITS = (('', 'all'), ('/easy', 'easy'), ('/hard', 'hard'))


def make_config(method: str, seed: int, steps: int, eval_samples: int):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.method, c.seed, c.total_steps = method, seed, steps
  c.eval_every = 0                    # curves come from the per-step train/{easy,hard} metrics
  c.sampling.eval_num_samples = eval_samples
  c.progress = False
  c.tensorboard = False
  if method == 'egrc':  # compression for the first half, then exploration (the paper's order);
    # the clip sits between the easy (~43 tokens) and hard (~88) base lengths at this scale.
    c.method_hparams = {'stage_steps': steps // 2, 'length_clip': 96, 'explore_temperature': 1.2}
  return c


def run_one(method: str, seed: int, steps: int, eval_samples: int, out: str) -> float:
  """Trains one (method, seed) in this process; returns its wall time in seconds."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.path.join(out, '.xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  from ceeh_jax import train  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  train.train_and_evaluate(make_config(method, seed, steps, eval_samples),
                           os.path.join(out, f'{method}_s{seed}'))
  return time.time() - t0


def launch(method, seed, args) -> float:
  """One run in a fresh subprocess (so `--jobs` runs share the cores, not one GIL)."""
  workdir = os.path.join(args.out, f'{method}_s{seed}')
  if os.path.exists(os.path.join(workdir, 'final_eval.json')):
    return 0.0
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, os.path.abspath(__file__), f'--one={method},{seed}',
         f'--steps={args.steps}', f'--eval_samples={args.eval_samples}', f'--out={args.out}']
  with open(os.path.join(workdir, 'log.txt'), 'w') as log:
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
  return time.time() - t0


def load(workdir):
  from ceeh_jax import metric_writers  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'final_eval.json')) as f:
    final = json.load(f)
  with open(os.path.join(workdir, 'base_eval.json')) as f:
    base = json.load(f)
  return base, final, metric_writers.read_metrics(workdir)


def _cell(values, fmt='.3f'):
  values = [v for v in values if v is not None and np.isfinite(v)]
  if not values:
    return 'n/a'
  return f'{np.mean(values):{fmt}} ± {np.std(values):{fmt}}' if len(values) > 1 else \
      f'{values[0]:{fmt}}'


COLUMNS = [('eval/acc', 'ACC'), ('eval/length', 'LEN'), ('eval/easy/acc', 'ACC easy'),
           ('eval/easy/length', 'LEN easy'), ('eval/hard/acc', 'ACC hard'),
           ('eval/hard/length', 'LEN hard'), ('eval/hard/pass@k', 'Pass@k hard'),
           ('eval/easy/entropy', 'entropy easy'), ('eval/hard/entropy', 'entropy hard')]


def table(results) -> str:
  """Mean ± std over seeds of the final eval; base = the base policy's eval in every run."""
  from ceeh_jax import metrics  # pylint: disable=g-import-not-at-top
  rows = ['| method | seeds | ' + ' | '.join(n for _, n in COLUMNS) + ' | NAG | NAG easy |',
          '| --- |' + ' ---: |' * (len(COLUMNS) + 3)]
  bases = [b for runs in results.values() for b, _, _ in runs]
  rows.append(f'| base | {len(bases)} evals | ' + ' | '.join(
      _cell([b.get(k) for b in bases]) for k, _ in COLUMNS) + ' | 0 | 0 |')
  for method, runs in results.items():
    nag = lambda split: [float(metrics.nag(f[f'eval{split}/acc'], b[f'eval{split}/acc'],
                                           f[f'eval{split}/length'], b[f'eval{split}/length']))
                         for b, f, _ in runs]
    cells = [_cell([f.get(k) for _, f, _ in runs]) for k, _ in COLUMNS]
    rows.append(f'| {method} | {len(runs)} | ' + ' | '.join(cells) +
                f" | {_nag_cell(nag(''))} | {_nag_cell(nag('/easy'))} |")
  return '\n'.join(rows)


def _nag_cell(values):
  """NAG is +inf for a run that saved no length: say how many, average the finite rest."""
  inf = sum(not np.isfinite(v) for v in values)
  cell = _cell(values, '.1f')
  return cell if not inf else f'{cell} ({inf}/{len(values)} inf: no compression)'


def plots(results, out):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  colors = dict(zip(results, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 2))
  # Accuracy vs length of the final policies, per split; base policy as black crosses.
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  for ax, (split, name) in zip(axes, SPLITS):
    for method, runs in results.items():
      ax.scatter([f[f'eval{split}/length'] for _, f, _ in runs],
                 [f[f'eval{split}/acc'] for _, f, _ in runs], label=method, color=colors[method])
    bases = [b for runs in results.values() for b, _, _ in runs]
    ax.scatter([b[f'eval{split}/length'] for b in bases], [b[f'eval{split}/acc'] for b in bases],
               marker='x', c='k', label='base')
    ax.set_title(f'{name} questions'), ax.set_xlabel('mean response tokens')
  axes[0].set_ylabel('accuracy'), axes[0].legend(fontsize=7)
  fig.tight_layout(), fig.savefig(os.path.join(out, 'acc_vs_len.png'), dpi=110)
  # Length and entropy of the training rollouts over training, easy vs hard, seed mean.
  fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
  for method, runs in results.items():
    for col, split in enumerate(('easy', 'hard')):
      for row, key in enumerate(('length', 'entropy')):
        curves = [[r.get(f'train/{split}/{key}', np.nan) for r in recs] for _, _, recs in runs]
        n = min(len(c) for c in curves)
        mean = np.nanmean(np.array([c[:n] for c in curves]), axis=0)
        axes[row, col].plot(np.arange(1, n + 1), _smooth(mean), label=method, color=colors[method])
        axes[row, col].set_title(f'{key} of training rollouts, {split} questions')
  for ax in axes[1]:
    ax.set_xlabel('RL step')
  axes[0, 0].legend(fontsize=7), fig.tight_layout()
  fig.savefig(os.path.join(out, 'curves.png'), dpi=110)


def _smooth(x, k: int = 5):
  """Trailing mean over k steps (the per-step values are noisy: 16 prompts a step)."""
  c = np.cumsum(np.insert(np.nan_to_num(x), 0, 0.0))
  n = np.minimum(np.arange(1, len(x) + 1), k)
  return (c[1:] - c[np.arange(len(x)) + 1 - n]) / n


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--methods', default=','.join(METHODS))
  ap.add_argument('--seeds', default='0,1,2')
  ap.add_argument('--steps', type=int, default=30)
  ap.add_argument('--eval_samples', type=int, default=4, help='samples per eval question')
  ap.add_argument('--jobs', type=int, default=2, help='runs at a time')
  ap.add_argument('--out', default=os.path.join(HERE, 'runs'))
  ap.add_argument('--one', default=None, help=argparse.SUPPRESS)  # method,seed: a worker
  args = ap.parse_args()
  if args.one:
    method, seed = args.one.split(',')
    print(f'{method} seed {seed}: {run_one(method, int(seed), args.steps, args.eval_samples, args.out):.0f}s')
    return
  methods, seeds = args.methods.split(','), [int(s) for s in args.seeds.split(',')]
  t0 = time.time()
  jobs = [(m, s) for s in seeds for m in methods]
  times = {}
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = {pool.submit(launch, m, s, args): (m, s) for m, s in jobs}
    for fut in concurrent.futures.as_completed(futures):
      m, s = futures[fut]
      times[f'{m}_s{s}'] = fut.result()
      print(f'[{time.time() - t0:6.0f}s] {m} seed {s} done ({times[f"{m}_s{s}"]:.0f}s; '
            f'{len(times)}/{len(jobs)})', flush=True)
  total = time.time() - t0
  results = {m: [load(os.path.join(args.out, f'{m}_s{s}')) for s in seeds] for m in methods}
  tab = table(results)
  plots(results, HERE)
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  with open(os.path.join(HERE, 'results.md'), 'w') as f:
    f.write(f'command: python experiments/tiny_compression/run.py --methods={args.methods} '
            f'--seeds={args.seeds} --steps={args.steps} --eval_samples={args.eval_samples} '
            f'--jobs={args.jobs}\ncommit: {commit}\nwall time: {total:.0f} s\n\n{tab}\n\n'
            f'seconds per run: {json.dumps({k: round(v) for k, v in sorted(times.items())})}\n')
  print(tab)
  print(f'total {total:.0f} s')


if __name__ == '__main__':
  main()
