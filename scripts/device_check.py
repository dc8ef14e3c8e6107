r"""The recipe on one TPU or GPU, checked in under 8 minutes (run through device_check.sh).

  scripts/device_check.sh                   # on the device: writes runs/device_check/
  scripts/device_check.sh --dry_run         # tiny shapes on any backend (the CPU slow tier)
  scripts/device_check.sh --out=runs/dc     # elsewhere

Each part runs in its own process (its peak device memory is its own) under a time limit:
  env      backend, devices, jax version.
  tests    the tests that need the device, run on it: tests/test_attention.py (cuDNN on GPU,
           Pallas splash on TPU, each against the blocked kernel, gradients included) and
           tests/test_kl_reference.py::KlAtStepOneTest (KL exactly 0 at step 1 in this
           backend's numerics).
  sampler  decode of random bf16 weights of the Qwen2.5-0.5B and R1-Distill-1.5B shapes,
           4 prompts x 8 samples, 256 prompt + 128 new tokens (EOS off), against the roofline
           measured here (experiments/bench/roofline.py; ideal = max(FLOPs / bf16 matmul peak,
           bytes / bandwidth) per step, as bench_sampler.py). At 0.5B both layer layouts
           (scanned and unrolled): the measurement behind sampling.unroll_layers='auto'.
  train    one train step of configs/r1_1p5b.py (LoRA r32, bf16, its remat policy, KL on)
           on one device with random weights, scaled: one device's share of the recipe's
           8-device micro-batch (8 rows: 1 row a device), accumulated over 4 micro-batches
           (the recipe's minibatch of 96 is 12 of them a device), and 512 prompt + 1536
           response tokens (the recipe: 1024 + 20,480). Peak device memory
           (`memory_stats()['peak_bytes_in_use']`) next to the memory plan's prediction for the
           same program (experiments/memory_plan.py `plan`, compiled on this device), and MFU:
           model FLOPs (LoRA: the forward, the backward to the activations and the adapters,
           and the reference forward of the KL term; attention causal) / time / the bf16
           matmul peak measured here.
Writes <out>/device_check.json and <out>/device_check.md (also printed). Nothing assumes a
backend: on CPU the memory readings are absent (`memory_stats()` is None there).
"""
import argparse
import functools
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# The KL tests of the train step alone (the trainer tests there compile a sampler too).
DEVICE_TESTS = ('tests/test_attention.py', 'tests/test_kl_reference.py::KlAtStepOneTest')
LIMITS = {'env': 40, 'tests': 110, 'sampler': 160, 'train': 160}  # seconds; sum < 8 min
GIB = 2.0 ** 30
RECIPE_DEVICES = 8  # configs/r1_1p5b.py's micro-batch is spread over 8 devices
MICRO_STEPS = 4     # micro-batches accumulated in the scaled train step


def _parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--dry_run', action='store_true', help='tiny shapes, any backend')
  ap.add_argument('--out', default=os.path.join(REPO, 'runs', 'device_check'))
  ap.add_argument('--part', default=None, help='run one part in this process (internal)')
  ap.add_argument('--part_out', default=None)
  return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Parts (each in its own process).
# ---------------------------------------------------------------------------------------------

def part_env(args):
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return {'backend': jax.default_backend(), 'device_kind': d.device_kind,
          'devices': jax.device_count(), 'jax': jax.__version__, 'dry_run': args.dry_run}


