"""CEEH's per-question difficulty state and rewards (DESIGN.md "CEEH", steps 1-4).

Shape legend: R responses (B prompts x G samples, prompt-major), Q training questions.

State, indexed by stable question id q in [0, Q) (a plain dict pytree, carried through jit):
  acc_h[q]  historical accuracy, −1 = unset
  len_x[q]  optimal (shortest-correct) length, 0 = unset

One rollout batch. Statistics are segment sums over qids, so a question that appears in several
groups is treated exactly as one group of all its responses (DESIGN.md step 6):
  n(q)     = #responses of q,  acc(q) = #correct(q) / n(q)
  base_i   = 1 if correct_i, 0.1 if boxed_i but wrong, 0 if no boxed answer        (step 1)
  thresh   = mean(acc_h[q'] over q' with acc_h[q'] ≥ 0)  from the state BEFORE this batch,
             as the authors' code does; 1 when nothing is seen yet                  (step 2)
  hard(q)  = acc(q) ≤ thresh
  gate(q)  = acc_h[q] set  and  acc(q) ≥ acc_h[q]  and  len_x[q] > 0   (state before; strict:
             acc < acc_h gets nothing, acc == acc_h passes)                         (step 3)
  len_i    = max(−0.9, λ·(len_x[q] − L_i) / len_x[q])  if correct_i and gate(q), else 0  (λ = 0.1)
  reward_i = base_i + len_i      (len_i ≥ −0.9, so a correct answer always beats a wrong one)
Then the state moves, only for questions present in the batch                        (step 4):
  L*(q)    = min L_i over correct responses of q
  len_x[q] ← L*                                   if len_x[q] unset
             len_x + 0.2·(L* − len_x)             if L* < len_x   (toward shorter: fast)
             len_x + 0.05·(L* − len_x)            otherwise       (toward longer: slow)
             (no correct response of q: unchanged)
  acc_h[q] ← acc                                  if acc_h[q] unset
             acc_h + 0.2·(acc − acc_h)            if acc > acc_h  (rising: fast)
             acc_h + 0.05·(acc − acc_h)           otherwise       (falling: slow)

No history (first batch): the threshold is 1, so every question counts as hard. Being "hard"
only adds exploration (the CEEH-ME ×5 entropy weight, the CEEH-EA bonus); calling a question
easy without evidence would compress it blind, and the length reward is off anyway until
len_x is set. It lasts one batch.

`compat=True` reproduces the released code's quirks: the threshold averages acc_h over all Q
questions with unseen ones counting −1 (so with little history nothing is hard), and an acc_h
of exactly 0 is unset: it is overwritten (not averaged) by the next observation. The released
gate (`compute_length_reward`) checks only `current_acc < acc_records` (and a set len_x), so in
compat the gate does not ask for acc_h to be set: an acc_h of 0 (or −1) never blocks it.
The default gate does ask, which changes nothing reachable: len_x is set only together with
acc_h (both move when a question has a correct response), so "acc_h set" is implied by
len_x > 0 unless a state is built or loaded by hand.

Question ids: eagerly, an id outside [0, Q) raises ValueError (`check_qids`). Under jit, the
host is expected to have checked them; `check_ids=True` adds a `checkify` check for use under
`checkify.checkify`, and without it a bad row gets a NaN reward (never a clipped id) and
leaves the state untouched, so the trainer's non-finite-loss guard stops on it.
"""
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np


def init_state(num_questions: int) -> dict:
  """{'acc_h': f32[Q] all −1, 'len_x': f32[Q] all 0}: nothing seen yet."""
  if num_questions <= 0:
    raise ValueError(f'num_questions must be positive, got {num_questions}')
  return {'acc_h': jnp.full((num_questions,), -1.0, jnp.float32),
          'len_x': jnp.zeros((num_questions,), jnp.float32)}


def check_qids(qids, num_questions: int) -> None:
  """Host-side range check: an id outside [0, Q) is an error, never a silent clip."""
  q = np.asarray(qids)
  if not np.issubdtype(q.dtype, np.integer):
    raise TypeError(f'question ids must be integers, got dtype {q.dtype}')
  bad = q[(q < 0) | (q >= num_questions)]
  if bad.size:
    raise ValueError(f'question id {int(bad[0])} is outside the difficulty state '
                     f'[0, {num_questions}); ids must index the training set')


def _ema(old, new, up_rate, down_rate):
  """Asymmetric EMA: `up_rate` when new > old, else `down_rate`."""
  return old + jnp.where(new > old, up_rate, down_rate) * (new - old)


def _check_inputs(qids, correct, boxed, lengths, group_size, num_questions, check_ids):
  if not isinstance(group_size, int) or group_size <= 0:
    raise ValueError(f'group_size must be a positive Python int, got {group_size!r}')
  r = qids.shape[0]
  for name, x in (('correct', correct), ('boxed', boxed), ('lengths', lengths)):
    if x.shape != (r,):
      raise ValueError(f'{name} has shape {x.shape}, expected ({r},) like qids')
  if r % group_size:
    raise ValueError(f'{r} responses are not whole groups of {group_size}')
  if not jnp.issubdtype(qids.dtype, jnp.integer):
    raise TypeError(f'question ids must be integers, got dtype {qids.dtype}')
  if not isinstance(qids, jax.core.Tracer):  # eager: check on the host right away
    check_qids(qids, num_questions)
  if check_ids:
    valid = (qids >= 0) & (qids < num_questions)
    checkify.check(valid.all(), f'question id {{bad}} is outside the difficulty state '
                   f'[0, {num_questions})', bad=qids[jnp.argmin(valid)])


