r"""Per-device memory of the r1 recipes' train step and rollout, compiled ahead of time.

  nice python experiments/memory_plan.py --all > experiments/memory_plans.md   # the whole plan
  python experiments/memory_plan.py --config=r1_1p5b --devices=8 --lora=0      # one setup
  python experiments/memory_plan.py --config=r1_7b --devices=4 --what=train --response_len=4096

Nothing is allocated: params, optimizer state, batches and the KV cache are ShapeDtypeStructs
with their shardings; XLA's `compiled.memory_analysis()` gives argument/output/temp/code bytes
per device. The programs are the trainer's: `steps.train_step` on one minibatch, micro-batched
as configured, and `sampler._decode` on one rollout chunk (`sampling.rows_per_chunk` rows).
Runs on the host CPU with fake devices (8, or the count asked for): XLA:CPU is a proxy for
TPU/GPU. Argument bytes (params, optimizer, cache) are exact for any backend; temp bytes come
from another backend's fusion and scheduling: treat them as +-30%.

One XLA:CPU artifact is taken out where named: it carries a bf16 KV cache through the decode
loop as fp32 copies (2x the cache; TPU/GPU update it in place), reported as `cpu_f32_cache`.

API (used by tests and scripts/device_check.sh): `plan(config, devices, what=..., prompt_len=,
decode_rows=)` -> {'train' | 'decode': {argument, output, alias, temp, code, total (bytes per
device), compile_s, ...}}; 'train' adds 'state' (the TrainState's bytes per device), 'decode'
adds 'rows', 'cache' (KV cache bytes per device) and 'cpu_f32_cache' (see above).
"""
import argparse
import dataclasses
import os
import resource
import sys
import time


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--all', action='store_true',
                 help='plan every recipe on its targets; prints experiments/memory_plans.md')
  p.add_argument('--config', default='r1_1p5b', help='r1_1p5b | r1_7b | tiny')
  p.add_argument('--devices', type=int, default=8)
  p.add_argument('--lora', type=int, default=None, help='LoRA rank; 0 = full fine-tune')
  p.add_argument('--micro_batch', type=int, default=None)
  p.add_argument('--remat', default=None, help='remat policy (full | save_qkv_proj | ...)')
  p.add_argument('--response_len', type=int, default=None, help='max new tokens M')
  p.add_argument('--prompt_len', type=int, default=1024)
  p.add_argument('--decode_rows', type=int, default=None,
                 help='rows decoded at once (default: sampling.rows_per_chunk, else B*G)')
  p.add_argument('--what', default='train,decode')
  p.add_argument('--scan_decode', action='store_true',
                 help='plan the scanned decode (sampling.unroll_layers=False)')
  return p.parse_args(argv)


ARGS = _parse(sys.argv[1:]) if __name__ == '__main__' else None
if ARGS is not None:  # must precede the first jax import
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={max(8, ARGS.devices)}')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools  # noqa: E402
import math  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

GIB = 2.0 ** 30
FIT = 0.9  # a plan fits when its peak is at most this fraction of HBM


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  devices: int   # JAX devices (a v4 or v5p chip is one device: its two cores run as one)
  hbm_gib: float


TARGETS = {t.name: t for t in (Target('TPU v5e-8', 8, 16), Target('TPU v4-8', 4, 32),
                                Target('8xH100', 8, 80), Target('TPU v5p-8', 4, 95),
                                Target('TPU v4-16', 8, 32))}


def load_config(name):
  import importlib  # pylint: disable=g-import-not-at-top
  if name == 'tiny':
    from ceeh_jax import default_config  # pylint: disable=g-import-not-at-top
    c = default_config.get_config()
    c.model.preset = 'tiny'
    c.batch_size, c.sampling.num_samples, c.minibatch_size, c.micro_batch_size = 2, 4, 8, 4
    c.sampling.max_new_tokens = 64
    c.model.sample_dtype = 'float32'
    return c
  return importlib.import_module(f'configs.{name}').get_config()


def mesh_shape(config, devices):
  """The recipe's mesh if it fits `devices`, else pure FSDP over them."""
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  try:
    shape = sharding_lib.resolve_mesh_shape(config.mesh.shape, devices)
  except ValueError:
    shape = None
  return tuple(shape) if shape and math.prod(shape) == devices else (1, devices, 1)


def model_config(config):
  from ceeh_jax.models.config import QwenConfig  # pylint: disable=g-import-not-at-top
  m = config.model
  return QwenConfig.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype,
                           remat_policy=m.remat_policy, lora_rank=m.lora_rank,
                           lora_alpha=m.lora_alpha, lora_targets=tuple(m.lora_targets),
                           decode_chunk=m.decode_chunk, attention=m.get('attention', 'auto'))


