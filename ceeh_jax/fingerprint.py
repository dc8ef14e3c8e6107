"""A hash of the latest checkpoint's whole TrainState: how users and tests check two runs agree.

  python -m ceeh_jax.main --mode=fingerprint --workdir=runs/tiny
prints `step <N> sha256 <hex>` plus one hash per top-level field (params, opt_state, ...), so a
mismatch says where two runs diverged. It reads the newest checkpoint that loads and matches
the checksums saved with it; each newer one it skips is named in a warning (stderr).
"""
import hashlib
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from ceeh_jax import checkpointing as ckpt_lib


def _hash_tree(tree) -> str:
  """sha256 over (path, dtype, shape, bytes) of every array leaf, in sorted path order."""
  h = hashlib.sha256()

  def walk(prefix, node):
    if isinstance(node, dict):
      for k in sorted(node, key=str):
        walk(f'{prefix}/{k}', node[k])
    elif isinstance(node, (list, tuple)):
      for i, v in enumerate(node):
        walk(f'{prefix}/{i}', v)
    elif node is None:
      h.update(f'{prefix}:None'.encode())
    else:
      a = np.asarray(node)
      h.update(f'{prefix}:{a.dtype}:{a.shape}'.encode())
      h.update(np.ascontiguousarray(a).tobytes())

  walk('', tree)
  return h.hexdigest()


def load_latest_state(workdir: str, skipped: dict | None = None):
  """(step, state as nested dicts of numpy arrays) of the newest readable, intact checkpoint.

  Each newer step passed over is added to `skipped` ({step: reason}) when given.
  """
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'no checkpoints in {directory}')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  steps = sorted(manager.all_steps(), reverse=True)
  errors = []
  for step in steps:
    try:
      # Saved on another topology (e.g. 2 hosts), the arrays come back whole on one device.
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(
          fallback_sharding=jax.sharding.SingleDeviceSharding(_host_device()))))
      state = restored['state']
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
      ckpt_lib.verify_checksums(dict(meta), state, os.path.join(directory, str(step)))
      return step, _to_numpy(state)
    except Exception as e:  # noqa: BLE001 - fall back to the previous checkpoint
      errors.append(f'step {step}: {type(e).__name__}')
      if skipped is not None:
        skipped[int(step)] = f'{type(e).__name__}: {" ".join(str(e).split())[:200]}'
  raise FileNotFoundError(f'no readable checkpoint in {directory} ({"; ".join(errors) or "empty"})')


def _host_device():
  """A CPU device where there is one (the state goes to numpy anyway), else the first device."""
  try:
    return jax.local_devices(backend='cpu')[0]
  except RuntimeError:
    return jax.local_devices()[0]


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(_to_numpy(v) for v in tree)
  if hasattr(tree, '__dataclass_fields__'):
    return {k: _to_numpy(getattr(tree, k)) for k in tree.__dataclass_fields__}
  return None if tree is None else np.asarray(tree)


def fingerprint(workdir: str) -> dict:
  """{'step', 'sha256', 'parts': {field: sha256}, 'skipped': {step: reason}} of the newest
  intact checkpoint in `workdir` (`skipped`: the newer ones it could not use)."""
  skipped = {}
  step, state = load_latest_state(workdir, skipped)
  parts = {k: _hash_tree(v) for k, v in sorted(state.items())} if isinstance(state, dict) else {}
  return {'step': int(step), 'sha256': _hash_tree(state), 'parts': parts, 'skipped': skipped}


def describe(workdir: str) -> str:
  """The fingerprint as text; a warning on stderr for each newer step that was skipped."""
  fp = fingerprint(workdir)
  for s, reason in sorted(fp['skipped'].items(), reverse=True):
    print(f'WARNING: skipped checkpoint step {s} of {workdir} ({reason}); the fingerprint is '
          f"of step {fp['step']}", file=sys.stderr, flush=True)
  lines = [f"step {fp['step']} sha256 {fp['sha256']}"]
  lines += [f'  {k:12s} {v}' for k, v in fp['parts'].items()]
  return '\n'.join(lines)
