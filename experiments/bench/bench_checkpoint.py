r"""What checkpoint checksums cost: save time with and without them, and checksum throughput.

  python experiments/bench/bench_checkpoint.py                 # default job's state + 64/256 MB
  python experiments/bench/bench_checkpoint.py --mb=1024 --reps=3
  python experiments/bench/bench_checkpoint.py --plan   # 1.5B state on 8 fake devices: compile
                                                        # the checksum, report its memory

States: the default job's TrainState (shipped base policy, full fine-tune: params + Adam
moments + difficulty state), and synthetic states of N MB of float32 (a third "params", two
thirds "Adam moments", in 8 MB leaves like a transformer's). Each save is synchronous
(`Checkpointer.save` + `wait`), alternating with / without checksums (`tree_checksums`
patched to return nothing), best and median of --reps. Results and the 1.5B estimate:
experiments/bench/checkpoint_checksums.md.
"""
import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
if '--plan' in sys.argv:  # before jax initialises: the memory plan's 8 devices
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ceeh_jax import checkpointing as ckpt_lib  # noqa: E402
from ceeh_jax import checksum as checksum_lib  # noqa: E402


def default_job_state():
  """The TrainState of `python -m ceeh_jax.main` (configs/tiny.py) at step 0."""
  from ceeh_jax import hf_io, steps as steps_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax.synthetic import paths  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'configs'))
  import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  _, params = hf_io.load_hf(paths.BASE_POLICY)
  return steps_lib.init_train_state(params, steps_lib.make_optimizer(config), 128, 0, False,
                                    config.method, {})


def synthetic_state(mb: int):
  leaf = 2 * 1024 * 1024  # 8 MB of float32
  n = max(3, mb * 1024 * 1024 // 4 // leaf)
  rng = np.random.default_rng(0)
  leaves = [jnp.asarray(rng.standard_normal(leaf, np.float32)) for _ in range(n)]
  third = n // 3
  return {'params': leaves[:third], 'mu': leaves[third:2 * third], 'nu': leaves[2 * third:]}


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def time_saves(state, reps: int) -> dict:
  root = tempfile.mkdtemp(prefix='bench_ckpt_')
  out = {'with': [], 'without': []}
  try:
    ckpt = ckpt_lib.Checkpointer(root, keep=2)
    ckpt.save(0, state, {})  # warm-up: orbax's first save and the checksum's compile
    ckpt.wait()
    step = 1
    for _ in range(reps):
      for kind in ('without', 'with'):
        patch = (mock.patch.object(checksum_lib, 'tree_checksums', lambda tree: {})
                 if kind == 'without' else contextlib.nullcontext())
        with patch:
          jax.block_until_ready(state)
          t0 = time.perf_counter()
          ckpt.save(step, state, {})
          ckpt.wait()
          out[kind].append(time.perf_counter() - t0)
        step += 1
    ckpt.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return out


def time_checksum(state, reps: int) -> tuple[float, float]:
  """(first call incl. compile, best warm call) seconds of tree_checksums."""
  t0 = time.perf_counter()
  checksum_lib.tree_checksums(state)
  first = time.perf_counter() - t0
  warm = []
  for _ in range(reps):
    t0 = time.perf_counter()
    checksum_lib.tree_checksums(state)
    warm.append(time.perf_counter() - t0)
  return first, min(warm)


def plan_1p5b(lora_rank: int) -> str:
  """The checksum program compiled for the r1_1p5b TrainState on 8 devices (nothing
  allocated): state bytes and checksum temp bytes per device."""
  import importlib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib, steps as steps_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax.models.config import QwenConfig  # pylint: disable=g-import-not-at-top
  config = importlib.import_module('configs.r1_1p5b').get_config()
  m = config.model
  model_cfg = QwenConfig.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype,
                                lora_rank=lora_rank, lora_alpha=m.lora_alpha)
  mesh = sharding_lib.make_mesh((1, 8, 1))
  rules = sharding_lib.DEFAULT_RULES
  opt = steps_lib.make_optimizer(config)
  abstract = jax.eval_shape(lambda p: steps_lib.init_train_state(
      p, opt, 40_000, 0, lora_rank > 0, config.method, {}), sharding_lib.abstract_params(model_cfg))
  shardings = steps_lib.state_shardings(
      abstract, sharding_lib.param_shardings(model_cfg, mesh, rules), mesh)
  abstract = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          abstract, shardings)
  leaves = jax.tree.leaves(abstract)
  t0 = time.perf_counter()
  # One program per leaf, as tree_checksums runs them: the peak is the largest leaf's temp.
  temps = {}
  for x in leaves:
    key = (x.shape, x.dtype, x.sharding)
    if key not in temps:
      compiled = checksum_lib._leaf_lanes.lower(x).compile()  # pylint: disable=protected-access
      temps[key] = compiled.memory_analysis().temp_size_in_bytes
  total = nbytes(abstract)
  return (f'| r1_1p5b, {"LoRA r" + str(lora_rank) if lora_rank else "full fine-tune"} | '
          f'{total / 2**30:.2f} GiB ({total / 8 / 2**30:.2f} per device) | {len(leaves)} '
          f'({len(temps)} programs) | {max(temps.values()) / 2**20:.1f} MiB | '
          f'{time.perf_counter() - t0:.1f} s |')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--mb', default='64,256', help='synthetic state sizes in MB')
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--plan', action='store_true', help='only the 1.5B compile-time plan')
  args = p.parse_args()
  if args.plan:
    print('| state | bytes | leaves | checksum temp per device (peak, XLA:CPU) | compile |')
    print('| --- | ---: | ---: | ---: | ---: |')
    for rank in (0, 32):
      print(plan_1p5b(rank), flush=True)
    return
  states = [('default job TrainState', default_job_state())]
  states += [(f'synthetic {mb} MB', synthetic_state(int(mb))) for mb in args.mb.split(',') if mb]
  print(f'jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs')
  print('| state | MB | save without (s) | save with (s) | overhead (median) | checksum first '
        'call (s) | checksum warm (s) | checksum GB/s |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name, state in states:
    size = nbytes(state)
    first, warm = time_checksum(state, args.reps)  # first: the compiles of a fresh process
    saves = time_saves(state, args.reps)
    wo, w = statistics.median(saves['without']), statistics.median(saves['with'])
    print(f'| {name} | {size / 2**20:.1f} | {min(saves["without"]):.3f} / {wo:.3f} | '
          f'{min(saves["with"]):.3f} / {w:.3f} | {100 * (w - wo) / wo:+.1f}% | {first:.3f} | '
          f'{warm:.4f} | {size / warm / 1e9:.2f} |', flush=True)


if __name__ == '__main__':
  main()