def decode_unrolled(config) -> bool:
  """The sampler's layer layout on the targets ('auto' = scanned on TPU/GPU)."""
  unroll = config.sampling.get('unroll_layers', True)
  return False if unroll == 'auto' else bool(unroll)


def _stats(compiled):
  m = compiled.memory_analysis()
  arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
  alias, temp, code = m.alias_size_in_bytes, m.temp_size_in_bytes, m.generated_code_size_in_bytes
  return dict(argument=arg, output=out, alias=alias, temp=temp, code=code,
              total=arg + out - alias + temp + code)


def _shard_bytes(tree, shardings):
  """Bytes per device of a tree of ShapeDtypeStructs placed with `shardings`."""
  leaves = zip(jax.tree.leaves(tree), jax.tree.leaves(shardings))
  return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize for x, s in leaves)


def plan(config, devices, *, what=('train', 'decode'), prompt_len=1024, decode_rows=None):
  """Compiles the train step and/or decode on abstract arrays -> {name: bytes per device}."""
  from ceeh_jax import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  if jax.device_count() < devices:
    raise ValueError(f'jax sees {jax.device_count()} devices, asked for {devices}; set '
                     'XLA_FLAGS=--xla_force_host_platform_device_count before importing jax')
  model_cfg = model_config(config)
  mesh = sharding_lib.make_mesh(mesh_shape(config, devices))
  rules = sharding_lib.DEFAULT_RULES
  param_sh = sharding_lib.param_shardings(model_cfg, mesh, rules)
  repl = sharding_lib.replicated(mesh)
  sds = jax.ShapeDtypeStruct
  out, mlen = {}, config.sampling.max_new_tokens
  if 'train' in what:
    from ceeh_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
    t0 = time.time()
    opt = steps_lib.make_optimizer(config)
    lora = model_cfg.lora_rank > 0
    # As the trainer holds it (LoRA: the frozen base in the compute dtype).
    abstract, state_sh = policy_lib.abstract_state(model_cfg, opt, mesh, rules, 1024, 0, lora,
                                                   config.method, {})
    # A full fine-tune with KL passes its frozen reference (a second copy of the params).
    ref = abstract.params if not lora and config.grpo.kl_coef > 0 else None
    r, p = config.minibatch_size, prompt_len
    batch = steps_lib.Batch(prompt=sds((r, p), jnp.int32), prompt_mask=sds((r, p), bool),
                            completion=sds((r, mlen), jnp.int32), mask=sds((r, mlen), bool),
                            old_logp=sds((r, mlen), jnp.float32),
                            advantages=sds((r,), jnp.float32), hard=sds((r,), jnp.float32))
    batch_sh = jax.tree.map(lambda x: sharding_lib.batch_sharding(mesh, r, x.ndim, rules), batch)
    fwd_cfg = model_cfg.replace(scan_layers=config.model.get('scan_layers', True))
    step = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
        steps_lib.train_step, config=config, model_cfg=fwd_cfg, optimizer=opt)),
        in_shardings=(state_sh, batch_sh, repl, None if ref is None else param_sh),
        out_shardings=(state_sh, None), donate_argnums=(0,),
        compiler_options=steps_lib.TRAIN_STEP_COMPILER_OPTIONS)
    compiled = step.lower(abstract, batch, sds((), jnp.float32), ref).compile()
    out['train'] = dict(_stats(compiled), compile_s=time.time() - t0,
                        state=_shard_bytes(abstract, state_sh))
  if 'decode' in what:
    t0 = time.time()
    # The sampler's view: sample dtype, layers unrolled or scanned, untied head.
    unrolled = decode_unrolled(config)
    sample_cfg = model_cfg.replace(dtype=config.model.sample_dtype, scan_layers=not unrolled,
                                   tie_embeddings=False)
    sdt = jnp.dtype(config.model.sample_dtype)
    sparams = jax.tree.map(lambda x: sds(x.shape, sdt if jnp.issubdtype(x.dtype, jnp.floating)
                                         else x.dtype), sharding_lib.abstract_params(sample_cfg))
    sample_param_sh = sharding_lib.param_shardings(sample_cfg, mesh, rules)
    g = config.sampling.num_samples
    rows = decode_rows or config.sampling.get('rows_per_chunk', 0) or config.batch_size * g
    b = max(1, rows // g)
    cfg = sampler_lib.SampleConfig(max_new_tokens=mlen, num_samples=g, eos_ids=(0,))
    t = jnp.float32(1.0)
    state = jax.eval_shape(functools.partial(sampler_lib._prefill, model_cfg=sample_cfg, cfg=cfg),  # pylint: disable=protected-access
                           sparams, sds((b, prompt_len), jnp.int32), sds((b, prompt_len), bool),
                           jax.random.key(0), t, t)
    rows = b * g
    row_sh = lambda x: sharding_lib.batch_sharding(mesh, rows, x.ndim, rules)
    cache_sh = sharding_lib.cache_sharding(mesh, sample_cfg, rows, rules)
    state_sh = state.replace(
        step=repl, prompt_len=repl, rng=repl, cache=jax.tree.map(lambda _: cache_sh, state.cache),
        key_mask=row_sh(state.key_mask), position=row_sh(state.position),
        tokens=row_sh(state.tokens), logps=row_sh(state.logps), done=row_sh(state.done))
    dec = jax.jit(functools.partial(sampler_lib._decode, model_cfg=sample_cfg, cfg=cfg,  # pylint: disable=protected-access
                                    mesh=mesh, rules=rules),
                  in_shardings=(sample_param_sh, state_sh, repl, repl), donate_argnums=(1,))
    compiled = dec.lower(sparams, state, sds((), jnp.float32), sds((), jnp.float32)).compile()
    stats = _stats(compiled)
    cache = _shard_bytes(state.cache, jax.tree.map(lambda _: cache_sh, state.cache))
    out['decode'] = dict(stats, compile_s=time.time() - t0, rows=rows, unrolled=unrolled,
                         cache_len=state.cache['k'].shape[3], cache=cache,
                         cpu_f32_cache=_cpu_f32_cache(compiled, state.cache['k'], cache_sh,
                                                      cache, stats['temp']))
  return out


def _cpu_f32_cache(compiled, k_cache, cache_sh, cache_bytes, temp):
  """Temp bytes XLA:CPU spends on fp32 copies of a bf16 KV cache, else 0.

  XLA:CPU has no bf16 dynamic-update-slice: its float normalization carries the cache
  through the decode loop as f32 copies of k and v (2 x the bf16 cache bytes), where TPU and
  GPU update the donated bf16 cache in place. Found by the per-device cache shape in f32 in
  the compiled program; the plan reports decode with and without them.
  """
  if k_cache.dtype == jnp.float32:
    return 0
  shape = ','.join(map(str, cache_sh.shard_shape(k_cache.shape)))
  return min(temp, 2 * cache_bytes) if f'f32[{shape}]' in compiled.as_text() else 0


# ---------------------------------------------------------------------------------------------
# One setup: a table row per program (the command line without --all).
# ---------------------------------------------------------------------------------------------

def describe(config, devices):
  m = config.model
  return (f'{m.preset} lora={m.lora_rank} devices={devices} micro={config.micro_batch_size} '
          f'remat={m.remat_policy} M={config.sampling.max_new_tokens}')


def fits(total_gib, devices=8):
  """Targets with `devices` devices whose HBM holds `total_gib` per device (<= 90%)."""
  return ', '.join(t.name for t in TARGETS.values()
                   if t.devices == devices and total_gib <= FIT * t.hbm_gib) or 'none'


def row(name, config, devices, res):
  m = config.model
  cells = [name, m.preset, str(m.lora_rank or 'full'), str(devices),
           str(config.micro_batch_size), m.remat_policy, m.dtype + '/' + m.param_dtype,
           str(config.sampling.max_new_tokens)]
  for k in ('argument', 'output', 'temp', 'code', 'total'):
    cells.append(f'{res[k] / GIB:.2f}')
  cells += [fits(res['total'] / GIB, devices), f'{res["compile_s"]:.0f}']
  return '| ' + ' | '.join(cells) + ' |'


HEADER = ('| program | model | LoRA | devices | micro | remat | compute/params | M | arg GiB | '
          'out GiB | temp GiB | code GiB | total GiB/dev | fits (<=90% HBM) | compile s |\n'
          '|' + '---|' * 15)


def apply_overrides(config, args):
  if args.lora is not None:
    config.model.lora_rank = args.lora
  if args.micro_batch is not None:
    config.micro_batch_size = args.micro_batch
  if args.remat is not None:
    config.model.remat_policy = args.remat
  if args.response_len is not None:
    config.sampling.max_new_tokens = args.response_len
  if args.scan_decode:
    config.sampling.unroll_layers = False
  return config


def peak_rss_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(args):
  if args.all:
    import memory_plan_report  # pylint: disable=g-import-not-at-top
    print(memory_plan_report.render(plan, load_config), end='')
    print(f'peak host RSS {peak_rss_gib():.1f} GiB', file=sys.stderr)
    return None
  config = apply_overrides(load_config(args.config), args)
  res = plan(config, args.devices, what=tuple(args.what.split(',')), prompt_len=args.prompt_len,
             decode_rows=args.decode_rows)
  print(describe(config, args.devices))
  print(HEADER)
  for name, r in res.items():
    print(row(name, config, args.devices, r))
  print(f'peak host RSS {peak_rss_gib():.1f} GiB', file=sys.stderr)
  return res


if __name__ == '__main__':
  main(ARGS)
