"""Rewards of the competing compression methods, as pure jittable functions of one batch.

Shape legend: R responses = B groups x G samples (prompt-major), T completion tokens,
Q training questions. Every method maps (RewardInputs, history state, step) to per-response
rewards and, where the method defines its own, advantages (None -> GRPO group advantages).
`docs/methods.md` gives each method's source and our reading where the paper is open.
"""
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

METHODS = ('grpo', 'length_penalty', 'ceeh_me', 'ceeh_ea', 'egrc', 'entra', 'hapo', 'thinkprune',
           'dler', 'laser', 'laser_d', 'grpo_lambda', 'arora_zanette')

# Paper defaults (see docs/methods.md for sources).
_DEFAULTS = {
    'grpo': {},
    'ceeh_me': {}, 'ceeh_ea': {},                     # configured under config.ceeh
    # Kimi k1.5 (arXiv 2501.12599) length penalty, weight on the λ term.
    'length_penalty': {'weight': 1.0},
    # EGRC (arXiv 2511.14258): compression stage then exploration stage.
    'egrc': {'length_clip': 4096, 'ratio_at_clip': 0.5, 'beta': 1.0, 'stage_steps': 100,
             'compression_first': True, 'explore_temperature': 1.0, 'format_reward': 0.1,
             'answer_reward': 1.0, 'overlong_per_1k': 0.25},
    # ENTRA (arXiv 2601.07123): importance = logp + gamma·mu; low-importance fraction 0.8.
    'entra': {'gamma': 1e-4, 'fraction': 0.8, 'weight': 0.5},
    # HAPO (arXiv 2505.11225): history-aware cosine length reward, clamp -0.7.
    'hapo': {'weight': 1.0, 'clamp': -0.7},
    # ThinkPrune (arXiv 2504.01296): length clipping with staged limits.
    'thinkprune': {'limits': (4096, 3072, 2048), 'boundaries': (100, 200)},
    # DLER (arXiv 2510.15110): truncation + batch-whitened advantages (+ clip-higher in config).
    'dler': {'max_len': 4096},
    # LASER (arXiv 2505.15612): step length reward under a target; LASER-D adapts the target.
    'laser': {'target': 4096, 'bonus': 0.5},
    'laser_d': {'bonus': 0.5, 'init_target': 4096.0, 'rate': 0.1, 'quantile_margin': 1.0},
    # GRPO-λ (arXiv 2505.18086): length reward only for the most accurate groups.
    'grpo_lambda': {'top_fraction': 0.2, 'weight': 1.0},
    # Arora & Zanette (arXiv 2502.04463): sigmoid of z-scored correct length.
    'arora_zanette': {'alpha': 0.2},
}


class RewardInputs(NamedTuple):
  correct: jax.Array            # bool[R]
  boxed: jax.Array              # bool[R]
  lengths: jax.Array            # int32[R]
  truncated: jax.Array          # bool[R]
  qids: jax.Array               # int32[R]
  tokens: Any = None            # int32[R, T]   (ENTRA)
  token_logp: Any = None        # f32[R, T]     (ENTRA)
  attn_received: Any = None     # f32[R, T]     (ENTRA)
  token_mask: Any = None        # bool[R, T]    (ENTRA)


class MethodOutput(NamedTuple):
  rewards: jax.Array
  advantages: Any               # f32[R] or None (-> GRPO group advantages)
  new_state: dict
  metrics: dict


def default_hparams(method: str) -> dict:
  if method not in _DEFAULTS:
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
  return dict(_DEFAULTS[method])


def init_state(method: str, num_questions: int, hparams=None) -> dict:
  """History a method carries across batches (part of the checkpointed difficulty state)."""
  del hparams
  if method == 'hapo':
    return {'min_len': jnp.zeros((num_questions,), jnp.float32)}   # 0 = unset
  if method == 'laser_d':
    return {'targets': jnp.full((3,), _DEFAULTS['laser_d']['init_target'], jnp.float32)}
  return {}


def sampling_temperature(method: str, hparams, step: int, default: float) -> float:
  """The rollout temperature at `step` (EGRC's exploration stage samples hotter)."""
  if method == 'egrc' and egrc_stage(step, hparams) == 'explore':
    return float(hparams['explore_temperature'])
  return default


def egrc_stage(step: int, hparams) -> str:
  first = step < hparams['stage_steps']
  return 'compress' if first == bool(hparams['compression_first']) else 'explore'


def _groups(x, g):
  return x.reshape(-1, g)


def _kimi_lambda(lengths, g):
  """λ_i = 0.5 − (L_i − min_g L)/(max_g L − min_g L); 0 when all lengths in the group are equal."""
  l = _groups(lengths.astype(jnp.float32), g)
  lo, hi = l.min(1, keepdims=True), l.max(1, keepdims=True)
  lam = 0.5 - (l - lo) / jnp.maximum(hi - lo, 1e-9)
  return jnp.where(hi > lo, lam, 0.0).reshape(-1)


