"""Group and step helpers shared by the method rewards.

Shape legend: R responses = B prompts x G samples, prompt-major (rows g·G … g·G+G−1 are the G
responses of prompt g); Q training questions; T completion tokens.
"""
import bisect

import jax
import jax.numpy as jnp


def groups(x, group_size: int):
  """[R] -> [B, G]; raises on a batch that is not whole groups."""
  if group_size < 1 or x.shape[0] % group_size:
    raise ValueError(f'{x.shape[0]} responses do not split into groups of {group_size}')
  return x.reshape(-1, group_size)


def per_response(x, group_size: int):
  """f32[B] -> f32[R]: one value per group, repeated for its G responses."""
  return jnp.repeat(x, group_size)


def group_accuracy(correct, group_size: int):
  """bool[R] -> f32[B]: fraction of each group's responses that are correct."""
  return groups(correct.astype(jnp.float32), group_size).mean(1)


def is_traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def staged_value(step, values, boundaries):
  """values[i] for boundaries[i−1] ≤ step < boundaries[i]; a host int for a host step.

  `len(values) == len(boundaries) + 1`, boundaries strictly increasing (checked by callers).
  """
  if not is_traced(step):
    return values[bisect.bisect_right(list(boundaries), int(step))]
  idx = jnp.searchsorted(jnp.asarray(boundaries, jnp.int32), step, side='right')
  return jnp.asarray(values)[idx]