def ceeh_step(state, qids, correct, boxed, lengths, *, group_size: int, lam=0.1,
              min_len_reward=-0.9, acc_up=0.2, acc_down=0.05, len_shorter=0.2,
              len_longer=0.05, reward_correct=1.0, reward_boxed=0.1, reward_none=0.0,
              compat: bool = False, check_ids: bool = False):
  """One CEEH update -> (new_state, rewards f32[R], hard bool[R], metrics).

  Args:
    state: {'acc_h': f32[Q], 'len_x': f32[Q]} before this batch.
    qids: int32[R] question id of each response, in [0, Q).
    correct, boxed: bool[R] graded answer is right / has a boxed answer.
    lengths: int32[R] response lengths in tokens (think included).
    group_size: G, a static Python int; R must be a multiple of it. Per-question statistics
      use qids, not groups, so duplicated ids across groups merge exactly.
    lam, min_len_reward: λ and the clamp of the length reward.
    acc_up, acc_down: acc_h EMA rates when accuracy rises / falls.
    len_shorter, len_longer: len_x EMA rates toward a shorter / longer correct length.
    reward_correct, reward_boxed, reward_none: base rewards (step 1).
    compat: reproduce the released code's quirks (module docstring).
    check_ids: add a `checkify` range check of qids (call under `checkify.checkify`).
  Returns:
    new_state, rewards f32[R], hard bool[R] (its question is hard), metrics dict of scalars.
  """
  acc_h, len_x = state['acc_h'], state['len_x']
  qids, correct, boxed, lengths = map(jnp.asarray, (qids, correct, boxed, lengths))
  q = acc_h.shape[0]
  r = qids.shape[0]
  _check_inputs(qids, correct, boxed, lengths, group_size, q, check_ids)
  correct = correct.astype(bool)
  boxed = boxed.astype(bool)
  length = lengths.astype(jnp.float32)
  valid = (qids >= 0) & (qids < q)
  gather = lambda x: x.at[qids].get(mode='fill', fill_value=jnp.nan)  # never clip an id

  # Per-question statistics of this batch (out-of-range ids are dropped by segment_sum).
  count = jax.ops.segment_sum(jnp.ones(r, jnp.float32), qids, num_segments=q)
  n_correct = jax.ops.segment_sum(correct.astype(jnp.float32), qids, num_segments=q)
  present = count > 0
  acc = n_correct / jnp.maximum(count, 1.0)
  shortest = jax.ops.segment_min(jnp.where(correct, length, jnp.inf), qids, num_segments=q)
  has_correct = n_correct > 0

  # Step 2: hard vs easy, threshold from the state before this batch.
  unset_acc = (acc_h < 0) | (acc_h == 0) if compat else acc_h < 0
  seen = acc_h >= 0
  if compat:
    thresh = acc_h.mean()  # unseen questions count as −1 (released code)
  else:
    thresh = jnp.where(seen.any(), jnp.where(seen, acc_h, 0.0).sum() / jnp.maximum(seen.sum(), 1),
                       1.0)
  acc_i = gather(acc)
  hard = acc_i <= thresh

  # Steps 1 and 3: base reward plus the length reward of correct answers (state before).
  base = jnp.where(correct, reward_correct, jnp.where(boxed, reward_boxed, reward_none))
  lx = gather(len_x)
  gate = (acc_i >= gather(acc_h)) & (lx > 0)
  if not compat:  # the released gate does not ask for a set acc_h (module docstring)
    gate = gate & (gather((~unset_acc).astype(jnp.float32)) > 0)
  len_r = jnp.maximum(min_len_reward, lam * (lx - length) / jnp.where(lx > 0, lx, 1.0))
  len_r = jnp.where(correct & gate, len_r, 0.0)
  rewards = jnp.where(valid, base + len_r, jnp.nan)

  # Step 4: state update for the questions in this batch.
  new_len = jnp.where(len_x <= 0, shortest, _ema(len_x, shortest, len_longer, len_shorter))
  new_len_x = jnp.where(present & has_correct, new_len, len_x)
  new_acc = jnp.where(unset_acc, acc, _ema(acc_h, acc, acc_up, acc_down))
  new_acc_h = jnp.where(present, new_acc, acc_h)

  n_present = jnp.maximum(present.sum(), 1)
  n_rows_correct = jnp.maximum(correct.sum(), 1)
  set_len = new_len_x > 0
  metrics = {
      'ceeh/acc_threshold': thresh,
      'ceeh/acc_mean': jnp.where(present, acc, 0.0).sum() / n_present,
      'ceeh/hard_questions': (present & (acc <= thresh)).sum() / n_present,
      'ceeh/hard_responses': hard.mean(),
      'ceeh/length_reward': len_r.mean(),
      'ceeh/length_reward_correct': len_r.sum() / n_rows_correct,
      'ceeh/length_reward_gated': (correct & gate).mean(),
      'ceeh/seen': (new_acc_h >= 0).sum().astype(jnp.float32),
      'ceeh/new_questions': (present & ~seen).sum().astype(jnp.float32),
      'ceeh/len_x_mean': jnp.where(set_len, new_len_x, 0.0).sum() / jnp.maximum(set_len.sum(), 1),
      'ceeh/bad_qids': (~valid).sum().astype(jnp.float32),
  }
  return {'acc_h': new_acc_h, 'len_x': new_len_x}, rewards, hard, metrics
