"""Entropy-Guided Reasoning Compression (arXiv 2511.14258): a compression stage, then an
exploration stage (or the reverse, the paper's ablation).

Shape legend: R responses = B prompts x G samples (prompt-major).
Compression (§3.3): length clip L (over-length or unfinished ⇒ reward 0), exponential shaping
R = correct·exp(−λ·len) with λ = −ln(r)/L (so R = r at len = L), positive-only updates with
the absolute advantage A = β·R — no baseline, so a wrong response has A = 0 and no gradient.
Exploration (§3.4): GRPO at a higher temperature with R = R_format + R_answer + R_length,
R_length = −0.25 per 1k tokens beyond L, A = (R − μ)/σ.
"""
import math

import jax.numpy as jnp

from ceeh_jax import losses as losses_lib
from ceeh_jax.methods import common
from ceeh_jax.methods import length as length_lib

COMPRESS, EXPLORE = 0, 1


def egrc_stage(step, hp) -> int:
  """COMPRESS (0) or EXPLORE (1) at `step`: the first `stage_steps` steps run the first stage
  (compression when `compression_first`). A host int for a host step, int32[] when traced."""
  first, second = (COMPRESS, EXPLORE) if hp['compression_first'] else (EXPLORE, COMPRESS)
  return common.staged_value(step, (first, second), (int(hp['stage_steps']),))


def egrc_decay(length_clip: float, ratio_at_clip: float) -> float:
  """λ = −ln(r)/L of the exponential shaping (§3.3.3)."""
  return -math.log(ratio_at_clip) / length_clip


def egrc_compress_rewards(correct, lengths, truncated, length_clip: int, ratio_at_clip: float):
  """correct·exp(−λ·len) within the clip, 0 over it or unfinished. f32[R] in [0, 1]."""
  kept = length_lib.clipped_correct(correct, lengths, truncated, length_clip)
  lam = egrc_decay(length_clip, ratio_at_clip)
  return kept * jnp.exp(-lam * lengths.astype(jnp.float32))


def egrc_explore_rewards(correct, boxed, lengths, length_clip: int, format_reward: float,
                         answer_reward: float, penalty_per_1k: float):
  """R_format·boxed + R_answer·correct − penalty_per_1k·max(0, len − L)/1000. f32[R]."""
  over = jnp.maximum(lengths.astype(jnp.float32) - length_clip, 0.0)
  return (format_reward * boxed.astype(jnp.float32) + answer_reward * correct.astype(jnp.float32)
          - penalty_per_1k * over / 1000.0)


def egrc_explore_advantages(rewards, group_size: int, baseline: str):
  """(R − μ)/σ, μ and σ over each prompt's group ('group', GRPO) or the batch ('batch')."""
  if baseline == 'group':
    return losses_lib.group_advantages(rewards, group_size, std_normalize=True)
  return losses_lib.centred_rewards(rewards, std_normalize=True)


def egrc(correct, boxed, lengths, truncated, group_size: int, stage, hp):
  """Both stages' formulas, selected by `stage` (host int or traced scalar).

  Returns (rewards f32[R], advantages f32[R], loss_mask bool[R]): the mask drops non-positive
  responses from the objective in the compression stage and keeps every row in exploration.
  """
  r_comp = egrc_compress_rewards(correct, lengths, truncated, hp['length_clip'],
                                 hp['ratio_at_clip'])
  r_expl = egrc_explore_rewards(correct, boxed, lengths, hp['length_clip'], hp['format_reward'],
                                hp['answer_reward'], hp['penalty_per_1k'])
  a_expl = egrc_explore_advantages(r_expl, group_size, hp['explore_baseline'])
  compress = jnp.asarray(stage) == COMPRESS
  rewards = jnp.where(compress, r_comp, r_expl)
  advantages = jnp.where(compress, hp['beta'] * r_comp, a_expl)
  loss_mask = jnp.where(compress, r_comp > 0, True)
  return rewards, advantages, loss_mask
