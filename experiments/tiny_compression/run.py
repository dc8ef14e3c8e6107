r"""The tiny reproduction: does CEEH compress the easy and explore the hard, at CPU scale?

  python experiments/tiny_compression/run.py                  # the whole grid (hours)
  python experiments/tiny_compression/run.py --only=grpo_s0,ceeh_me_s0 --steps=20   # a few
  python experiments/tiny_compression/run.py --report         # tables and plots from what ran

Every run is `configs/tiny.py` (the default job's model, task and sampling) with the
experiment's budget (`experiment_config`): 300 RL steps of 16 prompts x 8 samples at one
learning rate for every method (3e-5, 10 warm-up steps), on 512 training questions (each seen
~9 times, so CEEH's and HAPO's per-question history fills), evaluated every 50 steps and at the
end on 512 held-out questions x 4 samples. The grid (`GRID`): base (the shared starting
policy, evaluated in every run), GRPO, the Kimi length penalty, CEEH-ME and CEEH-EA at λ 1.0,
HAPO, EGRC and DLER, 3 seeds each; CEEH-ME at λ 0.1 (the paper's) and 0.3 and with a 10x
entropy coefficient, and the length penalty at weights 0.1 and 0.3, one seed each.

The runner keeps going where it stopped: a run with `final_eval.json` is reused, a run that was
interrupted resumes from its last checkpoint (the trainer's own resume), `--jobs` runs at a
time, each in its own process. At the end it writes `results.md` (command, commit, wall time,
every cell mean ± standard error over seeds and the std) and the plots (report.py).
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

SEEDS = (0, 1, 2)
MAIN_LAMBDA = 1.0


def _grid():
  """{run name: (method, seed, config overrides)}: 3 seeds per method, single-seed variants."""
  grid = {}
  for seed in SEEDS:  # seed-major: a partial grid has every method at the first seeds
    for method in ('grpo', 'length_penalty', 'ceeh_me', 'ceeh_ea', 'hapo', 'egrc', 'dler'):
      grid[f'{method}_s{seed}'] = (method, seed, {})
    if seed == SEEDS[0]:
      for lam in (0.1, 0.3):
        grid[f'ceeh_me_lam{lam}_s{seed}'] = ('ceeh_me', seed, {'ceeh.length_lambda': lam})
      grid[f'ceeh_me_ent0.01_s{seed}'] = ('ceeh_me', seed, {'ceeh.entropy_coef': 0.01})
  # Weaker length penalties (one seed), for claim (b) at matched compression: at weight 1 the
  # Kimi penalty shortens far more than CEEH does.
  for w in (0.1, 0.3):
    grid[f'length_penalty_w{w}_s0'] = ('length_penalty', 0, {'method_hparams': {'weight': w}})
  return grid


GRID = _grid()


def experiment_config(method: str, seed: int, overrides: dict, steps: int = 300):
  """configs/tiny.py with the experiment's budget, the method, seed and overrides."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.method, c.seed, c.total_steps = method, seed, steps
  # Optimizer: one learning rate for every method (the range 2e-5..3e-5), short warm-up.
  c.optim.lr = 3e-5
  c.optim.warmup_steps = 10
  # Data: 512 training questions (16 a step: each seen ~9 times in 300 steps); 512 held out.
  c.data.train = 'synthetic:train:512'
  c.data.eval = 'synthetic:eval:512'
  c.data.eval_size = 512
  c.sampling.eval_num_samples = 4     # pass@4, and 1,024 samples per split for ACC and LEN
  c.eval_every = max(1, steps // 6)   # curves: every 50 steps
  c.checkpoint_every = max(1, steps // 6)
  c.ceeh.length_lambda = MAIN_LAMBDA
  c.progress = False
  c.tensorboard = False
  # Length limits that bind at this scale (answers are 30-90 tokens, not 4-20k): EGRC's clip
  # and DLER's truncation sit between the easy (~44) and hard (~89) base lengths, at 96.
  if method == 'egrc':  # compression for the first half, then exploration (the paper's order)
    c.method_hparams = {'stage_steps': steps // 2, 'length_clip': 96, 'explore_temperature': 1.2}
  if method == 'dler':
    c.method_hparams = {'max_len': 96}
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def run_one(name: str, steps: int, out: str) -> None:
  """Trains (or resumes) one run in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.path.join(out, '.xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  from ceeh_jax import train  # pylint: disable=g-import-not-at-top
  method, seed, overrides = GRID[name]
  train.train_and_evaluate(experiment_config(method, seed, overrides, steps),
                           os.path.join(out, name))


def launch(name: str, args) -> float:
  """One run in a fresh subprocess; 0.0 if it had finished before. Returns its wall time."""
  workdir = os.path.join(args.out, name)
  if os.path.exists(os.path.join(workdir, 'final_eval.json')):
    return 0.0
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, os.path.abspath(__file__), f'--one={name}', f'--steps={args.steps}',
         f'--out={args.out}']
  t0 = time.time()
  with open(os.path.join(workdir, 'log.txt'), 'a') as log:
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
  wall = time.time() - t0
  with open(os.path.join(workdir, 'wall_time.json'), 'w') as f:
    json.dump({'seconds': wall}, f)
  return wall


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--only', default='', help='comma-separated run names (default: all of GRID)')
  ap.add_argument('--steps', type=int, default=300)
  ap.add_argument('--jobs', type=int, default=2, help='runs at a time')
  ap.add_argument('--out', default=os.path.join(HERE, 'runs'))
  ap.add_argument('--report', action='store_true', help='only write results.md and the plots')
  ap.add_argument('--one', default=None, help=argparse.SUPPRESS)  # a worker: one run
  args = ap.parse_args()
  if args.one:
    run_one(args.one, args.steps, args.out)
    return
  names = [n for n in args.only.split(',') if n] or list(GRID)
  unknown = sorted(set(names) - set(GRID))
  if unknown:
    sys.exit(f'error: unknown runs {unknown}; known: {sorted(GRID)}')
  t0 = time.time()
  if not args.report:
    done = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
      futures = {pool.submit(launch, n, args): n for n in names}
      for fut in concurrent.futures.as_completed(futures):
        done += 1
        wall = fut.result()
        print(f'[{time.time() - t0:6.0f}s] {futures[fut]} '
              f'{"reused" if not wall else f"done in {wall:.0f}s"} ({done}/{len(names)})',
              flush=True)
  import report  # pylint: disable=g-import-not-at-top
  command = 'python experiments/tiny_compression/run.py ' + ' '.join(sys.argv[1:])
  print(report.write(args.out, names, HERE, command=command.strip(), steps=args.steps))


if __name__ == '__main__':
  main()