def _peak_bytes():
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def part_sampler(args):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax.models.config import QwenConfig  # pylint: disable=g-import-not-at-top
  from experiments.bench import bench_sampler  # pylint: disable=g-import-not-at-top
  from experiments.bench import roofline  # pylint: disable=g-import-not-at-top
  dry = args.dry_run
  b, g, p_len, m = (2, 2, 16, 8) if dry else (4, 8, 256, 128)
  peak = roofline.measure(dtypes=('bfloat16',), matmul_n=256 if dry else 8192,
                          mib=8 if dry else 1024)
  sizes = ([('tiny', QwenConfig.tiny(), (True, False))] if dry else
           [('0.5B', QwenConfig.qwen25_0p5b(), (False, True)),
            ('1.5B', QwenConfig.r1_distill_1p5b(),
             (sampler_lib.resolve_unroll('auto'),))])
  mesh = sharding_lib.make_mesh((1, 1, 1))
  rows = []
  for name, cfg, layouts in sizes:
    cfg = cfg.replace(param_dtype='bfloat16', dtype='bfloat16')
    params = sharding_lib.init_params(cfg, jax.random.key(0), mesh)
    prompts = bench_sampler.make_prompts(b, p_len, cfg.vocab_size)
    ideal = bench_sampler.rollout_ideal(peak, cfg, b, g, p_len, m, 'bfloat16')['total']
    for unroll in layouts:
      view = sampler_lib.sampling_params(params, jnp.bfloat16, unroll)
      sc = sampler_lib.SampleConfig(max_new_tokens=m, temperature=0.6, top_p=0.95,
                                    num_samples=g, eos_ids=(), unroll_layers=unroll)
      run = lambda k: jax.block_until_ready(sampler_lib.generate(
          view, prompts, jax.random.key(k), model_cfg=cfg, cfg=sc).tokens)
      t0 = time.perf_counter()
      run(0)
      compile_s = time.perf_counter() - t0
      best = min(_timed(run, k) for k in (1, 2))
      rows.append({'size': name, 'params': cfg.num_params,
                   'layout': 'unrolled' if unroll else 'scanned', 'rows': b * g,
                   'prompt': p_len, 'new_tokens': m, 'seconds': best,
                   'first_call_s': compile_s, 'tok_s': b * g * m / best,
                   'roofline_tok_s': b * g * m / ideal, 'roofline_fraction': ideal / best})
      del view
    del params
  return {'roofline': {'bf16_matmul_flops': peak.matmul_flops['bfloat16'],
                       'bandwidth': peak.bandwidth}, 'runs': rows,
          'auto_unrolls': sampler_lib.resolve_unroll('auto'), 'peak_bytes': _peak_bytes(),
          'numpy': np.__version__}


def _timed(fn, *a):
  t0 = time.perf_counter()
  fn(*a)
  return time.perf_counter() - t0


def train_flops(cfg, r: int, p: int, m: int, *, lora: bool, kl: bool) -> dict:
  """Model FLOPs of one train step on r rows of p + m tokens (no recomputation counted).

  Per token, N = the non-embedding params: forward 2N; backward 2N to the activations, plus 2N
  to the weights of a full fine-tune (LoRA: only the rank-r adapters, counted in `adapters`);
  the KL reference adds one forward. The head runs on the m scored positions; attention is
  causal (half of T²) with the same forward/backward multiples.
  """
  t = p + m
  n = cfg.num_params - cfg.vocab_size * cfg.embed_dim * (1 if cfg.tie_embeddings else 2)
  passes = (2 + 2 + (0 if lora else 2)) + (2 if kl else 0)      # in units of N·tokens
  dense = passes * n * r * t
  head = passes * cfg.embed_dim * cfg.vocab_size * r * m
  attn_fwd = 4 * cfg.num_heads * cfg.head_dim * t * t / 2 * cfg.num_layers * r
  attn = attn_fwd * (3 + (1 if kl else 0))
  adapters = 0
  if lora:  # x·A·B per target, forward + both backward products, on every token
    d, f, h = cfg.embed_dim, cfg.mlp_dim, cfg.head_dim
    dims = {'q': (d, cfg.num_heads * h), 'k': (d, cfg.num_kv_heads * h),
            'v': (d, cfg.num_kv_heads * h), 'o': (cfg.num_heads * h, d), 'gate': (d, f),
            'up': (d, f), 'down': (f, d)}
    per_tok = sum(2 * cfg.lora_rank * (a + b) for k, (a, b) in dims.items()
                  if k in cfg.lora_targets) * cfg.num_layers
    adapters = 3 * per_tok * r * t
  total = dense + head + attn + adapters
  return {'dense': dense, 'lm_head': head, 'attention': attn, 'adapters': adapters,
          'total': total}


