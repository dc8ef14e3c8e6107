r"""Entry point. Kept thin: the logic lives in importable functions that tests call.

  python -m ceeh_jax.main                                   # the embedded default (tiny CEEH)
  python -m ceeh_jax.main --config=configs/r1_1p5b.py --workdir=runs/r1 \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval   # evaluation
  python -m ceeh_jax.main --mode=fingerprint --workdir=runs/r1   # hash of the latest state

`ceeh-jax ...` (the installed console script) is the same command. `--config` is a file or a
packaged config by name (`r1_1p5b`, `baselines/grpo`: ceeh_jax/shipped.py). A user error (bad
or misspelled config key, missing file) prints one line `error: ...` and exits 2.

Multi-host (the same command on every process; the workdir on a shared filesystem):
  ... --coordinator_address=auto                        # TPU pod slice, SLURM, Open MPI
  ... --coordinator_address=10.0.0.1:1234 --num_processes=4 --process_id=$RANK   # elsewhere
The flags fall back to CEEH_COORDINATOR / CEEH_NUM_PROCESSES / CEEH_PROCESS_ID /
CEEH_LOCAL_DEVICE_IDS; with none set the run is single-process (see ceeh_jax/distributed.py).
"""
import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ceeh_jax import cli
from ceeh_jax import distributed
from ceeh_jax import errors
from ceeh_jax import shipped

_DEFAULT_CONFIG = 'tiny'  # configs/tiny.py, found in a checkout or the installed package
_FLAG_NAMES = ('config', 'workdir', 'mode', 'coordinator_address', 'num_processes', 'process_id',
               'local_device_ids')


def define_flags(argv):
  """Defines the flags; the config flag reads its overrides from `argv` (already checked).

  Calling it again (`run()` twice in one process: tests, notebooks) redefines them afresh.
  """
  for name in _FLAG_NAMES:
    if name in flags.FLAGS:
      delattr(flags.FLAGS, name)
  config_flags.DEFINE_config_file('config', shipped.config_file(_DEFAULT_CONFIG),
                                  'Experiment config: a file, or a packaged config by name '
                                  '(tiny, eval_tiny, r1_1p5b, baselines/grpo, ...).',
                                  lock_config=True, sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, logs); resumes if it has one. '
                      'Default: runs/<config name>.')
  flags.DEFINE_enum('mode', None, ['train', 'eval', 'fingerprint'],
                    'What to do; default: the config\'s `mode` field, else train.')
  flags.DEFINE_string('coordinator_address', None, "Multi-host: process 0's 'host:port', or "
                      "'auto' (cluster detection on TPU pods / SLURM / MPI). Env: CEEH_COORDINATOR.")
  flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes. '
                       'Env: CEEH_NUM_PROCESSES.')
  flags.DEFINE_integer('process_id', None, "Multi-host: this process's rank, 0 .. "
                       'num_processes - 1. Env: CEEH_PROCESS_ID.')
  flags.DEFINE_list('local_device_ids', None, 'Multi-host: the local devices this process uses '
                    '(e.g. one GPU each: 0). Env: CEEH_LOCAL_DEVICE_IDS.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  distributed.initialize(  # before anything touches devices
      f.coordinator_address, f.num_processes, f.process_id,
      None if f.local_device_ids is None else [int(i) for i in f.local_device_ids])
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO; keep the bar readable
    logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join(
      'runs', os.path.splitext(os.path.basename(
          flags.FLAGS['config'].config_filename.split(':', 1)[0]))[0])
  mode = flags.FLAGS.mode or config.get('mode', 'train')
  if mode == 'train':
    from ceeh_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, workdir)
  elif mode == 'eval':
    if importlib.util.find_spec('ceeh_jax.evaluate') is None:
      raise app.UsageError('the evaluation job (ceeh_jax/evaluate.py) is not in this version; '
                           'use the eval hook of a training run or notebooks/ for now')
    from ceeh_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.run(config, workdir)
  else:
    from ceeh_jax import fingerprint  # pylint: disable=g-import-not-at-top
    print(fingerprint.describe(workdir))


def _parse_flags(argv):
  """absl's parse, with a bad flag value as a UserError (one line) instead of exit status 1."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise errors.UserError(' '.join(str(e).split())) from e


def run(argv=None):
  """`app.run(main)`, with user errors (errors.UserError) as one line and exit status 2, run
  failures (errors.RunError) as one line and exit status 1.

  Before absl parses anything, the `--config` value is resolved (a path or a packaged name)
  and every `--config.*` override key is checked against the config. `--verbosity=1` (or
  CEEH_DEBUG=1) keeps the traceback for debugging. Entry point of `ceeh-jax` and of
  `python -m ceeh_jax.main`.
  """
  argv = list(sys.argv if argv is None else argv)
  try:
    argv = cli.prepare_argv(argv, _DEFAULT_CONFIG)
    define_flags(argv)
    app.run(main, argv=argv, flags_parser=_parse_flags)
  except (errors.UserError, errors.RunError) as e:  # RunError: the run failed, exit 1
    if cli.wants_traceback(argv, os.environ):
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2 if isinstance(e, errors.UserError) else 1)


if __name__ == '__main__':
  run()
