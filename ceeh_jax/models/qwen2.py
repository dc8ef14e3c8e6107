"""Qwen2 / Qwen2.5 decoder in Flax Linen, with a KV-cache decode path.

Shape legend:
  B batch            T query length       S key / cache length     L layers
  D model dim        F mlp dim            V vocab                  C decode chunk
  N query heads      K kv heads           G query heads per kv head (N // K)
  H head dim         R LoRA rank

Param tree (layers stacked on a leading L axis by `nn.scan`; `hf_io.py` maps it to HF names):
  embedding                 [V, D]
  layers/pre_attn_norm/scale [L, D]      layers/pre_mlp_norm/scale [L, D]
  layers/attn/q/{kernel [L, D, N, H], bias [L, N, H]}
  layers/attn/{k,v}/{kernel [L, D, K, H], bias [L, K, H]}
  layers/attn/o/kernel      [L, N, H, D]
  layers/mlp/{gate,up}/kernel [L, D, F]  layers/mlp/down/kernel [L, F, D]
  final_norm/scale          [D]
  lm_head                   [D, V]       (absent when embeddings are tied)
  .../lora_a [L, in, R], .../lora_b [L, R, out]  (only with lora_rank > 0)
With `scan_layers=False` each layer has its own subtree `layer_{i}` (the same names, no L
axis); `unstack_layers` / `stack_layers` convert.

Three attention modes, picked statically:
  * no cache: causal self-attention over the T tokens (training, scoring), by the kernel
    `QwenConfig.attention` names (attention.py: splash on TPU, cuDNN on GPU, blocked JAX
    flash attention elsewhere);
  * prefill (cache given, T > 1): the same, and the keys/values are written to cache[:, :T];
  * decode (cache given, T == 1): the new key/value is written at `cache_end`, and the query
    attends to the live part [0, cache_end] chunk by chunk (online softmax), so one step costs
    O(live length), not O(preallocated length).

KV cache layout [L, B, K, S, H]: each (row, kv head) holds its keys as one contiguous [S, H]
matrix, so a decode chunk is a plain batched matmul operand (no per-step transpose). In decode
the whole stacked cache rides the layers as carry (the scan's, or the unrolled loop's with
`scan_layers=False`, which the sampler uses) and each layer writes its slot in place (as
scanned input/output it was sliced and re-stacked: two full cache copies per token).
"""
import functools
import math

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import attention as attention_lib
from ceeh_jax.models.config import QwenConfig

_NEG = -1e30  # finite "minus infinity": fully padded rows give a uniform, not NaN, softmax

Cache = dict  # {'k': dtype[L, B, K, S, H], 'v': dtype[L, B, K, S, H]}

_save = jax.checkpoint_policies.save_only_these_names
# What the backward pass keeps of each layer (besides its input, which the layer scan keeps
# anyway). The projections are named (`checkpoint_name`) on their final activation-dtype
# output, after the bias and the LoRA delta: a policy that saves a name keeps that bf16
# [rows, out] tensor, never the fp32 accumulation of the matmul or of the LoRA delta.
# 'context' is the attention output and its fp32 logsumexp, named where the 'blocked' and
# 'splash' kernels make their residuals (saving it spares the backward a second attention
# forward). Per token per layer at the 1.5B shape: q 3 KiB, k+v 1 KiB, context 3 KiB
# (+ 48 B), o 3 KiB, gate+up 35 KiB.
_REMAT = {
    'full': jax.checkpoint_policies.nothing_saveable,                   # recompute everything
    'save_qkv_proj': _save('q_proj', 'k_proj', 'v_proj'),
    'save_dot_except_mlp': _save('q_proj', 'k_proj', 'v_proj', 'context', 'o_proj'),
    'save_dots': _save('q_proj', 'k_proj', 'v_proj', 'context', 'o_proj', 'gate_proj',
                       'up_proj', 'down_proj'),
    # Saves every dot's output as the dot made it: the projections' fp32 accumulations
    # ([T, 8960] f32 for gate and up) and LoRA's fp32 [T, out] delta. Kept for comparison;
    # the save_* policies above keep the same tensors in bf16.
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


# Stored as bits when frozen (a LoRA run's base: `policy.load_base`): the layer stack, which
# the layer scan slices, and the embedding table, whose rows are gathered.
BITS_KEYS = ('layers', 'embedding')


def to_bits(x):
  """A bf16 weight as its uint16 bit pattern (other dtypes unchanged), for weights that are
  not differentiated.

  XLA:CPU has no bf16 slicing or gathering: slicing a bf16 [L, ...] stack in the layer scan,
  or gathering rows of a bf16 embedding, converts the whole array to fp32, and the convert,
  loop-invariant, is hoisted out of the loop: an fp32 copy of every frozen weight as temp
  (6.6 GB of layers and 0.9 GB of embedding at the 1.5B shape, in the train step and in each
  decode). Slices and rows of the bits are read back as bf16 (`from_bits`) with the same values
  on every backend. Inside a jitted program the bitcast of a whole stack is itself a copy:
  store the bits (BITS_KEYS), do not make them per call.
  """
  return jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype == jnp.bfloat16 else x


def from_bits(x):
  """A param as stored, or a bf16 one stored by `to_bits` read back as bf16."""
  return jax.lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x


def _init(std=0.02):
  return nn.initializers.normal(stddev=std)


def _matmul(x, w):
  """x [..., in] · w [in, out] in x's dtype, accumulated in fp32 (as the MXU does): for bf16
  XLA:CPU otherwise converts both operands to f32 around the dot (5.7x slower at 32 rows)."""
  return jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype)


