r"""The paper-style table over several eval runs: ACC / LEN / NAG per benchmark, a row per run.

ACC is a fraction (0.648), as in every table of the project; NAG of the base run itself reads
`—` (it has nothing to be compared with).

  python -m ceeh_jax.compare runs/eval_r1_base runs/eval_r1_ceeh runs/eval_r1_grpo \
      --base=runs/eval_r1_base --out=runs/compare

Each DIR holds a results.json written by `ceeh_jax.evaluate`. With --base, NAG (and L-Acc) are
recomputed against that run's results; without it, the values each run stored (from its own
`eval.base_results`) are shown. Writes <out>/compare.md and <out>/pareto.png (ACC vs LEN per
benchmark, the Pareto front of shorter-and-more-accurate runs drawn as a line); <out> defaults
to the common parent of the DIRs.
"""
import argparse
import json
import math
import os
import sys

from ceeh_jax import errors
from ceeh_jax import metrics as metrics_lib


def load_results(path: str) -> dict:
  f = os.path.join(path, 'results.json') if os.path.isdir(path) else path
  if not os.path.isfile(f):
    raise errors.MissingFileError(f'{path}: no results.json (run `python -m ceeh_jax.main '
                                  '--config=configs/eval_*.py --workdir=DIR` first)')
  with open(f) as fh:
    return json.load(fh)


def _results_file(path: str) -> str:
  path = os.path.abspath(path)
  return os.path.join(path, 'results.json') if os.path.isdir(path) else path


def run_name(path: str) -> str:
  path = os.path.normpath(path)
  return os.path.basename(os.path.dirname(path) if path.endswith('results.json') else path)


def table_rows(runs: dict, base: dict | None = None,
               base_run: str | None = None) -> tuple[list[str], list[dict]]:
  """(benchmarks in first-seen order, one row per run: {'run', bench: {acc, len, nag, l_acc}}).

  The row of `base_run` (the base model's own run) has no NAG / L-Acc.
  """
  benches = []
  for res in runs.values():
    for b in res['benchmarks']:
      if b not in benches:
        benches.append(b)
  rows = []
  for name, res in runs.items():
    row = {'run': name}
    for b in benches:
      s = res['benchmarks'].get(b)
      if s is None:
        continue
      cell = {'acc': s['acc'], 'len': s['len'], 'nag': s.get('nag'), 'l_acc': s.get('l_acc')}
      ref = (base or {}).get('benchmarks', {}).get(b)
      if name == base_run:
        cell['nag'] = cell['l_acc'] = None
      elif ref is not None:
        cell['nag'] = float(metrics_lib.nag(s['acc'], ref['acc'], s['len'], ref['len']))
        cell['l_acc'] = float(metrics_lib.l_acc(s['acc'], s['len'], ref['len']))
      row[b] = cell
    rows.append(row)
  return benches, rows


def _f(v, spec):
  if v is None:
    return '—'
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return format(v, spec)


def markdown(benches: list[str], rows: list[dict]) -> str:
  head = ['run'] + [f'{b} {m}' for b in benches for m in ('ACC', 'LEN', 'NAG')]
  lines = ['| ' + ' | '.join(head) + ' |', '| --- |' + ' ---: |' * (len(head) - 1)]
  for row in rows:
    cells = [row['run']]
    for b in benches:
      c = row.get(b)
      cells += (['—'] * 3 if c is None else
                [_f(c['acc'], '.3f'), _f(c['len'], '.1f'), _f(c['nag'], '.2f')])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def pareto_front(points):
  """Points (len, acc, ...) not dominated by a shorter-or-equal, at-least-as-accurate one."""
  front = []
  for p in sorted(points, key=lambda p: (p[0], -p[1])):
    if not front or p[1] > front[-1][1]:
      front.append(p)
  return front


def plot(benches: list[str], rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(benches)
  cols = min(n, 3)
  nrows = (n + cols - 1) // cols
  fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.8 * nrows), squeeze=False)
  for ax, b in zip(axes.flat, benches):
    pts = [(row[b]['len'], row[b]['acc'], row['run']) for row in rows if b in row]
    for i, (x, y, name) in enumerate(pts):
      ax.scatter([x], [y], color=f'C{i % 10}', s=40, zorder=3)
      ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
    front = pareto_front(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], '--', color='gray', zorder=2)
    ax.set_title(b)
    ax.set_xlabel('LEN (tokens)')
    ax.set_ylabel('ACC')
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[n:]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def compare(dirs, base: str | None = None, out: str | None = None) -> str:
  """Loads every run, prints and writes the table and the Pareto plot; returns the table."""
  if not dirs:
    raise ValueError('give at least one eval directory')
  runs, base_run = {}, None
  for d in dirs:
    name = run_name(d)
    while name in runs:  # same basename in different parents
      name += "'"
    runs[name] = load_results(d)
    if base and _results_file(d) == _results_file(base):
      base_run = name
  base_res = load_results(base) if base else None
  benches, rows = table_rows(runs, base_res, base_run)
  table = markdown(benches, rows)
  out = out or os.path.commonpath([os.path.abspath(d) for d in dirs])
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'compare.md'), 'w') as f:
    f.write(table + '\n')
  plot(benches, rows, os.path.join(out, 'pareto.png'))
  print(table)
  return table


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m ceeh_jax.compare', description=__doc__.split('\n')[0])
  p.add_argument('dirs', nargs='+', help='eval workdirs (each with results.json)')
  p.add_argument('--base', default=None, help='eval dir of the base model (NAG reference)')
  p.add_argument('--out', default=None, help='where compare.md and pareto.png go')
  args = p.parse_args(argv)
  try:
    compare(args.dirs, args.base, args.out)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
