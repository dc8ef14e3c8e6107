"""A frozen bf16 base stored as bits: the same values, and no fp32 copy of the weights in the
compiled train step on XLA:CPU (which has no bf16 slicing or gathering)."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import re

from absl.testing import absltest
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import default_config
from ceeh_jax import losses as losses_lib
from ceeh_jax import policy as policy_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

CFG = QwenConfig.tiny(lora_rank=4, dtype='bfloat16', remat_policy='full')  # L 3, D 48, F 67
# fp32 arrays shaped like a whole frozen weight: the MLP stacks, the q stack, the embedding.
WEIGHT_F32 = re.compile(r'f32\[3,48,67\]|f32\[3,67,48\]|f32\[3,48,6,8\]|f32\[257,48\]')
R, P, M = 8, 16, 12


def _batch():
  sds = jax.ShapeDtypeStruct
  return steps_lib.Batch(prompt=sds((R, P), jnp.int32), prompt_mask=sds((R, P), bool),
                         completion=sds((R, M), jnp.int32), mask=sds((R, M), bool),
                         old_logp=sds((R, M), jnp.float32), advantages=sds((R,), jnp.float32),
                         hard=sds((R,), jnp.float32))


def _split(params):
  return steps_lib.split_params(params, lora=True)


class FrozenBitsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    c = default_config.get_config()
    c.model.preset, c.model.lora_rank, c.model.dtype = 'tiny', 4, 'bfloat16'
    c.model.remat_policy = 'full'
    c.batch_size, c.sampling.num_samples, c.sampling.max_new_tokens = 2, 4, M
    c.minibatch_size, c.micro_batch_size, c.logp_chunk = R, R // 2, 5
    self.config = c
    mesh = sharding_lib.make_mesh((1, 1, 1))
    self.bits = policy_lib.with_base(
        policy_lib.init_adapters(CFG, jax.random.key(1), mesh),
        policy_lib.load_base(c, CFG, mesh, sharding_lib.DEFAULT_RULES))
    self.plain = jax.tree.map(qwen2_lib.from_bits, self.bits)

  def test_load_base_stores_layers_and_embedding_as_bits(self):
    for path, x in tu.flatten_dict(self.bits).items():
      want = (jnp.uint16 if path[0] in qwen2_lib.BITS_KEYS and path[-1] not in ('lora_a',
                                                                                  'lora_b')
              else (jnp.float32 if path[-1] in ('lora_a', 'lora_b') else jnp.bfloat16))
      self.assertEqual(x.dtype, want, path)

  def test_same_loss_and_grads_and_no_fp32_weight_copy(self):
    loss = lambda train, frozen, batch: steps_lib.minibatch_loss(
        train, frozen, batch, 0.8, jnp.int32(1), config=self.config, model_cfg=CFG)
    fn = jax.jit(loss)
    texts = {}
    for name, params in (('bits', self.bits), ('bf16', self.plain)):
      train, frozen = _split(params)
      texts[name] = fn.lower(train, frozen, _batch()).compile().as_text()
    self.assertEqual(WEIGHT_F32.findall(texts['bits']), [])
    self.assertNotEqual(WEIGHT_F32.findall(texts['bf16']), [])  # XLA:CPU's copy, without bits
    rng = np.random.default_rng(0)
    batch = steps_lib.Batch(
        prompt=jnp.asarray(rng.integers(1, 257, (R, P)), jnp.int32),
        prompt_mask=jnp.ones((R, P), bool),
        completion=jnp.asarray(rng.integers(1, 257, (R, M)), jnp.int32),
        mask=jnp.ones((R, M), bool), old_logp=jnp.full((R, M), -5.0),
        advantages=jnp.asarray(rng.normal(size=R), jnp.float32), hard=jnp.zeros(R))
    out_bits = fn(*_split(self.bits), batch)
    out_plain = fn(*_split(self.plain), batch)
    for a, b in zip(jax.tree.leaves(out_bits), jax.tree.leaves(out_plain)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class LogitsVjpTest(absltest.TestCase):

  def test_fp32_is_autodiff_and_bf16_backward_stays_bf16(self):
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 11)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 3, 11)), jnp.float32)
    plain = lambda h, w: jnp.einsum('RCD,DV->RCV', h, w)
    _, vjp = jax.vjp(losses_lib._logits, h, w)  # pylint: disable=protected-access
    _, want = jax.vjp(plain, h, w)
    for a, b in zip(vjp(g), want(g)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    hb, wb = h.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    text = jax.jit(lambda h, w, g: jax.vjp(losses_lib._logits, h, w)[1](g)).lower(  # pylint: disable=protected-access
        hb, wb, g).as_text()
    self.assertIn('stablehlo.convert %arg2', text)  # the cotangent narrowed to bf16...
    self.assertNotIn('stablehlo.convert %arg1', text)  # ...the weight never widened to fp32
    dh, dw = jax.vjp(losses_lib._logits, hb, wb)[1](g)  # pylint: disable=protected-access
    self.assertEqual((dh.dtype, dw.dtype), (jnp.bfloat16, jnp.bfloat16))
    np.testing.assert_allclose(np.asarray(dh, np.float32), want(g)[0], rtol=0.05, atol=0.05)


if __name__ == '__main__':
  absltest.main()