class Proj(nn.Module):
  """A projection `x · kernel (+ bias)`, with an optional LoRA delta `x·A·B·scale`.

  The kernel contracts the last `num_in` dims of x (e.g. [D] -> [N, H] for q, [N, H] -> [D]
  for o). It runs as one 2D matmul [rows, in] x [in, out] (leading dims and head dims
  flattened, free reshapes): with the leading dims kept, XLA:CPU transposed the activations
  for every weight-gradient dot (~half of a tiny train step). Except when the sequence is
  split over devices (a micro-batch with fewer rows than the batch axes, `sharding.constrain`):
  merging the replicated rows with a split sequence is no tiling of [rows], and the
  partitioner gathered the whole micro-batch on every device (1.5B, 4 rows on 8 devices,
  2k tokens: 38 GiB temp instead of 6); then the dot keeps [B, T].
  """
  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  num_in: int                      # how many trailing dims of x the kernel contracts
  use_bias: bool = False
  lora_rank: int = 0
  lora_scale: float = 0.0
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, lora_on: bool = True):
    kernel = from_bits(self.param('kernel', nn.with_logical_partitioning(_init(), self.kernel_axes),
                               self.kernel_shape, self.param_dtype))
    in_shape, out_shape = self.kernel_shape[:self.num_in], self.kernel_shape[self.num_in:]
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    lead = x.shape[:x.ndim - self.num_in]
    spec = sharding_lib.current_spec(('act_batch', 'act_length'), lead[:2])
    split_sequence = len(lead) == 2 and spec is not None and spec[1] is not None
    xf = x.reshape(lead + (n_in,) if split_sequence else (-1, n_in)).astype(self.dtype)
    y = _matmul(xf, kernel.reshape(n_in, n_out).astype(self.dtype)).reshape(lead + out_shape)
    if self.use_bias:
      out_axes = self.kernel_axes[self.num_in:]
      bias = from_bits(self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros,
                                                                     out_axes),
                               out_shape, self.param_dtype))
      y = y + bias.astype(self.dtype)
    if self.lora_rank:
      a = self.param('lora_a', nn.with_logical_partitioning(_init(1 / n_in ** 0.5), (None, None)),
                     (n_in, self.lora_rank), self.param_dtype)
      b = self.param('lora_b', nn.with_logical_partitioning(nn.initializers.zeros, (None, None)),
                     (self.lora_rank, n_out), self.param_dtype)
      if lora_on:  # off = the frozen base model, i.e. the reference policy
        delta = _matmul(_matmul(xf, a.astype(self.dtype)), b.astype(self.dtype))
        y = y + (self.lora_scale * delta).reshape(y.shape).astype(self.dtype)
    return checkpoint_name(y, f'{self.name}_proj')  # what the remat policies save (_REMAT)


