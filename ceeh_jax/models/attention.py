"""Causal self-attention without a cache (training, scoring, prefill), four implementations.

Shape legend (as qwen2.py): B batch, T sequence, K kv heads, G query heads per kv head,
N = K·G query heads, H head dim, C block.

All take q[B,T,K,G,H] (RoPE applied, already scaled by H**-0.5), k/v[B,T,K,H] and
key_mask bool[B,T] (True on real tokens) and return [B,T,K,G,H]: query t attends to the real
keys s <= t; a query that is itself padding gets 0 (its value is never read: padded positions
predict nothing), so every implementation agrees on every position, gradients included.

  'blocked' (CPU, and the reference): flash attention in plain JAX. A `fori_loop` over query
      blocks, an inner `fori_loop` over the key blocks up to the diagonal (online softmax),
      masks built from iota inside the loop body, a custom VJP that keeps the fp32 logsumexp
      [B,K,G,T] and recomputes each block. Nothing is [T, T]: per-block masks made in a Python
      loop were loop-invariant constants, which XLA hoisted out of the layer scan and kept for
      all blocks at once (T²/C mask bytes, ~24 GiB at 21.5k tokens).
  'xla':    `jax.nn.dot_product_attention(implementation='xla')` over rows rotated so that the
      real tokens come first (see `_rotated`); materialises [B,N,T,T] logits: a small-T
      reference, and what 'cudnn' runs on a machine without a GPU.
  'cudnn':  the same call with implementation='cudnn' (GPU; bf16/fp16): cuDNN flash attention
      with a PADDING_CAUSAL mask, never [T, T].
  'splash': Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`, TPU;
      `interpret=True` elsewhere, as the tests run it): causal mask x segment ids (real = 1,
      padding = 0), one kernel call per row, GQA native.
  'auto':   'splash' on TPU, 'cudnn' on GPU with a bf16/fp16 compute dtype, else 'blocked'.

'cudnn' and 'xla' assume each row's real tokens are one contiguous run (left and/or right
padding), which is what the trainer (left-padded prompt + completion) and the sampler's
prefill build; 'blocked' and 'splash' take any key_mask.

Under a mesh (`sharding.use`), 'splash' and 'cudnn' run inside `shard_map`: each device gets
its rows (the act_batch axes, when they divide the rows) and its kv heads (the tensor axis,
when it divides K), with the whole sequence; a row spread over devices (sequence sharding) is
gathered for the call and re-split after.

Decode (one query over the cache) stays `qwen2._decode_attention`: it already reads only the
live prefix, chunk by chunk, with the cache in place. The Pallas decode kernels in jax 0.10.2
(`pallas.ops.tpu.paged_attention`, `ragged_paged_attention`) take a paged cache
([K, pages, page, H] + a page table per row); ours is one contiguous [L, B, K, S, H] buffer,
written in place inside the layer loop. Adopting them means a paged cache layout and the page
bookkeeping in the sampler: not done here.
"""
import functools

import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

IMPLEMENTATIONS = ('auto', 'blocked', 'xla', 'cudnn', 'splash')
NEG = -1e30           # finite "minus infinity" (a fully masked block gives 0, never NaN)
BLOCK = 128           # query and key block of 'blocked'
SPLASH_MULTIPLE = 128  # splash blocks are multiples of the TPU lane width


