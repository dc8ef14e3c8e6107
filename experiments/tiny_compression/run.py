r"""Base vs GRPO vs Length-Penalty vs CEEH-ME/EA vs EGRC vs ENTRA on the synthetic task.

  python experiments/tiny_compression/run.py                  # all methods, 3 seeds
  python experiments/tiny_compression/run.py --methods=grpo,ceeh_me --seeds=0 --steps=20

Each run is `configs/tiny.py` with the method and seed swapped in (same base policy, data,
budget); results land in experiments/tiny_compression/runs/<method>_s<seed>/ and the table
and plots in experiments/tiny_compression/README.md / *.png.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

METHODS = ('grpo', 'length_penalty', 'ceeh_me', 'ceeh_ea', 'egrc', 'entra')


def run_one(method, seed, steps, out):
  from ceeh_jax import train  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.method, c.seed, c.total_steps = method, seed, steps
  c.eval_every = max(1, steps // 4)
  c.progress = False
  if method == 'egrc':  # compression for the first half, then exploration (paper order)
    c.method_hparams = {'stage_steps': steps // 2, 'length_clip': 96,
                        'explore_temperature': 1.2}
  workdir = os.path.join(out, f'{method}_s{seed}')
  t0 = time.time()
  train.train_and_evaluate(c, workdir)
  return workdir, time.time() - t0


def load(workdir):
  with open(os.path.join(workdir, 'final_eval.json')) as f:
    final = json.load(f)
  with open(os.path.join(workdir, 'base_eval.json')) as f:
    base = json.load(f)
  from ceeh_jax import metric_writers  # pylint: disable=g-import-not-at-top
  return base, final, metric_writers.read_metrics(workdir)


def nag(acc, acc_b, length, len_b):
  from ceeh_jax import metrics  # pylint: disable=g-import-not-at-top
  return float(metrics.nag(acc, acc_b, length, len_b))


def table(results):
  keys = [('eval/acc', 'ACC'), ('eval/length', 'LEN'), ('eval/easy/acc', 'ACC easy'),
          ('eval/easy/length', 'LEN easy'), ('eval/hard/acc', 'ACC hard'),
          ('eval/hard/length', 'LEN hard'), ('eval/hard/pass@k', 'Pass@k hard'),
          ('eval/entropy', 'entropy')]
  head = '| method | ' + ' | '.join(n for _, n in keys) + ' | NAG |'
  rows = [head, '|' + ' --- |' * (len(keys) + 2)]
  bases = [b for runs in results.values() for b, _, _ in runs]
  base = {k: np.mean([b[k] for b in bases if k in b]) for k, _ in keys if any(k in b for b in bases)}
  rows.append('| base | ' + ' | '.join(f'{base.get(k, float("nan")):.3f}' for k, _ in keys) + ' | 0 |')
  for method, runs in results.items():
    cells = []
    for k, _ in keys:
      v = [f[k] for _, f, _ in runs if k in f]
      cells.append(f'{np.mean(v):.3f} ± {np.std(v):.3f}' if v else 'n/a')
    ng = [nag(f['eval/acc'], b['eval/acc'], f['eval/length'], b['eval/length']) for b, f, _ in runs]
    cells.append(f'{np.mean(ng):.1f} ± {np.std(ng):.1f}')
    rows.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def plots(results, out):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 4))
  for method, runs in results.items():
    ax.scatter([f['eval/length'] for _, f, _ in runs], [f['eval/acc'] for _, f, _ in runs],
               label=method)
  b = [b for runs in results.values() for b, _, _ in runs]
  ax.scatter([x['eval/length'] for x in b], [x['eval/acc'] for x in b], marker='x', c='k',
             label='base')
  ax.set_xlabel('mean response tokens'), ax.set_ylabel('accuracy'), ax.legend(fontsize=7)
  fig.tight_layout(), fig.savefig(os.path.join(out, 'acc_vs_len.png'), dpi=120)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for method, runs in results.items():
    recs = runs[0][2]
    steps = [r['step'] for r in recs]
    axes[0].plot(steps, [r.get('entropy', np.nan) for r in recs], label=method)
    axes[1].plot(steps, [r.get('length', np.nan) for r in recs], label=method)
  axes[0].set_title('policy entropy (train rollouts)'), axes[1].set_title('mean length')
  axes[0].legend(fontsize=7), fig.tight_layout()
  fig.savefig(os.path.join(out, 'curves.png'), dpi=120)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--methods', default=','.join(METHODS))
  ap.add_argument('--seeds', default='0,1,2')
  ap.add_argument('--steps', type=int, default=40)
  ap.add_argument('--out', default=os.path.join(HERE, 'runs'))
  args = ap.parse_args()
  results, times = {}, {}
  for method in args.methods.split(','):
    for seed in map(int, args.seeds.split(',')):
      workdir, secs = run_one(method, seed, args.steps, args.out)
      results.setdefault(method, []).append(load(workdir))
      times[f'{method}_s{seed}'] = secs
      print(f'{method} seed {seed}: {secs:.0f}s', flush=True)
  tab = table(results)
  plots(results, HERE)
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
  with open(os.path.join(HERE, 'results.md'), 'w') as f:
    f.write(f'command: python experiments/tiny_compression/run.py --methods={args.methods} '
            f'--seeds={args.seeds} --steps={args.steps}\ncommit: {commit}\n\n{tab}\n\n'
            f'seconds per run: {json.dumps({k: round(v) for k, v in times.items()})}\n')
  print(tab)


if __name__ == '__main__':
  main()
