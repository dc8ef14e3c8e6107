"""Content checksums of a pytree of arrays, computed where the arrays live (one jitted pass).

A checkpoint records `tree_checksums(state)` at save and compares it at restore (see
checkpointing.py), so bytes changed on disk are caught even when the file stays readable.

Per leaf, over its 32-bit words w_i (narrower dtypes widened, 64-bit ones split in two) at
row-major index i, two lanes k = 0, 1 with seeds s_k and odd multipliers A, B_k:

    lane_k = sum_i fmix32((w_i ^ s_k) * A + i * B_k)   mod 2^32

fmix32 (MurmurHash3's finaliser) and multiplication by an odd number are bijections of
uint32, so each term is a bijection of w_i: changing any one word always changes both lanes;
the index term makes moved words count; several changed words cancel with probability
~2^-64. The sum is order-free, so the value does not depend on how the array is sharded or
how many hosts hold it, nothing is gathered, and the cost is one memory-bound pass over the
state on its own devices (numbers in docs/checkpoint_checksums.md). Not a cryptographic
hash: it detects corruption, not tampering.
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


def _leaf_lanes(x) -> jax.Array:
  """uint32[2]: the two lanes of one leaf."""
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


@jax.jit
def _lanes(leaves):
  """uint32[L, 2] for a list of L leaves (one program; the result is replicated)."""
  return jnp.stack([_leaf_lanes(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


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
  lanes = _lanes([x for _, x in flat])
  if not lanes.is_fully_addressable:  # replicated across processes: read the local copy
    lanes = lanes.addressable_data(0)
  lanes = np.asarray(jax.device_get(lanes))
  return {path_str(p): f'{_describe(x)} {int(a):08x}{int(b):08x}'
          for (p, x), (a, b) in zip(flat, lanes)}


def _describe(x) -> str:
  return f"{jnp.dtype(x.dtype).name}[{','.join(map(str, x.shape))}]"


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
