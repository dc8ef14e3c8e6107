"""Content checksums of a pytree of arrays, computed where the arrays live.

A checkpoint records `tree_checksums(state)` at save and compares it at restore (see
checkpointing.py), so bytes changed on disk are caught even when the file stays readable.

Per leaf, over its 32-bit words w_i (narrower dtypes widened, 64-bit ones split in two) at
row-major index i, two lanes k = 0, 1 with seeds s_k and odd multipliers A, B_k:

    lane_k = sum_i fmix32((w_i ^ s_k) * A + i * B_k)   mod 2^32

fmix32 (MurmurHash3's finaliser) and multiplication by an odd number are bijections of
uint32, so each term is a bijection of w_i: changing any one word always changes both lanes;
the index term makes moved words count; several changed words cancel with probability
~2^-64. The sum is order-free, so the value does not depend on how the array is sharded or
how many hosts hold it and nothing is gathered: on accelerators one jitted memory-bound pass
per leaf on its own devices, for host arrays the same sums in numpy (cost measured in
experiments/bench/checkpoint_checksums.md). Not a cryptographic hash: it detects
corruption, not tampering.
"""
import jax
import jax.numpy as jnp
import numpy as np

ALGORITHM = 'fmix32-sum-x2-v1'
_SEEDS = (0x9E3779B9, 0x85EBCA77)
_A = 0xCC9E2D51
_B = (0x1B873593, 0xE6546B65)


def _fmix32(h):
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(x) -> jax.Array:
  """The leaf's bytes as uint32 words, shape x.shape (+ [2] for 64-bit dtypes)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = jnp.dtype(x.dtype).itemsize
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f'checksum: complex leaves are not supported ({x.dtype})')
  if size == 1:
    return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
  if size == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
  return jax.lax.bitcast_convert_type(x, jnp.uint32)  # 4 bytes: same shape; 8: [..., 2]


@jax.jit
def _leaf_lanes(x) -> jax.Array:
  """uint32[2]: the two lanes of one leaf (replicated on the leaf's devices)."""
  w = _words(x)
  index = jnp.zeros(w.shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(w.ndim)):  # row-major linear index, wrapping past 2^32
    index = index + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride)
    stride = (stride * w.shape[axis]) % 2**32
  lanes = []
  for seed, b in zip(_SEEDS, _B):
    terms = _fmix32((w ^ jnp.uint32(seed)) * jnp.uint32(_A) + index * jnp.uint32(b))
    lanes.append(jnp.sum(terms, dtype=jnp.uint32))
  return jnp.stack(lanes)


def path_str(path) -> str:
  """A key path as 'a/0/b', the same for a TrainState and for orbax's untyped restore of it
  (attribute names and dict keys both become their names, sequence indices their numbers)."""
  parts = []
  for entry in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return '/'.join(parts)


def tree_checksums(tree) -> dict[str, str]:
  """{leaf path: 'dtype[shape] 16-hex-digit checksum'} of every array leaf of `tree`.

  A collective when the arrays span processes (every process calls it, same tree).
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  flat = [(p, x) for p, x in flat if hasattr(x, 'shape') and hasattr(x, 'dtype')]
  # Arrays in host memory (numpy, or jax on CPU devices of this process) are summed by numpy
  # in cache-sized chunks: no compile, no temporaries (XLA:CPU neither fuses nor vectorises
  # this integer reduction). Accelerator arrays get one program per leaf (compiled once per
  # shape, dtype and sharding; all dispatched before any result is read), so an unfused
  # backend would hold one leaf's temporaries at a time, never the whole state's.
  lanes = [_host_lanes(x) if _on_host(x) else _leaf_lanes(x) for _, x in flat]
  return {path_str(p): f'{_describe(x)} {a:08x}{b:08x}'
          for (p, x), (a, b) in zip(flat, map(_to_host, lanes))}


def _on_host(x) -> bool:
  if not isinstance(x, jax.Array):
    return True
  return x.is_fully_addressable and all(d.platform == 'cpu' for d in x.sharding.device_set)


def _to_host(lanes) -> tuple[int, int]:
  if isinstance(lanes, tuple):
    return lanes
  if not lanes.is_fully_addressable:  # replicated across processes: read the local copy
    lanes = lanes.addressable_data(0)
  a, b = np.asarray(jax.device_get(lanes))
  return int(a), int(b)


def _host_lanes(x, chunk: int = 1 << 16) -> tuple[int, int]:
  """The same two lanes as `_leaf_lanes`, with numpy over the row-major words."""
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  a = np.ascontiguousarray(np.asarray(x))
  if a.dtype == np.bool_:
    words = a.reshape(-1).astype(np.uint32)
  elif a.dtype.kind == 'c':
    raise TypeError(f'checksum: complex leaves are not supported ({a.dtype})')
  else:
    unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[a.dtype.itemsize]
    words = a.reshape(-1).view(unsigned).astype(np.uint32, copy=False)  # 8 bytes: lo, hi
  lanes = [0, 0]
  base = np.arange(min(chunk, words.size), dtype=np.uint32)
  h, t = np.empty_like(base), np.empty_like(base)
  for start in range(0, words.size, chunk):
    w = words[start:start + chunk]
    n = w.size
    index = base[:n] + np.uint32(start % 2**32)
    for k, (seed, b) in enumerate(zip(_SEEDS, _B)):
      hk, tk = h[:n], t[:n]
      np.bitwise_xor(w, np.uint32(seed), out=hk)
      hk *= np.uint32(_A)
      np.multiply(index, np.uint32(b), out=tk)
      hk += tk
      for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):  # fmix32
        np.right_shift(hk, shift, out=tk)
        hk ^= tk
        if mult is not None:
          hk *= np.uint32(mult)
      lanes[k] = (lanes[k] + int(hk.sum(dtype=np.uint32))) % 2**32
  return lanes[0], lanes[1]


def _describe(x) -> str:
  return f"{x.dtype}[{','.join(map(str, x.shape))}]"


def mismatches(saved: dict[str, str], current: dict[str, str]) -> list[str]:
  """Paths whose checksum differs between `saved` and `current`.

  Only leaves present in both with the same dtype and shape are compared: a leaf restored
  into another dtype or shape (a changed config) cannot be checked against the saved bytes.
  """
  bad = []
  for path, value in current.items():
    old = saved.get(path)
    if old is None:
      continue
    old_kind, _, old_sum = old.rpartition(' ')
    kind, _, now_sum = value.rpartition(' ')
    if old_kind == kind and old_sum != now_sum:
      bad.append(path)
  return bad
