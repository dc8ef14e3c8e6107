r"""Per-device memory of the train step and the sampler decode, compiled ahead of time.

Nothing is allocated: params, optimizer state, batches and the KV cache are ShapeDtypeStructs
with shardings; XLA's `compiled.memory_analysis()` gives argument/output/temp/code bytes.

  python experiments/memory_plan.py --config=r1_1p5b --devices=8 --lora=32
  python experiments/memory_plan.py --config=r1_7b --devices=32 --lora=0 --append
      # also appends the rows to experiments/memory_plans.md (header written when new)

CPU compilation is a proxy for TPU/GPU: the buffer sizes are the same programs' buffers, but
the backend's fusion and scheduling differ, so treat temp bytes as +-30%.
"""
import argparse
import os
import sys
import time


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='r1_1p5b', help='r1_1p5b | r1_7b | tiny')
  p.add_argument('--devices', type=int, default=8)
  p.add_argument('--lora', type=int, default=None, help='LoRA rank; 0 = full fine-tune')
  p.add_argument('--micro_batch', type=int, default=None)
  p.add_argument('--remat', default=None, help='remat policy (none | dots_no_batch | full ...)')
  p.add_argument('--response_len', type=int, default=None, help='max new tokens M')
  p.add_argument('--prompt_len', type=int, default=1024)
  p.add_argument('--decode_rows', type=int, default=None, help='rows decoded at once (B*G)')
  p.add_argument('--what', default='train,decode')
  p.add_argument('--scan_decode', action='store_true',
                 help='plan the scanned decode (sampling.unroll_layers=False)')
  p.add_argument('--append', action='store_true', help='append the rows to --out')
  p.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               'memory_plans.md'))
  return p.parse_args(argv)


ARGS = _parse(sys.argv[1:]) if __name__ == '__main__' else None
if ARGS is not None:  # must precede the first jax import
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={ARGS.devices}')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

GIB = 2.0 ** 30
HARDWARE = (('TPU v5e-8', 16), ('TPU v4-8', 32), ('8xH100', 80))


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


def _mesh_shape(config, devices):
  shape = list(config.mesh.shape)
  if int(jnp.prod(jnp.asarray(shape))) != devices:
    shape = [1, devices, 1]  # pure FSDP when the recipe's mesh does not match the device count
  return tuple(shape)


def _stats(compiled):
  m = compiled.memory_analysis()
  arg, out = m.argument_size_in_bytes, m.output_size_in_bytes
  alias, temp, code = m.alias_size_in_bytes, m.temp_size_in_bytes, m.generated_code_size_in_bytes
  return dict(argument=arg, output=out, alias=alias, temp=temp, code=code,
              total=arg + out - alias + temp + code)