def resolve(implementation: str, dtype) -> str:
  """'auto' -> the implementation for this backend and compute dtype; others pass through."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'model.attention must be one of {IMPLEMENTATIONS}, got {implementation!r}')
  if implementation != 'auto':
    return implementation
  backend = jax.default_backend()
  if backend == 'tpu':
    return 'splash'
  if backend == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
    return 'cudnn'
  return 'blocked'


def causal_attention(q, k, v, key_mask, implementation: str = 'blocked', *,
                     block: int = BLOCK, interpret: bool | None = None):
  """Causal self-attention -> [B,T,K,G,H] (see the module docstring for the contract)."""
  impl = resolve(implementation, q.dtype)
  if impl == 'blocked':
    out = blocked_attention(q, k, v, key_mask, block)
  elif impl in ('xla', 'cudnn'):
    out = _sharded(functools.partial(_rotated, implementation=impl), q, k, v, key_mask,
                   impl == 'cudnn')
  else:
    interpret = jax.default_backend() != 'tpu' if interpret is None else interpret
    out = _sharded(functools.partial(_splash, interpret=interpret), q, k, v, key_mask, True)
  return out * key_mask[:, :, None, None, None].astype(out.dtype)


# ---------------------------------------------------------------------------------------------
# 'blocked': flash attention in plain JAX, head-major inside (q[B,K,G,T,H], k/v[B,K,T,H]) so
# every score/output einsum is a batched matmul over (B, K) without a per-block transpose.
# ---------------------------------------------------------------------------------------------

def _block_mask(key_mask, qi, kj, c):
  """bool[B,1,1,C,C]: key kj·c+s is real and not after query qi·c+t (iota, traced indices)."""
  causal = (qi * c + jnp.arange(c))[:, None] >= (kj * c + jnp.arange(c))[None]
  keys = jax.lax.dynamic_slice_in_dim(key_mask, kj * c, c, axis=1)
  return (causal[None] & keys[:, None, :])[:, None, None]


def _blocked_fwd(q, k, v, key_mask, c):
  b, kh, g, t, h = q.shape
  sl = lambda x, i, axis: jax.lax.dynamic_slice_in_dim(x, i * c, c, axis=axis)

  def q_block(i, carry):
    out, lse = carry
    qb = sl(q, i, 3)

    def kv_block(j, acc):
      m, l, o = acc
      ok = _block_mask(key_mask, i, j, c)
      s = jnp.einsum('BKGTH,BKSH->BKGTS', qb, sl(k, j, 2), preferred_element_type=jnp.float32)
      s = jnp.where(ok, s, NEG)
      m_new = jnp.maximum(m, s.max(-1))
      p = jnp.where(ok, jnp.exp(s - m_new[..., None]), 0.0)
      corr = jnp.exp(m - m_new)
      o = o * corr[..., None] + jnp.einsum('BKGTS,BKSH->BKGTH', p.astype(v.dtype), sl(v, j, 2),
                                           preferred_element_type=jnp.float32)
      return m_new, l * corr + p.sum(-1), o

    init = (jnp.full((b, kh, g, c), NEG, jnp.float32), jnp.zeros((b, kh, g, c), jnp.float32),
            jnp.zeros((b, kh, g, c, h), jnp.float32))
    m, l, o = jax.lax.fori_loop(0, i + 1, kv_block, init)  # key blocks after i: all future
    seen = l > 0  # False: the query sees no real key (left padding) -> output 0
    o = o / jnp.where(seen, l, 1.0)[..., None]
    lse_b = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
    out = jax.lax.dynamic_update_slice_in_dim(out, o.astype(out.dtype), i * c, axis=3)
    return out, jax.lax.dynamic_update_slice_in_dim(lse, lse_b, i * c, axis=3)

  out, lse = jax.lax.fori_loop(0, t // c, q_block, (jnp.zeros(q.shape, q.dtype),
                                                    jnp.zeros((b, kh, g, t), jnp.float32)))
  # Named so that a remat policy saving 'context' keeps them (else the backward pass reruns
  # this forward to get them back), as splash's residual_checkpoint_name does.
  out, lse = checkpoint_name(out, 'context'), checkpoint_name(lse, 'context')
  return out, (q, k, v, key_mask, out, lse)


def _blocked_bwd(c, res, d_out):
  """Flash-attention backward: per key block, the query blocks at or after it, probabilities
  recomputed from the saved logsumexp; dq accumulates in an fp32 buffer."""
  q, k, v, key_mask, out, lse = res
  t = q.shape[3]
  n = t // c
  sl = lambda x, i, axis: jax.lax.dynamic_slice_in_dim(x, i * c, c, axis=axis)
  d_out = d_out.astype(jnp.float32)
  delta = jnp.einsum('BKGTH,BKGTH->BKGT', out.astype(jnp.float32), d_out)

  def kv_block(j, carry):
    dq, dk, dv = carry
    kb, vb = sl(k, j, 2).astype(jnp.float32), sl(v, j, 2).astype(jnp.float32)

    def q_block(i, acc):
      dkb, dvb, dq = acc
      qb, dob = sl(q, i, 3).astype(jnp.float32), sl(d_out, i, 3)
      ok = _block_mask(key_mask, i, j, c)
      s = jnp.einsum('BKGTH,BKSH->BKGTS', qb, kb)
      p = jnp.where(ok, jnp.exp(s - sl(lse, i, 3)[..., None]), 0.0)
      dvb = dvb + jnp.einsum('BKGTS,BKGTH->BKSH', p, dob)
      ds = p * (jnp.einsum('BKGTH,BKSH->BKGTS', dob, vb) - sl(delta, i, 3)[..., None])
      dq = jax.lax.dynamic_update_slice_in_dim(
          dq, sl(dq, i, 3) + jnp.einsum('BKGTS,BKSH->BKGTH', ds, kb), i * c, axis=3)
      return dkb + jnp.einsum('BKGTS,BKGTH->BKSH', ds, qb), dvb, dq

    zeros = jnp.zeros(kb.shape, jnp.float32)
    dkb, dvb, dq = jax.lax.fori_loop(j, n, q_block, (zeros, zeros, dq))  # queries before j: none
    dk = jax.lax.dynamic_update_slice_in_dim(dk, dkb, j * c, axis=2)
    return dq, dk, jax.lax.dynamic_update_slice_in_dim(dv, dvb, j * c, axis=2)

  f32 = lambda x: jnp.zeros(x.shape, jnp.float32)
  dq, dk, dv = jax.lax.fori_loop(0, n, kv_block, (f32(q), f32(k), f32(v)))
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked_hm(q, k, v, key_mask, c):
  return _blocked_fwd(q, k, v, key_mask, c)[0]


_blocked_hm.defvjp(_blocked_fwd, _blocked_bwd)


def blocked_attention(q, k, v, key_mask, block: int = BLOCK):
  """'blocked' on q[B,T,K,G,H], k/v[B,T,K,H] -> [B,T,K,G,H]; T is padded to a block multiple
  (padded keys are masked; padded queries are dropped)."""
  t = q.shape[1]
  c = min(block, t)
  pad = -t % c
  if pad:
    widths = lambda x: [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
    q, k, v, key_mask = (jnp.pad(x, widths(x)) for x in (q, k, v, key_mask))
  out = _blocked_hm(q.transpose(0, 2, 3, 1, 4), k.transpose(0, 2, 1, 3),
                    v.transpose(0, 2, 1, 3), key_mask, c)
  return out.transpose(0, 3, 1, 2, 4)[:, :t]


# ---------------------------------------------------------------------------------------------
# 'xla' / 'cudnn': jax.nn.dot_product_attention with right padding.
# ---------------------------------------------------------------------------------------------

def _rotated(q, k, v, key_mask, *, implementation):
  """Rolls each row left by its leading pads so its real tokens start at 0 (right padding
  only), runs causal attention with per-row lengths, and rolls back."""
  b, t = key_mask.shape
  lead = jnp.argmax(key_mask, axis=1)                         # int[B] leading pads
  lengths = key_mask.sum(1).astype(jnp.int32)                 # int32[B] real tokens
  idx = (jnp.arange(t)[None] + lead[:, None]) % t             # rotated position -> original
  take = lambda x, i: jnp.take_along_axis(x, i.reshape(i.shape + (1,) * (x.ndim - 2)), axis=1)
  kk, g, h = q.shape[2:]
  out = jax.nn.dot_product_attention(
      take(q, idx).reshape(b, t, kk * g, h), take(k, idx), take(v, idx), scale=1.0,
      is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
      implementation=implementation)
  back = (jnp.arange(t)[None] - lead[:, None]) % t
  return take(out.reshape(b, t, kk, g, h), back)


# ---------------------------------------------------------------------------------------------
# 'splash': Pallas TPU splash attention, one call per row (vmap), segment ids for padding.
# ---------------------------------------------------------------------------------------------

def _splash(q, k, v, key_mask, *, interpret):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib  # pylint: disable=g-import-not-at-top
  b, t, kh, g, h = q.shape
  pad = -t % SPLASH_MULTIPLE
  if pad:  # padded tokens are their own segment (0) at the end: they change nothing
    widths = lambda x: [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)
    q, k, v, key_mask = (jnp.pad(x, widths(x)) for x in (q, k, v, key_mask))
  tp = t + pad
  c = 512 if tp % 512 == 0 else SPLASH_MULTIPLE
  sizes = splash_lib.BlockSizes(block_q=c, block_kv=c, block_kv_compute=c, block_q_dkv=c,
                                block_kv_dkv=c, block_kv_dkv_compute=c, block_q_dq=c,
                                block_kv_dq=c)
  mask = splash_lib.MultiHeadMask([splash_lib.CausalMask((tp, tp))] * (kh * g))
  kernel = splash_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                      residual_checkpoint_name='context', interpret=interpret)
  seg = key_mask.astype(jnp.int32)

  def row(q, k, v, seg):  # q[N,T,H] (head n = kv head n // G), k/v[K,T,H]
    return kernel(q, k, v, segment_ids=splash_lib.SegmentIds(q=seg, kv=seg))

  out = jax.vmap(row)(q.reshape(b, tp, kh * g, h).transpose(0, 2, 1, 3),
                      k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), seg)
  return out.transpose(0, 2, 1, 3).reshape(b, tp, kh, g, h)[:, :t]


# ---------------------------------------------------------------------------------------------
# Kernels under a mesh: shard_map over rows and kv heads.
# ---------------------------------------------------------------------------------------------

def _sharded(fn, q, k, v, key_mask, manual: bool):
  """Runs fn per device shard (rows over the act_batch axes, kv heads over the tensor axis,
  each where it divides) when traced under a mesh and `manual`; else fn on the whole arrays.

  A custom kernel (Pallas, cuDNN) is one opaque call to the partitioner, which would otherwise
  gather all rows and heads onto every device."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from ceeh_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if not manual or mesh.empty or not rules or all(s == 1 for s in mesh.shape.values()):
    return fn(q, k, v, key_mask)
  spec = sharding_lib.spec_for(('act_batch', None, 'act_heads', None, None), q.shape, mesh,
                               rules)
  rows, heads = spec[0], spec[2]
  P = jax.sharding.PartitionSpec
  q_spec, kv_spec, m_spec = P(rows, None, heads), P(rows, None, heads), P(rows)
  return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, m_spec),
                       out_specs=q_spec, check_vma=False)(q, k, v, key_mask)


def dense_reference(q, k, v, key_mask):
  """The masked softmax over [B,K,G,T,T] probabilities, in fp32 (tests' reference)."""
  t = q.shape[1]
  ok = jnp.tril(jnp.ones((t, t), bool))[None] & key_mask[:, None, :]
  s = jnp.einsum('BTKGH,BSKH->BKGTS', q.astype(jnp.float32), k.astype(jnp.float32))
  s = jnp.where(ok[:, None, None], s, NEG)
  p = jnp.where(ok[:, None, None], jax.nn.softmax(s, axis=-1), 0.0)
  out = jnp.einsum('BKGTS,BSKH->BTKGH', p, v.astype(jnp.float32))
  return (out * key_mask[:, :, None, None, None]).astype(q.dtype)

