"""Methods that carry history across batches: HAPO (per question) and LASER-D (per bucket).

Shape legend: R responses = B prompts x G samples (prompt-major), Q training questions.
States are dicts of f32 arrays, carried through jit and checkpointed with the difficulty state.
Rewards use the state from before this batch; the update follows. HAPO reduces question ids
repeated inside a batch with segment ops, so two groups of one question act as one group.
"""
import math

import jax
import jax.numpy as jnp

from ceeh_jax.methods import common
from ceeh_jax.methods import length as length_lib

# LASER-D difficulty buckets (index into its `targets`).
EASY, MEDIUM, HARD = 0, 1, 2


# --- HAPO ---------------------------------------------------------------------------------

UNSET = -1.0  # HAPO history marker: no correct response seen yet (0 is a real length)


def init_hapo_state(num_questions: int) -> dict:
  """{'min_len': f32[Q]}: shortest correct length seen per question, UNSET (−1) = none yet."""
  return {'min_len': jnp.full((num_questions,), UNSET, jnp.float32)}


def hapo_is_set(history):
  """bool: a history entry holds a length (≥ 0), not the UNSET marker."""
  return history >= 0


def hapo_length_reward(correct, lengths, history, weight: float = 1.0, clamp: float = -0.7):
  """HAPO (arXiv 2505.11225) length term, f32[R], from history h f32[R] (UNSET = none).

  f = cos(π/2 · min(L/h, 2)): 1 at L → 0, 0 at L = h, −1 from L = 2h on (h = 0: L/h is
  taken as 0 for L = 0 and as 2 above it).
  correct: w·max(clamp, f) (shorter than the history earns up to +w; the clamp keeps a correct
  answer above every wrong one); wrong: w·min(0, f) (never a bonus for being short, up to −w
  for being long); unset history: 0. As in the authors' released code.
  """
  length = lengths.astype(jnp.float32)
  ratio = jnp.where(history > 0, length / jnp.where(history > 0, history, 1.0),
                    jnp.where(length > 0, 2.0, 0.0))
  f = jnp.cos(0.5 * jnp.pi * jnp.minimum(ratio, 2.0))
  term = weight * jnp.where(correct, jnp.maximum(clamp, f), jnp.minimum(0.0, f))
  return jnp.where(hapo_is_set(history), term, 0.0)


def hapo_update(state: dict, correct, lengths, qids) -> dict:
  """h[q] ← min(h[q], shortest correct length of q in this batch); unset takes it; no correct
  response leaves h[q] as it was."""
  old = state['min_len']
  shortest = jax.ops.segment_min(jnp.where(correct, lengths.astype(jnp.float32), jnp.inf), qids,
                                 num_segments=old.shape[0])
  seen = jnp.isfinite(shortest)
  new = jnp.where(hapo_is_set(old), jnp.minimum(old, shortest), shortest)
  return {'min_len': jnp.where(seen, new, old)}


def hapo_rewards(correct, lengths, qids, state: dict, weight: float = 1.0, clamp: float = -0.7):
  """HAPO: (rewards = correct + length term f32[R], new state)."""
  term = hapo_length_reward(correct, lengths, state['min_len'][qids], weight, clamp)
  return correct.astype(jnp.float32) + term, hapo_update(state, correct, lengths, qids)


# --- LASER-D ------------------------------------------------------------------------------

def init_laser_d_state(budget: float) -> dict:
  """{'targets': f32[3]}: target length per difficulty bucket (easy, medium, hard)."""
  return {'targets': jnp.full((3,), budget, jnp.float32)}


def laser_d_buckets(correct, group_size: int, easy_acc: float = 2 / 3, hard_acc: float = 1 / 3):
  """int32[B]: EASY if group accuracy ≥ easy_acc, HARD if < hard_acc, else MEDIUM."""
  acc = common.group_accuracy(correct, group_size)
  return jnp.where(acc >= easy_acc, EASY, jnp.where(acc < hard_acc, HARD, MEDIUM))


def laser_d_min_correct(group_size: int, easy_acc: float = 2 / 3, hard_acc: float = 1 / 3):
  """c_d, the fewest correct responses a group of each bucket has: (⌈easy_acc·G⌉, ⌈hard_acc·G⌉, 1).

  A group is easy when k/G ≥ easy_acc, so its fewest correct is the smallest such k (G = 8:
  6 easy, 3 medium; G = 12: 8, 4). A hard group may have none; c = 1 there makes the target
  cover the bucket's longest response (P(len ≤ L) ≥ 1).
  """
  least = lambda acc: math.ceil(acc * group_size - 1e-9)  # 1e-9: 2/3·12 is 8.000000000000002
  return (least(easy_acc), least(hard_acc), 1)


def laser_d_batch_targets(lengths, bucket_r, group_size: int, *, budget: float, min_target: float,
                          interval: float, easy_acc: float = 2 / 3, hard_acc: float = 1 / 3):
  """ECR targets f32[3] from this batch (NaN for a bucket with no groups).

  Expected correct responses within L for a bucket-d group: ECR_d(L) = P_d(len ≤ L) · c_d, with
  P_d over all of the bucket's responses and c_d its fewest correct responses per group. The
  target is the smallest L on the grid min_target, min_target + interval, … ≤ budget with
  ECR_d(L) ≥ 1 (at least one correct response expected within the target); budget if none.
  """
  length = lengths.astype(jnp.float32)
  n = jax.ops.segment_sum(jnp.ones_like(length), bucket_r, num_segments=3)
  c = jnp.asarray(laser_d_min_correct(group_size, easy_acc, hard_acc), jnp.float32)

  def one(d):
    # P(len ≤ L) ≥ 1/c  ⇔  #(len ≤ L) ≥ ceil(n/c): the ceil(n/c)-th shortest length.
    key = jnp.sort(jnp.where(bucket_r == d, length, jnp.inf))
    k = jnp.ceil(n[d] / jnp.maximum(c[d], 1.0) - 1e-6).astype(jnp.int32)
    raw = key[jnp.clip(k - 1, 0, key.shape[0] - 1)]
    on_grid = min_target + interval * jnp.ceil(jnp.maximum(raw - min_target, 0.0) / interval)
    target = jnp.where((c[d] >= 1) & (on_grid <= budget), on_grid, budget)
    return jnp.where(n[d] > 0, target, jnp.nan)

  return jax.vmap(one)(jnp.arange(3))


def laser_d_rewards(correct, lengths, group_size: int, state: dict, *, bonus: float = 0.5,
                    budget: float = 16384.0, min_target: float = 4096.0,
                    interval: float = 1024.0, rate: float = 0.1):
  """LASER-D (arXiv 2505.15612): LASER's step reward with the target of the group's bucket;
  then each bucket seen in the batch moves its target toward this batch's ECR target at `rate`
  (1 = replace). Returns (rewards f32[R], new state, bucket int32[B])."""
  bucket = laser_d_buckets(correct, group_size)
  bucket_r = common.per_response(bucket, group_size)
  rewards = length_lib.laser_rewards(correct, lengths, state['targets'][bucket_r], bonus)
  batch = laser_d_batch_targets(lengths, bucket_r, group_size, budget=budget,
                                min_target=min_target, interval=interval)
  old = state['targets']
  new = jnp.where(jnp.isnan(batch), old, old + rate * (jnp.nan_to_num(batch) - old))
  return rewards, {'targets': new}, bucket
