"""GRPO core: advantages, PPO-clip, aggregation, KL, entropy, CEEH-ME and CEEH-EA.

Shape legend: R responses (B prompts x G samples, prompt-major: rows g·G … g·G+G−1 answer
prompt g), T completion tokens, D model dim, V vocab, C sequence chunk.

Micro-batching. Every loss term is (unreduced sum, denominator). A trainer that splits a
minibatch into micro-batches computes the denominators of the WHOLE minibatch once
(`loss_denominators`), passes them to `grpo_loss` of every micro-batch, and adds the
micro-batch losses, gradients and aux metrics: Σ_mb sum_mb / den_full == sum_full / den_full,
so the result is exactly the one-pass minibatch value for every aggregation mode.
"""
import numbers

import jax
import jax.numpy as jnp

AGGREGATIONS = ('token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum',
                'seq-mean-token-sum-norm')
KL_KINDS = ('k1', 'k2', 'k3')


def _ratio(x, den):
  """x / den, 0 where den == 0 (an empty micro-batch contributes nothing, not NaN)."""
  return jnp.where(den > 0, x / jnp.where(den > 0, den, 1.0), 0.0)


def _per_token(advantages):
  """f32[R] -> f32[R, 1] (one advantage per response); [R, T] passes through."""
  return advantages[:, None] if advantages.ndim == 1 else advantages


def group_advantages(rewards, group_size: int, *, std_normalize: bool = False, eps: float = 1e-6):
  """f32[R] -> f32[R]: A = r − mean_g(r), optionally / (std_g(r, ddof=1) + eps).

  A group whose rewards are all equal gets exactly 0. Its float32 mean need not equal the
  common value (twelve rewards of 1.1 average to 1.1000001), and dividing that residue by
  std + eps = 0 + 1e-6 would give each response A ≈ −0.1: a push from a group with no signal.
  """
  if rewards.ndim != 1 or rewards.shape[0] % group_size:
    raise ValueError(f'rewards of shape {rewards.shape} are not whole groups of {group_size}')
  if std_normalize and group_size < 2:
    raise ValueError('std_normalize needs group_size >= 2 (ddof=1)')
  r = rewards.astype(jnp.float32).reshape(-1, group_size)
  return centred_rewards(r, axis=1, std_normalize=std_normalize, eps=eps).reshape(-1)


def centred_rewards(x, axis=None, *, std_normalize: bool = False, eps: float = 1e-6):
  """x − mean(x), optionally / (std(x, ddof=1) + eps), over `axis` (None: all of x).

  Exactly 0 wherever the values reduced over are all equal (see `group_advantages`); used for
  group baselines (axis 1 of [B, G]) and batch baselines (EGRC's 'batch' reading).
  """
  x = x.astype(jnp.float32)
  flat = x.max(axis=axis, keepdims=True) == x.min(axis=axis, keepdims=True)
  centred = jnp.where(flat, 0.0, x - x.mean(axis=axis, keepdims=True))
  if not std_normalize:
    return centred
  return centred / (jnp.std(x, axis=axis, ddof=1, keepdims=True) + eps)


def ppo_clip_loss(logp, old_logp, advantages, mask, *, eps_low: float = 0.2,
                  eps_high: float = 0.28, dual_clip: float | None = 3.0):
  """Per-token PPO-clip loss f32[R, T] and clip indicators {'low','high','dual'} f32[R, T].

  ρ = exp(clip(logp − old, −20, 20)); loss = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high));
  dual clip (Ye et al. 2020), for A < 0 only: min(loss, −A·c); `dual_clip=None` disables.
  `advantages` is f32[R, T], or f32[R] (one per response). Both outputs are 0 off the
  mask. 'low'/'high': the clipped branch won with ρ below 1−ε_low / above 1+ε_high (its
  gradient is zero); 'dual': the dual cap won.
  """
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f'dual_clip must exceed 1 (or be None), got {dual_clip}')
  adv = jnp.broadcast_to(_per_token(advantages), logp.shape)
  ratio = jnp.exp(jnp.clip(logp - old_logp, -20.0, 20.0))
  unclipped = -adv * ratio
  clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped)
  took_clip = clipped > unclipped
  dual = jnp.zeros_like(took_clip)
  if dual_clip is not None:
    cap = -adv * dual_clip
    dual = (adv < 0) & (cap < loss)
    loss = jnp.where(dual, cap, loss)
  m = mask.astype(bool)
  ind = lambda b: (b & m).astype(jnp.float32)
  clip = {'low': ind(took_clip & (ratio < 1.0 - eps_low)),
          'high': ind(took_clip & (ratio > 1.0 + eps_high)), 'dual': ind(dual)}
  return jnp.where(m, loss, 0.0), clip