def length_penalty(inp: RewardInputs, g: int, weight=1.0):
  """Kimi k1.5: correct +λ_i, wrong +min(0, λ_i), on top of the 0/1 correctness reward."""
  lam = _kimi_lambda(inp.lengths, g)
  c = inp.correct.astype(jnp.float32)
  return c + weight * jnp.where(inp.correct, lam, jnp.minimum(0.0, lam))


def egrc(inp: RewardInputs, g: int, hp, stage_is_compress):
  """EGRC: compression = positive-only A = β·correct·exp(−λL) (0 over the clip, λ = −ln r / L);
  exploration = R_format + R_answer − 0.25 per 1k tokens over the clip, GRPO advantages."""
  length = inp.lengths.astype(jnp.float32)
  clip = hp['length_clip']
  lam = -math.log(hp['ratio_at_clip']) / clip
  c = inp.correct.astype(jnp.float32)
  r_comp = c * (length <= clip) * jnp.exp(-lam * length)
  r_expl = (hp['format_reward'] * inp.boxed + hp['answer_reward'] * c
            - hp['overlong_per_1k'] * jnp.maximum(length - clip, 0.0) / 1000.0)
  rewards = jnp.where(stage_is_compress, r_comp, r_expl)
  from ceeh_jax import losses as losses_lib  # pylint: disable=g-import-not-at-top
  adv = jnp.where(stage_is_compress, hp['beta'] * r_comp, losses_lib.group_advantages(r_expl, g))
  return rewards, adv


def token_type_entropy(tokens, select):
  """Entropy of the empirical token-id distribution over the selected positions, per row.

  tokens int32[R, T], select bool[R, T] -> (H f32[R], n f32[R]). Sort-based: O(T log T).
  """
  big = jnp.iinfo(jnp.int32).max

  def one(tok, sel):
    s = jnp.sort(jnp.where(sel, tok, big))
    valid = s != big
    start = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
    run = jnp.cumsum(start) - 1
    counts = jax.ops.segment_sum(valid.astype(jnp.float32), run, num_segments=s.shape[0])
    n = valid.sum().astype(jnp.float32)
    per = jnp.where(valid, jnp.log(jnp.maximum(counts[run], 1.0)), 0.0)
    h = jnp.log(jnp.maximum(n, 1.0)) - per.sum() / jnp.maximum(n, 1.0)
    return h, n

  return jax.vmap(one)(tokens, select)


def entra_redundancy(tokens, token_logp, attn_received, mask, *, gamma=1e-4, fraction=0.8):
  """ENTRA: importance I = log p + γ·μ; the lowest-importance `fraction` of each response's
  tokens; the entropy of their token distribution / log(set size) in [0, 1] (high = little
  repetition). Returns (score f32[R], importance f32[R, T], selected bool[R, T])."""
  importance = token_logp + gamma * attn_received
  n = mask.sum(-1)
  keep = jnp.floor(fraction * n).astype(jnp.int32)
  order = jnp.argsort(jnp.where(mask, importance, jnp.inf), axis=-1)
  rank = jnp.argsort(order, axis=-1)
  selected = mask & (rank < keep[:, None])
  h, size = token_type_entropy(tokens, selected)
  score = jnp.where(size > 1, h / jnp.log(jnp.maximum(size, 2.0)), 0.0)
  return score, importance, selected


def hapo(inp: RewardInputs, state, hp):
  """HAPO: h[q] = shortest correct length so far. Correct: w·cos(π/2·min(L/h, 2)) (≈w far
  below h, 0 at h, −w at 2h); wrong: max(clamp, min(0, same)); unset h: 0. Then h ← min."""
  length = inp.lengths.astype(jnp.float32)
  h = state['min_len'][inp.qids]
  x = jnp.minimum(length / jnp.maximum(h, 1.0), 2.0)
  cos = hp['weight'] * jnp.cos(0.5 * jnp.pi * x)
  lr = jnp.where(inp.correct, cos, jnp.maximum(hp['clamp'], jnp.minimum(0.0, cos)))
  lr = jnp.where(h > 0, lr, 0.0)
  q = state['min_len'].shape[0]
  shortest = jax.ops.segment_min(jnp.where(inp.correct, length, jnp.inf), inp.qids, num_segments=q)
  old = state['min_len']
  new = jnp.where(jnp.isfinite(shortest), jnp.where(old > 0, jnp.minimum(old, shortest), shortest), old)
  return inp.correct.astype(jnp.float32) + lr, {'min_len': new}


def thinkprune_limit(step, hp):
  limits = jnp.asarray(hp['limits'], jnp.float32)
  stage = jnp.searchsorted(jnp.asarray(hp['boundaries']), step, side='right')
  return limits[stage]


def dler(inp: RewardInputs, g: int, hp):
  """DLER: truncation (over max_len scores 0), group-mean baseline, whitened by the batch std."""
  r = inp.correct.astype(jnp.float32) * (inp.lengths <= hp['max_len'])
  centred = r - jnp.repeat(_groups(r, g).mean(1), g)
  return r, centred / (centred.std() + 1e-6)


def informative_groups(rewards, g: int):
  """bool[B]: groups whose rewards are not all equal (DLER / DAPO dynamic sampling)."""
  rg = _groups(rewards, g)
  return rg.max(1) > rg.min(1)


