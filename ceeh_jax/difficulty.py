"""CEEH's per-question difficulty state and rewards (DESIGN.md "CEEH", steps 1-4).

State, indexed by stable question id q in [0, Q):
  acc_h[q]  historical accuracy, −1 = unset
  len_x[q]  optimal (shortest-correct) length, 0 = unset

One rollout batch (responses grouped by question id; a question may appear in several groups):
  acc(q)   = #correct(q) / #responses(q)
  base_i   = 1 if correct, 0.1 if boxed but wrong, 0 if no boxed answer
  thresh   = mean(acc_h[q'] over seen q')            (state before this batch)
  hard(q)  = acc(q) ≤ thresh                          (nothing seen yet: every question is hard)
  len_i    = max(−0.9, λ·(len_x[q] − L_i) / len_x[q]) for correct i,
             0 if acc(q) < acc_h[q] (strict gate) or len_x[q] unset             (λ = 0.1)
  reward_i = base_i + len_i
Then the state moves (only for questions in the batch):
  len_x[q] ← L* if unset, else len_x + (0.2 if L* < len_x else 0.05)·(L* − len_x),
             L* = shortest correct length this batch (no correct response: unchanged)
  acc_h[q] ← acc if unset, else acc_h + (0.2 if acc > acc_h else 0.05)·(acc − acc_h)

`compat=True` reproduces the released code's quirks: the threshold averages acc_h over all Q
questions with unseen ones counting −1, and an acc_h of exactly 0 is treated as unset (it is
overwritten, not averaged, by the next observation).
"""
import jax
import jax.numpy as jnp
import numpy as np


def init_state(num_questions: int) -> dict:
  if num_questions <= 0:
    raise ValueError(f'num_questions must be positive, got {num_questions}')
  return {'acc_h': jnp.full((num_questions,), -1.0, jnp.float32),
          'len_x': jnp.zeros((num_questions,), jnp.float32)}


def check_qids(qids, num_questions: int) -> None:
  """Host-side range check: an id outside [0, Q) is an error, never a silent clip."""
  q = np.asarray(qids)
  bad = q[(q < 0) | (q >= num_questions)]
  if bad.size:
    raise ValueError(f'question id {int(bad[0])} is outside the difficulty state '
                     f'[0, {num_questions}); ids must index the training set')


def _ema(old, new, up_rate, down_rate):
  rate = jnp.where(new > old, up_rate, down_rate)
  return old + rate * (new - old)


def ceeh_step(state, qids, correct, boxed, lengths, *, group_size: int, lam=0.1,
              min_len_reward=-0.9, acc_up=0.2, acc_down=0.05, len_shorter=0.2,
              len_longer=0.05, reward_correct=1.0, reward_boxed=0.1, reward_none=0.0,
              compat: bool = False):
  """One CEEH update -> (new_state, rewards f32[R], hard bool[R], metrics).

  qids int32[R], correct/boxed bool[R], lengths int32[R]. `group_size` is only checked:
  per-question statistics come from segment sums over qids, so the same id in two groups is
  treated exactly as one group of all its responses.
  """
  acc_h, len_x = state['acc_h'], state['len_x']
  q = acc_h.shape[0]
  r = qids.shape[0]
  if r % group_size:
    raise ValueError(f'{r} responses are not whole groups of {group_size}')
  correct_f = correct.astype(jnp.float32)
  length = lengths.astype(jnp.float32)

  # Per-question statistics of this batch.
  count = jax.ops.segment_sum(jnp.ones(r, jnp.float32), qids, num_segments=q)
  n_correct = jax.ops.segment_sum(correct_f, qids, num_segments=q)
  present = count > 0
  acc = jnp.where(present, n_correct / jnp.maximum(count, 1.0), 0.0)
  shortest = jax.ops.segment_min(jnp.where(correct, length, jnp.inf), qids, num_segments=q)
  has_correct = n_correct > 0

  # Hard / easy threshold from the state before this batch.
  unset_acc = (acc_h < 0) | ((acc_h == 0) if compat else False)
  seen = ~(acc_h < 0)
  if compat:
    thresh = acc_h.mean()
    any_seen = jnp.bool_(True)
  else:
    thresh = jnp.where(seen, acc_h, 0.0).sum() / jnp.maximum(seen.sum(), 1)
    any_seen = seen.any()
  acc_i = acc[qids]
  hard = jnp.where(any_seen, acc_i <= thresh, True)

  # Rewards: base + length term for correct answers (state before the update).
  base = jnp.where(correct, reward_correct, jnp.where(boxed, reward_boxed, reward_none))
  lx = len_x[qids]
  gate = (acc_i >= acc_h[qids]) & (lx > 0)
  len_r = jnp.maximum(min_len_reward, lam * (lx - length) / jnp.maximum(lx, 1e-9))
  len_r = jnp.where(correct & gate, len_r, 0.0)
  rewards = base + len_r

  # State update (questions in this batch only).
  new_len = jnp.where(len_x <= 0, shortest,
                      _ema(len_x, shortest, len_longer, len_shorter))  # shorter ⇒ len_shorter
  new_len_x = jnp.where(present & has_correct, new_len, len_x)
  new_acc = jnp.where(unset_acc, acc, _ema(acc_h, acc, acc_up, acc_down))
  new_acc_h = jnp.where(present, new_acc, acc_h)

  metrics = {'ceeh/acc_threshold': thresh, 'ceeh/length_reward': len_r.mean(),
             'ceeh/length_reward_gated': (correct & gate).mean(),
             'ceeh/seen': (new_acc_h >= 0).sum().astype(jnp.float32),
             'ceeh/hard_questions': jnp.where(present, acc <= thresh, False).sum() /
                                    jnp.maximum(present.sum(), 1)}
  return {'acc_h': new_acc_h, 'len_x': new_len_x}, rewards, hard, metrics
