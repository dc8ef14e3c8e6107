"""results.md and the plots of the tiny reproduction, from the runs' workdirs (see run.py).

Every number is a mean over seeds ± its standard error (std / sqrt(n), n seeds), with the std
beside it in the full table. Each run's eval set is generated from its seed, so differences
are taken per run (final − that run's base) before averaging; comparisons between two
configurations (claim (b)) are taken seed by seed, on the same eval set, before averaging.
"""
import json
import os
import re
import subprocess

import numpy as np

SPLITS = ('', '/easy', '/hard')
# (key in the eval record, column name, format)
COLUMNS = (('eval/easy/acc', 'ACC easy', '.3f'), ('eval/easy/length', 'LEN easy', '.1f'),
           ('eval/hard/acc', 'ACC hard', '.3f'), ('eval/hard/length', 'LEN hard', '.1f'),
           ('eval/hard/pass@k', 'pass@4 hard', '.3f'), ('eval/easy/entropy', 'H easy', '.3f'),
           ('eval/hard/entropy', 'H hard', '.3f'))


def load_run(workdir: str):
  """{'base', 'final', 'curve': [(step, eval record)], 'wall', 'train': [records]} or None."""
  if not os.path.exists(os.path.join(workdir, 'final_eval.json')):
    return None
  read = lambda name: json.load(open(os.path.join(workdir, name)))
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  base, final = read('base_eval.json'), read('final_eval.json')
  # The periodic evals, with the base at step 0 and the final eval at the last step (logged
  # with that step since the trainer's last eval is the final one; appended for older runs).
  curve = [(0, base)] + [(r['step'], r) for r in records if 'eval/acc' in r]
  if 'eval/acc' not in records[-1]:
    curve.append((records[-1]['step'], final))
  wall = read('wall_time.json')['seconds'] if os.path.exists(
      os.path.join(workdir, 'wall_time.json')) else float('nan')
  return {'base': base, 'final': final, 'curve': curve, 'wall': wall,
          'train': records}


def group_runs(out: str, names):
  """{label: [run, ...]}: seeds of one configuration together (name minus its `_s<seed>`)."""
  groups = {}
  for name in names:
    run = load_run(os.path.join(out, name))
    if run is not None:
      label, seed = re.fullmatch(r'(.*?)(?:_s(\d+))?', name).groups()
      run['seed'] = int(seed) if seed is not None else 0
      groups.setdefault(label, []).append(run)
  return groups


def mean_se(values):
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if not v.size:
    return np.nan, np.nan, np.nan, 0
  sd = v.std(ddof=1) if v.size > 1 else np.nan
  return v.mean(), sd / np.sqrt(v.size) if v.size > 1 else np.nan, sd, v.size


def cell(values, fmt='.3f', std=False):
  m, se, sd, n = mean_se(values)
  if not n:
    return 'n/a'
  if n == 1:
    return f'{m:{fmt}}'
  spread = fmt.lstrip('+')  # a sign on the mean (a change), never on its error
  return f'{m:{fmt}} ± {se:{spread}}' + (f' (sd {sd:{spread}})' if std else '')


def change(run, key, relative=False):
  b, f = run['base'][key], run['final'][key]
  return 100.0 * (f - b) / b if relative else f - b


def main_table(groups, std=False) -> str:
  head = '| run | seeds | ' + ' | '.join(n for _, n, _ in COLUMNS) + ' |'
  rows = [head, '|' + ' --- |' * 2 + ' ---: |' * len(COLUMNS)]
  bases = [r['base'] for runs in groups.values() for r in runs]
  rows.append(f'| base (every run\'s start) | {len(bases)} | ' + ' | '.join(
      cell([b[k] for b in bases], f, std) for k, _, f in COLUMNS) + ' |')
  for label, runs in groups.items():
    rows.append(f'| {label} | {len(runs)} | ' + ' | '.join(
        cell([r['final'][k] for r in runs], f, std) for k, _, f in COLUMNS) + ' |')
  return '\n'.join(rows)


