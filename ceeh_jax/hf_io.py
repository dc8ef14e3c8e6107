"""HF safetensors checkpoints in and out.

The mapping is one table: our param path -> (HF name pattern, HF->ours transform). Loading
streams tensor by tensor: every param is built with `jax.make_array_from_callback`, so each
device reads only the layers of its own shard and the model never sits whole on one device.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
from safetensors.numpy import save_file

from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models.config import QwenConfig


class CheckpointFormatError(ValueError):
  """A HF checkpoint whose tensors do not match the config (names the file and tensor)."""


def _layer_specs(c: QwenConfig):
  """Stacked params: path -> (HF name under model.layers.{i}., HF shape, to_ours, to_hf)."""
  d, n, k, h, f = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim
  proj_in = lambda heads: (lambda w: w.T.reshape(d, heads, h), lambda x: x.reshape(d, -1).T)
  bias = lambda heads: (lambda b: b.reshape(heads, h), lambda x: x.reshape(-1))
  same = (lambda x: x, lambda x: x)
  tr = (lambda w: w.T, lambda x: x.T)
  return {
      ('layers', 'attn', 'q', 'kernel'): ('self_attn.q_proj.weight', (n * h, d), *proj_in(n)),
      ('layers', 'attn', 'q', 'bias'): ('self_attn.q_proj.bias', (n * h,), *bias(n)),
      ('layers', 'attn', 'k', 'kernel'): ('self_attn.k_proj.weight', (k * h, d), *proj_in(k)),
      ('layers', 'attn', 'k', 'bias'): ('self_attn.k_proj.bias', (k * h,), *bias(k)),
      ('layers', 'attn', 'v', 'kernel'): ('self_attn.v_proj.weight', (k * h, d), *proj_in(k)),
      ('layers', 'attn', 'v', 'bias'): ('self_attn.v_proj.bias', (k * h,), *bias(k)),
      ('layers', 'attn', 'o', 'kernel'): ('self_attn.o_proj.weight', (d, n * h),
                                          lambda w: w.T.reshape(n, h, d),
                                          lambda x: x.reshape(n * h, d).T),
      ('layers', 'mlp', 'gate', 'kernel'): ('mlp.gate_proj.weight', (f, d), *tr),
      ('layers', 'mlp', 'up', 'kernel'): ('mlp.up_proj.weight', (f, d), *tr),
      ('layers', 'mlp', 'down', 'kernel'): ('mlp.down_proj.weight', (d, f), *tr),
      ('layers', 'pre_attn_norm', 'scale'): ('input_layernorm.weight', (d,), *same),
      ('layers', 'pre_mlp_norm', 'scale'): ('post_attention_layernorm.weight', (d,), *same),
  }


def _global_specs(c: QwenConfig):
  specs = {('embedding',): ('model.embed_tokens.weight', (c.vocab_size, c.embed_dim),
                            lambda x: x, lambda x: x),
           ('final_norm', 'scale'): ('model.norm.weight', (c.embed_dim,), lambda x: x, lambda x: x)}
  if not c.tie_embeddings:
    specs[('lm_head',)] = ('lm_head.weight', (c.vocab_size, c.embed_dim),
                           lambda w: w.T, lambda x: x.T)
  return specs


def expected_hf_shapes(c: QwenConfig) -> dict[str, tuple]:
  out = {name: shape for name, shape, _, _ in _global_specs(c).values()}
  for i in range(c.num_layers):
    for name, shape, _, _ in _layer_specs(c).values():
      out[f'model.layers.{i}.{name}'] = shape
  return out


class _Reader:
  """Which file holds each tensor; opens files lazily (single file or sharded index)."""

  def __init__(self, model_dir: str):
    index = os.path.join(model_dir, 'model.safetensors.index.json')
    single = os.path.join(model_dir, 'model.safetensors')
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)['weight_map']
      self.where = {k: os.path.join(model_dir, v) for k, v in weight_map.items()}
    elif os.path.exists(single):
      with safetensors.safe_open(single, framework='flax') as f:
        self.where = {k: single for k in f.keys()}
    else:
      raise FileNotFoundError(f'{model_dir} has neither model.safetensors nor '
                              'model.safetensors.index.json')
    for path in set(self.where.values()):
      if not os.path.exists(path):
        raise FileNotFoundError(f'{path} is listed in the index but missing')

  def shape(self, name):
    with safetensors.safe_open(self.where[name], framework='flax') as f:
      return tuple(f.get_slice(name).get_shape())

  def read(self, name) -> np.ndarray:
    with safetensors.safe_open(self.where[name], framework='flax') as f:
      return np.asarray(f.get_tensor(name))


def load_hf(model_dir, *, mesh=None, rules=sharding_lib.DEFAULT_RULES, dtype=None):
  """Loads a HF Qwen2 directory -> (QwenConfig, params), each param on its NamedSharding."""
  model_dir = os.fspath(model_dir)
  if not os.path.exists(os.path.join(model_dir, 'config.json')):
    raise FileNotFoundError(f'{model_dir} has no config.json (not a HF model directory)')
  config = QwenConfig.from_hf(model_dir)
  if dtype is not None:
    config = config.replace(param_dtype=jnp.dtype(dtype).name)
  reader = _Reader(model_dir)
  want = expected_hf_shapes(config)
  have = set(reader.where)
  missing = sorted(set(want) - have)
  extra = sorted(have - set(want) - ({'lm_head.weight'} if config.tie_embeddings else set()))
  if missing:
    raise CheckpointFormatError(f'{model_dir}: missing tensor {missing[0]!r}'
                                f'{f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""}')
  if extra:
    raise CheckpointFormatError(f'{reader.where[extra[0]]}: unexpected tensor {extra[0]!r} '
                                'for a Qwen2 config')
  for name, shape in want.items():
    got = reader.shape(name)
    if got != tuple(shape):
      raise CheckpointFormatError(f'{reader.where[name]}: tensor {name!r} has shape {got}, '
                                  f'expected {tuple(shape)} from config.json')

  mesh = mesh or sharding_lib.make_mesh((1, 1, 1), jax.devices()[:1])
  shardings = sharding_lib.param_shardings(config, mesh, rules)
  pdtype = jnp.dtype(config.param_dtype)
  flat = {}

  for path, (name, _, to_ours, _) in _global_specs(config).items():
    sharding = _get(shardings, path)
    arr = to_ours(reader.read(name))  # one tensor at a time
    flat[path] = jax.make_array_from_callback(
        arr.shape, sharding, lambda idx, a=arr: np.asarray(a[idx], pdtype))
  for path, (name, _, to_ours, _) in _layer_specs(config).items():
    sharding = _get(shardings, path)
    sample = to_ours(reader.read(f'model.layers.0.{name}'))
    shape = (config.num_layers,) + sample.shape

    def cb(idx, name=name, to_ours=to_ours):
      layers = range(config.num_layers)[idx[0]]
      block = np.stack([to_ours(reader.read(f'model.layers.{i}.{name}')) for i in layers])
      return np.asarray(block[(slice(None),) + tuple(idx[1:])], pdtype)

    flat[path] = jax.make_array_from_callback(shape, sharding, cb)
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  return config, flax.traverse_util.unflatten_dict(flat)


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def merged_lora(params, config: QwenConfig):
  """Params with LoRA adapters folded into the base kernels (W + scale·A·B), adapters dropped."""
  import flax.traverse_util  # pylint: disable=g-import-not-at-top
  flat = flax.traverse_util.flatten_dict(params)
  out = {}
  for path, value in flat.items():
    if path[-1] in ('lora_a', 'lora_b'):
      continue
    a = flat.get(path[:-1] + ('lora_a',))
    if path[-1] == 'kernel' and a is not None:
      b = flat[path[:-1] + ('lora_b',)]
      delta = jnp.einsum('LIR,LRO->LIO', a.astype(jnp.float32), b.astype(jnp.float32))
      value = (value.astype(jnp.float32) + config.lora_scale * delta.reshape(value.shape)
               ).astype(value.dtype)
    out[path] = value
  return flax.traverse_util.unflatten_dict(out)


def save_hf(params, config: QwenConfig, out_dir, *, dtype: str = 'float32',
            max_shard_bytes: int | None = None, tokenizer_dir: str | None = None) -> None:
  """Writes config.json + safetensors (sharded with an index above max_shard_bytes)."""
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  if config.lora_rank:
    params = merged_lora(params, config)
  np_dtype = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}[dtype]
  tensors = {}
  for path, (name, _, _, to_hf) in _global_specs(config).items():
    tensors[name] = np.ascontiguousarray(to_hf(np.asarray(jax.device_get(_get(params, path)))),
                                         np_dtype)
  for path, (name, _, _, to_hf) in _layer_specs(config).items():
    stacked = np.asarray(jax.device_get(_get(params, path)))  # one param at a time
    for i in range(config.num_layers):
      tensors[f'model.layers.{i}.{name}'] = np.ascontiguousarray(to_hf(stacked[i]), np_dtype)
  hf_cfg = config.to_hf(torch_dtype=dtype, dtype=dtype)
  with open(os.path.join(out_dir, 'config.json'), 'w') as f:
    json.dump(hf_cfg, f, indent=2)
  total = sum(t.nbytes for t in tensors.values())
  if not max_shard_bytes or total <= max_shard_bytes:
    save_file(tensors, os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
  else:
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
      if cur and size + t.nbytes > max_shard_bytes:
        shards.append(cur)
        cur, size = {}, 0
      cur[name] = t
      size += t.nbytes
    shards.append(cur)
    weight_map = {}
    for i, shard in enumerate(shards):
      fname = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
      save_file(shard, os.path.join(out_dir, fname), metadata={'format': 'pt'})
      weight_map.update({k: fname for k in shard})
    with open(os.path.join(out_dir, 'model.safetensors.index.json'), 'w') as f:
      json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2)
  if tokenizer_dir:
    for fname in os.listdir(tokenizer_dir):
      if fname.startswith(('tokenizer', 'special_tokens', 'vocab', 'merges')):
        shutil.copy(os.path.join(tokenizer_dir, fname), out_dir)


