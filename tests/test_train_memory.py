"""The train step's memory fixes change no number: bf16 remat policies equal no remat,
a micro-batch smaller than the device count (sequence-sharded) equals one device, and
chunked rollouts return the rows of one call."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import contextlib
import functools
import io
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ceeh_jax import config_check
from ceeh_jax import default_config
from ceeh_jax import rollouts as rollouts_lib
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

R, PL, M = 8, 16, 16  # rows, prompt bucket, completion: T = 32 splits over 8 devices
POLICIES = ('full', 'save_qkv_proj', 'save_dot_except_mlp', 'save_dots')


def _batch(seed=0):
  return test_util.random_batch(R, PL, M, seed)


def _config(micro):
  c = default_config.get_config()
  c.model.preset = 'tiny'
  c.batch_size, c.sampling.num_samples = 2, 4
  c.minibatch_size, c.micro_batch_size = R, micro
  c.logp_chunk = 8
  c.grpo.kl_coef = 0.01
  c.optim.lr = 1e-2
  c.old_logp = 'sampler'
  return c


def _lora_params(model_cfg, seed=0):
  """Random params with non-zero LoRA B (so the adapters change the forward)."""
  params = qwen2_lib.init_params(model_cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  def one(path, x):
    if path[-1].key == 'lora_b':
      return jnp.asarray(0.05 * rng.standard_normal(x.shape), x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(one, params)


class RematTest(parameterized.TestCase):

  def test_named_policies_equal_no_remat_with_lora(self):
    """Loss and gradients (LoRA A and B) of every policy equal those without remat."""
    base = QwenConfig.tiny(lora_rank=4)
    params = _lora_params(base)
    batch = _batch()

    def loss(p, policy):
      cfg = base.replace(remat_policy=policy)
      logp, ent = steps_lib.completion_logps(p, cfg, batch, 0.9, chunk_size=8)
      return (jnp.where(batch.mask, logp + 0.1 * ent, 0.0)).sum()

    train = lambda p: steps_lib.split_params(p, True)[0]
    grads = lambda pol: jax.value_and_grad(
        lambda t: loss(steps_lib.merge_params(t, steps_lib.split_params(params, True)[1]), pol))
    policies = ('none',) + POLICIES
    for policy in POLICIES:
      jaxpr = str(jax.make_jaxpr(grads(policy))(train(params)))
      self.assertIn('remat', jaxpr, policy)
    results = jax.jit(lambda t: [grads(pol)(t) for pol in policies])(train(params))
    (l0, g0) = results[0]
    self.assertTrue(all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(g0)))
    for policy, (l1, g1) in zip(policies[1:], results[1:]):
      np.testing.assert_allclose(l1, l0, rtol=1e-6, err_msg=policy)
      for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], atol=1e-6, err_msg=f'{policy} {k}')


  @parameterized.named_parameters(
      ('save_qkv_proj', 'save_qkv_proj', 4), ('save_dot_except_mlp', 'save_dot_except_mlp', 7),
      ('save_dots', 'save_dots', 9))
  def test_named_policies_keep_bf16_tensors_per_layer(self, policy, n_saved):
    """What the layer scan keeps for the backward, with bf16 compute and LoRA: the layer
    input and the named projections, all bf16 (the fp32 accumulations and LoRA's fp32 delta
    are not kept), plus the attention's fp32 logsumexp [L, B, K, G, T] with 'context'."""
    cfg = QwenConfig.tiny(dtype='bfloat16', lora_rank=4, remat_policy=policy)
    params = _lora_params(cfg)
    toks = jnp.ones((1, 61), jnp.int32)  # T = 61: no other dim has that size
    mask = jnp.ones((1, 61), bool)
    loss = lambda p: qwen2_lib.Qwen2(cfg).apply({'params': p}, toks,
                                                qwen2_lib.positions_from_mask(mask),
                                                mask)[0].sum()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      jax.ad_checkpoint.print_saved_residuals(loss, params)
    per_layer = [line.split()[0] for line in out.getvalue().splitlines()
                 if 'output of scan' in line]
    lse = f'f32[{cfg.num_layers},1,{cfg.num_kv_heads},3,61]'
    self.assertLen(per_layer, n_saved, per_layer)
    for saved in per_layer:
      self.assertTrue(saved.startswith('bf16[') or saved == lse, per_layer)
    self.assertEqual(lse in per_layer, policy != 'save_qkv_proj')


class SequenceShardingTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if jax.device_count() < 8:
      self.skipTest('needs 8 devices (fake CPU ones: tests/conftest.py), has '
                    f'{jax.device_count()}')

  @parameterized.named_parameters(
      ('rows_divide', 8, P('fsdp', None, None)),
      ('rows_do_not_divide', 4, P(None, 'fsdp', None)),
      ('one_row', 1, P(None, 'fsdp', None)))
  def test_constrain_splits_the_sequence_when_rows_do_not_divide(self, rows, spec):
    mesh = sharding_lib.make_mesh((1, 8, 1))
    x = jnp.ones((rows, 32, 6))
    names = ('act_batch', 'act_length', 'act_embed')
    fn = sharding_lib.traced_under(mesh, sharding_lib.DEFAULT_RULES,
                                   lambda x: sharding_lib.constrain(x * 2, names))
    out = jax.jit(fn)(jax.device_put(x, sharding_lib.replicated(mesh)))
    self.assertTrue(out.sharding.is_equivalent_to(jax.sharding.NamedSharding(mesh, spec), 3),
                    out.sharding)

  def test_constrain_is_a_no_op_without_a_mesh(self):
    x = jnp.ones((3, 5))
    self.assertIs(sharding_lib.constrain(x, ('act_batch', 'act_length')), x)

  def _grads(self, mesh, config, model_cfg, params):
    """(loss, aux, LoRA grads) of one minibatch (`steps.minibatch_loss`) under `mesh`."""
    rules = sharding_lib.DEFAULT_RULES
    train, frozen = steps_lib.split_params(params, True)
    put = lambda x: jax.device_put(x, sharding_lib.replicated(mesh))
    fn = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
        steps_lib.minibatch_loss, config=config, model_cfg=model_cfg)))
    return jax.device_get(fn(put(train), put(frozen), put(_batch(3)), jnp.float32(0.9),
                             jnp.int32(0)))

  def test_micro_batch_of_2_on_8_devices_equals_one_device(self):
    """2-row micro-batches on an FSDP-8 mesh (each row's 32 tokens split 8 ways; LoRA, remat
    save_dot_except_mlp, the blocked attention) give the loss and gradients of one device,
    one 8-row micro-batch and no remat."""
    base = QwenConfig.tiny(lora_rank=4, attention='blocked', num_layers=2)
    params = _lora_params(base, seed=1)
    loss0, aux0, g0 = self._grads(sharding_lib.make_mesh((1, 1, 1)), _config(micro=8), base,
                                  params)
    loss1, aux1, g1 = self._grads(sharding_lib.make_mesh((1, 8, 1)), _config(micro=2),
                                  base.replace(remat_policy='save_dot_except_mlp'), params)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-5)
    for k in ('kl', 'entropy_sum', 'tokens'):
      np.testing.assert_allclose(aux1[k], aux0[k], rtol=1e-5, err_msg=k)
    self.assertTrue(all(np.abs(g).max() > 0 for g in g0.values()))
    for k in g0:
      np.testing.assert_allclose(g1[k], g0[k], atol=2e-6, err_msg=str(k))


class RowChunksTest(parameterized.TestCase):

  def _fake_generate(self, calls):
    """A sampler stand-in: row j of prompt p gets token value 100·p[0] + j; records calls."""
    def generate(prompts, rng, bucket):
      calls.append((len(prompts), bucket, np.asarray(jax.random.key_data(rng))))
      toks = np.asarray([[100 * p[0] + j] for p in prompts for j in range(3)], np.int32)
      ones = np.ones(len(toks), bool)
      return sampler_lib.Rollout(tokens=jnp.asarray(toks), logps=jnp.zeros(toks.shape),
                                 mask=jnp.ones(toks.shape, bool), lengths=jnp.ones(len(toks)),
                                 finished=jnp.asarray(ones), truncated=jnp.asarray(~ones))
    return generate

  @parameterized.named_parameters(('even', 6, 3), ('ragged_last', 12, 2), ('one_call', 0, 1))
  def test_chunks_return_the_rows_of_one_call(self, rows_per_chunk, n_calls):
    prompts = [[1], [2, 2], [3], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [5], [6]]
    calls = []
    ro = rollouts_lib.generate_in_chunks(self._fake_generate(calls), prompts, jax.random.key(0),
                                         group_size=3, rows_per_chunk=rows_per_chunk)
    want = [100 * p[0] + j for p in prompts for j in range(3)]
    np.testing.assert_array_equal(np.asarray(ro.tokens)[:, 0], want)
    self.assertLen(calls, n_calls)
    self.assertLen({n for n, _, _ in calls}, 1)             # one shape: one compilation
    self.assertEqual({b for _, b, _ in calls}, {32})         # the bucket of the longest prompt
    self.assertLen({k.tobytes() for _, _, k in calls}, n_calls)  # a fresh key per chunk

  def test_trainer_runs_with_row_chunks(self):
    """Two trainer steps with 16-row rollouts decoded 8 rows at a time (and the 8-prompt
    eval in one chunk)."""
    from ceeh_jax import train as train_lib  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    config = test_util.small_config(tmp, total_steps=2)
    config.sampling.rows_per_chunk = 8
    record = train_lib.train_and_evaluate(config, os.path.join(tmp, 'w'))
    self.assertEqual(record['step'], 2)
    self.assertBetween(record['length'], 1, config.sampling.max_new_tokens)

  def test_config_check_names_a_bad_rows_per_chunk(self):
    c = _config(micro=8)
    c.model.preset, c.tokenizer_dir = 'tiny', 'x'
    c.batch_size, c.sampling.num_samples, c.minibatch_size = 8, 4, 32
    c.mesh.shape = (1, 8, 1)
    c.sampling.rows_per_chunk = 16
    config_check.validate(c, num_devices=8)
    for bad in (6, 12, 20):  # not a multiple of G = 4, not of 8 devices, does not divide 32
      c.sampling.rows_per_chunk = bad
      with self.assertRaisesRegex(config_check.ConfigError, 'rows_per_chunk'):
        config_check.validate(c, num_devices=8)


if __name__ == '__main__':
  absltest.main()