def claims_table(groups) -> str:
  """Per configuration, changes vs its own base: the two claims' numbers."""
  rows = ['| run | seeds | easy LEN change | easy ACC change | (a) ≥ 20% shorter, ACC within '
          '0.01 | hard LEN change | hard ACC change | hard pass@4 change | H easy change | '
          'H hard change |', '|' + ' --- |' * 2 + ' ---: |' * 2 + ' --- |' + ' ---: |' * 5]
  for label, runs in groups.items():
    d_len = [change(r, 'eval/easy/length', True) for r in runs]
    d_acc = [change(r, 'eval/easy/acc') for r in runs]
    m_len, se_len, _, _ = mean_se(d_len)
    m_acc, se_acc, _, _ = mean_se(d_acc)
    verdict = verdict_a(m_len, se_len, m_acc, se_acc)
    rows.append(
        f'| {label} | {len(runs)} | {cell(d_len, "+.1f")}% | {cell(d_acc, "+.3f")} | {verdict} | '
        f'{cell([change(r, "eval/hard/length", True) for r in runs], "+.1f")}% | '
        f'{cell([change(r, "eval/hard/acc") for r in runs], "+.3f")} | '
        f'{cell([change(r, "eval/hard/pass@k") for r in runs], "+.3f")} | '
        f'{cell([change(r, "eval/easy/entropy", True) for r in runs], "+.0f")}% | '
        f'{cell([change(r, "eval/hard/entropy", True) for r in runs], "+.0f")}% |')
  return '\n'.join(rows)


# Claim (b)'s comparisons, (run, reference): CEEH against the length penalty at (near-)matched
# compression, the 10x entropy coefficient against the paper's, CEEH against GRPO and HAPO.
PAIRS = (('ceeh_me', 'length_penalty_w0.3'), ('ceeh_me', 'length_penalty_w0.1'),
         ('ceeh_ea', 'length_penalty_w0.3'), ('ceeh_ea', 'length_penalty_w0.1'),
         ('ceeh_me_ent0.01', 'ceeh_me'), ('ceeh_me', 'grpo'), ('ceeh_me', 'hapo'))
# (eval key, name, relative change?, format)
PAIRED = (('eval/easy/length', 'easy LEN', True, '+.1f'),
          ('eval/easy/acc', 'easy ACC', False, '+.3f'),
          ('eval/hard/length', 'hard LEN', True, '+.1f'),
          ('eval/hard/acc', 'hard ACC', False, '+.3f'),
          ('eval/hard/pass@k', 'hard pass@4', False, '+.3f'),
          ('eval/hard/entropy', 'H hard', True, '+.0f'))


