"""The jitted rollout sampler: prefill once per prompt, decode G samples in one while_loop.

Shape legend: B prompts, G samples per prompt, R = B·G rows, P prompt bucket (power of two),
M max new tokens, S cache length (>= P + M, a multiple of the decode chunk), V vocab.

Contract (DESIGN.md "Sampler contract"):
  * prompts are left-padded into a power-of-two bucket P, prefilled once, and the prompt cache
    is repeated G times (no prompt is encoded twice);
  * one `lax.while_loop` decodes until every row is done or M tokens were made; its state is
    donated, so the cache is updated in place;
  * sampling is temperature -> top-k -> top-p -> categorical, with a key folded per step from
    the per-call key;
  * log-probs are of the sampled token under the temperature-scaled full distribution (the
    distribution the PPO ratio must use), computed in fp32;
  * the EOS token stays in the completion and in its mask;
  * on CPU the layers are unrolled over per-layer weights (`SampleConfig.unroll_layers`
    'auto', `QwenConfig.scan_layers=False`): a scanned decode step slices every weight out of
    the [L, ...] stack, and XLA:CPU copies each slice (a full weight copy per token: +40% step
    time at the 0.5B shape); on TPU/GPU the scan stays and the sampler reads the stacked
    params (no second copy of the weights). Tied embeddings get a [D, V] head copy in the
    sampler's view (`sampling_params`).
"""
import dataclasses
import functools
import math
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

MIN_BUCKET = 16
_PAIRWISE_VOCAB = 256      # up to this vocabulary, top-p compares all token pairs (no sort)
_NUCLEUS_PROPOSALS = 3     # top-p: full-law draws tried before the exact threshold search


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """How to sample. temperature 0 = greedy; top_k 0 and top_p 1.0 switch those filters off."""
  max_new_tokens: int = 128
  temperature: float = 0.6
  top_k: int = 0
  top_p: float = 0.95
  num_samples: int = 1               # G
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  # Decode over per-layer weights (see the module docstring). False keeps the layer scan: one
  # layer program (1.5B: compile 22 -> 6 s), ~15% less decode temp memory (CPU-compiled
  # plan) and no per-layer copy of the weights, at the weight-copy cost per token on backends
  # that copy a scanned slice. 'auto' (`resolve_unroll`): unrolled on CPU, scanned elsewhere.
  unroll_layers: bool | str = 'auto'

  def __post_init__(self):
    object.__setattr__(self, 'unroll_layers', resolve_unroll(self.unroll_layers))
    if self.max_new_tokens <= 0:
      raise ValueError(f'max_new_tokens must be positive, got {self.max_new_tokens}')
    if self.temperature < 0:
      raise ValueError(f'temperature must be >= 0, got {self.temperature}')
    if self.top_k < 0:
      raise ValueError(f'top_k must be >= 0 (0 = off), got {self.top_k}')
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')
    if self.num_samples <= 0:
      raise ValueError(f'num_samples must be positive, got {self.num_samples}')


@flax.struct.dataclass
class DecodeState:
  """Everything the decode loop carries (donated into `decode`)."""
  step: jax.Array        # int32[]: tokens generated so far
  prompt_len: jax.Array  # int32[]: P (cache slot of the first generated token)
  cache: dict            # {'k','v': [L, R, K, S, H]}
  key_mask: jax.Array    # bool[R, S]
  position: jax.Array    # int32[R]: RoPE position of the last generated token
  tokens: jax.Array      # int32[R, M]
  logps: jax.Array       # f32[R, M]
  done: jax.Array        # bool[R]
  rng: jax.Array


@flax.struct.dataclass
class Rollout:
  """Sampler output; rows are prompt-major (rows g·G … g·G+G−1 share prompt g)."""
  tokens: jax.Array      # int32[R, M] completion tokens (pad after EOS)
  logps: jax.Array       # f32[R, M] log-prob of each token (0 where mask is False)
  mask: jax.Array        # bool[R, M] completion mask, EOS included
  lengths: jax.Array     # int32[R] number of completion tokens, EOS included
  finished: jax.Array    # bool[R] ended with an EOS token
  truncated: jax.Array   # bool[R] hit max_new_tokens without EOS


