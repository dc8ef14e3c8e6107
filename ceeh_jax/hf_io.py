"""HF safetensors checkpoints in and out of our Qwen2 param tree.

The mapping is one pure table (`param_mapping`): our param path -> HF tensor name, and how the
HF axes split and permute into ours (e.g. q_proj.weight [N*H, D] -> (N, H, D) -> [D, N, H]).
Layers are stacked on a leading L axis (`nn.scan`), so a `layers/...` param gathers the
same-named tensor of every `model.layers.{i}`.

Loading streams tensor by tensor: each param is built with `jax.make_array_from_callback` on
its `NamedSharding`, and the callback reads from disk only the slice (and only the layers) of
the shard it is asked for, so no device ever holds more than its shards. Saving gathers one
param at a time to the host (LoRA adapters merged in) and writes safetensors shards as they
fill; only process 0 writes.
"""
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import struct

from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
from safetensors.numpy import save_file

from ceeh_jax import errors
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models.config import QwenConfig

SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                   'vocab.json', 'merges.txt', 'added_tokens.json', 'chat_template.jinja',
                   'generation_config.json')
_SAVE_DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16}
_FLOAT_DTYPES = ('F64', 'F32', 'F16', 'BF16')


class CheckpointFormatError(errors.UserError, ValueError):
  """A HF checkpoint whose tensors do not match its config (names the file and tensor)."""


@dataclasses.dataclass(frozen=True)
class Mapping:
  """One HF tensor <-> one of our params (per layer for stacked params).

  `groups[j]` lists the dims HF axis j splits into (N*H -> (N, H)); `perm` orders the split
  dims into our axes, as in `np.transpose`.
  """
  hf: str                               # HF name; '{i}' is the layer index for stacked params
  groups: tuple[tuple[int, ...], ...]
  perm: tuple[int, ...]

  @property
  def stacked(self) -> bool:
    return '{i}' in self.hf

  @property
  def hf_shape(self) -> tuple[int, ...]:
    return tuple(math.prod(g) for g in self.groups)

  @property
  def split(self) -> tuple[int, ...]:
    return tuple(d for g in self.groups for d in g)

  @property
  def shape(self) -> tuple[int, ...]:
    """Our shape of one layer's slice."""
    return tuple(self.split[p] for p in self.perm)

  def to_ours(self, w):
    return w.reshape(self.split).transpose(self.perm)

  def to_hf(self, x):
    return x.transpose(np.argsort(self.perm)).reshape(self.hf_shape)

  def read(self, tensor_slice, index) -> np.ndarray:
    """Reads our `index` (slices over `shape`) from a safetensors slice, touching only its band.

    Each HF axis is read over the range its outermost split dim needs; inner split dims
    (head_dim, never sharded by the default rules) are then cut in memory.
    """
    split = self.split
    sub = [None] * len(split)
    for ours_axis, split_axis in enumerate(self.perm):
      start, stop, step = index[ours_axis].indices(split[split_axis])
      if step != 1:
        raise ValueError(f'strided shard index {index} is not supported')
      sub[split_axis] = (start, stop)
    hf_idx, local_shape, local_idx, j = [], [], [], 0
    for group in self.groups:
      inner = math.prod(group[1:])
      (o0, o1), j0 = sub[j], j
      hf_idx.append(slice(o0 * inner, o1 * inner))
      local_shape += [o1 - o0, *group[1:]]
      local_idx += [slice(None)] + [slice(*sub[k]) for k in range(j0 + 1, j0 + len(group))]
      j += len(group)
    block = tensor_slice[tuple(hf_idx)].reshape(local_shape)[tuple(local_idx)]
    return block.transpose(self.perm)