def paired_table(groups, pairs=PAIRS) -> str:
  """Run minus reference, seed by seed (a seed's runs share one eval set and one base), of the
  changes from base: mean ± standard error of the per-seed differences. Relative changes
  differ in percentage points."""
  names = ' | '.join(f'Δ {name} change' for _, name, _, _ in PAIRED)
  rows = [f'| run − reference | seeds | {names} |', '|' + ' --- |' * 2 + ' ---: |' * len(PAIRED)]
  for a, b in pairs:
    by_seed = {r['seed']: r for r in groups.get(b, [])}
    both = [(r, by_seed[r['seed']]) for r in groups.get(a, []) if r['seed'] in by_seed]
    if not both:
      continue
    cells = []
    for key, _, rel, fmt in PAIRED:
      diffs = [change(r, key, rel) - change(q, key, rel) for r, q in both]
      cells.append(cell(diffs, fmt) + (' pp' if rel else ''))
    rows.append(f'| {a} − {b} | {len(both)} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows)


def verdict_a(m_len, se_len, m_acc, se_acc) -> str:
  """Claim (a) on the seed means; 'within noise' when the SE straddles a threshold."""
  if not np.isfinite(m_len):
    return 'n/a'
  short = m_len <= -20
  kept = abs(m_acc) <= 0.01
  se_len = 0.0 if not np.isfinite(se_len) else se_len
  se_acc = 0.0 if not np.isfinite(se_acc) else se_acc
  sure = (abs(m_len + 20) > 2 * se_len) and (abs(abs(m_acc) - 0.01) > 2 * se_acc)
  word = 'yes' if short and kept else 'no'
  return word if sure else f'{word} (within 2 SE of a threshold)'


def plots(groups, out_dir: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  # One colour per configuration (tab20's dark shades first, then its light ones); the one-knob
  # variants (λ, weight, entropy coefficient) as triangles.
  tab20 = plt.get_cmap('tab20')
  colors = {label: tab20((2 * i + (i // 10) % 2) % 20) for i, label in enumerate(groups)}
  markers = {label: '^' if re.search(r'_(lam|w|ent)[\d.]+$', label) else 'o' for label in groups}
  # (b) Length vs hard pass@4 and vs hard entropy, every run a point, base as crosses.
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  panels = (('eval/length', 'eval/hard/pass@k', 'hard pass@4'),
            ('eval/length', 'eval/hard/entropy', 'hard entropy (nats/token)'),
            ('eval/easy/length', 'eval/easy/acc', 'easy accuracy'))
  for ax, (xk, yk, name) in zip(axes, panels):
    for label, runs in groups.items():
      ax.scatter([r['final'][xk] for r in runs], [r['final'][yk] for r in runs], label=label,
                 color=colors[label], marker=markers[label], s=24)
    bases = [r['base'] for runs in groups.values() for r in runs]
    ax.scatter([b[xk] for b in bases], [b[yk] for b in bases], marker='x', c='k', label='base')
    ax.set_xlabel('mean response tokens' + (' (easy)' if 'easy' in xk else ' (all)'))
    ax.set_ylabel(name)
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'pareto.png'), dpi=110)
  # Curves: the periodic evals, seed mean per configuration.
  fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True)
  keys = (('eval/easy/length', 'easy LEN'), ('eval/easy/acc', 'easy ACC'),
          ('eval/easy/entropy', 'easy entropy'), ('eval/hard/length', 'hard LEN'),
          ('eval/hard/pass@k', 'hard pass@4'), ('eval/hard/entropy', 'hard entropy'))
  for ax, (key, name) in zip(axes.flat, keys):
    for label, runs in groups.items():
      n = min(len(r['curve']) for r in runs)
      steps = [s for s, _ in runs[0]['curve'][:n]]
      ys = np.array([[rec[key] for _, rec in r['curve'][:n]] for r in runs])
      ax.plot(steps, ys.mean(0), label=label, color=colors[label],
              linestyle='-' if len(runs) > 1 else ':')
    ax.set_title(name)
  for ax in axes[1]:
    ax.set_xlabel('RL step')
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'curves.png'), dpi=110)


def write(out: str, names, out_dir: str, command: str, steps: int) -> str:
  groups = group_runs(out, names)
  if not groups:
    return 'no finished runs yet'
  plots(groups, out_dir)
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=out_dir,
                          capture_output=True, text=True).stdout.strip()
  walls = {label: [r['wall'] for r in runs] for label, runs in groups.items()}
  total = sum(w for ws in walls.values() for w in ws if np.isfinite(w))
  n_runs = sum(len(r) for r in groups.values())
  text = (f'command: `{command}`\ncommit: {commit}\nruns: {n_runs}, {steps} steps each; '
          f'sum of run wall times {total / 3600:.2f} h (`--jobs` run at once)\n\n'
          '## Final evaluation (mean ± standard error over seeds)\n\n'
          f'{main_table(groups)}\n\n'
          '## Changes from each run\'s own base (mean ± standard error over seeds)\n\n'
          f'{claims_table(groups)}\n\n'
          '## Paired comparisons for claim (b) (per-seed differences, mean ± standard error)\n\n'
          f'{paired_table(groups)}\n\n'
          '## Final evaluation with the std over seeds\n\n'
          f'{main_table(groups, std=True)}\n\n'
          'seconds per run: ' + json.dumps({k: [round(w) if np.isfinite(w) else None for w in v]
                                              for k, v in walls.items()})
          + '\n')
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(text)
  return text
