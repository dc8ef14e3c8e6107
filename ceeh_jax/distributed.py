"""Multi-process (multi-host) start-up and the few collectives the host-side loop needs.

Every process runs the same program on the same host data (multi-controller JAX): the same
config, data order, seeds and grades, so the numpy batches they build are identical and each
process puts only its addressable shards on the mesh (`sharding.put_global`). Arrays that span
processes come back to the host with `sharding.to_host` (an all-gather).

Launch settings, flag first, then environment:
  coordinator address  --coordinator_address  CEEH_COORDINATOR     'host:port', or 'auto'
  number of processes  --num_processes        CEEH_NUM_PROCESSES
  this process's rank  --process_id           CEEH_PROCESS_ID
  local devices        --local_device_ids     CEEH_LOCAL_DEVICE_IDS  (GPU: '0,1,...'; optional)
'auto' hands everything unset to `jax.distributed.initialize()`'s cluster detection (Cloud TPU
pods, SLURM, Open MPI, ...). Nothing set, or one process: a no-op.
"""
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def _int_or_none(value, name):
  if value is None or value == '':
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name} must be an integer, got {value!r}') from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int] | str | None = None) -> bool:
  """Starts `jax.distributed` from the arguments, else CEEH_* env; True if it did.

  Must run before anything touches devices (jax raises otherwise). Inconsistent settings
  (a process id out of range, several processes without a coordinator) raise ValueError.
  """
  env = os.environ.get
  coordinator_address = coordinator_address or env('CEEH_COORDINATOR') or None
  num_processes = _int_or_none(num_processes if num_processes is not None
                               else env('CEEH_NUM_PROCESSES'), 'num_processes')
  process_id = _int_or_none(process_id if process_id is not None else env('CEEH_PROCESS_ID'),
                            'process_id')
  if local_device_ids is None:
    local_device_ids = env('CEEH_LOCAL_DEVICE_IDS') or None
  if isinstance(local_device_ids, str):
    local_device_ids = [int(i) for i in local_device_ids.split(',')]

  if num_processes is not None and num_processes < 1:
    raise ValueError(f'num_processes must be >= 1, got {num_processes}')
  if process_id is not None and process_id < 0:
    raise ValueError(f'process_id must be >= 0, got {process_id}')
  if None not in (num_processes, process_id) and process_id >= num_processes:
    raise ValueError(f'process_id={process_id} is out of range for num_processes='
                     f'{num_processes} (ids are 0 .. {num_processes - 1})')
  if jax.distributed.is_initialized():
    return True
  if coordinator_address is None:
    if (num_processes or 1) > 1 or process_id:
      raise ValueError(f'num_processes={num_processes}, process_id={process_id} need a '
                       'coordinator: set --coordinator_address=host:port (or CEEH_COORDINATOR), '
                       "or 'auto' on a TPU pod / SLURM / MPI cluster")
    return False  # single process
  if coordinator_address == 'auto':
    jax.distributed.initialize(num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
    return True
  if not coordinator_address.rpartition(':')[2].isdigit():
    raise ValueError(f"coordinator_address must be 'host:port' or 'auto', got "
                     f'{coordinator_address!r}')
  if num_processes is None or process_id is None:
    raise ValueError(f'coordinator_address={coordinator_address!r} also needs num_processes '
                     f'and process_id (got {num_processes}, {process_id})')
  if num_processes == 1:
    return False
  # CPU collectives across processes: gloo, jax's default (jax_cpu_collectives_implementation).
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             local_device_ids=local_device_ids)
  return True


def is_main() -> bool:
  """Process 0: the one that writes logs, metrics and reports (orbax saves need every process)."""
  return jax.process_index() == 0


def agree(tree):
  """Process 0's value of a host pytree on every process (e.g. grades, which a timeout can make
  differ between hosts, and which must not: every process must feed the same batch)."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def barrier(name: str) -> None:
  """Waits until every process reaches `name` (no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