def bucket_length(n: int, minimum: int = MIN_BUCKET) -> int:
  """Smallest power of two >= max(n, minimum)."""
  return max(minimum, 1 << max(0, (n - 1)).bit_length())


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int, bucket: int | None = None):
  """Left-pads token lists into int32[B, P] and bool[B, P] with P a power-of-two bucket."""
  if not prompts:
    raise ValueError('no prompts given')
  longest = max(len(p) for p in prompts)
  if min(len(p) for p in prompts) == 0:
    raise ValueError('empty prompt (0 tokens) in the batch')
  p_len = bucket or bucket_length(longest)
  if longest > p_len:
    raise ValueError(f'prompt of {longest} tokens does not fit the bucket of {p_len}')
  tokens = np.full((len(prompts), p_len), pad_id, np.int32)
  mask = np.zeros((len(prompts), p_len), bool)
  for i, p in enumerate(prompts):
    tokens[i, p_len - len(p):] = p
    mask[i, p_len - len(p):] = True
  return tokens, mask


# ---------------------------------------------------------------------------------------------
# Token selection.
# ---------------------------------------------------------------------------------------------

def _nucleus_threshold_exact(probs, top_p):
  """Largest t with sum(probs[probs >= t]) >= top_p, per row, found without a sort.

  Binary search over the int32 bit patterns of non-negative floats (monotone in the value),
  31 halvings: exact, O(31·V) per row instead of a full-vocabulary sort.
  """
  bits = jax.lax.bitcast_convert_type(probs, jnp.int32)
  lo = jnp.zeros(probs.shape[:-1], jnp.int32)                 # mass(>= lo) >= top_p always
  hi = bits.max(-1) + 1                                        # mass(>= hi) == 0 < top_p

  def body(_, lohi):
    lo, hi = lohi
    mid = lo + (hi - lo) // 2
    mass = jnp.where(bits >= mid[..., None], probs, 0.0).sum(-1)
    ok = mass >= top_p
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, 31, body, (lo, hi))
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def _nucleus_sample(probs, top_p, rng):
  """Draws int32[R] from the top-p nucleus of probs f32[R, V], by rejection.

  Proposals come from the full law; the first inside the nucleus (the tokens strictly more
  likely than it hold < top_p: the sort rule, ties kept) is taken, which is the nucleus law
  exactly. A proposal is accepted with probability = the nucleus mass >= top_p and costs two
  passes over V (a draw, a masked sum), no sort and no candidate top-k; the loop stops once
  every row has accepted. Rows still rejecting after `_NUCLEUS_PROPOSALS` tries (probability
  <= (1 - top_p)^3 each) take the exact 31-pass threshold.
  """
  r = probs.shape[0]

  def propose(carry):
    i, token, accepted = carry
    x = _draw(probs, jax.random.fold_in(rng, i))
    p_x = jnp.take_along_axis(probs, x[:, None], -1)
    inside = jnp.where(probs > p_x, probs, 0.0).sum(-1) < top_p
    return i + 1, jnp.where(accepted, token, x), accepted | inside

  _, token, accepted = jax.lax.while_loop(
      lambda c: (c[0] < _NUCLEUS_PROPOSALS) & ~jnp.all(c[2]), propose,
      (jnp.zeros((), jnp.int32), jnp.zeros(r, jnp.int32), jnp.zeros(r, bool)))

  def exact():
    t = _nucleus_threshold_exact(probs, top_p)
    fresh = _draw(jnp.where(probs >= t[:, None], probs, 0.0),
                  jax.random.fold_in(rng, _NUCLEUS_PROPOSALS))
    return jnp.where(accepted, token, fresh)

  return jax.lax.cond(jnp.all(accepted), lambda: token, exact)