def scaled_recipe(dry: bool):
  """configs/r1_1p5b.py for one device: (config, prompt tokens)."""
  from configs import r1_1p5b  # pylint: disable=g-import-not-at-top
  c = r1_1p5b.get_config()
  p, m = (16, 16) if dry else (512, 1536)
  # One device's share of the recipe's micro-batch (spread over its 8 devices), 4 of them.
  c.micro_batch_size = max(1, c.micro_batch_size // RECIPE_DEVICES)
  c.minibatch_size = MICRO_STEPS * c.micro_batch_size
  c.batch_size, c.sampling.num_samples = 1, c.minibatch_size
  c.sampling.max_new_tokens = m
  c.mesh.shape = (1, 1, 1)
  if dry:
    c.model.preset, c.model.lora_rank = 'tiny', 4
  return c, p


def part_train(args):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ceeh_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from experiments.bench import bench_train_step  # pylint: disable=g-import-not-at-top
  from experiments.bench import roofline  # pylint: disable=g-import-not-at-top
  config, p = scaled_recipe(args.dry_run)
  m, r = config.sampling.max_new_tokens, config.minibatch_size
  model_cfg = policy_lib.model_config(config)
  lora, kl = model_cfg.lora_rank > 0, config.grpo.kl_coef > 0
  mesh, rules = sharding_lib.make_mesh((1, 1, 1)), sharding_lib.DEFAULT_RULES
  opt = steps_lib.make_optimizer(config)
  init_args = (1024, config.seed, lora, config.method, {})
  _, shardings = policy_lib.abstract_state(model_cfg, opt, mesh, rules, *init_args)
  params = policy_lib.load_base(config, model_cfg, mesh, rules)  # the preset's random weights
  ref = None
  if lora:
    params = policy_lib.with_base(policy_lib.init_adapters(model_cfg, jax.random.key(1), mesh,
                                                           rules), params)
  elif kl:
    ref = jax.tree.map(jnp.copy, params)
  state = policy_lib.fresh_state(params, opt, shardings, *init_args).replace(step=jnp.int32(1))
  del params
  batch = bench_train_step.make_batch(r, p, m, model_cfg.vocab_size)
  step = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
      steps_lib.train_step, config=config, model_cfg=model_cfg, optimizer=opt)),
                 out_shardings=(shardings, None), donate_argnums=(0,),
                 compiler_options=steps_lib.TRAIN_STEP_COMPILER_OPTIONS)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, jnp.float32(0.6), ref).compile()
  compile_s = time.perf_counter() - t0
  ma = compiled.memory_analysis()
  times, kls = [], []
  for _ in range(3):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, jnp.float32(0.6), ref)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
    kls.append(float(metrics['kl']) if 'kl' in metrics else None)
  peak_bytes = _peak_bytes()
  plan = _plan(config, p)
  flops = train_flops(model_cfg, r, p, m, lora=lora, kl=kl)
  peak = roofline.measure(dtypes=('bfloat16',), matmul_n=256 if args.dry_run else 8192,
                          mib=8 if args.dry_run else 1024)
  best = min(times)
  compiled_total = None if ma is None else (ma.argument_size_in_bytes + ma.output_size_in_bytes
                                            - ma.alias_size_in_bytes + ma.temp_size_in_bytes)
  return {'preset': config.model.preset, 'lora_rank':
          model_cfg.lora_rank, 'remat': model_cfg.remat_policy, 'dtype': model_cfg.dtype,
          'attention': model_cfg.attention, 'rows': r, 'prompt': p, 'response': m,
          'scaling': (f'rows: {MICRO_STEPS} micro-batches of {config.micro_batch_size} (the '
                      'recipe: 8 rows a micro-batch over 8 devices, 12 micro-batches a '
                      f'minibatch); tokens: {p} + {m} (recipe 1024 + 20,480)'),
          'compile_s': compile_s, 'seconds': best, 'times': times, 'flops': flops,
          'bf16_matmul_flops': peak.matmul_flops['bfloat16'],
          'mfu': flops['total'] / best / peak.matmul_flops['bfloat16'],
          'peak_bytes': peak_bytes, 'compiled_bytes': compiled_total, 'plan': plan,
          'kl_step1': kls[0], 'kl_later': kls[1:],
          'loss_finite': bool(jnp.isfinite(metrics['loss']))}


def _plan(config, prompt_len):
  """experiments/memory_plan.py's prediction for the same config on this device (bytes)."""
  try:
    from experiments import memory_plan  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    res = memory_plan.plan(config, jax.device_count(), what=('train',), prompt_len=prompt_len)
    return {'total_bytes': res['train']['total'], **{k: res['train'][k] for k in (
        'argument', 'output', 'temp', 'alias')}}
  except Exception as e:  # noqa: BLE001 - its API may move; the check reports instead of dying
    return {'error': f'{type(e).__name__}: {" ".join(str(e).split())[:300]}'}


PARTS = {'env': part_env, 'sampler': part_sampler, 'train': part_train}


# ---------------------------------------------------------------------------------------------
# The driver: one process per part, then the JSON and the table.
# ---------------------------------------------------------------------------------------------

def _child_env(dry_run: bool, one_device: bool = True) -> dict:
  """The parts' environment: the device's backend (the tests' own setup would pick the CPU),
  and for the measured parts one device (no fake host devices)."""
  env = dict(os.environ)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  if one_device:
    env['XLA_FLAGS'] = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                              env.get('XLA_FLAGS', '')).strip()
  env['JAX_PLATFORMS'] = 'cpu' if dry_run else env.get('JAX_PLATFORMS', '')
  return env


def run_part(name, args) -> dict:
  out = os.path.join(args.out, f'part_{name}.json')
  cmd = [sys.executable, os.path.abspath(__file__), f'--part={name}', f'--part_out={out}',
         f'--out={args.out}'] + (['--dry_run'] if args.dry_run else [])
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMITS[name],
                          env=_child_env(args.dry_run), cwd=REPO)
  except subprocess.TimeoutExpired:
    return {'status': f'timeout after {LIMITS[name]} s'}
  if proc.returncode or not os.path.exists(out):
    return {'status': f'failed (exit {proc.returncode})', 'stderr': proc.stderr[-3000:]}
  with open(out) as f:
    res = json.load(f)
  res.update(status='ok', wall_s=time.perf_counter() - t0)
  return res


