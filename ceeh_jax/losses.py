"""GRPO core: advantages, PPO-clip, aggregation, KL, entropy, CEEH-ME and CEEH-EA.

Shape legend: R responses (B prompts x G samples, prompt-major), T completion tokens,
D model dim, V vocab, C sequence chunk.

Losses return (unreduced sum, denominator) so a trainer can add micro-batch sums and divide
once by the denominator of the whole minibatch: micro-batching is then exact.
"""
import jax
import jax.numpy as jnp

AGGREGATIONS = ('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum',
                'seq-mean-token-sum-norm')


def group_advantages(rewards, group_size: int, *, std_normalize: bool = False, eps: float = 1e-6):
  """f32[R] -> f32[R]: A = r − mean_g(r), optionally / (std_g(r, ddof=1) + eps)."""
  r = rewards.reshape(-1, group_size)
  adv = r - r.mean(axis=1, keepdims=True)
  if std_normalize:
    adv = adv / (jnp.std(r, axis=1, ddof=1, keepdims=True) + eps)
  return adv.reshape(-1)


def ppo_clip_loss(logp, old_logp, advantages, mask, *, eps_low: float = 0.2,
                  eps_high: float = 0.28, dual_clip: float | None = 3.0):
  """Per-token PPO-clip loss f32[R, T] and clip indicators {'low','high','dual'} f32[R, T].

  ρ = exp(clip(logp − old, −20, 20)); loss = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high));
  dual clip (A < 0): min(loss, −A·c). `advantages` is f32[R, T] or broadcastable to it.
  """
  adv = jnp.broadcast_to(advantages, logp.shape)
  ratio = jnp.exp(jnp.clip(logp - old_logp, -20.0, 20.0))
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  dual = jnp.zeros_like(loss, bool)
  if dual_clip is not None:
    capped = jnp.minimum(loss, -adv * dual_clip)
    dual = (adv < 0) & (capped < loss)
    loss = jnp.where(adv < 0, capped, loss)
  took_clip = clipped > unclipped
  m = mask.astype(loss.dtype)
  clip = {'low': (took_clip & (ratio < 1.0 - eps_low)).astype(loss.dtype) * m,
          'high': (took_clip & (ratio > 1.0 + eps_high)).astype(loss.dtype) * m,
          'dual': dual.astype(loss.dtype) * m}
  return loss * m, clip


def aggregate(per_token, mask, mode: str = 'token-mean', *, max_len: int | None = None):
  """(sum, denominator) of a per-token quantity f32[R, T] under an aggregation mode.

  token-mean:              Σ_tokens x / #tokens
  seq-mean-token-mean:     Σ_seqs (Σ_t x / n_t) / #seqs
  seq-mean-token-sum:      Σ_seqs Σ_t x / #seqs
  seq-mean-token-sum-norm: Σ_seqs Σ_t x / max_len / #seqs   (Dr.GRPO; max_len = T by default)
  #seqs counts sequences with at least one valid token.
  """
  m = mask.astype(jnp.float32)
  x = per_token * m
  n_tok = m.sum(-1)
  n_seq = (n_tok > 0).sum().astype(jnp.float32)
  if mode == 'token-mean':
    return x.sum(), m.sum()
  if mode == 'seq-mean-token-mean':
    return (x.sum(-1) / jnp.maximum(n_tok, 1.0)).sum(), n_seq
  if mode == 'seq-mean-token-sum':
    return x.sum(), n_seq
  if mode == 'seq-mean-token-sum-norm':
    t = per_token.shape[-1] if max_len is None else max_len
    return x.sum() / t, n_seq
  raise ValueError(f'unknown aggregation mode {mode!r}; choose from {AGGREGATIONS}')


