"""models/attention.py: every implementation equals the blocked one (values and gradients),
with GQA and the trainer's padding, on CPU; the blocked one keeps no [T, T] buffer."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import attention as attention_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

B, T, K, G, H = 3, 13, 2, 3, 8  # prime-ish sizes; GQA with 3 query heads per kv head


def _inputs(t=T, seed=0):
  """q, k, v, key_mask (row 0 unpadded, row 1 left+right padded, row 2 left padded: the
  trainer's left-padded prompt + right-padded completion) and a cotangent."""
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (B, t, K, G, H))
  k, v = jax.random.normal(ks[1], (B, t, K, H)), jax.random.normal(ks[2], (B, t, K, H))
  pos = jnp.arange(t)[None]
  first, end = jnp.asarray([0, 4, t - 4])[:, None], jnp.asarray([t, t - 2, t])[:, None]
  key_mask = (pos >= first) & (pos < end)
  return q, k, v, key_mask, jax.random.normal(ks[3], q.shape)


def _value_and_grads(fn, q, k, v, w):
  """fn(q, k, v) and the gradients of sum(fn * w) with respect to q, k, v (one jit)."""
  def run(q, k, v):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(w)
  return jax.jit(run)(q, k, v)


class AttentionTest(parameterized.TestCase):

  def _assert_same(self, fn, ref, t=T, atol=1e-5):
    q, k, v, key_mask, w = _inputs(t)
    got, got_g = _value_and_grads(lambda *a: fn(*a, key_mask), q, k, v, w)
    want, want_g = _value_and_grads(lambda *a: ref(*a, key_mask), q, k, v, w)
    np.testing.assert_allclose(got, want, atol=atol)
    for name, a, b in zip('qkv', got_g, want_g):
      np.testing.assert_allclose(a, b, atol=atol, err_msg=f'd{name}')
    # Padded queries give exactly 0, so every position agrees, not only the real ones.
    np.testing.assert_array_equal(np.asarray(got)[~np.asarray(key_mask)], 0.0)

  @parameterized.named_parameters(
      ('several_blocks', 4), ('ragged_last_block', 5), ('one_block', 13), ('default', 128))
  def test_blocked_equals_dense_softmax(self, block):
    blocked = functools.partial(attention_lib.causal_attention, implementation='blocked',
                                block=block)
    self._assert_same(blocked, attention_lib.dense_reference)

  def test_xla_equals_blocked(self):
    """jax.nn.dot_product_attention on the rows rotated to right padding (the cuDNN path)."""
    self._assert_same(functools.partial(attention_lib.causal_attention, implementation='xla'),
                      functools.partial(attention_lib.causal_attention, implementation='blocked',
                                        block=4))

  def test_splash_interpret_equals_blocked(self):
    """Pallas splash attention, interpret mode on CPU (T padded to 128 inside)."""
    self._assert_same(
        functools.partial(attention_lib.causal_attention, implementation='splash',
                          interpret=True),
        functools.partial(attention_lib.causal_attention, implementation='blocked', block=4))

  @parameterized.named_parameters(('splash', 'splash'), ('cudnn_path_with_xla', 'xla'))
  def test_kernel_in_shard_map_over_8_devices_equals_unsharded(self, impl):
    """Under a (data 2, fsdp 2, tensor 2) mesh the kernel runs in shard_map: rows over
    data x fsdp (4 rows), kv heads over tensor (K = 2). 'cudnn' runs `_rotated` there; on CPU
    the same wrapper is run around the 'xla' call."""
    if jax.device_count() < 8:
      self.skipTest('needs 8 devices (fake CPU ones: tests/conftest.py), has '
                    f'{jax.device_count()}')
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (4, 16, K, G, H))
    k, v = jax.random.normal(ks[1], (4, 16, K, H)), jax.random.normal(ks[2], (4, 16, K, H))
    key_mask = jnp.arange(16)[None] >= jnp.asarray([0, 3, 7, 15])[:, None]
    if impl == 'splash':
      fn = lambda q, k, v: attention_lib.causal_attention(q, k, v, key_mask, 'splash',
                                                          interpret=True)
    else:
      fn = lambda q, k, v: attention_lib._sharded(  # pylint: disable=protected-access
          functools.partial(attention_lib._rotated, implementation='xla'),  # pylint: disable=protected-access
          q, k, v, key_mask, True) * key_mask[:, :, None, None, None]
    loss = lambda q, k, v: (fn(q, k, v) ** 2).sum()
    mesh = sharding_lib.make_mesh((2, 2, 2))
    sharded = jax.jit(sharding_lib.traced_under(mesh, sharding_lib.DEFAULT_RULES,
                                                jax.value_and_grad(loss, argnums=(0, 1, 2))))
    on_mesh = jax.device_put((q, k, v), sharding_lib.replicated(mesh))
    l1, g1 = sharded(*on_mesh)
    l0, g0 = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for a, b in zip(g1, g0):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    self.assertIn('sdy.manual_computation', sharded.lower(*on_mesh).as_text())

  def test_model_forward_with_the_xla_kernel_equals_blocked(self):
    """`QwenConfig.attention` reaches the kernel: the model's logits on left-padded prompts
    match. (splash's model run is left out: ~40 s in interpret mode; its kernel tests above.)"""
    impl = 'xla'
    base = QwenConfig.tiny(num_layers=2)
    params = qwen2_lib.init_params(base, jax.random.key(0))
    lens = np.asarray([11, 2, 5, 9])
    mask = jnp.asarray(np.arange(11)[None] >= 11 - lens[:, None])
    toks = jnp.where(mask, jnp.arange(11)[None] + 3, 0)
    pos = qwen2_lib.positions_from_mask(mask)
    run = lambda cfg: jax.jit(lambda p: qwen2_lib.Qwen2(cfg).apply({'params': p}, toks, pos,
                                                                   mask)[0])(params)
    ref = run(base.replace(attention='blocked'))
    got = run(base.replace(attention=impl))
    np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(ref)[mask], atol=1e-4)

  def test_auto_picks_the_backend_kernel_and_names_are_checked(self):
    want = {'tpu': 'splash', 'gpu': 'cudnn'}.get(jax.default_backend(), 'blocked')
    self.assertEqual(attention_lib.resolve('auto', jnp.bfloat16), want)
    self.assertEqual(attention_lib.resolve('auto', jnp.float32),
                     'splash' if want == 'splash' else 'blocked')
    self.assertEqual(attention_lib.resolve('splash', jnp.float32), 'splash')
    with self.assertRaisesRegex(ValueError, 'model.attention must be one of'):
      attention_lib.resolve('flash', jnp.float32)
    with self.assertRaisesRegex(ValueError, 'attention must be one of'):
      QwenConfig.tiny(attention='flash')

  def test_blocked_memory_grows_linearly_in_t_inside_a_layer_scan(self):
    """Forward + backward of 4 scanned layers: temp grows ~4x from T = 2048 to 8192 (the
    saved q, k, v, out per layer), not 16x. Per-block masks built in a Python loop were
    hoisted out of the scan as constants, all blocks at once: ~T^2 bytes (64 MiB at 8192)."""
    def temp(t):
      q = jax.ShapeDtypeStruct((1, t, K, G, H), jnp.float32)
      kv = jax.ShapeDtypeStruct((1, t, K, H), jnp.float32)
      key_mask = jax.ShapeDtypeStruct((1, t), bool)

      def layers(q, k, v, key_mask):
        def body(x, _):
          return attention_lib.causal_attention(x, k, v, key_mask, 'blocked'), None
        return jax.lax.scan(body, q, None, length=4)[0].sum()

      compiled = jax.jit(jax.grad(layers, argnums=(0, 1, 2))).lower(q, kv, kv, key_mask).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp(2048), temp(8192)
    self.assertLess(large, 6 * small)
    self.assertLess(large, 48 * 2 ** 20)  # measured ~22 MiB; a [T, T] bool alone is 64 MiB