class RMSNorm(nn.Module):
  """RMSNorm computed in fp32, scaled in the activation dtype (as HF Qwen2)."""
  eps: float
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x):
    scale = from_bits(self.param('scale', nn.with_logical_partitioning(nn.initializers.ones,
                                                                    ('norm',)),
                              (x.shape[-1],), self.param_dtype))
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return scale.astype(self.dtype) * xf.astype(self.dtype)


def rope_angles(positions, head_dim: int, theta: float):
  """int32[B, T] positions -> (sin, cos) f32[B, T, H/2], computed in fp32."""
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / (jnp.float32(theta) ** exponents)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x, sin, cos):
  """Rotate-half RoPE on x[B, T, heads, H] with sin/cos f32[B, T, H/2] (HF convention)."""
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  sin, cos = sin[:, :, None, :], cos[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _full_attention(q, k, v, mask):
  """q[B,T,K,G,H], k/v[B,S,K,H], mask bool[B,T,S] -> out [B,T,K,G,H], probs f32[B,K,G,T,S]."""
  logits = jnp.einsum('BTKGH,BSKH->BKGTS', q, k, preferred_element_type=jnp.float32)
  logits = jnp.where(mask[:, None, None], logits, _NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('BKGTS,BSKH->BTKGH', probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32).astype(v.dtype)
  return out, probs


def causal_attention(q, k, v, key_mask, block: int = attention_lib.BLOCK):
  """The 'blocked' training attention (`attention.causal_attention`) -> out [B, T, K, G, H]."""
  return attention_lib.causal_attention(q, k, v, key_mask, 'blocked', block=block)


def _decode_attention(q, k_cache, v_cache, layer, key_mask, live, chunk: int):
  """One query per row over layer `layer`'s live cache prefix, chunk by chunk (online softmax).

  q[B,K,G,H]; k/v_cache[L,B,K,S,H] (the whole stack: chunks are read in place); layer int32[];
  key_mask bool[B,S]; live int32[] = valid prefix length. Returns [B,K,G,H]. Work is
  proportional to `live`, not to S.
  """
  _, b, kh, _, h = k_cache.shape
  g = q.shape[2]

  def body(c, carry):
    m, l, acc = carry
    read = lambda x: jax.lax.dynamic_slice(x, (layer, 0, 0, c * chunk, 0),
                                           (1, b, kh, chunk, h))[0]
    k, v = read(k_cache), read(v_cache)
    idx = c * chunk + jnp.arange(chunk)
    ok = jax.lax.dynamic_slice_in_dim(key_mask, c * chunk, chunk, axis=1) & (idx < live)[None]
    s = jnp.einsum('BKGH,BKCH->BKGC', q, k, preferred_element_type=jnp.float32)
    s = jnp.where(ok[:, None, None], s, _NEG)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.where(ok[:, None, None], jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)
    l = l * corr + p.sum(-1)
    acc = acc * corr[..., None] + jnp.einsum('BKGC,BKCH->BKGH', p.astype(v.dtype), v,
                                             preferred_element_type=jnp.float32)
    return m_new, l, acc

  init = (jnp.full((b, kh, g), _NEG, jnp.float32), jnp.zeros((b, kh, g), jnp.float32),
          jnp.zeros((b, kh, g, h), jnp.float32))
  n_chunks = (live + chunk - 1) // chunk
  _, l, acc = jax.lax.fori_loop(0, n_chunks, body, init)
  return (acc / jnp.maximum(l, 1e-30)[..., None]).astype(q.dtype)


def attention_received(probs, key_mask):
  """Mean attention that later valid tokens pay to each key: f32[B,K,G,T,T] -> f32[B,T].

  Averages p[j -> i] over heads and over valid queries j > i (ENTRA's mu_i); 0 where no later
  valid token exists.
  """
  t = probs.shape[-1]
  later = jnp.arange(t)[:, None] > jnp.arange(t)[None, :]                 # [j, i]: j > i
  w = later[None] & key_mask[:, :, None]                                   # [B, j, i]
  total = jnp.einsum('BKGJI,BJI->BI', probs, w.astype(probs.dtype))
  count = w.sum(1) * probs.shape[1] * probs.shape[2]
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


class Attention(nn.Module):
  config: QwenConfig
  mode: str  # 'full' | 'prefill' | 'decode'
  need_probs: bool = False  # 'full' only: return the [B,K,G,T,S] probabilities (ENTRA's mu)

  @nn.compact
  def __call__(self, x, sin, cos, key_mask, cache, layer, cache_end, lora_on):
    """`cache`: this layer's {'k','v': [B,K,S,H]} (prefill), the whole stack
    {'k','v': [L,B,K,S,H]} with `layer` its index (decode), or None (no cache)."""
    cfg = self.config
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    g = n // k
    proj = functools.partial(Proj, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    lora = lambda name: dict(lora_rank=cfg.lora_rank if name in cfg.lora_targets else 0,
                             lora_scale=cfg.lora_scale)
    q = proj((d, n, h), ('embed', 'q_heads', 'head_dim'), 1, True,
             name='q', **lora('q'))(x, lora_on)
    kk = proj((d, k, h), ('embed', 'kv_heads', 'head_dim'), 1, True,
              name='k', **lora('k'))(x, lora_on)
    vv = proj((d, k, h), ('embed', 'kv_heads', 'head_dim'), 1, True,
              name='v', **lora('v'))(x, lora_on)
    q = apply_rope(q, sin, cos) * jnp.asarray(h ** -0.5, q.dtype)
    kk = apply_rope(kk, sin, cos)
    b, t = x.shape[:2]
    q = q.reshape(b, t, k, g, h)

    probs = None
    new_cache = cache
    # [B, T, K, H] -> [B, K, T, H], the cache's per-head layout.
    as_cache = lambda x: x.transpose(0, 2, 1, 3).astype(cache['k'].dtype)
    if self.mode == 'decode':
      write = lambda c, x: jax.lax.dynamic_update_slice(c, as_cache(x)[None],
                                                        (layer, 0, 0, cache_end, 0))
      kc, vc = write(cache['k'], kk), write(cache['v'], vv)
      new_cache = {'k': kc, 'v': vc}
      s_len = kc.shape[3]
      chunk = min(cfg.decode_chunk, s_len)
      if s_len % chunk:  # a ragged last chunk would be clamped and read wrong keys
        raise ValueError(f'cache length {s_len} must be a multiple of decode_chunk '
                         f'{chunk} (init_cache rounds it up)')
      out = _decode_attention(q[:, 0], kc, vc, layer, key_mask, cache_end + 1, chunk)[:, None]
    elif self.need_probs:  # 'full' only (ENTRA's mu needs the probabilities)
      mask = jnp.tril(jnp.ones((t, t), bool))[None] & key_mask[:, None, :t]
      out, probs = _full_attention(q, kk, vv, mask)
    else:  # 'full' or 'prefill': never a [B, K, G, T, T] matrix (attention.py)
      out = attention_lib.causal_attention(q, kk, vv, key_mask[:, :t], cfg.attention)
      if self.mode == 'prefill':
        new_cache = {'k': jax.lax.dynamic_update_slice_in_dim(cache['k'], as_cache(kk), 0, 2),
                     'v': jax.lax.dynamic_update_slice_in_dim(cache['v'], as_cache(vv), 0, 2)}
    out = out.reshape(b, t, n, h)  # 'context': named inside the kernels, with their residuals
    out = sharding_lib.constrain(out, ('act_batch', 'act_length', 'act_heads', None))
    y = proj((n, h, d), ('q_heads', 'head_dim', 'embed'), 2, False,
             name='o', **lora('o'))(out, lora_on)
    return y, new_cache, probs


class Mlp(nn.Module):
  config: QwenConfig

  @nn.compact
  def __call__(self, x, lora_on):
    cfg = self.config
    proj = functools.partial(Proj, dtype=cfg.dtype, param_dtype=cfg.param_dtype, num_in=1,
                             lora_scale=cfg.lora_scale)
    rank = lambda name: cfg.lora_rank if name in cfg.lora_targets else 0
    d, f = cfg.embed_dim, cfg.mlp_dim
    gate = proj((d, f), ('embed', 'mlp'), name='gate', lora_rank=rank('gate'))
    up = proj((d, f), ('embed', 'mlp'), name='up', lora_rank=rank('up'))
    down = proj((f, d), ('mlp', 'embed'), name='down', lora_rank=rank('down'))
    hidden = nn.silu(gate(x, lora_on)) * up(x, lora_on)
    hidden = sharding_lib.constrain(hidden, ('act_batch', 'act_length', 'act_mlp'))
    return down(hidden, lora_on)


class Block(nn.Module):
  """One pre-norm decoder layer; the scan body.

  Carry: the residual stream x, or in decode (x, whole cache stack, layer index) so the
  cache is updated in place. Scanned input: this layer's cache slice (prefill) or None.
  """
  config: QwenConfig
  mode: str
  lora_on: bool = True
  want_mu: bool = False

  @nn.compact
  def __call__(self, carry, layer_cache, sin, cos, key_mask, cache_end):
    cfg = self.config
    decode = self.mode == 'decode'
    x, cache, layer = carry if decode else (carry, layer_cache, None)
    norm = functools.partial(RMSNorm, cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype)
    attn_out, new_cache, probs = Attention(cfg, self.mode, self.want_mu, name='attn')(
        norm(name='pre_attn_norm')(x), sin, cos, key_mask, cache, layer, cache_end, self.lora_on)
    x = x + attn_out
    x = x + Mlp(cfg, name='mlp')(norm(name='pre_mlp_norm')(x), self.lora_on)
    x = sharding_lib.constrain(x, ('act_batch', 'act_length', 'act_embed'))
    if decode:
      return (x, new_cache, layer + 1), (None, None)
    mu = attention_received(probs, key_mask[:, :x.shape[1]]) if self.want_mu else None
    return x, (new_cache, mu)


class Qwen2(nn.Module):
  """Qwen2 causal LM. See the module docstring for modes and the param tree."""
  config: QwenConfig

  @nn.compact
  def __call__(self, tokens, positions, key_mask=None, cache=None, cache_end=None, *,
               return_hidden: bool = False, lora_on: bool = True, return_mu: bool = False,
               last_only: bool = False):
    """Runs the decoder.

    Args:
      tokens: int32[B, T].
      positions: int32[B, T] RoPE positions (left-padded rows start at 0 on their first token).
      key_mask: bool[B, S], True on real tokens; S = T without a cache, else the cache length.
        None means no padding.
      cache: {'k','v': [L, B, K, S, H]} or None. With T > 1 it must be empty (prefill).
      cache_end: int32[] slot of the new token when decoding (T == 1).
      return_hidden: return the final-norm hidden states [B, T, D] instead of logits.
      lora_on: False runs the base model (LoRA adapters off): the reference policy.
      return_mu: also return the final layer's attention-received mu f32[B, T] (ENTRA).
      last_only: logits (or hidden) of the last position only, [B, 1, ...] (prefill: the
        first sampled token needs nothing else; saves the [B, T, V] head matmul).

    Returns:
      (logits f32[B, T, V] or hidden [B, T, D], new cache or None[, mu f32[B, T]]).
    """
    cfg = self.config
    b, t = tokens.shape
    mode = 'full' if cache is None else ('decode' if t == 1 else 'prefill')
    if mode == 'decode' and cache_end is None:
      raise ValueError('decoding with a cache needs cache_end (the slot of the new token)')
    if return_mu and mode != 'full':
      raise ValueError('return_mu is only available without a cache')
    if key_mask is None:
      key_mask = jnp.ones((b, t if cache is None else cache['k'].shape[3]), bool)
    if cache_end is None:
      cache_end = jnp.zeros((), jnp.int32)

    embedding = self.param('embedding', nn.with_logical_partitioning(_init(), ('vocab', 'embed')),
                           (cfg.vocab_size, cfg.embed_dim), cfg.param_dtype)
    # Rows gathered as stored (bits of a frozen bf16 table: `to_bits`), then read as floats.
    x = from_bits(jnp.take(embedding, tokens, axis=0)).astype(cfg.dtype)
    x = sharding_lib.constrain(x, ('act_batch', 'act_length', 'act_embed'))
    sin, cos = rope_angles(positions, cfg.head_dim, cfg.rope_theta)

    block = Block
    if cfg.remat_policy != 'none':
      block = nn.remat(Block, policy=_REMAT[cfg.remat_policy], prevent_cse=False)
    decode = mode == 'decode'
    if cfg.scan_layers:
      layers = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True},
                       in_axes=(nn.broadcast if decode else 0,) + (nn.broadcast,) * 4,
                       length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
      layers = layers(cfg, mode, lora_on, return_mu, name='layers')
      if decode:
        (x, new_cache, _), (_, mu) = layers((x, cache, jnp.zeros((), jnp.int32)), None, sin,
                                            cos, key_mask, cache_end)
      else:
        x, (new_cache, mu) = layers(x, cache, sin, cos, key_mask, cache_end)
        mu = None if mu is None else mu[-1]
    else:  # the same blocks unrolled, each with its own weights
      carry, per_layer = ((x, cache, 0) if decode else x), []
      for i in range(cfg.num_layers):
        layer_cache = None if decode or cache is None else jax.tree.map(lambda c: c[i], cache)
        carry, (layer_cache, mu) = block(cfg, mode, lora_on, return_mu, name=f'layer_{i}')(
            carry, layer_cache, sin, cos, key_mask, cache_end)
        per_layer.append(layer_cache)
      if decode:
        x, new_cache, _ = carry
      else:
        x, new_cache = carry, None if cache is None else jax.tree.map(
            lambda *c: jnp.stack(c), *per_layer)
    if last_only:
      x = x[:, -1:]
    x = RMSNorm(cfg.rms_norm_eps, cfg.dtype, cfg.param_dtype, name='final_norm')(x)

    if return_hidden:
      out = x
    elif cfg.tie_embeddings:
      out = jnp.einsum('BTD,VD->BTV', x, from_bits(embedding).astype(cfg.dtype),
                       preferred_element_type=jnp.float32)
    else:
      head = self.param('lm_head', nn.with_logical_partitioning(_init(), ('embed', 'vocab')),
                        (cfg.embed_dim, cfg.vocab_size), cfg.param_dtype)
      out = jnp.einsum('BTD,DV->BTV', x, head.astype(cfg.dtype),
                       preferred_element_type=jnp.float32)
    if return_mu:
      return out, new_cache, mu
    return out, new_cache


def unembedding(params, config: QwenConfig):
  """The [D, V] output projection (the transposed embedding when tied)."""
  if config.tie_embeddings:
    return from_bits(params['embedding']).T
  return params['lm_head']


def is_scanned(params) -> bool:
  """True for the stacked param tree ({'layers': [L, ...]}), False for the unrolled one."""
  return 'layers' in params


def unstack_layers(params):
  """Stacked params {'layers': [L, ...]} -> unrolled {'layer_0': ..., 'layer_{L-1}': ...}.

  For `QwenConfig.scan_layers=False`; the other entries are shared, the layer slices are new
  arrays (under jit: one copy of the layer weights).
  """
  layers = params['layers']
  n = jax.tree.leaves(layers)[0].shape[0]
  out = {k: v for k, v in params.items() if k != 'layers'}
  out.update({f'layer_{i}': jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)})
  return out


def stack_layers(params):
  """Inverse of `unstack_layers`."""
  n = sum(k.startswith('layer_') for k in params)
  out = {k: v for k, v in params.items() if not k.startswith('layer_')}
  out['layers'] = jax.tree.map(lambda *x: jnp.stack(x), *[params[f'layer_{i}'] for i in range(n)])
  return out


def init_cache(config: QwenConfig, batch: int, length: int, dtype=None) -> Cache:
  """Zeros KV cache {'k','v': [L, B, K, S, H]}; S rounded up to the decode chunk."""
  chunk = config.decode_chunk
  length = -(-length // chunk) * chunk if length > chunk else length
  shape = (config.num_layers, batch, config.num_kv_heads, length, config.head_dim)
  dtype = dtype or config.dtype
  return {'k': jnp.zeros(shape, dtype), 'v': jnp.zeros(shape, dtype)}


def positions_from_mask(mask):
  """bool[B, T] left-padded mask -> int32[B, T] positions (0 on each row's first real token)."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def init_params(config: QwenConfig, rng):
  """Random params (boxed with logical axes stripped) for a config."""
  model = Qwen2(config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = model.init(rng, tokens, tokens)
  return nn.meta.unbox(variables['params'])