def kl_penalty(logp, ref_logp, kind: str = 'k3'):
  """Per-token KL estimate to the reference policy (Schulman's estimators).

  k1 = logp − ref;  k2 = ½(logp − ref)²;  k3 = exp(ref − logp) − (ref − logp) − 1,
  with the log-ratio clamped to ±20 inside the exponent and k3 clamped to ±10 outside.
  """
  log_ratio = logp - ref_logp
  if kind == 'k1':
    return log_ratio
  if kind == 'k2':
    return 0.5 * log_ratio ** 2
  if kind == 'k3':
    neg = jnp.clip(-log_ratio, -20.0, 20.0)
    return jnp.clip(jnp.exp(neg) - neg - 1.0, -10.0, 10.0)
  raise ValueError(f"kl kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def entropy_from_logits(logits, temperature=1.0):
  """H = logsumexp(z) − Σ softmax(z)·z on z = logits / T, fp32 (differentiable)."""
  z = logits.astype(jnp.float32) / temperature
  lse = jax.nn.logsumexp(z, axis=-1)
  return lse - (jax.nn.softmax(z, axis=-1) * z).sum(-1)


def _chunk_logp_entropy(h, unembed, targets, temperature):
  z = jnp.einsum('RCD,DV->RCV', h, unembed.astype(h.dtype),
                 preferred_element_type=jnp.float32) / temperature
  lse = jax.nn.logsumexp(z, axis=-1)
  logp = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - lse
  ent = lse - (jax.nn.softmax(z, axis=-1) * z).sum(-1)
  return logp, ent


def token_logprobs_and_entropy(hidden, unembed, targets, *, temperature=1.0, chunk_size: int = 256):
  """(logp, entropy) f32[R, T] of `targets` under softmax(hidden·unembed / T).

  hidden [R, T, D], unembed [D, V], targets int32[R, T]. Computed chunk by chunk over T with
  a rematerialised scan body, so neither pass holds more than [R, C, V] fp32 logits.
  """
  r, t, d = hidden.shape
  c = min(chunk_size, t)
  n = -(-t // c)
  pad = n * c - t
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(r, n, c, d).swapaxes(0, 1)
  y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(r, n, c).swapaxes(0, 1)
  body = jax.checkpoint(lambda hc, yc: _chunk_logp_entropy(hc, unembed, yc, temperature))
  _, (logp, ent) = jax.lax.scan(lambda carry, xs: (carry, body(*xs)), None, (h, y))
  unchunk = lambda a: a.swapaxes(0, 1).reshape(r, n * c)[:, :t]
  return unchunk(logp), unchunk(ent)


# ---------------------------------------------------------------------------------------------
# CEEH (DESIGN.md "CEEH", step 5).
# ---------------------------------------------------------------------------------------------

def ceeh_me_bonus(entropy, mask, hard, *, hard_weight=5.0):
  """(Σ m·w·H, Σ m·w) with w = hard_weight on hard-question tokens, 1 on easy (CEEH-ME)."""
  w = jnp.where(hard[:, None] > 0, hard_weight, 1.0) * mask.astype(jnp.float32)
  return (w * entropy).sum(), w.sum()


def cosine_decay(coef, step, total_steps):
  """coef · ½(1 + cos(π·min(step/total, 1))): the CEEH-ME entropy coefficient schedule."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return jnp.float32(coef) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def hard_weight_anneal(step, total_steps, *, start=5.0, end=1.0):
  """The alternative CEEH-ME mode: hard weight annealed start -> end (cosine), coef constant."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return jnp.float32(end) + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))


def ceeh_ea_advantages(advantages, entropy, hard, *, alpha=0.4):
  """CEEH-EA: A + min(α·sg(H), |A|/2) on hard questions' tokens; easy unchanged. f32[R, T]."""
  adv = jnp.broadcast_to(advantages, entropy.shape)
  bonus = jnp.minimum(alpha * jax.lax.stop_gradient(entropy), jnp.abs(adv) / 2.0)
  return adv + jnp.where(hard[:, None] > 0, bonus, 0.0)