def run_tests(args) -> dict:
  """The device tests on the device (--dry_run: only collected, as the CPU tier runs them)."""
  cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *DEVICE_TESTS]
  if args.dry_run:
    cmd.append('--collect-only')
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMITS['tests'],
                          env=_child_env(args.dry_run, one_device=False), cwd=REPO)
  except subprocess.TimeoutExpired:
    return {'status': f'timeout after {LIMITS["tests"]} s', 'files': DEVICE_TESTS}
  lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
  summary = lines[-1] if lines else ''
  counts = {k: int(v) for v, k in re.findall(r'(\d+) (passed|failed|skipped|error|errors|'
                                             r'tests? collected)', summary)}
  return {'status': 'ok' if proc.returncode == 0 else f'failed (exit {proc.returncode})',
          'files': DEVICE_TESTS, 'summary': summary, 'counts': counts,
          'collected_only': args.dry_run, 'wall_s': time.perf_counter() - t0,
          'output_tail': '' if proc.returncode == 0 else proc.stdout[-3000:]}


def _gib(x):
  return '—' if x is None else f'{x / GIB:.2f}'


def markdown(res: dict) -> str:
  env = res.get('env', {})
  out = [f"device check: {env.get('backend', '?')} ({env.get('device_kind', '?')}, "
         f"{env.get('devices', '?')} device(s)), jax {env.get('jax', '?')}"
         f"{', DRY RUN (tiny shapes)' if res.get('dry_run') else ''}", '',
         '| part | status | result |', '| --- | --- | --- |']
  t = res.get('tests', {})
  out.append(f"| tests ({', '.join(t.get('files', ()))}) | {t.get('status')} | "
             f"{t.get('summary', '')} |")
  s = res.get('sampler', {})
  for r in s.get('runs', []):
    out.append(f"| sampler {r['size']} bf16 {r['layout']}, {r['rows']} rows, {r['prompt']} + "
               f"{r['new_tokens']} tokens | {s['status']} | {r['tok_s']:.0f} tok/s = "
               f"{r['roofline_fraction']:.1%} of the roofline ({r['roofline_tok_s']:.0f} tok/s) |")
  if not s.get('runs'):
    out.append(f"| sampler | {s.get('status')} | |")
  tr = res.get('train', {})
  if tr.get('status') == 'ok':
    plan = tr.get('plan', {})
    plan_s = _gib(plan.get('total_bytes')) if 'total_bytes' in plan else plan.get('error', '—')
    out.append(f"| train step {tr['preset']} LoRA r{tr['lora_rank']} {tr['dtype']} remat "
               f"{tr['remat']}, {tr['rows']} rows x ({tr['prompt']} + {tr['response']}) | ok | "
               f"{tr['seconds']:.3f} s, MFU {tr['mfu']:.1%}; peak device memory "
               f"{_gib(tr['peak_bytes'])} GiB vs plan {plan_s} GiB (compiled "
               f"{_gib(tr['compiled_bytes'])} GiB); KL at step 1 = {tr['kl_step1']} |")
  else:
    out.append(f"| train step | {tr.get('status')} | |")
  return '\n'.join(out)


def main(args):
  os.makedirs(args.out, exist_ok=True)
  if args.part:
    res = PARTS[args.part](args)
    with open(args.part_out, 'w') as f:
      json.dump(res, f, indent=1, default=str)
    return res
  t0 = time.perf_counter()
  res = {'dry_run': args.dry_run, 'env': run_part('env', args)}
  print(f"backend: {res['env'].get('backend')} ({res['env'].get('device_kind')}), "
        f"jax {res['env'].get('jax')}", flush=True)
  res['tests'] = run_tests(args)
  print(f"tests: {res['tests']['status']} {res['tests'].get('summary', '')}", flush=True)
  for name in ('sampler', 'train'):
    res[name] = run_part(name, args)
    print(f'{name}: {res[name]["status"]}', flush=True)
  res['wall_s'] = time.perf_counter() - t0
  with open(os.path.join(args.out, 'device_check.json'), 'w') as f:
    json.dump(res, f, indent=1, default=str)
  table = markdown(res)
  with open(os.path.join(args.out, 'device_check.md'), 'w') as f:
    f.write(table + '\n')
  print('\n' + table + f'\n\n({res["wall_s"]:.0f} s; {args.out}/device_check.json)')
  return res


if __name__ == '__main__':
  main(_parse())
