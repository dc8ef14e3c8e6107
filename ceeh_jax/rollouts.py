"""Glue between the sampler and the step: prompt encoding, training batches, minibatches.

Token ids flow from the sampler straight into the training batch; text is decoded only for
grading (never re-tokenized), so the PPO ratio sees exactly the sampled tokens.
"""
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import data as data_lib
from ceeh_jax import errors
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax import tokenizer as tokenizer_lib


class PromptTooLongError(errors.UserError, ValueError):
  """A prompt exceeds data.max_prompt_tokens and the policy is 'reject'."""


def encode_prompts(tokenizer, examples, *, instruction, think_prefix, max_tokens, overflow,
                   source='data'):
  """Chat-formatted token ids per example -> (list[list[int]], number left-truncated).

  overflow='reject' raises naming the row; 'truncate' keeps the last `max_tokens` tokens (the
  question's end and the generation prompt survive) and counts it. A row the tokenizer cannot
  encode raises DataError naming it.
  """
  _, out, truncated, _ = encode_examples(
      tokenizer, examples, instruction=instruction, think_prefix=think_prefix,
      max_tokens=max_tokens, overflow=overflow, source=source, on_error='raise')
  return out, truncated


def encode_examples(tokenizer, examples, *, instruction, think_prefix, max_tokens, overflow,
                    source='data', on_error='raise'):
  """-> (examples kept, their prompt ids, number left-truncated, number dropped).

  Like `encode_prompts`; a row the tokenizer cannot encode is a DataError naming it under
  on_error='raise', and is dropped (counted) under 'skip'.
  """
  if overflow not in ('reject', 'truncate'):
    raise ValueError(f"data.prompt_overflow must be 'reject' or 'truncate', got {overflow!r}")
  texts = [tokenizer_lib.build_prompt(tokenizer, ex.problem, instruction=instruction,
                                      think_prefix=think_prefix) for ex in examples]
  examples, dropped = list(examples), 0
  try:
    ids = tokenizer_lib.encode_prompts(tokenizer, texts)
  except tokenizer_lib.EncodeError as e:
    if on_error != 'skip':
      raise data_lib.DataError(
          f'{source}: row {e.index + 1} (id {examples[e.index].id!r}) cannot be encoded by the '
          f'tokenizer ({e.reason}): prompt {e.shown}. Fix or drop the row, or set '
          "data.on_error='skip' to skip such rows.") from None
    # Row by row (the slow path, only when some row fails): keep what encodes.
    kept, ids = [], []
    for ex, text in zip(examples, texts):
      try:
        ids.append(tokenizer_lib.encode_prompts(tokenizer, [text])[0])
        kept.append(ex)
      except tokenizer_lib.EncodeError:
        dropped += 1
    if not kept:
      raise data_lib.DataError(f'{source}: the tokenizer cannot encode any of its '
                               f'{len(examples)} rows ({e})') from None
    examples = kept
    print(f'WARNING: skipped {dropped} rows of {source} that the tokenizer cannot encode')
  out, truncated = [], 0
  for row, (ex, toks) in enumerate(zip(examples, ids)):
    if len(toks) > max_tokens:
      if overflow == 'reject':
        raise PromptTooLongError(
            f'{source}: row {row + 1} (id {ex.id!r}) has a prompt of {len(toks)} tokens, over '
            f'data.max_prompt_tokens={max_tokens}. Raise the budget, drop the row, or set '
            "data.prompt_overflow='truncate' to keep its last tokens.")
      toks = toks[-max_tokens:]
      truncated += 1
    out.append(list(toks))
  if truncated:
    print(f'WARNING: {truncated} prompts of {source} were left-truncated to {max_tokens} tokens')
  return examples, out, truncated, dropped


def generate_in_chunks(generate, prompts, rng, *, group_size: int, rows_per_chunk: int):
  """Rollout of all prompts, decoding at most `rows_per_chunk` rows (prompts x G) at a time.

  `generate(prompts, rng, bucket)` -> Rollout is one sampler call. The KV cache is the
  sampler's largest buffer, rows x (P + M) x 28 KiB at the 1.5B shape (0.57 GiB a row at
  P + M = 21.5k, 220 GiB for the recipe's 384 rows): chunks bound it, one chunk's cache
  being freed before the next is made (`config.sampling.rows_per_chunk`; 0 = all rows in one
  call). Rows come back prompt-major as from one call; chunk i samples with
  fold_in(rng, i), so a chunked run draws other samples than an unchunked one. Every chunk has
  the same shape (the last is padded with repeats of its last prompt, their rows dropped) and
  the same prompt bucket: one compilation.
  """
  per = len(prompts) if rows_per_chunk <= 0 else max(1, rows_per_chunk // group_size)
  bucket = sampler_lib.bucket_length(max(len(p) for p in prompts))
  if per >= len(prompts):
    return generate(prompts, rng, bucket)
  parts = []
  for i, start in enumerate(range(0, len(prompts), per)):
    chunk = list(prompts[start:start + per])
    rows = len(chunk) * group_size
    chunk += [chunk[-1]] * (per - len(chunk))
    ro = generate(chunk, jax.random.fold_in(rng, i), bucket)
    parts.append(ro if rows == per * group_size else jax.tree.map(lambda x: x[:rows], ro))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def make_batch(prompts, rollout: sampler_lib.Rollout, group_size: int, pad_id: int,
               bucket: int | None = None, lengths=None) -> steps_lib.Batch:
  """Training batch for all R = B·G responses (prompt rows repeated G times)."""
  toks, mask = sampler_lib.pad_prompts(prompts, pad_id, bucket)
  m = rollout.tokens.shape[1]
  # Train only on the generated part: trim the completion columns to a power-of-two bucket of
  # the longest response (few shapes, few compiles; no forward/backward over pure padding).
  longest = int(jax.device_get(rollout.lengths).max()) if lengths is None else int(max(lengths))
  m = min(m, sampler_lib.bucket_length(longest, minimum=32))
  # Prompt rows go where their completions are (on a multi-host mesh, each process puts only
  # its own rows).
  put = lambda x: sharding_lib.put_global(np.repeat(x, group_size, 0), rollout.tokens.sharding)
  old_logp = rollout.logps[:, :m]
  zeros_r = jnp.zeros_like(old_logp[:, 0])
  return steps_lib.Batch(prompt=put(toks), prompt_mask=put(mask),
                         completion=rollout.tokens[:, :m], mask=rollout.mask[:, :m],
                         old_logp=old_logp,
                         advantages=zeros_r, hard=zeros_r)


def minibatches(batch: steps_lib.Batch, size: int):
  """Consecutive minibatches of `size` responses (whole groups when size is a multiple of G)."""
  r = batch.completion.shape[0]
  if r % size:
    raise ValueError(f'{r} responses do not split into minibatches of {size}')
  for start in range(0, r, size):
    yield jax.tree.map(lambda x: x[start:start + size], batch)


def method_extras(config, model_cfg, params, batch, temperature):
  """Per-token inputs some methods need from a forward pass (ENTRA), else None."""
  if config.method != 'entra':
    return None
  from ceeh_jax import entra_inputs  # pylint: disable=g-import-not-at-top
  return entra_inputs.compute(params, batch, temperature, model_cfg=model_cfg,
                              micro_batch=config.micro_batch_size)