def _draw_block(n: int) -> int:
  """Block width of a two-level draw over n entries: a divisor of n near sqrt(n) (no padding
  copy: 151936 = 128 x 1187, 152064 = 256 x 594), else 1024 with the tail zero-padded."""
  root = math.isqrt(n)
  near = [b for b in range(max(1, root // 8), 8 * root + 1) if n % b == 0]
  return min(near, key=lambda b: abs(math.log(b / root))) if near else 1024


def _draw(weights, rng):
  """Inverse-CDF draw from unnormalised weights f32[R, N] >= 0: int32[R], one uniform per row.

  Exact for the categorical law of `weights` (up to fp32 rounding of the running sums); a
  zero-weight entry is never drawn. One uniform per row instead of a Gumbel per vocabulary
  entry (jax.random.categorical, ~120 ms at 32 x 152k on CPU). Wide rows go two-level (block
  sums, then a cumsum inside the chosen block), as a full-width cumsum costs ~100x a sum.
  """
  r, n = weights.shape
  u = jax.random.uniform(rng, (r,))
  if n <= 4096:
    return _inverse_cdf(weights, u)[0]
  width = _draw_block(n)
  nb = -(-n // width)
  if nb * width > n:
    weights = jnp.pad(weights, ((0, 0), (0, nb * width - n)))
  blocks = weights.reshape(r, nb, width)
  j, frac = _inverse_cdf(blocks.sum(-1), u)                   # the block, then where in it
  inside = jnp.take_along_axis(blocks, j[:, None, None], 1)[:, 0]              # [R, width]
  return j * width + _inverse_cdf(inside, frac)[0]


def _inverse_cdf(weights, u):
  """(i, f): i with cum[i-1] <= u·total < cum[i] for u f32[R] in [0, 1] (never a zero weight),
  and f in [0, 1) how far into weight i that point lies (uniform given i: a second level)."""
  cum = jnp.cumsum(weights, axis=-1)
  total = cum[:, -1]
  target = jnp.minimum(u * total, jnp.nextafter(total, 0.0))
  i = jnp.sum(cum <= target[:, None], axis=-1).astype(jnp.int32)
  pick = lambda x: jnp.take_along_axis(x, i[:, None], -1)[:, 0]
  frac = (target - (pick(cum) - pick(weights))) / pick(weights)
  return i, jnp.clip(frac, 0.0, 1.0)


def _sample(scaled, logp, rng, *, top_k: int, top_p):
  """Draws int32[R] from softmax(scaled) [R, V], truncated to top-k then top-p.

  Top-k keeps the k most likely tokens (renormalised) and applies top-p among them; top-p
  alone is sampled by rejection from the full law (`_nucleus_sample`), or, for vocabularies up
  to `_PAIRWISE_VOCAB`, by comparing all token pairs. Ties at the threshold are kept, as in a
  sort-based nucleus.
  """
  v = scaled.shape[-1]
  if not top_k:
    probs = jnp.exp(logp)
    if top_p is None:
      return _draw(probs, rng)
    if v > _PAIRWISE_VOCAB:
      return _nucleus_sample(probs, top_p, rng)
    # Token i is in the nucleus iff the tokens strictly more likely than it hold < top_p.
    above = jnp.where(probs[:, None, :] > probs[:, :, None], probs[:, None, :], 0.0).sum(-1)
    return _draw(jnp.where(above < top_p, probs, 0.0), rng)
  vals, idx = jax.lax.top_k(scaled, top_k)                       # sorted, descending
  probs = jax.nn.softmax(vals, axis=-1)                          # renormalised over the k
  if top_p is not None:
    cum = jnp.cumsum(probs, axis=-1)
    first = jnp.argmax(cum >= top_p, axis=-1)                    # the nucleus's last token
    probs = jnp.where(probs >= jnp.take_along_axis(probs, first[:, None], -1), probs, 0.0)
  return jnp.take_along_axis(idx, _draw(probs, rng)[:, None], -1)[:, 0]


def select(logits, rng, temperature, *, top_k: int, top_p, greedy: bool):
  """Samples int32[R] tokens and their fp32 log-probs under the temperature-scaled logits.

  temperature -> top-k -> top-p -> draw; greedy takes the argmax (log-prob at temperature 1).
  """
  logits = logits.astype(jnp.float32)
  if greedy:
    best = logits.max(axis=-1)
    n = logits.shape[-1]
    # First index of the max as one min-reduction: XLA:CPU's (value, index) argmax reduce
    # costs ~20x a sum at V = 152k. (NaN logits clip to the last id instead of failing.)
    token = jnp.min(jnp.where(logits == best[:, None], jnp.arange(n, dtype=jnp.int32), n - 1),
                    axis=-1)
    return token, best - jax.nn.logsumexp(logits, axis=-1)
  scaled = logits / temperature
  logp = jax.nn.log_softmax(scaled, axis=-1)
  token = _sample(scaled, logp, rng, top_k=top_k, top_p=top_p)
  return token, jnp.take_along_axis(logp, token[:, None], -1)[:, 0]


# ---------------------------------------------------------------------------------------------
# Prefill and decode (each one jit).
# ---------------------------------------------------------------------------------------------

def _prefill(params, prompt_tokens, prompt_mask, rng, temperature, top_p, *,
            model_cfg: QwenConfig, cfg: SampleConfig, mesh=None, rules=sharding_lib.DEFAULT_RULES):
  """Encodes int32[B, P] prompts once, repeats the cache G times, samples the first token."""
  with sharding_lib.use(mesh, rules):
    b, p_len = prompt_tokens.shape
    g, m = cfg.num_samples, cfg.max_new_tokens
    cache = qwen2_lib.init_cache(model_cfg, b, p_len + m)
    s_len = cache['k'].shape[3]
    key_mask = jnp.concatenate([prompt_mask, jnp.ones((b, s_len - p_len), bool)], axis=1)
    positions = qwen2_lib.positions_from_mask(prompt_mask)
    logits, cache = qwen2_lib.Qwen2(model_cfg).apply(
        {'params': params}, prompt_tokens, positions, key_mask, cache, last_only=True)
    # Share the prompt's cache across its G samples (prompt-major rows).
    rep = lambda x, axis: jnp.repeat(x, g, axis=axis)
    cache = jax.tree.map(lambda x: rep(x, 1), cache)
    if mesh is not None:
      cache = jax.lax.with_sharding_constraint(
          cache, sharding_lib.cache_sharding(mesh, model_cfg, b * g, rules))
    key_mask, last_logits = rep(key_mask, 0), rep(logits[:, -1], 0)
    position = rep(positions[:, -1] + 1, 0)

    rng, step_rng = jax.random.split(rng)
    token, logp = select(last_logits, step_rng, temperature, top_k=cfg.top_k,
                         top_p=None if cfg.top_p >= 1.0 else top_p, greedy=cfg.temperature == 0)
    r = b * g
    done = jnp.isin(token, jnp.asarray(cfg.eos_ids, jnp.int32)) if cfg.eos_ids else jnp.zeros(r, bool)
    tokens = jnp.full((r, m), cfg.pad_id, jnp.int32).at[:, 0].set(token)
    logps = jnp.zeros((r, m), jnp.float32).at[:, 0].set(logp)
    return DecodeState(step=jnp.ones((), jnp.int32), prompt_len=jnp.asarray(p_len, jnp.int32),
                       cache=cache, key_mask=key_mask, position=position, tokens=tokens,
                       logps=logps, done=done, rng=rng)


def _decode(params, state: DecodeState, temperature, top_p, *, model_cfg: QwenConfig,
            cfg: SampleConfig, mesh=None, rules=sharding_lib.DEFAULT_RULES):
  """Decodes until every row hit EOS or M tokens exist -> (Rollout, final state).

  The final state is returned so the donated input buffers (the cache) alias an output and
  the loop updates them in place; callers drop it.
  """
  m = cfg.max_new_tokens
  model = qwen2_lib.Qwen2(model_cfg)
  eos = jnp.asarray(cfg.eos_ids or (-1,), jnp.int32)

  def cond(s: DecodeState):
    return (s.step < m) & ~jnp.all(s.done)

  def body(s: DecodeState):
    last = s.tokens[:, s.step - 1]
    logits, cache = model.apply({'params': params}, last[:, None], s.position[:, None],
                                s.key_mask, s.cache, s.prompt_len + s.step - 1)
    token, logp = select(logits[:, 0], jax.random.fold_in(s.rng, s.step), temperature,
                         top_k=cfg.top_k, top_p=None if cfg.top_p >= 1.0 else top_p,
                         greedy=cfg.temperature == 0)
    token = jnp.where(s.done, cfg.pad_id, token)
    logp = jnp.where(s.done, 0.0, logp)
    return s.replace(step=s.step + 1, cache=cache, position=s.position + 1,
                     tokens=s.tokens.at[:, s.step].set(token),
                     logps=s.logps.at[:, s.step].set(logp),
                     done=s.done | jnp.isin(token, eos))

  with sharding_lib.use(mesh, rules):
    state = jax.lax.while_loop(cond, body, state)
  is_eos = jnp.isin(state.tokens, eos) if cfg.eos_ids else jnp.zeros(state.tokens.shape, bool)
  # Mask: everything up to and including the first EOS (or all M tokens).
  before_eos = jnp.cumsum(is_eos.astype(jnp.int32), axis=1) - is_eos.astype(jnp.int32) == 0
  mask = before_eos & (jnp.arange(m)[None] < state.step)
  finished = jnp.any(is_eos & mask, axis=1)
  lengths = mask.sum(1).astype(jnp.int32)
  rollout = Rollout(tokens=jnp.where(mask, state.tokens, cfg.pad_id),
                    logps=jnp.where(mask, state.logps, 0.0), mask=mask, lengths=lengths,
                    finished=finished, truncated=~finished)
  return rollout, state


_STATIC = ('model_cfg', 'cfg', 'mesh', 'rules')
prefill = jax.jit(_prefill, static_argnames=_STATIC)
decode = jax.jit(_decode, static_argnames=_STATIC, donate_argnames=('state',))


def generate(params, prompts: Sequence[Sequence[int]], rng, *, model_cfg: QwenConfig,
             cfg: SampleConfig, mesh=None, rules=sharding_lib.DEFAULT_RULES,
             bucket: int | None = None) -> Rollout:
  """Host entry point: token-id prompts -> Rollout (device arrays), rows prompt-major.

  `params`: the model's params, stacked or unrolled (see `sampling_params`).
  """
  if qwen2_lib.is_scanned(params) == cfg.unroll_layers:  # a copy per call: see sampling_params
    params = (sampling_params(params, None, True) if cfg.unroll_layers
              else qwen2_lib.stack_layers(params))
  # The tree decides: layers unrolled or scanned, and a [D, V] head of its own when it has one.
  model_cfg = model_cfg.replace(scan_layers=qwen2_lib.is_scanned(params),
                                tie_embeddings='lm_head' not in params)
  tokens, mask = pad_prompts(prompts, cfg.pad_id, bucket)
  # Everything enters by explicit transfers; nothing else crosses host<->device until the
  # caller reads the rollout (tests run this under jax.transfer_guard('disallow')).
  if mesh is not None:
    shard = sharding_lib.batch_sharding(mesh, tokens.shape[0], 2, rules)
    tokens, mask = sharding_lib.put_global(tokens, shard), sharding_lib.put_global(mask, shard)
  else:
    tokens, mask = jax.device_put((tokens, mask))
  temperature, top_p = jax.device_put((np.float32(max(cfg.temperature, 1e-6)),
                                       np.float32(cfg.top_p)))
  state = prefill(params, tokens, mask, rng, temperature, top_p, model_cfg=model_cfg, cfg=cfg,
                  mesh=mesh, rules=rules)
  rollout, _ = decode(params, state, temperature, top_p, model_cfg=model_cfg, cfg=cfg, mesh=mesh,
                      rules=rules)
  return rollout


def resolve_unroll(unroll_layers, backend: str | None = None) -> bool:
  """`sampling.unroll_layers` -> bool: True / False as given; 'auto' unrolls on XLA:CPU only.

  On CPU a scanned decode step copies every weight slice out of the [L, ...] stack (a full
  weight copy per token, +40% step time at the 0.5B shape), so the per-layer view pays for its
  copy of the weights there. TPU and GPU read a scanned slice in place (dynamic-slice fusion),
  so 'auto' keeps the scan and the sampler runs on the stacked params: no second copy of the
  weights (none at all when the sample dtype is the params' dtype). Not yet measured on a
  device: `scripts/device_check.sh` times both.
  """
  if isinstance(unroll_layers, (bool, np.bool_)):
    return bool(unroll_layers)
  if unroll_layers != 'auto':
    raise ValueError(f"unroll_layers must be True, False or 'auto', got {unroll_layers!r}")
  return (backend or jax.default_backend()) == 'cpu'


def _cast(x, dtype):
  """x in `dtype` if it is a float of another dtype (None: kept); else x itself, not a copy."""
  if dtype is None or not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
    return x
  return x.astype(dtype)


@functools.partial(jax.jit, static_argnames=('dtype',))
def _unstack_cast(layers, dtype):
  """The [L, ...] layer stack -> L per-layer trees in `dtype`, each slice cast on its own: no
  cast copy of the whole stack exists beside them (cast first, XLA kept one: +2.4 GB of temp
  at the 1.5B shape in bf16)."""
  n = jax.tree.leaves(layers)[0].shape[0]
  # (A frozen base stored as bits, qwen2.to_bits, comes back as bf16 arrays.)
  return [jax.tree.map(lambda x, i=i: _cast(qwen2_lib.from_bits(x[i]), dtype), layers)
          for i in range(n)]


@functools.partial(jax.jit, static_argnames=('dtype',))
def _head_copy(embedding, dtype):
  return _cast(qwen2_lib.from_bits(embedding).T, dtype)


def sampling_params(params, dtype=jnp.bfloat16, unroll_layers='auto'):
  """The params as the sampler runs them: floats in `dtype` (None: kept), layers unrolled when
  `resolve_unroll(unroll_layers)`, and for tied embeddings a contiguous [D, V] `lm_head` copy
  (the [V, D] embedding contracted on D ran the 0.5B-shape head matmul ~30% slower on CPU).

  Only what changes is new: a leaf already in `dtype` that needs no unrolling is the caller's
  array itself (a scanned view in the params' dtype costs nothing but the tied head's copy);
  the trainer keeps its stacked masters beside the view. Already-unrolled params are only
  cast.
  """
  dtype = None if dtype is None else jnp.dtype(dtype)
  if not qwen2_lib.is_scanned(params):
    return jax.tree.map(lambda x: _cast(x, dtype), params)
  view = {k: jax.tree.map(lambda x: _cast(x, dtype), v) for k, v in params.items()
          if k != 'layers'}
  if resolve_unroll(unroll_layers):
    view.update({f'layer_{i}': layer
                 for i, layer in enumerate(_unstack_cast(params['layers'], dtype))})
  else:
    view['layers'] = jax.tree.map(lambda x: _cast(x, dtype), params['layers'])
  if 'lm_head' not in view:
    view['lm_head'] = _head_copy(params['embedding'], dtype)
  return view