def laser_d(inp: RewardInputs, g: int, state, hp):
  """LASER-D: three difficulty buckets by group accuracy (≥2/3 easy, ≤1/3 hard, else medium),
  each with its own target length, moved by EMA toward the bucket's mean correct length."""
  acc = _groups(inp.correct.astype(jnp.float32), g).mean(1)
  bucket = jnp.where(acc >= 2 / 3, 0, jnp.where(acc <= 1 / 3, 2, 1))
  b_resp = jnp.repeat(bucket, g)
  target = state['targets'][b_resp]
  length = inp.lengths.astype(jnp.float32)
  c = inp.correct.astype(jnp.float32)
  rewards = c + hp['bonus'] * c * (length <= target)
  sums = jax.ops.segment_sum(c * length, b_resp, num_segments=3)
  cnt = jax.ops.segment_sum(c, b_resp, num_segments=3)
  mean = sums / jnp.maximum(cnt, 1.0) * hp['quantile_margin']
  new = jnp.where(cnt > 0, state['targets'] + hp['rate'] * (mean - state['targets']),
                  state['targets'])
  return rewards, {'targets': new}


def grpo_lambda(inp: RewardInputs, g: int, hp):
  """GRPO-λ (our reading; the exact rule is unpublished): groups whose accuracy is in the top
  `top_fraction` of the batch (ties included) get the Kimi length term; others 0/1 only."""
  acc = _groups(inp.correct.astype(jnp.float32), g).mean(1)
  k = max(1, int(math.ceil(hp['top_fraction'] * acc.shape[0])))
  thresh = jnp.sort(acc)[::-1][k - 1]
  chosen = jnp.repeat((acc >= thresh) & (acc > 0), g)
  base = inp.correct.astype(jnp.float32)
  return jnp.where(chosen, length_penalty(inp, g, hp['weight']), base)


def arora_zanette(inp: RewardInputs, g: int, hp):
  """Correct: 1 − α·sigmoid((L − mean_c)/std_c) over the group's correct responses; wrong: 0."""
  c = _groups(inp.correct.astype(jnp.float32), g)
  length = _groups(inp.lengths.astype(jnp.float32), g)
  n = jnp.maximum(c.sum(1, keepdims=True), 1.0)
  mean = (c * length).sum(1, keepdims=True) / n
  std = jnp.sqrt((c * (length - mean) ** 2).sum(1, keepdims=True) / n)
  z = (length - mean) / (std + 1e-6)
  return (c * (1.0 - hp['alpha'] * jax.nn.sigmoid(z))).reshape(-1)


def dapo_overlong_penalty(lengths, max_len: int, cache_len: int):
  """DAPO soft overlong punishment: 0 up to max_len − cache, linear to −1 at max_len, −1 beyond."""
  length = lengths.astype(jnp.float32)
  start = max_len - cache_len
  return jnp.where(length <= start, 0.0,
                   jnp.where(length <= max_len, (start - length) / max(cache_len, 1), -1.0))


def compute(method: str, hparams, inp: RewardInputs, state: dict, step, *, group_size: int):
  """Dispatch: -> MethodOutput(rewards, advantages or None, new_state, metrics)."""
  hp = default_hparams(method)
  hp.update(dict(hparams or {}))
  g = group_size
  c = inp.correct.astype(jnp.float32)
  metrics, adv, new_state = {}, None, state
  if method == 'grpo':
    rewards = c
  elif method == 'length_penalty':
    rewards = length_penalty(inp, g, hp['weight'])
  elif method == 'egrc':
    compress = (step < hp['stage_steps']) == bool(hp['compression_first'])
    rewards, adv = egrc(inp, g, hp, compress)
    metrics['egrc_compress_stage'] = compress.astype(jnp.float32)
  elif method == 'entra':
    if inp.token_logp is None:
      raise ValueError('entra needs token_logp / attn_received / tokens (see entra_inputs.py)')
    score, _, _ = entra_redundancy(inp.tokens, inp.token_logp, inp.attn_received,
                                   inp.token_mask, gamma=hp['gamma'], fraction=hp['fraction'])
    rewards = c + hp['weight'] * c * score
    metrics['entra_redundancy_score'] = score.mean()
  elif method == 'hapo':
    rewards, new_state = hapo(inp, state, hp)
  elif method == 'thinkprune':
    limit = thinkprune_limit(step, hp)
    rewards = c * (inp.lengths <= limit)
    metrics['thinkprune_limit'] = limit
  elif method == 'dler':
    rewards, adv = dler(inp, g, hp)
    metrics['informative_groups'] = informative_groups(rewards, g).mean()
  elif method == 'laser':
    rewards = c + hp['bonus'] * c * (inp.lengths <= hp['target'])
  elif method == 'laser_d':
    rewards, new_state = laser_d(inp, g, state, hp)
  elif method == 'grpo_lambda':
    rewards = grpo_lambda(inp, g, hp)
  elif method == 'arora_zanette':
    rewards = arora_zanette(inp, g, hp)
  else:
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
  return MethodOutput(rewards.astype(jnp.float32), adv, new_state, metrics)