def plan(config, devices, *, what=('train', 'decode'), prompt_len=1024, decode_rows=None):
  """Compiles the train step and/or decode on abstract arrays -> {name: bytes per device}."""
  from ceeh_jax import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax.models import qwen2 as qwen2_lib  # pylint: disable=g-import-not-at-top
  from ceeh_jax.models.config import QwenConfig  # pylint: disable=g-import-not-at-top
  if jax.device_count() != devices:
    raise ValueError(f'jax sees {jax.device_count()} devices, asked for {devices}; set '
                     'XLA_FLAGS=--xla_force_host_platform_device_count before importing jax')
  m = config.model
  model_cfg = QwenConfig.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype,
                                remat_policy=m.remat_policy, lora_rank=m.lora_rank,
                                lora_alpha=m.lora_alpha)
  mesh = sharding_lib.make_mesh(_mesh_shape(config, devices))
  rules = sharding_lib.DEFAULT_RULES
  param_sh = sharding_lib.param_shardings(model_cfg, mesh, rules)
  repl = sharding_lib.replicated(mesh)
  sds = jax.ShapeDtypeStruct
  out, mlen = {}, config.sampling.max_new_tokens
  t0 = time.time()
  if 'train' in what:
    from ceeh_jax import policy as policy_lib  # pylint: disable=g-import-not-at-top
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
    step = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
        steps_lib.train_step, config=config, model_cfg=model_cfg, optimizer=opt)),
        in_shardings=(state_sh, batch_sh, repl, None if ref is None else param_sh),
        out_shardings=(state_sh, None), donate_argnums=(0,))
    compiled = step.lower(abstract, batch, sds((), jnp.float32), ref).compile()
    out['train'] = _stats(compiled)
    out['train']['compile_s'] = time.time() - t0
  if 'decode' in what:
    t0 = time.time()
    # The sampler's view: sample dtype, layers unrolled (or not), untied head (`sampling_params`).
    scan_decode = not config.sampling.get('unroll_layers', True)
    sample_cfg = model_cfg.replace(dtype=m.sample_dtype, scan_layers=scan_decode,
                                   tie_embeddings=False)
    sdt = jnp.dtype(m.sample_dtype)
    sparams = jax.tree.map(lambda x: sds(x.shape, sdt if jnp.issubdtype(x.dtype, jnp.floating)
                                         else x.dtype), sharding_lib.abstract_params(sample_cfg))
    sample_param_sh = sharding_lib.param_shardings(sample_cfg, mesh, rules)
    g = config.sampling.num_samples
    rows = decode_rows or config.batch_size * g
    b = max(1, rows // g)
    cfg = sampler_lib.SampleConfig(max_new_tokens=mlen, num_samples=g, eos_ids=(0,))
    tok_sh = sharding_lib.batch_sharding(mesh, b, 2, rules)
    t = jnp.float32(1.0)
    state = jax.eval_shape(functools.partial(sampler_lib._prefill, model_cfg=sample_cfg, cfg=cfg),  # pylint: disable=protected-access
                           sparams, sds((b, prompt_len), jnp.int32), sds((b, prompt_len), bool),
                           jax.random.key(0), t, t)
    rows = b * g
    row_sh = lambda x: sharding_lib.batch_sharding(mesh, rows, x.ndim, rules)
    state_sh = state.replace(
        step=repl, prompt_len=repl, rng=repl,
        cache=jax.tree.map(lambda _: sharding_lib.cache_sharding(mesh, sample_cfg, rows, rules),
                           state.cache),
        key_mask=row_sh(state.key_mask), position=row_sh(state.position),
        tokens=row_sh(state.tokens), logps=row_sh(state.logps), done=row_sh(state.done))
    del tok_sh
    dec = jax.jit(functools.partial(sampler_lib._decode, model_cfg=sample_cfg, cfg=cfg,  # pylint: disable=protected-access
                                    mesh=mesh, rules=rules),
                  in_shardings=(sample_param_sh, state_sh, repl, repl), donate_argnums=(1,))
    name = 'decode (scanned)' if scan_decode else 'decode'
    compiled = dec.lower(sparams, state, sds((), jnp.float32), sds((), jnp.float32)).compile()
    out[name] = _stats(compiled)
    out[name]['compile_s'] = time.time() - t0
  return out


def describe(config, devices):
  m = config.model
  return (f'{m.preset} lora={m.lora_rank} devices={devices} micro={config.micro_batch_size} '
          f'remat={m.remat_policy} M={config.sampling.max_new_tokens}')


def fits(total_gib):
  return ', '.join(name for name, hbm in HARDWARE if total_gib <= 0.9 * hbm) or 'none'


def row(name, config, devices, res):
  m = config.model
  cells = [name, m.preset, str(m.lora_rank or 'full'), str(devices),
           str(config.micro_batch_size), m.remat_policy, m.dtype + '/' + m.param_dtype,
           str(config.sampling.max_new_tokens)]
  for k in ('argument', 'output', 'temp', 'code', 'total'):
    cells.append(f'{res[k] / GIB:.2f}')
  cells += [fits(res['total'] / GIB), f'{res["compile_s"]:.0f}']
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


def main(args):
  config = apply_overrides(load_config(args.config), args)
  res = plan(config, args.devices, what=tuple(args.what.split(',')), prompt_len=args.prompt_len,
             decode_rows=args.decode_rows)
  print(describe(config, args.devices))
  print(HEADER)
  for name, r in res.items():
    print(row(name, config, args.devices, r))
  if args.append:
    new = not os.path.exists(args.out)
    with open(args.out, 'a') as f:
      f.write((HEADER + '\n') if new else '')
      f.writelines(row(n, config, args.devices, r) + '\n' for n, r in res.items())
  return res


if __name__ == '__main__':
  main(ARGS)
