"""Multi-host: 2 CPU processes (jax.distributed, gloo collectives) train to the same state as 1,
and evaluate (the eval job, `api.generate`) to the same outputs.

Both runs have the same global mesh, data=2: one process with 2 fake CPU devices, or two
processes (localhost coordinator) with one each, so the batch rows, the sampler's and the train
step's shards and the checkpoint are split across processes in the second. Two steps of the
tiny config (shrunk: 2 prompts x 4 samples, 128 new tokens, no eval); the second step has
non-zero advantages, so the update is real. The checkpointed states must be bitwise equal: the
per-device programs are the same and an all-reduce over 2 operands is exact either way.
The evaluation runs compare the same way (their rollouts are the same per-device programs).
"""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import distributed as dist_lib
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import hf_io
from ceeh_jax import metric_writers
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.synthetic import paths as synthetic
from ceeh_jax.synthetic import task

TIMEOUT_S = 240
OVERRIDES = dict(total_steps=2, batch_size=2, minibatch_size=8, micro_batch_size=8,
                 checkpoint_every=2, tensorboard=False, progress=False, **{
                     'sampling.num_samples': 4, 'sampling.max_new_tokens': 128,
                     'data.eval_size': 0, 'grading.num_workers': 0, 'mesh.shape': '(2,1,1)'})


def _launch(log, workdir, devices: int, *flags, overrides=OVERRIDES) -> subprocess.Popen:
  """`python -m ceeh_jax.main` on the shrunk tiny config (or `overrides` of a `--config`
  among `flags`), stdout and stderr to `log`."""
  cmd = [sys.executable, '-m', 'ceeh_jax.main', f'--workdir={workdir}', *flags]
  cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
  return _spawn(log, devices, cmd)


def _spawn(log, devices: int, cmd) -> subprocess.Popen:
  """`cmd` on `devices` fake CPU devices, stdout and stderr to `log`."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('CEEH_')}
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             PYTHONPATH=str(test_util.REPO), JAX_COMPILATION_CACHE_DIR=test_util.XLA_CACHE)
  with open(log, 'w') as out:
    proc = subprocess.Popen(cmd, cwd=test_util.REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True)  # own group: killpg reaches its children
  proc.log = log
  return proc


def _wait_all(test, procs: dict) -> None:
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
    test.fail('\n'.join(report))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


# The eval job (configs/eval_tiny.py: the shipped base policy, here read from a training
# checkpoint with a difficulty state) on 6 synthetic problems x 2 samples in batches of 4
# prompts: two sampler calls (the second padded), 8 rows each, split over the 2 processes.
EVAL_OVERRIDES = {'eval.num_samples': 2, 'eval.max_new_tokens': 64, 'eval.batch_size': 4,
                  'grading.num_workers': 0, 'progress': False, 'mesh.shape': '(2,1,1)'}

# api.load + api.generate + api.logits on a (2, 1, 1) mesh, and without a mesh (each process
# on its own device); argv: output JSON, then for 2 processes the coordinator address, the
# number of processes and this process's id.
API_SCRIPT = """
import json, sys
import numpy as np
from ceeh_jax import distributed
distributed.initialize(*sys.argv[2:])
import ceeh_jax.api as cj
from ceeh_jax import sharding
from ceeh_jax.synthetic import paths
out = {}
for name, mesh in (('mesh', sharding.make_mesh((2, 1, 1))), ('no_mesh', None)):
  model = cj.load(paths.BASE_POLICY, mesh=mesh)
  out[name] = vars(cj.generate(model, ['a=8 b=a-5 find b', 'a=3 b=a+a c=b-1 find c'],
                               num_samples=2, max_new_tokens=48, temperature=1.0, seed=3,
                               instruction=''))
  tokens = [[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6], [0, 9, 9, 3, 2, 1], [4, 4, 4, 4, 4, 4]]
  out[name]['logits'] = np.asarray(cj.logits(model, tokens, np.asarray(tokens) != 0))
with open(sys.argv[1], 'w') as f:  # numpy scalars and arrays as numbers and lists
  json.dump(out, f, default=lambda a: a.tolist())