def aggregate(per_token, mask, mode: str = 'token-mean', *, max_len: int | None = None):
  """(sum, denominator) of a per-token quantity f32[R, T] under an aggregation mode.

  token-mean:              Σ_r Σ_t x / #tokens
  seq-mean-token-mean:     Σ_r (Σ_t x / n_r) / #seqs
  seq-mean-token-sum:      Σ_r Σ_t x / #seqs
  seq-mean-token-sum-norm: Σ_r Σ_t x / max_len / #seqs   (Dr.GRPO: max_len a constant, e.g.
                           the generation limit; defaults to T)
  n_r = valid tokens of row r; #seqs counts rows with n_r > 0, so rows that are all padding
  do not dilute the mean. The sum is additive over rows, and so is the denominator.
  """
  if mode not in AGGREGATIONS:
    raise ValueError(f'unknown aggregation mode {mode!r}; choose from {AGGREGATIONS}')
  m = mask.astype(bool)
  x = jnp.where(m, per_token, 0.0).astype(jnp.float32)
  n_tok = m.sum(-1).astype(jnp.float32)
  n_seq = (n_tok > 0).sum().astype(jnp.float32)
  if mode == 'token-mean':
    return x.sum(), n_tok.sum()
  if mode == 'seq-mean-token-mean':
    return _ratio(x.sum(-1), n_tok).sum(), n_seq
  if mode == 'seq-mean-token-sum':
    return x.sum(), n_seq
  t = per_token.shape[-1] if max_len is None else max_len
  if not isinstance(t, numbers.Integral) or t <= 0:
    raise ValueError(f'seq-mean-token-sum-norm needs a positive int max_len, got {t!r}')
  return x.sum() / t, n_seq


def kl_penalty(logp, ref_logp, kind: str = 'k3'):
  """Per-token KL(π‖π_ref) estimate from sampled tokens (Schulman's k1/k2/k3).

  d = logp − ref:  k1 = d;  k2 = ½·d²;  k3 = exp(−d) + d − 1 = exp(ref − logp) − (ref − logp) − 1,
  with −d clamped to ±20 inside k3 (finite exp) and k3 clamped to ±10 outside.
  """
  log_ratio = logp - ref_logp
  if kind == 'k1':
    return log_ratio
  if kind == 'k2':
    return 0.5 * jnp.square(log_ratio)
  if kind == 'k3':
    neg = jnp.clip(-log_ratio, -20.0, 20.0)
    return jnp.clip(jnp.exp(neg) - neg - 1.0, -10.0, 10.0)
  raise ValueError(f'kl kind must be one of {KL_KINDS}, got {kind!r}')


def entropy_from_logits(logits, temperature=1.0):
  """f32[..., V] -> f32[...]: H = logsumexp(z) − Σ softmax(z)·z, z = logits / T, fp32."""
  z = logits.astype(jnp.float32) / temperature
  return jax.nn.logsumexp(z, axis=-1) - (jax.nn.softmax(z, axis=-1) * z).sum(-1)


@jax.custom_vjp
def _logits(h, w):
  """f32[R, C, V] = h[R, C, D] · w[D, V], operands in h's dtype, accumulated in fp32."""
  return jnp.einsum('RCD,DV->RCV', h, w, preferred_element_type=jnp.float32)


def _logits_fwd(h, w):
  return _logits(h, w), (h, w)


def _logits_bwd(res, g):
  # The backward dots in the operands' dtype too (fp32 accumulation), as the MXU runs them;
  # differentiated as written, the fp32 cotangent met the bf16 head and XLA converted the
  # whole [D, V] head to fp32 (0.9 GB at the 1.5B shape, hoisted out of the chunk loop).
  h, w = res
  g = g.astype(h.dtype)
  dh = jnp.einsum('RCV,DV->RCD', g, w, preferred_element_type=jnp.float32).astype(h.dtype)
  dw = jnp.einsum('RCD,RCV->DV', h, g, preferred_element_type=jnp.float32).astype(w.dtype)
  return dh, dw


_logits.defvjp(_logits_fwd, _logits_bwd)


def _chunk_logp_entropy(h, unembed, targets, temperature):
  """[R, C, D] -> (logp, entropy) f32[R, C]; the only place [R, C, V] fp32 logits exist."""
  # Operands in the hidden dtype with fp32 accumulation, as the model's own logits (and so the
  # sampler's behaviour log-probs) are computed: the PPO ratio compares like with like.
  z = _logits(h, unembed.astype(h.dtype)) / temperature
  lse = jax.nn.logsumexp(z, axis=-1)
  logp = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - lse
  ent = lse - (jax.nn.softmax(z, axis=-1) * z).sum(-1)
  return logp, ent


