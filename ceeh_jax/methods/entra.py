"""ENTRA (arXiv 2601.07123): entropy of low-importance tokens as a redundancy reward.

Shape legend: R responses, T completion tokens, N attention heads (query heads).
Bidirectional importance I_i = log p(x_i | x_<i) + γ·μ_i, μ_i the mean final-layer attention
later tokens pay to token i. The most important (1 − fraction) of a response's tokens are
excluded; over the rest (the "low-importance set", size n) we take the empirical distribution
of token ids and its entropy H, normalised by its upper bound log n. H/log n ∈ [0, 1] is 1 when
every low-importance token is distinct and falls as the same tokens repeat ("wait", "so", …):
the paper's redundancy reward, maximised under GRPO.
"""
import functools

import jax
import jax.numpy as jnp


@jax.jit
def attention_received(attn_probs, mask):
  """μ f32[R, T]: mean over heads and valid later queries j > i of attn_probs[r, n, j, i].

  attn_probs f32[R, N, T, T] (head, query, key; causal rows), mask bool[R, T]. Strictly later
  queries (j > i): a token's attention to itself is not influence on the future. 0 where no
  valid later token exists (the last token) and at padding.
  """
  t = attn_probs.shape[-1]
  later = jnp.arange(t)[:, None] > jnp.arange(t)[None, :]                 # [j, i]
  w = later[None] & mask[:, :, None] & mask[:, None, :]                    # [R, j, i]
  total = jnp.einsum('rnji,rji->ri', attn_probs.astype(jnp.float32), w.astype(jnp.float32))
  count = w.sum(1).astype(jnp.float32) * attn_probs.shape[1]
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def entra_importance(logp, attn_received_, mask, gamma: float):
  """I = log p(x_i|x_<i) + γ·μ_i, f32[R, T]; 0 at padding."""
  return jnp.where(mask, logp + gamma * attn_received_, 0.0)


def select_low_importance(importance, mask, fraction: float):
  """bool[R, T]: the ceil(fraction·n) least important valid tokens of each response (the top
  floor((1 − fraction)·n) are excluded); ties go to the earlier token."""
  n = mask.sum(-1)
  keep = jnp.ceil(fraction * n - 1e-4).astype(jnp.int32)
  order = jnp.argsort(jnp.where(mask, importance, jnp.inf), axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  return mask & (rank < keep[:, None])


@jax.jit
def token_type_entropy(tokens, select):
  """Entropy (nats) of the token-id distribution over the selected positions, per row.

  tokens int32[R, T], select bool[R, T] -> (H f32[R], n f32[R]). Sorting makes equal ids
  adjacent, so each run is one token type: O(T log T), no vocabulary-sized buffer.
  """
  sentinel = jnp.iinfo(jnp.int32).max

  def one(tok, sel):
    s = jnp.sort(jnp.where(sel, tok, sentinel))
    valid = s != sentinel
    start = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
    run = jnp.cumsum(start) - 1
    counts = jax.ops.segment_sum(valid.astype(jnp.float32), run, num_segments=s.shape[0])
    n = valid.sum().astype(jnp.float32)
    # H = log n − (1/n) Σ_tokens log count(type of token).
    per = jnp.where(valid, jnp.log(jnp.maximum(counts[run], 1.0)), 0.0)
    return jnp.log(jnp.maximum(n, 1.0)) - per.sum() / jnp.maximum(n, 1.0), n

  return jax.vmap(one)(tokens, select)


@functools.partial(jax.jit, static_argnames=('fraction',))
def entra_redundancy(tokens, importance, mask, fraction: float = 0.8):
  """Normalised entropy H/log n of the low-importance set, f32[R] in [0, 1].

  A set of 0 or 1 tokens cannot repeat anything: score 1. Returns (score, selected bool[R, T]).
  """
  selected = select_low_importance(importance, mask, fraction)
  h, n = token_type_entropy(tokens, selected)
  score = jnp.where(n > 1, h / jnp.log(jnp.maximum(n, 2.0)), 1.0)
  return jnp.clip(score, 0.0, 1.0), selected


def entra_rewards(correct, score, weight: float, correct_only: bool):
  """correct + weight·score (only on correct responses when `correct_only`). f32[R]."""
  c = correct.astype(jnp.float32)
  return c + weight * (c * score if correct_only else score)


def entra_check(tokens, token_logp, attn_received_, token_mask):
  """Raises if ENTRA's per-token inputs are missing or disagree in shape."""
  arrays = {'tokens': tokens, 'token_logp': token_logp, 'attn_received': attn_received_,
            'token_mask': token_mask}
  missing = [k for k, v in arrays.items() if v is None]
  if missing:
    raise ValueError(f'entra needs per-token inputs {missing} in RewardInputs (one forward pass '
                     'of the policy gives them: ceeh_jax/entra_inputs.py)')
  shapes = {k: tuple(v.shape) for k, v in arrays.items()}
  if len(set(shapes.values())) != 1 or len(tokens.shape) != 2:
    raise ValueError(f'entra per-token inputs must all be [R, T], got {shapes}')