def param_mapping(c: QwenConfig) -> dict[tuple[str, ...], Mapping]:
  """Our param path -> Mapping, for every base (non-LoRA) param of `c`."""
  d, n, k, h, f, v = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim, c.vocab_size
  lay = 'model.layers.{i}.'
  fd, df = ((f,), (d,)), ((d,), (f,))  # mlp kernels: a plain transpose
  out = {
      ('embedding',): Mapping('model.embed_tokens.weight', ((v,), (d,)), (0, 1)),
      ('layers', 'pre_attn_norm', 'scale'): Mapping(lay + 'input_layernorm.weight', ((d,),), (0,)),
      ('layers', 'attn', 'q', 'kernel'): Mapping(lay + 'self_attn.q_proj.weight',
                                                 ((n, h), (d,)), (2, 0, 1)),
      ('layers', 'attn', 'q', 'bias'): Mapping(lay + 'self_attn.q_proj.bias', ((n, h),), (0, 1)),
      ('layers', 'attn', 'k', 'kernel'): Mapping(lay + 'self_attn.k_proj.weight',
                                                 ((k, h), (d,)), (2, 0, 1)),
      ('layers', 'attn', 'k', 'bias'): Mapping(lay + 'self_attn.k_proj.bias', ((k, h),), (0, 1)),
      ('layers', 'attn', 'v', 'kernel'): Mapping(lay + 'self_attn.v_proj.weight',
                                                 ((k, h), (d,)), (2, 0, 1)),
      ('layers', 'attn', 'v', 'bias'): Mapping(lay + 'self_attn.v_proj.bias', ((k, h),), (0, 1)),
      ('layers', 'attn', 'o', 'kernel'): Mapping(lay + 'self_attn.o_proj.weight',
                                                 ((d,), (n, h)), (1, 2, 0)),
      ('layers', 'pre_mlp_norm', 'scale'): Mapping(lay + 'post_attention_layernorm.weight',
                                                   ((d,),), (0,)),
      ('layers', 'mlp', 'gate', 'kernel'): Mapping(lay + 'mlp.gate_proj.weight', fd, (1, 0)),
      ('layers', 'mlp', 'up', 'kernel'): Mapping(lay + 'mlp.up_proj.weight', fd, (1, 0)),
      ('layers', 'mlp', 'down', 'kernel'): Mapping(lay + 'mlp.down_proj.weight', df, (1, 0)),
      ('final_norm', 'scale'): Mapping('model.norm.weight', ((d,),), (0,)),
  }
  if not c.tie_embeddings:
    out[('lm_head',)] = Mapping('lm_head.weight', ((v,), (d,)), (1, 0))
  return out


