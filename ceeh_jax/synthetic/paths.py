"""Where the synthetic task's shipped base policy and generated data live."""

import os

from ceeh_jax import errors

BASE_POLICY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'base_policy')


def resolve_model_dir(path: str) -> str:
  """'synthetic:base_policy' -> the shipped base policy directory; other paths unchanged."""
  if path == 'synthetic:base_policy':
    if not os.path.exists(os.path.join(BASE_POLICY, 'config.json')):
      raise errors.MissingFileError(f'the synthetic base policy is missing at {BASE_POLICY}; '
                                    'build it with: python -m ceeh_jax.synthetic.sft')
    return BASE_POLICY
  return path


def resolve_data(source: str, workdir: str, seed: int = 0) -> str:
  """'synthetic:<split>:<n>' -> a generated JSONL under <workdir>/data (deterministic)."""
  if not source.startswith('synthetic:'):
    return source
  from ceeh_jax.synthetic import task  # pylint: disable=g-import-not-at-top
  _, split, n = source.split(':')
  path = os.path.join(workdir, 'data', f'synthetic_{split}_{n}_seed{seed}.jsonl')
  if not os.path.exists(path):
    split_seed = {'train': 0, 'eval': 1, 'test': 2}.get(split, 3)
    rows = task.make_dataset(int(n), seed=1_000_003 * split_seed + seed)
    for r in rows:
      r['id'] = f'{split}-{r["id"]}'
    tmp = f'{path}.tmp{os.getpid()}'  # processes of a multi-host run may all generate it
    task.write_jsonl(rows, tmp)
    os.replace(tmp, path)
  return path
