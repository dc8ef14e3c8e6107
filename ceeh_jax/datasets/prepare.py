r"""Prepares the project's TFDS datasets (`ceeh_math/<config>`) as array_record, offline.

  python -m ceeh_jax.datasets.prepare                          # all, into the default data dir
  python -m ceeh_jax.datasets.prepare --data_dir=/data/tfds --configs=math500,deepscaler2k
  python -m ceeh_jax.datasets.prepare --overwrite              # rebuild (after a data/ change)

The default data dir is $TFDS_DATA_DIR, else ~/tensorflow_datasets, where `tfds:` sources are
read from unless `data.tfds_data_dir` says otherwise. Each config takes about a second; a
prepared config is left as it is unless --overwrite. Training with
`--config.data.train=tfds:ceeh_math/deepscaler2k` prepares a missing config by itself; this
command does it ahead of time (say, once per machine, before a multi-host run).
"""
import sys
import time

from absl import app
from absl import flags
from absl import logging

from ceeh_jax import errors

_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: $TFDS_DATA_DIR, '
                                'else ~/tensorflow_datasets).')
_CONFIGS = flags.DEFINE_list('configs', None, 'Configs of ceeh_math to prepare (default: all).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Rebuild configs that are already prepared.')


def prepare(data_dir: str | None = None, configs=None, overwrite: bool = False) -> list[str]:
  """Builds the named configs (all by default) into data_dir; returns their folders."""
  from ceeh_jax.datasets import ceeh_math  # pylint: disable=g-import-not-at-top
  from ceeh_jax.datasets import tfds_source  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or tfds_source.default_data_dir()
  known = [c.name for c in ceeh_math.CeehMath.BUILDER_CONFIGS]
  names = list(configs or known)
  unknown = [n for n in names if n not in known]
  if unknown:  # before anything is built
    raise tfds_source.data_lib.DataError(
        f'no such config of {tfds_source.PROJECT}: {", ".join(unknown)} (configs: '
        f'{", ".join(known)})')
  out = []
  for i, name in enumerate(names, 1):
    t0 = time.time()
    builder = tfds_source.prepare_project(name, data_dir, overwrite=overwrite)
    rows = sum(s.num_examples for s in builder.info.splits.values())
    splits = ', '.join(builder.info.splits.keys())
    print(f'[{i}/{len(names)}] tfds:{tfds_source.PROJECT}/{name}: {rows} rows ({splits}) in '
          f'{builder.data_dir} ({time.time() - t0:.1f}s)', flush=True)
    out.append(str(builder.data_dir))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # TFDS logs every step at INFO; its bars suffice
    logging.set_verbosity(logging.WARNING)
  try:
    prepare(_DATA_DIR.value, _CONFIGS.value, _OVERWRITE.value)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
