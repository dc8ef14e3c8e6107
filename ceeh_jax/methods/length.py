"""Stateless length shaping: Kimi k1.5, GRPO-λ, Arora & Zanette, LASER, ThinkPrune, DLER, DAPO.

Shape legend: R responses = B prompts x G samples (prompt-major). Inputs: correct, truncated
bool[R]; lengths int32[R] (completion tokens, thinking and EOS included). All pure and jittable;
G and every hyper-parameter that sets a shape are static Python values.
"""
import math

import jax
import jax.numpy as jnp

from ceeh_jax import losses as losses_lib
from ceeh_jax.methods import common


def kimi_lambda(lengths, group_size: int):
  """Kimi k1.5 (arXiv 2501.12599): λ_i = 0.5 − (L_i − min_g L)/(max_g L − min_g L).

  The paper leaves max == min undefined; we set λ = 0 there so a group of equal lengths keeps
  its plain correctness reward (0.5 for every correct response would only rescale the group).
  """
  l = common.groups(lengths.astype(jnp.float32), group_size)
  lo, hi = l.min(1, keepdims=True), l.max(1, keepdims=True)
  lam = 0.5 - (l - lo) / jnp.where(hi > lo, hi - lo, 1.0)
  return jnp.where(hi > lo, lam, 0.0).reshape(-1)


def length_penalty_rewards(correct, lengths, group_size: int, weight: float = 1.0):
  """Kimi k1.5 length penalty: correct 1 + w·λ_i, wrong 0 + w·min(0, λ_i). f32[R]."""
  lam = kimi_lambda(lengths, group_size)
  return correct.astype(jnp.float32) + weight * jnp.where(correct, lam, jnp.minimum(0.0, lam))


def top_groups(accuracy, top_fraction: float):
  """bool[B]: groups whose accuracy is among the top ceil(top_fraction·B) (ties included, > 0)."""
  b = accuracy.shape[0]
  k = min(b, max(1, math.ceil(top_fraction * b - 1e-9)))
  threshold = jnp.sort(accuracy)[b - k]
  return (accuracy >= threshold) & (accuracy > 0)


def grpo_lambda_rewards(correct, lengths, group_size: int, top_fraction: float = 0.2,
                        weight: float = 1.0):
  """GRPO-λ (arXiv 2505.18086), our reading: the Kimi length term only in the top-λ groups.

  Groups are ranked by accuracy within the batch; the ceil(λ·B) most accurate (every group tied
  with the last one too; never an all-wrong group) get `length_penalty_rewards`, the others
  plain 0/1 correctness. Returns (rewards f32[R], chosen bool[B]).
  """
  chosen = top_groups(common.group_accuracy(correct, group_size), top_fraction)
  shaped = length_penalty_rewards(correct, lengths, group_size, weight)
  rewards = jnp.where(common.per_response(chosen, group_size), shaped,
                      correct.astype(jnp.float32))
  return rewards, chosen


def arora_zanette_rewards(correct, lengths, group_size: int, alpha: float = 0.2):
  """Arora & Zanette (arXiv 2502.04463): correct 1 − α·σ(z), wrong 0.

  z = (L − mean)/std over the group's correct responses (population std; z = 0 where the std
  is 0, e.g. a single correct response, which then scores 1 − α/2).
  """
  c = common.groups(correct.astype(jnp.float32), group_size)
  l = common.groups(lengths.astype(jnp.float32), group_size)
  n = jnp.maximum(c.sum(1, keepdims=True), 1.0)
  mean = (c * l).sum(1, keepdims=True) / n
  std = jnp.sqrt((c * (l - mean) ** 2).sum(1, keepdims=True) / n)
  z = jnp.where(std > 0, (l - mean) / jnp.where(std > 0, std, 1.0), 0.0)
  return (c * (1.0 - alpha * jax.nn.sigmoid(z))).reshape(-1)


def laser_rewards(correct, lengths, target, bonus: float = 0.5):
  """LASER (arXiv 2505.15612) step reward: correct 1 + bonus·[L ≤ target], wrong 0.

  `target` is a scalar or f32[R] (LASER-D's per-bucket target, see history.py).
  """
  c = correct.astype(jnp.float32)
  return c * (1.0 + bonus * (lengths.astype(jnp.float32) <= target))


def clipped_correct(correct, lengths, truncated, limit):
  """1 for a correct response within `limit` tokens that ended on its own, else 0. f32[R]."""
  ok = correct & ~truncated & (lengths.astype(jnp.float32) <= limit)
  return ok.astype(jnp.float32)


def thinkprune_limit(step, limits, boundaries):
  """ThinkPrune (arXiv 2504.01296) staged length limit at `step`: limits[i] from boundaries[i−1].

  A host int for a host step (to cap the sampler), an int32 scalar for a traced one.
  """
  return common.staged_value(step, tuple(int(x) for x in limits), tuple(boundaries))


def dler_advantages(rewards, group_size: int, eps: float = 1e-6):
  """DLER (arXiv 2510.15110) batch-wise normalisation, f32[R]: group-mean baseline, divided by
  the std of those centred values over the batch's informative groups (rewards not all equal).

  DLER's dynamic sampling trains on informative groups only; the groups with equal rewards that
  remain when the bounded re-draws run out have advantage 0 and are left out of the std, so
  they do not inflate the others' advantages ([1, 0] beside [1, 1] at G = 2: ±1.0, not ±1.414).
  """
  centred = losses_lib.group_advantages(rewards, group_size)
  live = common.per_response(informative_groups(rewards, group_size), group_size)
  # Each group's centred values sum to 0, so the informative rows' mean is 0: std = RMS.
  var = jnp.where(live, jnp.square(centred), 0.0).sum() / jnp.maximum(live.sum(), 1)
  return centred / (jnp.sqrt(var) + eps)


def informative_groups(rewards, group_size: int):
  """bool[B]: groups whose rewards are not all equal (DAPO/DLER dynamic sampling keeps these)."""
  r = common.groups(rewards, group_size)
  return r.max(1) > r.min(1)


def dapo_overlong_penalty(lengths, max_len: int, cache_len: int):
  """DAPO (arXiv 2503.14476) soft overlong punishment, f32[R]: 0 for L ≤ max_len − cache,
  then linear down to −1 at L = max_len, −1 beyond."""
  if not 0 <= cache_len <= max_len:
    raise ValueError(f'DAPO overlong: need 0 <= cache_len <= max_len, got {cache_len}, {max_len}')
  length = lengths.astype(jnp.float32)
  start = max_len - cache_len
  ramp = (start - length) / max(cache_len, 1)
  return jnp.where(length <= start, 0.0, jnp.where(length <= max_len, ramp, -1.0))


def apply_overlong(rewards, lengths, max_len: int, cache_len: int):
  """rewards + `dapo_overlong_penalty` (the switch usable on top of any method)."""
  return rewards + dapo_overlong_penalty(lengths, max_len, cache_len)