def token_logprobs_and_entropy(hidden, unembed, targets, *, temperature=1.0, chunk_size: int = 256):
  """(logp, entropy) f32[R, T] of `targets` under softmax(hidden·unembed / temperature).

  hidden [R, T, D] (bf16 or f32), unembed [D, V], targets int32[R, T]. T is cut into chunks of
  C (padded when C ∤ T) and scanned; the chunk body is rematerialised (`jax.checkpoint`), so
  the forward pass holds [R, C, V] fp32 logits at a time and the backward pass recomputes them
  per chunk instead of saving them: [R, T, V] fp32 never exists. Differentiable in hidden
  and unembed.
  """
  if hidden.ndim != 3 or targets.shape != hidden.shape[:2] or unembed.shape[0] != hidden.shape[2]:
    raise ValueError(f'shapes do not fit: hidden {hidden.shape}, unembed {unembed.shape}, '
                     f'targets {targets.shape} (want [R, T, D], [D, V], [R, T])')
  if chunk_size <= 0:
    raise ValueError(f'chunk_size must be positive, got {chunk_size}')
  r, t, d = hidden.shape
  c = min(chunk_size, t)
  n = -(-t // c)
  pad = n * c - t
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(r, n, c, d).swapaxes(0, 1)
  y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(r, n, c).swapaxes(0, 1)
  body = jax.checkpoint(_chunk_logp_entropy)
  _, (logp, ent) = jax.lax.scan(lambda _, xs: (None, body(xs[0], unembed, xs[1], temperature)),
                                None, (h, y))
  unchunk = lambda a: a.swapaxes(0, 1).reshape(r, n * c)[:, :t]
  return unchunk(logp), unchunk(ent)


# ---------------------------------------------------------------------------------------------
# CEEH (DESIGN.md "CEEH", step 5).
# ---------------------------------------------------------------------------------------------

def ceeh_me_bonus(entropy, mask, hard, *, hard_weight=5.0):
  """CEEH-ME (Σ m·w·H, Σ m·w), w = hard_weight on hard-question tokens, 1 on easy ones.

  entropy f32[R, T], mask bool[R, T], hard f32/bool[R]. The loss subtracts coef·sum/denom.
  """
  m = mask.astype(bool)
  w = jnp.where(hard[:, None] > 0, hard_weight, 1.0) * m
  return (w * jnp.where(m, entropy, 0.0)).sum(), w.sum()


def _progress(step, total_steps):
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  return jnp.clip(jnp.asarray(step, jnp.float32) / total, 0.0, 1.0)


def cosine_decay(coef, step, total_steps):
  """coef · ½(1 + cos(π·min(step/total, 1))): the CEEH-ME entropy coefficient, coef -> 0."""
  return jnp.float32(coef) * 0.5 * (1.0 + jnp.cos(jnp.pi * _progress(step, total_steps)))


def hard_weight_anneal(step, total_steps, *, start=5.0, end=1.0):
  """The other CEEH-ME mode (coefficient constant): hard weight start -> end, cosine.

  Cosine, the same curve as `cosine_decay`, so both recipe modes release the extra pressure on
  hard questions along one shape: slowly at first, fastest mid-training, flat at the end.
  """
  cos = 0.5 * (1.0 + jnp.cos(jnp.pi * _progress(step, total_steps)))
  return jnp.float32(end) + (start - end) * cos


def ceeh_ea_advantages(advantages, entropy, hard, *, alpha=0.4):
  """CEEH-EA f32[R, T]: A + min(α·sg(H), |A|/2) on hard questions' tokens; easy unchanged.

  advantages f32[R] or [R, T]; entropy f32[R, T]; hard f32/bool[R]. The bonus never exceeds
  half the advantage's size, so it cannot flip a negative advantage's sign, and it carries
  no gradient (the entropy is a signal here, not an objective).
  """
  adv = jnp.broadcast_to(_per_token(advantages), entropy.shape)
  bonus = jnp.minimum(alpha * jax.lax.stop_gradient(entropy), jnp.abs(adv) / 2.0)
  return adv + jnp.where(hard[:, None] > 0, bonus, 0.0)


# ---------------------------------------------------------------------------------------------
# One minibatch's objective.
# ---------------------------------------------------------------------------------------------

def _off(coef) -> bool:
  """A term is skipped only when its coefficient is statically off (None or a Python 0)."""
  return coef is None or (isinstance(coef, (int, float)) and coef == 0)


def loss_denominators(mask, hard=None, *, aggregation: str = 'token-mean',
                      max_len: int | None = None, hard_weight=5.0) -> dict:
  """{'pg', 'entropy', 'tokens'} f32[] denominators of a whole minibatch, for `grpo_loss`."""
  zeros = jnp.zeros(mask.shape, jnp.float32)
  hard = jnp.zeros(mask.shape[:1], jnp.float32) if hard is None else hard
  return {'pg': aggregate(zeros, mask, aggregation, max_len=max_len)[1],
          'entropy': ceeh_me_bonus(zeros, mask, hard, hard_weight=hard_weight)[1],
          'tokens': mask.astype(jnp.float32).sum()}


def grpo_loss(logp, entropy, old_logp, advantages, mask, *, hard=None, ref_logp=None,
              denoms=None, aggregation: str = 'token-mean', max_len: int | None = None,
              eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 3.0,
              kl_coef=0.0, kl_kind: str = 'k3', entropy_coef=0.0, hard_weight=5.0,
              ea_alpha: float | None = None):
  """One (micro-)batch's GRPO/CEEH objective -> (total f32[], aux dict of f32[] metrics).

    total = pg_sum / den_pg + β · kl_sum / den_pg − c · me_sum / den_me
  pg and KL use the same aggregation; me is the CEEH-ME weighted entropy (DESIGN.md step 5).

  Args:
    logp, entropy: f32[R, T] under the current policy, differentiable (the trainer gets them
      from `token_logprobs_and_entropy` inside its `jax.value_and_grad`).
    old_logp: f32[R, T] behaviour log-probs. advantages: f32[R] or f32[R, T]. mask: bool[R, T].
    hard: f32/bool[R] hard-question flags (CEEH-ME weights, CEEH-EA); None: every row easy.
    ref_logp: f32[R, T] reference log-probs; None skips the KL term.
    denoms: `loss_denominators` of the whole minibatch when micro-batching (then totals,
      gradients and aux add up exactly over micro-batches); None uses this batch's own.
    aggregation, max_len: see `aggregate`. eps_low, eps_high, dual_clip: see `ppo_clip_loss`.
    kl_coef, kl_kind: β and estimator (`kl_penalty`); β None or Python 0 skips the term.
    entropy_coef, hard_weight: CEEH-ME c and w, traced schedule values allowed (`cosine_decay`,
      `hard_weight_anneal`); c None or Python 0 skips the term. `denoms` must use the same w.
    ea_alpha: CEEH-EA α (`ceeh_ea_advantages`); None is off.
  Returns:
    total, and aux: pg_loss, kl, entropy_bonus (the terms before their coefficients),
    entropy (mean per token), clip/low, clip/high, clip/dual (token fractions), ratio (mean ρ),
    ea_bonus (mean advantage added per token); kl / entropy_bonus / ea_bonus only when on.
  """
  use_kl = ref_logp is not None and not _off(kl_coef)
  use_me = not _off(entropy_coef)
  if ea_alpha is not None and hard is None:
    raise ValueError('CEEH-EA (ea_alpha) needs the hard-question flags `hard`')
  hard = jnp.zeros(logp.shape[:1], jnp.float32) if hard is None else hard
  if denoms is None:
    denoms = loss_denominators(mask, hard, aggregation=aggregation, max_len=max_len,
                               hard_weight=hard_weight)
  m = mask.astype(bool)
  adv = jnp.broadcast_to(_per_token(advantages), logp.shape).astype(jnp.float32)
  aux = {}
  if ea_alpha is not None:
    ea_adv = ceeh_ea_advantages(adv, entropy, hard, alpha=ea_alpha)
    aux['ea_bonus'] = _ratio(jnp.where(m, ea_adv - adv, 0.0).sum(), denoms['tokens'])
    adv = ea_adv

  pg_tok, clip = ppo_clip_loss(logp, old_logp, adv, m, eps_low=eps_low, eps_high=eps_high,
                               dual_clip=dual_clip)
  pg_sum, _ = aggregate(pg_tok, m, aggregation, max_len=max_len)
  aux['pg_loss'] = _ratio(pg_sum, denoms['pg'])
  total = aux['pg_loss']
  if use_kl:
    kl_sum, _ = aggregate(kl_penalty(logp, ref_logp, kl_kind), m, aggregation, max_len=max_len)
    aux['kl'] = _ratio(kl_sum, denoms['pg'])
    total = total + kl_coef * aux['kl']
  if use_me:
    me_sum, _ = ceeh_me_bonus(entropy, m, hard, hard_weight=hard_weight)
    aux['entropy_bonus'] = _ratio(me_sum, denoms['entropy'])
    total = total - entropy_coef * aux['entropy_bonus']

  per_token_mean = lambda x: _ratio(jnp.where(m, x, 0.0).sum(), denoms['tokens'])
  sg = jax.lax.stop_gradient
  aux['entropy'] = per_token_mean(sg(entropy))
  aux['ratio'] = per_token_mean(jnp.exp(jnp.clip(sg(logp - old_logp), -20.0, 20.0)))
  aux.update({f'clip/{k}': per_token_mean(v) for k, v in clip.items()})
  return total, aux
