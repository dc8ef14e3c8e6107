"""Methods that carry history across batches: HAPO (per question) and LASER-D (per bucket).

Shape legend: R responses = B prompts x G samples (prompt-major), Q training questions.
States are dicts of f32 arrays, carried through jit and checkpointed with the difficulty state.
Rewards use the state from before this batch; the update follows. Question ids repeated inside
a batch are reduced with segment ops, so two groups of one question act as one larger group.
"""
import jax
import jax.numpy as jnp

from ceeh_jax.methods import common
from ceeh_jax.methods import length as length_lib

# LASER-D difficulty buckets (index into its `targets`).
EASY, MEDIUM, HARD = 0, 1, 2


# --- HAPO ---------------------------------------------------------------------------------

def init_hapo_state(num_questions: int) -> dict:
  """{'min_len': f32[Q]}: shortest correct length seen per question, 0 = unset."""
  return {'min_len': jnp.zeros((num_questions,), jnp.float32)}


def hapo_length_reward(correct, lengths, history, weight: float = 1.0, clamp: float = -0.7):
  """HAPO (arXiv 2505.11225) length term, f32[R], from history h f32[R] (0 = unset).

  f = cos(π/2 · min(L/h, 2)): 1 at L → 0, 0 at L = h, −1 from L = 2h on.
  correct: w·f (shorter than the history earns up to +w, longer down to −w);
  wrong: max(clamp, min(0, w·f)) (never a bonus for being short, a bounded penalty for long);
  unset history: 0 (nothing to compare with yet).
  """
  length = lengths.astype(jnp.float32)
  x = jnp.minimum(length / jnp.where(history > 0, history, 1.0), 2.0)
  f = weight * jnp.cos(0.5 * jnp.pi * x)
  term = jnp.where(correct, f, jnp.maximum(clamp, jnp.minimum(0.0, f)))
  return jnp.where(history > 0, term, 0.0)


def hapo_update(state: dict, correct, lengths, qids) -> dict:
  """h[q] ← min(h[q], shortest correct length of q in this batch); unset takes it; no correct
  response leaves h[q] as it was."""
  old = state['min_len']
  shortest = jax.ops.segment_min(jnp.where(correct, lengths.astype(jnp.float32), jnp.inf), qids,
                                 num_segments=old.shape[0])
  seen = jnp.isfinite(shortest)
  new = jnp.where(old > 0, jnp.minimum(old, shortest), shortest)
  return {'min_len': jnp.where(seen, new, old)}


def hapo_rewards(correct, lengths, qids, state: dict, weight: float = 1.0, clamp: float = -0.7):
  """HAPO: (rewards = correct + length term f32[R], new state)."""
  term = hapo_length_reward(correct, lengths, state['min_len'][qids], weight, clamp)
  return correct.astype(jnp.float32) + term, hapo_update(state, correct, lengths, qids)


# --- LASER-D ------------------------------------------------------------------------------

def init_laser_d_state(budget: float) -> dict:
  """{'targets': f32[3]}: target length per difficulty bucket (easy, medium, hard)."""
  return {'targets': jnp.full((3,), budget, jnp.float32)}


def laser_d_buckets(correct, group_size: int, easy_acc: float, hard_acc: float):
  """int32[B]: EASY if group accuracy ≥ easy_acc, HARD if ≤ hard_acc, else MEDIUM."""
  acc = common.group_accuracy(correct, group_size)
  return jnp.where(acc >= easy_acc, EASY, jnp.where(acc <= hard_acc, HARD, MEDIUM))


def laser_d_batch_targets(correct, lengths, bucket_r, num_groups, budget: float):
  """Per bucket, the smallest L at which the expected number of correct responses of length
  ≤ L per group (ECR) reaches 1, estimated from this batch: the n_d-th shortest correct length
  of the bucket's n_d groups. `budget` where ECR never reaches 1, NaN for an empty bucket.

  bucket_r int32[R], num_groups f32[3] -> f32[3].
  """
  length = lengths.astype(jnp.float32)

  def one(d):
    key = jnp.sort(jnp.where(correct & (bucket_r == d), length, jnp.inf))
    n = num_groups[d]
    kth = key[jnp.clip(n.astype(jnp.int32) - 1, 0, key.shape[0] - 1)]
    target = jnp.where(jnp.isfinite(kth), kth, budget)
    return jnp.where(n > 0, target, jnp.nan)

  return jax.vmap(one)(jnp.arange(3))


def laser_d_rewards(correct, lengths, group_size: int, state: dict, *, bonus: float = 0.5,
                    budget: float = 8192.0, rate: float = 0.1, easy_acc: float = 2 / 3,
                    hard_acc: float = 1 / 3):
  """LASER-D (arXiv 2505.15612), our reading: LASER's step reward with the target of the
  response's bucket; then each seen bucket's target moves toward this batch's ECR target at
  `rate` (1 = replace). Returns (rewards f32[R], new state, bucket int32[B], batch targets)."""
  bucket = laser_d_buckets(correct, group_size, easy_acc, hard_acc)
  bucket_r = common.per_response(bucket, group_size)
  rewards = length_lib.laser_rewards(correct, lengths, state['targets'][bucket_r], bonus)
  num_groups = jax.ops.segment_sum(jnp.ones_like(bucket, jnp.float32), bucket, num_segments=3)
  batch = laser_d_batch_targets(correct, lengths, bucket_r, num_groups, budget)
  old = state['targets']
  new = jnp.where(jnp.isnan(batch), old, old + rate * (jnp.nan_to_num(batch) - old))
  return rewards, {'targets': new}, bucket, batch