def expected_hf_shapes(c: QwenConfig) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape, for every tensor a checkpoint of `c` holds."""
  out = {}
  for m in param_mapping(c).values():
    for i in range(c.num_layers) if m.stacked else [None]:
      out[m.hf.format(i=i)] = m.hf_shape
  return out


# ---------------------------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------------------------

class _Checkpoint:
  """The tensors of a HF directory: name -> (file, shape, dtype), read from headers only."""

  def __init__(self, model_dir: str):
    index, single = os.path.join(model_dir, INDEX_FILE), os.path.join(model_dir, SINGLE_FILE)
    if os.path.exists(index):
      self.source = index
      with open(index) as fh:
        weight_map = json.load(fh).get('weight_map')
      if not isinstance(weight_map, dict):
        raise CheckpointFormatError(f'{index}: no "weight_map" object')
      files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
      self.source, weight_map, files = single, None, [SINGLE_FILE]
    else:
      raise errors.MissingFileError(f'{model_dir} has neither {SINGLE_FILE} nor {INDEX_FILE}')
    self.tensors = {}
    for fname in files:
      path = os.path.join(model_dir, fname)
      if not os.path.exists(path):
        raise errors.MissingFileError(f'{path} is listed in {index} but does not exist')
      with safetensors.safe_open(path, framework='numpy') as fh:
        for name in fh.keys():
          sl = fh.get_slice(name)
          self.tensors[name] = (path, tuple(sl.get_shape()), sl.get_dtype())
    for name, fname in (weight_map or {}).items():
      if self.tensors.get(name, ('',))[0] != os.path.join(model_dir, fname):
        raise CheckpointFormatError(f'{os.path.join(model_dir, fname)}: tensor {name!r} is '
                                    f'listed in {index} but not stored in that file')

  def check(self, expected: dict[str, tuple[int, ...]]):
    """Raises CheckpointFormatError naming the file and tensor on any mismatch."""
    for name, shape in expected.items():
      if name not in self.tensors:
        raise CheckpointFormatError(f'{self.source}: missing tensor {name!r} (expected shape '
                                    f'{shape} from config.json)')
      path, got, dtype = self.tensors[name]
      if got != shape:
        raise CheckpointFormatError(f'{path}: tensor {name!r} has shape {got}, expected '
                                    f'{shape} from config.json')
      if dtype not in _FLOAT_DTYPES:
        raise CheckpointFormatError(f'{path}: tensor {name!r} has dtype {dtype}, expected '
                                    f'one of {_FLOAT_DTYPES}')
    extra = sorted(set(self.tensors) - set(expected))
    if extra:
      raise CheckpointFormatError(f'{self.tensors[extra[0]][0]}: unexpected tensor {extra[0]!r} '
                                  f'for a Qwen2 config (not mapped to any param; {len(extra)} '
                                  'unexpected in all)')

  def read(self, name: str, mapping: Mapping, index) -> np.ndarray:
    with safetensors.safe_open(self.tensors[name][0], framework='numpy') as fh:
      return mapping.read(fh.get_slice(name), index)


def _check_tied_head(ckpt: _Checkpoint, c: QwenConfig, rows: int = 8192):
  """A tied config may still carry lm_head.weight (HF sometimes saves both): accept it only if
  it equals the embedding bit for bit, compared in row blocks (never a whole [V, D] copy)."""
  head, emb = ckpt.tensors['lm_head.weight'], ckpt.tensors['model.embed_tokens.weight']
  if head[1] != emb[1]:
    raise CheckpointFormatError(f'{head[0]}: tensor \'lm_head.weight\' has shape {head[1]}, '
                                f'expected {emb[1]} (tied to the embedding)')
  full = Mapping('', ((c.vocab_size,), (c.embed_dim,)), (0, 1))
  for r in range(0, c.vocab_size, rows):
    idx = (slice(r, min(r + rows, c.vocab_size)), slice(None))
    a = ckpt.read('lm_head.weight', full, idx).astype(np.float32)
    b = ckpt.read('model.embed_tokens.weight', full, idx).astype(np.float32)
    if not np.array_equal(a, b):
      raise CheckpointFormatError(
          f'{head[0]}: config.json ties the embeddings but \'lm_head.weight\' differs from '
          f'\'model.embed_tokens.weight\' (rows {r}..{idx[0].stop}); set tie_word_embeddings '
          'to false to load the separate head')


def _load_param(ckpt: _Checkpoint, m: Mapping, num_layers: int, sharding, dtype) -> jax.Array:
  """One param on `sharding`; each distinct shard is read from disk once.

  A stacked shard is filled layer by layer into one block of the target dtype, so the host
  holds that block plus one layer's slice as read (never a stack in the disk dtype first).
  """
  shape = ((num_layers,) if m.stacked else ()) + m.shape
  blocks = {}  # replicas of a shard share one host block

  def cb(index):
    key = tuple(s.indices(n) for s, n in zip(index, shape))
    if key not in blocks:
      if m.stacked:
        layers = range(*key[0])
        block = None
        for j, i in enumerate(layers):
          layer = ckpt.read(m.hf.format(i=i), m, index[1:])
          if block is None:
            block = np.empty((len(layers),) + layer.shape, dtype)
          block[j] = layer
      else:
        block = np.ascontiguousarray(ckpt.read(m.hf, m, index), dtype)
      blocks[key] = block
    return blocks[key]

  return jax.make_array_from_callback(shape, sharding, cb)


def weights_fingerprint(model_dir, blocks: int = 16, block_bytes: int = 4096) -> str:
  """A sha256 naming a HF directory's weights, read in well under a second at any size.

  Covers every tensor's name, dtype and shape and `blocks` evenly spaced `block_bytes` runs of
  its raw bytes (all of a tensor smaller than that): another model, or a fine-tune of the same
  one, differs in every sampled run; only a change confined to bytes between the samples goes
  unseen. The file names and layout (one file or sharded) do not enter it.
  """
  ckpt = _Checkpoint(os.fspath(model_dir))
  h = hashlib.sha256()
  by_file = {}
  for name, (path, _, _) in ckpt.tensors.items():
    by_file.setdefault(path, []).append(name)
  entries = {}
  for path, names in by_file.items():
    with open(path, 'rb') as fh:
      (n,) = struct.unpack('<Q', fh.read(8))
      header = json.loads(fh.read(n))
      for name in names:
        begin, end = header[name]['data_offsets']
        begin, end = begin + 8 + n, end + 8 + n
        size, runs = end - begin, []
        starts = ([begin] if size <= blocks * block_bytes else
                  [begin + (size - block_bytes) * k // (blocks - 1) for k in range(blocks)])
        for start in starts:
          fh.seek(start)
          runs.append(fh.read(min(block_bytes, end - start) if size > blocks * block_bytes
                              else size))
        entries[name] = (header[name]['dtype'], header[name]['shape'], b''.join(runs))
  for name in sorted(entries):
    dtype, shape, data = entries[name]
    h.update(f'{name}:{dtype}:{shape}:{len(data)}'.encode())
    h.update(data)
  return h.hexdigest()


def load_hf(model_dir, *, mesh=None, rules=sharding_lib.DEFAULT_RULES, dtype=None):
  """Loads a HF Qwen2 directory -> (QwenConfig, params), each param on its NamedSharding.

  Args:
    model_dir: directory with config.json and model.safetensors (or a sharded index).
    mesh: target mesh; None = a 1-device mesh on this process's first device (multi-host:
      every process then holds its own whole copy).
    rules: logical-axis rules (see `sharding.DEFAULT_RULES`).
    dtype: param dtype (e.g. 'bfloat16'); None keeps the config's `param_dtype` (float32).
      The returned config's `param_dtype` is set to it.

  Raises:
    FileNotFoundError: no config.json / safetensors in `model_dir`.
    CheckpointFormatError: a missing, unexpected or mis-shaped tensor (names file and tensor).
  """
  model_dir = os.fspath(model_dir)
  if not os.path.isfile(os.path.join(model_dir, 'config.json')):
    raise errors.MissingFileError(f'{model_dir} has no config.json (not a HF model directory)')
  config = QwenConfig.from_hf(model_dir)
  if dtype is not None:
    config = config.replace(param_dtype=jnp.dtype(dtype).name)
  ckpt = _Checkpoint(model_dir)
  expected = expected_hf_shapes(config)
  if config.tie_embeddings and 'lm_head.weight' in ckpt.tensors:
    _check_tied_head(ckpt, config)
    expected['lm_head.weight'] = ckpt.tensors['lm_head.weight'][1]  # checked; not loaded
  ckpt.check(expected)

  if mesh is None:
    mesh = sharding_lib.make_mesh((1, 1, 1), jax.local_devices()[:1])
  shardings = traverse_util.flatten_dict(sharding_lib.param_shardings(config, mesh, rules))
  np_dtype = np.dtype(jnp.dtype(config.param_dtype))
  params = {path: _load_param(ckpt, m, config.num_layers, shardings[path], np_dtype)
            for path, m in param_mapping(config).items()}
  return config, traverse_util.unflatten_dict(params)


# ---------------------------------------------------------------------------------------------
# Saving.
# ---------------------------------------------------------------------------------------------

def _merge(kernel, a, b, scale: float):
  """kernel[L, *in, *out] + scale·(A[L, I, R] @ B[L, R, O]) reshaped, computed in fp32.

  The result keeps fp32 when the kernel is narrower (a LoRA run's bf16 frozen base): the
  merged weights are the fp32 sum, rounded only by the export's own dtype.
  """
  xp = jnp if isinstance(kernel, jax.Array) else np
  delta = xp.einsum('lir,lro->lio', xp.asarray(a, xp.float32), xp.asarray(b, xp.float32))
  out = xp.asarray(kernel, xp.float32) + scale * delta.reshape(kernel.shape)
  return out.astype(jnp.promote_types(kernel.dtype, jnp.float32))


def merged_lora(params, config: QwenConfig):
  """Params with every LoRA pair folded into its kernel (W + scale·A·B), adapters dropped."""
  flat = traverse_util.flatten_dict(params)
  out = {}
  for path, value in flat.items():
    if path[-1] in ('lora_a', 'lora_b'):
      continue
    if path[-1] == 'kernel' and path[:-1] + ('lora_a',) in flat:
      value = _merge(value, flat[path[:-1] + ('lora_a',)], flat[path[:-1] + ('lora_b',)],
                     config.lora_scale)
    out[path] = value
  return traverse_util.unflatten_dict(out)


def _to_host(x) -> np.ndarray:
  """One param to host memory (an all-gather across processes when it spans hosts)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def _host_param(flat, path, config: QwenConfig) -> np.ndarray:
  if path not in flat:
    raise ValueError(f'params have no {"/".join(path)} (expected for this config)')
  value = _to_host(flat[path])
  lora = path[:-1] + ('lora_a',)
  if path[-1] == 'kernel' and lora in flat:
    value = _merge(value, _to_host(flat[lora]), _to_host(flat[path[:-1] + ('lora_b',)]),
                   config.lora_scale)
  return value


def _plan_shards(sizes: list[tuple[str, int]], max_bytes: int | None) -> list[list[str]]:
  """Consecutive tensors grouped so each file stays under max_bytes (one file if None)."""
  if not max_bytes or sum(n for _, n in sizes) <= max_bytes:
    return [[name for name, _ in sizes]]
  shards, size = [[]], 0
  for name, nbytes in sizes:
    if shards[-1] and size + nbytes > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  return shards


def save_hf(params, config: QwenConfig, out_dir, *, dtype: str = 'float32',
            max_shard_bytes: int | None = None, tokenizer_dir=None) -> list[str]:
  """Writes a HF Qwen2 directory (config.json + safetensors) that transformers loads.

  Every process must call this (params spanning hosts are all-gathered one at a time); only
  process 0 writes. LoRA adapters are merged into their kernels. Above `max_shard_bytes` the
  weights are split into `model-0000k-of-0000n.safetensors` with an index. Stale weight files
  of an earlier export in `out_dir` are removed. Returns the weight file names.
  """
  if dtype not in _SAVE_DTYPES:
    raise ValueError(f'dtype must be one of {sorted(_SAVE_DTYPES)}, got {dtype!r}')
  flat = traverse_util.flatten_dict(params)
  if any(p[-1] == 'lora_a' for p in flat) and not config.lora_rank:
    raise ValueError('params hold LoRA adapters but config.lora_rank is 0 (scale unknown)')
  if tokenizer_dir is not None and not os.path.isdir(tokenizer_dir):
    raise errors.MissingFileError(f'tokenizer directory {tokenizer_dir} does not exist')
  mapping = param_mapping(config)
  stray = [p for p in flat if p not in mapping and p[-1] not in ('lora_a', 'lora_b')]
  if stray:
    raise ValueError(f'params hold {"/".join(stray[0])}, which this config does not have')
  np_dtype = _SAVE_DTYPES[dtype]
  itemsize = np.dtype(np_dtype).itemsize
  order = [(m.hf.format(i=i), math.prod(m.hf_shape) * itemsize)
           for m in mapping.values() for i in (range(config.num_layers) if m.stacked else [0])]
  shards = _plan_shards(order, max_shard_bytes)
  files = ([SINGLE_FILE] if len(shards) == 1 else
           [f'model-{k + 1:05d}-of-{len(shards):05d}.safetensors' for k in range(len(shards))])
  writer = jax.process_index() == 0
  out_dir = os.fspath(out_dir)
  if writer:
    os.makedirs(out_dir, exist_ok=True)
    for fname in os.listdir(out_dir):
      if fname == INDEX_FILE or re.fullmatch(r'model(-\d+-of-\d+)?\.safetensors', fname):
        os.remove(os.path.join(out_dir, fname))

  shard_of = {name: k for k, names in enumerate(shards) for name in names}
  pending = {}
  for path, m in mapping.items():
    value = _host_param(flat, path, config)  # one param on the host at a time (collective)
    if not writer:
      continue
    for i in range(config.num_layers) if m.stacked else [None]:
      name = m.hf.format(i=i)
      pending[name] = np.ascontiguousarray(m.to_hf(value if i is None else value[i]), np_dtype)
      k = shard_of[name]
      if all(n in pending for n in shards[k]):
        save_file({n: pending.pop(n) for n in shards[k]}, os.path.join(out_dir, files[k]),
                  metadata={'format': 'pt'})

  if writer:
    if len(files) > 1:
      index = {'metadata': {'total_size': sum(n for _, n in order)},
               'weight_map': {name: files[shard_of[name]] for name in sorted(shard_of)}}
      with open(os.path.join(out_dir, INDEX_FILE), 'w') as fh:
        json.dump(index, fh, indent=2)
    with open(os.path.join(out_dir, 'config.json'), 'w') as fh:
      json.dump(config.to_hf(torch_dtype=dtype, dtype=dtype), fh, indent=2)
    for fname in TOKENIZER_FILES if tokenizer_dir is not None else ():
      src = os.path.join(tokenizer_dir, fname)
      if os.path.isfile(src):
        shutil.copyfile(src, os.path.join(out_dir, fname))
  return files
