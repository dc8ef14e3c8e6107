"""Sampler memory: unroll_layers='auto', views that copy only what changes, and api.generate
never holding the weights in both layouts."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import api
from ceeh_jax import config_check
from ceeh_jax import default_config
from ceeh_jax import hf_io
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import tokenizer as syn_tok


def _live_bytes():
  return sum(x.nbytes for x in jax.live_arrays())


class UnrollAutoTest(parameterized.TestCase):

  @parameterized.named_parameters(('cpu', 'cpu', True), ('tpu', 'tpu', False),
                                  ('gpu', 'gpu', False))
  def test_auto_unrolls_on_cpu_only(self, backend, want):
    self.assertIs(sampler_lib.resolve_unroll('auto', backend), want)
    self.assertIs(sampler_lib.resolve_unroll(True, backend), True)
    self.assertIs(sampler_lib.resolve_unroll(False, backend), False)

  def test_sample_config_resolves_and_rejects(self):
    self.assertIs(sampler_lib.SampleConfig().unroll_layers, True)  # this test runs on CPU
    self.assertIs(sampler_lib.SampleConfig(unroll_layers=False).unroll_layers, False)
    with self.assertRaisesRegex(ValueError, 'auto'):
      sampler_lib.SampleConfig(unroll_layers='yes')

  def test_config_takes_all_three_and_checks(self):
    c = default_config.get_config()
    self.assertEqual(c.sampling.unroll_layers, 'auto')
    c.sampling.unroll_layers = False  # a bool over the 'auto' default (no type error)
    c.sampling.unroll_layers = 'auto'
    c.model.preset, c.tokenizer_dir, c.mesh.shape = 'tiny', 'tok', (1, 1, 1)
    config_check.validate(c, num_devices=1)
    c.sampling.unroll_layers = 'yes'
    with self.assertRaisesRegex(config_check.ConfigError, 'unroll_layers'):
      config_check.validate(c, num_devices=1)


class ViewTest(absltest.TestCase):

  def test_scanned_view_in_the_params_dtype_is_the_params_themselves(self):
    cfg = QwenConfig.tiny(tie_embeddings=True)
    params = qwen2_lib.init_params(cfg, jax.random.key(0))
    view = sampler_lib.sampling_params(params, jnp.float32, unroll_layers=False)
    for a, b in zip(jax.tree.leaves(params['layers']), jax.tree.leaves(view['layers'])):
      self.assertIs(a, b)
    self.assertIs(view['embedding'], params['embedding'])
    np.testing.assert_array_equal(view['lm_head'], params['embedding'].T)  # the one copy

  def test_unrolled_bf16_view_has_no_cast_copy_of_the_stack(self):
    """Compiled on abstract arrays at a mid-size shape: the view's program needs no temp
    (cast first, XLA kept a cast copy of every stacked leaf beside the slices)."""
    cfg = QwenConfig.tiny(num_layers=4, embed_dim=256, mlp_dim=1024, num_heads=4, head_dim=64)
    layers = sharding_lib.abstract_params(cfg)['layers']
    compiled = sampler_lib._unstack_cast.lower(layers, jnp.dtype(jnp.bfloat16)).compile()  # pylint: disable=protected-access
    ma = compiled.memory_analysis()
    self.assertEqual(ma.temp_size_in_bytes, 0)
    self.assertLess(abs(2 * ma.output_size_in_bytes - ma.argument_size_in_bytes), 4096)
    params = qwen2_lib.init_params(QwenConfig.tiny(), jax.random.key(1))
    view = sampler_lib.sampling_params(params, jnp.bfloat16, unroll_layers=True)
    np.testing.assert_array_equal(view['layer_2']['mlp']['up']['kernel'],
                                  params['layers']['mlp']['up']['kernel'][2].astype(jnp.bfloat16))


class ApiGenerateMemoryTest(absltest.TestCase):

  def test_generate_never_holds_both_layouts(self):
    tmp = self.create_tempdir().full_path
    config = QwenConfig.tiny(vocab_size=128, num_layers=4, embed_dim=96, mlp_dim=384,
                             num_heads=6, head_dim=16)
    hf_io.save_hf(qwen2_lib.init_params(config, jax.random.key(0)), config, tmp + '/m',
                  tokenizer_dir=syn_tok.ensure_tokenizer(tmp + '/tok'))
    model = api.load(tmp + '/m')
    weights = sum(x.nbytes for x in jax.tree.leaves(model.params))
    tokens = np.array([[0, 5, 6, 7], [1, 2, 3, 4]])
    before = np.asarray(api.logits(model, tokens, tokens != 0))
    seen = []
    real = sampler_lib.prefill

    def spy(*a, **k):  # the weights live when sampling starts
      seen.append(_live_bytes())
      return real(*a, **k)

    base = _live_bytes() - weights  # whatever else is alive (compiled constants, caches)
    with mock.patch.object(sampler_lib, 'prefill', spy):
      for _ in range(2):
        api.generate(model, ['a=1 b=a+2 find b'], num_samples=2, max_new_tokens=4)
    self.assertFalse(qwen2_lib.is_scanned(model.params))  # converted once, kept
    self.assertLen(seen, 2)
    for live in seen:  # one layout (and small activations), never weights x 2
      self.assertLess(live - base, 1.5 * weights)
    after = np.asarray(api.logits(model, tokens, tokens != 0))
    np.testing.assert_allclose(after, before, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
