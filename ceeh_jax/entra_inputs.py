"""Per-token inputs of ENTRA's reward (arXiv 2601.07123), from one forward pass of the policy.

ENTRA scores each completion token by `log p(x_i | x_<i) + γ·μ_i`, μ_i being the mean
final-layer attention later tokens pay to token i. Both come from the model here; the reward
math lives in `methods.py`.
"""
import functools

import jax
import jax.numpy as jnp

from ceeh_jax.models import qwen2 as qwen2_lib


def _one(params, mb, temperature, model_cfg):
  p = mb.prompt.shape[1]
  tokens = jnp.concatenate([mb.prompt, mb.completion], axis=1)
  key_mask = jnp.concatenate([mb.prompt_mask, mb.mask], axis=1)
  positions = qwen2_lib.positions_from_mask(
      jnp.concatenate([mb.prompt_mask, jnp.ones_like(mb.mask)], axis=1))
  logits, _, mu = qwen2_lib.Qwen2(model_cfg).apply({'params': params}, tokens, positions,
                                                   key_mask, return_mu=True)
  logp = jax.nn.log_softmax(logits[:, p - 1:-1] / temperature, axis=-1)
  logp = jnp.take_along_axis(logp, mb.completion[..., None], axis=-1)[..., 0]
  return logp, mu[:, p:]


@functools.partial(jax.jit, static_argnames=('model_cfg', 'micro_batch'))
def compute(params, batch, temperature, *, model_cfg, micro_batch: int):
  """{'tokens': int32[R, M], 'token_logp': f32[R, M], 'attn_received': f32[R, M], 'token_mask': bool[R, M]}."""
  r = batch.completion.shape[0]
  mbs = jax.tree.map(lambda x: x.reshape((r // micro_batch, micro_batch) + x.shape[1:]), batch)
  logp, mu = jax.lax.map(lambda mb: _one(params, mb, temperature, model_cfg), mbs)
  shape = batch.completion.shape
  return {'tokens': batch.completion, 'token_logp': logp.reshape(shape),
          'attn_received': mu.reshape(shape), 'token_mask': batch.mask}
