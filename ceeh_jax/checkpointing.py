"""Orbax checkpoints of the whole TrainState plus the data position, with safe fallback.

Multi-host: every process calls save/restore (orbax writes each process's shards and lets
process 0 write the metadata); `<workdir>` must be one directory all processes see.

Layout under `<workdir>/checkpoints/<step>/`: `state` (the saved pytree) and `meta` (JSON:
data-iterator state, training-set fingerprint, config, and `state_checksums`, a content
checksum per array of the saved state; see checksum.py). Restore walks back from the newest
step to the first one that loads and whose arrays match their checksums, warning about each
broken one and setting it aside, so a checkpoint truncated by a kill or corrupted in place
costs one interval, never the run.
"""
import json
import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from ceeh_jax import checksum as checksum_lib
from ceeh_jax import distributed as dist_lib
from ceeh_jax import errors

log = logging.getLogger(__name__)


class DataMismatchError(errors.UserError, RuntimeError):
  """The checkpoint was written for a different (or reordered) training set."""


CHECKSUMS_KEY = 'state_checksums'


class ChecksumMismatch(RuntimeError):
  """A checkpoint's arrays differ from the checksums recorded when it was saved."""


def verify_checksums(meta: dict, state, where: str) -> None:
  """Raises ChecksumMismatch when `state` differs from the checksums saved in `meta`.

  A checkpoint saved before checksums existed (no CHECKSUMS_KEY), or by another checksum
  algorithm, is accepted unverified. A collective on a multi-host state (every process
  computes the same verdict).
  """
  saved = meta.get(CHECKSUMS_KEY)
  if not saved or saved.get('algorithm') != checksum_lib.ALGORITHM:
    return
  bad = checksum_lib.mismatches(saved.get('leaves', {}), checksum_lib.tree_checksums(state))
  if bad:
    raise ChecksumMismatch(f'{len(bad)} array(s) in {where} differ from the checksums saved '
                           f'with them (first: {bad[0]}); the files changed after the save')


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` (keep the last N, atomic saves)."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'meta'))

  def save(self, step: int, state, meta: dict[str, Any], force: bool = True) -> None:
    """Saves `state` (any pytree of arrays) with `meta` plus the checksums of its arrays."""
    meta = dict(meta, **{CHECKSUMS_KEY: {'algorithm': checksum_lib.ALGORITHM,
                                         'leaves': checksum_lib.tree_checksums(state)}})
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def steps(self) -> list[int]:
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, step: int | None = None, check_meta=None):
    """(step, state, meta) of the newest loadable checkpoint, or None when there is none.

    `abstract_state` is a pytree of ShapeDtypeStructs (with shardings) shaped like the state.
    `check_meta(meta)` runs on a checkpoint's metadata before its state is read, and may raise
    (e.g. DataMismatchError) to refuse it. A checkpoint that fails to load (truncated or
    deleted files) or whose arrays differ from their saved checksums (bytes changed in place)
    is skipped with a warning, set aside in checkpoints_corrupt/, and the previous one tried.
    """
    candidates = [step] if step is not None else list(reversed(self.steps()))
    broken = []
    for s in candidates:
      try:
        meta = dict(self.manager.restore(s, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))['meta'])
      except Exception as e:  # noqa: BLE001 - unreadable metadata: this step is unusable
        self._warn(s, e)
        broken.append(s)
        continue
      if check_meta is not None:
        check_meta(meta)
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        verify_checksums(meta, restored['state'], self.step_dir(s))
      except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
        self._warn(s, e)
        broken.append(s)
        continue
      self._set_aside(broken)
      return s, restored['state'], meta
    self._set_aside(broken)
    return None

  def _set_aside(self, steps):
    """Moves unreadable step directories to checkpoints_corrupt/ (kept, not deleted), so the
    resumed run can write those steps again. Multi-host: process 0 moves, the others wait."""
    if not steps:
      return
    if jax.process_index() == 0:
      dest = self.directory + '_corrupt'
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        src = os.path.join(self.directory, str(s))
        if os.path.exists(src):
          os.replace(src, os.path.join(dest, f'{s}-{int(time.time())}'))
    dist_lib.barrier('ceeh_checkpoint_set_aside')
    self.manager.reload()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _warn(self, step, e):
    what = 'is corrupted' if isinstance(e, ChecksumMismatch) else 'is unreadable'
    detail = ' '.join(str(e).split())[:300]  # one line
    log.warning('checkpoint step %d (%s) %s (%s: %s); trying an older one', step,
                self.step_dir(step), what, type(e).__name__, detail)
    print(f'WARNING: checkpoint step {step} ({self.step_dir(step)}) {what} '
          f'({type(e).__name__}: {detail}); moving it to {self.directory}_corrupt/ and '
          'falling back to an older one', flush=True)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def check_data_fingerprint(meta: dict, fingerprint: str, source: str) -> None:
  """Refuses to resume against a different or reordered training set (state is indexed by id)."""
  saved = meta.get('data_fingerprint')
  if saved is not None and saved != fingerprint:
    raise DataMismatchError(
        f'the checkpoint was written for a training set with fingerprint {saved[:16]}…, but '
        f'{source!r} has fingerprint {fingerprint[:16]}…; the difficulty state is indexed by '
        'question id, so resuming would attach it to the wrong questions. Use the original '
        'data file (same rows, same order) or start a new workdir.')


def dump_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True, default=str)
  os.replace(tmp, path)
