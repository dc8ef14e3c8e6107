"""Multi-host: 2 CPU processes (jax.distributed, gloo collectives) train to the same state as 1.

Both runs have the same global mesh, data=2: one process with 2 fake CPU devices, or two
processes (localhost coordinator) with one each, so the batch rows, the sampler's and the train
step's shards and the checkpoint are split across processes in the second. Two steps of the
tiny config (shrunk: 2 prompts x 4 samples, 128 new tokens, no eval); the second step has
non-zero advantages, so the update is real. The checkpointed states must be bitwise equal: the
per-device programs are the same and an all-reduce over 2 operands is exact either way.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, XLA_CACHE
from ceeh_jax import distributed as dist_lib
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import metric_writers

TIMEOUT_S = 240
OVERRIDES = dict(total_steps=2, batch_size=2, minibatch_size=8, micro_batch_size=8,
                 checkpoint_every=2, tensorboard=False, progress=False, **{
                     'sampling.num_samples': 4, 'sampling.max_new_tokens': 128,
                     'data.eval_size': 0, 'grading.num_workers': 0, 'mesh.shape': '(2,1,1)'})


def _launch(log, workdir, devices: int, *flags) -> subprocess.Popen:
  """`python -m ceeh_jax.main` on the shrunk tiny config, stdout and stderr to `log`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('CEEH_')}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             PYTHONPATH=str(REPO), JAX_COMPILATION_CACHE_DIR=XLA_CACHE)
  cmd = [sys.executable, '-m', 'ceeh_jax.main', f'--workdir={workdir}', *flags]
  cmd += [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
  with open(log, 'w') as out:
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own group: killpg reaches its children
  proc.log = log
  return proc


def _wait_all(procs: dict) -> None:
  """Waits for all; on a failure or the timeout kills the rest (and their children) and fails
  with the output of each process that did not succeed."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while time.monotonic() < deadline:
      codes = [p.poll() for p in procs.values()]
      if None not in codes or any(codes):  # all done, or one failed (its peers would hang)
        break
      time.sleep(0.2)
  finally:
    for p in procs.values():
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  report = []
  for name, p in procs.items():
    if p.returncode != 0:
      why = ('killed: timeout or a failed peer' if p.returncode == -signal.SIGKILL
             else f'exit status {p.returncode}')
      with open(p.log) as f:
        report.append(f'--- {name} ({why}), output tail:\n{f.read()[-4000:]}')
  if report:
    pytest.fail('\n'.join(report), pytrace=False)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  coordinator = f'--coordinator_address=localhost:{_free_port()}'
  procs = {'single process': _launch(tmp_path / 'one.log', one, 2)}
  for i in (0, 1):
    procs[f'process {i} of 2'] = _launch(tmp_path / f'two.{i}.log', two, 1, coordinator,
                                         '--num_processes=2', f'--process_id={i}')
  _wait_all(procs)

  a, b = fingerprint_lib.fingerprint(str(one)), fingerprint_lib.fingerprint(str(two))
  assert a['step'] == b['step'] == 2
  assert a['parts'] == b['parts'], '2-process state differs from the 1-process state'
  # Only process 0 logs: one line per step, the same numbers as the single process.
  strip = lambda recs: [{k: v for k, v in r.items() if not k.startswith(('time/', 'tokens_per'))}
                        for r in recs]
  logged = metric_writers.read_metrics(str(two))
  assert strip(logged) == strip(metric_writers.read_metrics(str(one)))
  assert [r['step'] for r in logged] == [1, 2]
  assert logged[-1]['grad_norm'] > 0.01, 'the compared update must be non-trivial'


@pytest.fixture
def no_env(monkeypatch):
  for k in ('CEEH_COORDINATOR', 'CEEH_NUM_PROCESSES', 'CEEH_PROCESS_ID', 'CEEH_LOCAL_DEVICE_IDS'):
    monkeypatch.delenv(k, raising=False)
  return monkeypatch


def test_initialize_single_process_is_noop(no_env):
  assert dist_lib.initialize() is False
  assert dist_lib.initialize(num_processes=1, process_id=0) is False
  assert dist_lib.initialize('localhost:1234', num_processes=1, process_id=0) is False


@pytest.mark.parametrize('kwargs, env, match', [
    (dict(coordinator_address='localhost:1', num_processes=2, process_id=2), {}, 'out of range'),
    ({}, dict(CEEH_NUM_PROCESSES='2', CEEH_PROCESS_ID='1'), 'need a coordinator'),
    (dict(coordinator_address='localhost:1'), {}, 'also needs num_processes'),
    (dict(coordinator_address='localhost', num_processes=2, process_id=0), {}, 'host:port'),
    ({}, dict(CEEH_COORDINATOR='h:1', CEEH_NUM_PROCESSES='two', CEEH_PROCESS_ID='0'), 'integer'),
    (dict(num_processes=0), {}, '>= 1'),
])
def test_initialize_rejects_inconsistent_settings(no_env, kwargs, env, match):
  for k, v in env.items():
    no_env.setenv(k, v)
  with pytest.raises(ValueError, match=match):
    dist_lib.initialize(**kwargs)


def test_put_global_matches_device_put():
  import jax
  from ceeh_jax import sharding as sharding_lib
  mesh = sharding_lib.make_mesh((4, 2, 1))
  x = np.arange(48, dtype=np.int32).reshape(8, 6)
  shard = sharding_lib.batch_sharding(mesh, 8, 2)
  y = sharding_lib.put_global(x, shard)
  assert y.sharding == shard and len(y.addressable_shards) == 8
  np.testing.assert_array_equal(sharding_lib.to_host(y), x)
  np.testing.assert_array_equal(sharding_lib.to_host({'a': jax.device_put(x, shard)})['a'], x)