"""


# Slow tier: each test starts three Python processes that compile a trainer or an eval job
# apiece (about a minute each on 2 cores, the longest of the default suite, and the most
# costly from a cold XLA cache).
@test_util.slow
class MultiProcessTest(absltest.TestCase):

  def test_two_processes_train_like_one(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    one, two = tmp_path / 'one', tmp_path / 'two'
    coordinator = f'--coordinator_address=localhost:{_free_port()}'
    procs = {'single process': _launch(tmp_path / 'one.log', one, 2)}
    for i in (0, 1):
      procs[f'process {i} of 2'] = _launch(tmp_path / f'two.{i}.log', two, 1, coordinator,
                                           '--num_processes=2', f'--process_id={i}')
    _wait_all(self, procs)

    a, b = fingerprint_lib.fingerprint(str(one)), fingerprint_lib.fingerprint(str(two))
    self.assertEqual(a['step'], b['step'])
    self.assertEqual(b['step'], 2)
    self.assertEqual(a['parts'], b['parts'], '2-process state differs from the 1-process state')
    # Only process 0 logs: one line per step, the same numbers as the single process.
    strip = lambda recs: [{k: v for k, v in r.items() if not k.startswith(('time/', 'tokens_per'))}
                          for r in recs]
    logged = metric_writers.read_metrics(str(two))
    self.assertEqual(strip(logged), strip(metric_writers.read_metrics(str(one))))
    self.assertEqual([r['step'] for r in logged], [1, 2])
    self.assertGreater(logged[-1]['grad_norm'], 0.01, 'the compared update must be non-trivial')

  def test_two_processes_evaluate_like_one(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    rows = task.make_dataset(6, seed=5)
    self.assertEqual({r['meta']['hard'] for r in rows}, {False, True})
    bench = task.write_jsonl(rows, str(tmp_path / 'bench.jsonl'))
    # A "training run" on these 6 problems: the base policy's params and a difficulty state
    # (acc_h <= 0.5, the mean, is hard).
    _, params = hf_io.load_hf(synthetic.BASE_POLICY)
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / 'train'))
    acc_h = np.array([0.9, 0.1, 0.8, 0.2, 0.0, 1.0], np.float32)
    ckpt.save(3, {'params': jax.device_get(params), 'difficulty': {'acc_h': acc_h},
                  'step': np.int32(3)}, {})
    ckpt.close()
    overrides = {**EVAL_OVERRIDES, 'eval.benchmarks': f"('{bench}',)", 'data.train': bench,
                 'eval.checkpoint_workdir': tmp_path / 'train'}
    config = f'--config={test_util.REPO / "configs" / "eval_tiny.py"}'
    # Process 1 gets a workdir of its own: it must leave it empty.
    one, two, two_p1 = tmp_path / 'one', tmp_path / 'two', tmp_path / 'two_p1'
    eval_port = _free_port()
    while (api_port := _free_port()) == eval_port:
      pass
    procs = {'eval, single process': _launch(tmp_path / 'one.log', one, 2, config,
                                             overrides=overrides)}
    for i, workdir in enumerate((two, two_p1)):
      procs[f'eval, process {i} of 2'] = _launch(
          tmp_path / f'two.{i}.log', workdir, 1, config, f'--coordinator_address=localhost:'
          f'{eval_port}', '--num_processes=2', f'--process_id={i}', overrides=overrides)
    api_cmd = lambda out, *dist: [sys.executable, '-c', API_SCRIPT, str(out), *dist]
    procs['api, single process'] = _spawn(tmp_path / 'api_one.log', 2,
                                          api_cmd(tmp_path / 'api_one.json'))
    for i in (0, 1):
      procs[f'api, process {i} of 2'] = _spawn(
          tmp_path / f'api_two.{i}.log', 1,
          api_cmd(tmp_path / f'api_two.{i}.json', f'localhost:{api_port}', '2', str(i)))
    _wait_all(self, procs)

    files = ['acc_vs_len.png', 'results.json', 'results.md', 'samples.jsonl']
    self.assertEqual(sorted(os.listdir(one)), sorted(os.listdir(two)))
    self.assertEqual(sorted(os.listdir(two)), files)
    self.assertEqual([f for _, _, fs in os.walk(two_p1) for f in fs], [], 'process 1 wrote files')
    load = lambda d: [json.loads(line) for line in open(d / 'samples.jsonl')]
    samples = load(two)
    self.assertEqual(samples, load(one), '2-process samples differ from the 1-process ones')
    self.assertLen(samples, 6 * 2)
    correct = [s['correct'] for s in samples]
    self.assertTrue(any(correct), 'the compared grades must be non-trivial')
    self.assertFalse(all(correct), 'the compared grades must be non-trivial')
    results = [json.loads((d / 'results.json').read_text()) for d in (one, two)]
    for r in results:
      del r['seconds']
    self.assertEqual(results[0], results[1])
    summary = results[1]['benchmarks']['bench']
    self.assertEqual(summary['samples_per_problem'], 2)
    self.assertEqual(summary['hard_source'], 'difficulty')
    self.assertEqual([s['hard'] for s in samples[::2]], [False, True, False, True, True, False])
    self.assertEqual((one / 'results.md').read_text(), (two / 'results.md').read_text())

    api = [json.loads((tmp_path / f).read_text())
           for f in ('api_one.json', 'api_two.0.json', 'api_two.1.json')]
    self.assertEqual(api[0], api[1], 'api.generate / logits differ between 1 and 2 processes')
    self.assertEqual(api[1], api[2], 'api.generate / logits differ between 1 and 2 processes')
    for out in api[0].values():
      self.assertLen(out['texts'], 2)
      for t in out['texts']:
        self.assertLen(t, 2)
      self.assertEqual(np.asarray(out['logits']).shape, (4, 6, 128))
    np.testing.assert_allclose(api[0]['mesh']['logits'], api[0]['no_mesh']['logits'], atol=1e-5)


def _ceeh_env(test, **env):
  """Only `env` among the CEEH_* distributed variables, for the rest of `test`."""
  test.enter_context(mock.patch.dict(os.environ))  # restored after the test
  for k in ('CEEH_COORDINATOR', 'CEEH_NUM_PROCESSES', 'CEEH_PROCESS_ID', 'CEEH_LOCAL_DEVICE_IDS'):
    os.environ.pop(k, None)
  os.environ.update(env)


class InitializeTest(parameterized.TestCase):

  def test_initialize_single_process_is_noop(self):
    _ceeh_env(self)
    self.assertIs(dist_lib.initialize(), False)
    self.assertIs(dist_lib.initialize(num_processes=1, process_id=0), False)
    self.assertIs(dist_lib.initialize('localhost:1234', num_processes=1, process_id=0), False)

  @parameterized.named_parameters(
      ('process_id_out_of_range',
       dict(coordinator_address='localhost:1', num_processes=2, process_id=2), {},
       'out of range'),
      ('no_coordinator', {}, dict(CEEH_NUM_PROCESSES='2', CEEH_PROCESS_ID='1'),
       'need a coordinator'),
      ('coordinator_alone', dict(coordinator_address='localhost:1'), {},
       'also needs num_processes'),
      ('address_without_port', dict(coordinator_address='localhost', num_processes=2,
                                    process_id=0), {}, 'host:port'),
      ('num_processes_not_an_integer', {},
       dict(CEEH_COORDINATOR='h:1', CEEH_NUM_PROCESSES='two', CEEH_PROCESS_ID='0'), 'integer'),
      ('no_processes', dict(num_processes=0), {}, '>= 1'),
  )
  def test_initialize_rejects_inconsistent_settings(self, kwargs, env, match):
    _ceeh_env(self, **env)
    with self.assertRaisesRegex(ValueError, match):
      dist_lib.initialize(**kwargs)


class PutGlobalTest(absltest.TestCase):

  def test_put_global_matches_device_put(self):
    mesh = sharding_lib.make_mesh((4, 2, 1))
    x = np.arange(48, dtype=np.int32).reshape(8, 6)
    shard = sharding_lib.batch_sharding(mesh, 8, 2)
    y = sharding_lib.put_global(x, shard)
    self.assertEqual(y.sharding, shard)
    self.assertLen(y.addressable_shards, 8)
    np.testing.assert_array_equal(sharding_lib.to_host(y), x)
    np.testing.assert_array_equal(sharding_lib.to_host({'a': jax.device_put(x, shard)})['a'], x)


if __name__ == '__main__':
  absltest.main()