# The kernels compiled for their device exist only there: on CPU (the default suite) the class
# is not defined, so nothing is skipped; test_xla_* and test_splash_interpret_* cover the same
# code paths on CPU, and scripts/device_check.sh runs this file on a GPU or TPU.
DEVICE_KERNELS = [(name, impl) for name, impl, backend in
                  (('cudnn', 'cudnn', 'gpu'), ('splash_compiled', 'splash', 'tpu'))
                  if jax.default_backend() == backend]
if DEVICE_KERNELS:

  class DeviceKernelTest(parameterized.TestCase):

    @parameterized.named_parameters(*DEVICE_KERNELS)
    def test_device_kernel_equals_blocked(self, impl):
      """The kernel compiled for its device, bf16, head_dim 128, T = 256 (scripts/device_check.sh
      runs this on a GPU or TPU)."""
      ks = jax.random.split(jax.random.key(2), 4)
      shape = (2, 256, K, G, 128)
      q = jax.random.normal(ks[0], shape, jnp.bfloat16) * 128 ** -0.5
      k = jax.random.normal(ks[1], shape[:3] + (128,), jnp.bfloat16)
      v = jax.random.normal(ks[2], shape[:3] + (128,), jnp.bfloat16)
      w = jax.random.normal(ks[3], shape, jnp.bfloat16)
      key_mask = jnp.arange(256)[None] >= jnp.asarray([0, 37])[:, None]
      got, got_g = _value_and_grads(
          lambda *a: attention_lib.causal_attention(*a, key_mask, impl), q, k, v, w)
      want, want_g = _value_and_grads(
          lambda *a: attention_lib.causal_attention(*a, key_mask, 'blocked'), q, k, v, w)
      np.testing.assert_allclose(np.float32(got), np.float32(want), atol=2e-2)
      for a, b in zip(got_g, want_g):
        np.testing.assert_allclose(np.float32(a), np.float32(b), atol=5e-2)


if __name__ == '__main__':
  absltest.main()
