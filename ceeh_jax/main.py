r"""Entry point. Kept thin: the logic lives in importable functions that tests call.

  python -m ceeh_jax.main                                   # the embedded default (tiny CEEH)
  python -m ceeh_jax.main --config=configs/r1_1p5b.py --workdir=runs/r1 \
      --config.model.hf_dir=/ckpt/DeepSeek-R1-Distill-Qwen-1.5B
  python -m ceeh_jax.main --config=configs/eval_math.py --workdir=runs/eval   # evaluation
  python -m ceeh_jax.main --mode=fingerprint --workdir=runs/r1   # hash of the latest state
"""
import importlib.util
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs', 'tiny.py')

config_flags.DEFINE_config_file('config', _DEFAULT_CONFIG, 'Experiment config file.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory (checkpoints, logs); resumes if it has one. '
                    'Default: runs/<config name>.')
flags.DEFINE_enum('mode', None, ['train', 'eval', 'fingerprint'],
                  'What to do; default: the config\'s `mode` field, else train.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO; keep the bar readable
    logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join(
      'runs', os.path.splitext(os.path.basename(flags.FLAGS['config'].config_filename))[0])
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


if __name__ == '__main__':
  app.run(main)
