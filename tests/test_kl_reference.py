"""The KL reference: exactly 0 at step 1 (policy == reference), the frozen base with the
adapters off under LoRA (no second copy of the base), the frozen copy under a full fine-tune."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools
import json
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from ceeh_jax import default_config
from ceeh_jax import hf_io
from ceeh_jax import policy as policy_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax import train as train_lib
from ceeh_jax.models.config import QwenConfig

R, P, M, Q = 8, 16, 12, 6


def _batch(seed=0):
  return test_util.random_batch(R, P, M, seed)


def _config(kind='k2', **kw):
  """The tiny preset, 2 micro-batches per minibatch, KL on (no trainer: no data, no tokenizer)."""
  c = default_config.get_config()
  c.model.preset = 'tiny'
  c.batch_size, c.sampling.num_samples, c.sampling.max_new_tokens = 2, 4, M
  return test_util.override(c, **{'grpo.kl_coef': 0.1, 'grpo.kl_kind': kind,
                                  'minibatch_size': R, 'micro_batch_size': R // 2,
                                  'logp_chunk': 5, 'optim.lr': 1e-2, **kw})


def _setup(model_cfg, config, mesh, rules=sharding_lib.DEFAULT_RULES):
  """(state, ref_params, jitted train_step) as the trainer makes them, fresh."""
  lora = model_cfg.lora_rank > 0
  opt = steps_lib.make_optimizer(config)
  args = (Q, 0, lora, config.method, {})
  _, shardings = policy_lib.abstract_state(model_cfg, opt, mesh, rules, *args)
  params = policy_lib.load_base(config, model_cfg, mesh, rules)
  ref = None
  if lora:
    params = policy_lib.with_base(policy_lib.init_adapters(model_cfg, jax.random.key(1), mesh,
                                                           rules), params)
  else:
    ref = jax.tree.map(jnp.copy, params)
  state = policy_lib.fresh_state(params, opt, shardings, *args)
  step = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
      steps_lib.train_step, config=config, model_cfg=model_cfg, optimizer=opt)),
                 out_shardings=(shardings, None), donate_argnums=(0,),
                 compiler_options=steps_lib.TRAIN_STEP_COMPILER_OPTIONS)
  return state.replace(step=jnp.int32(1)), ref, step


class KlAtStepOneTest(parameterized.TestCase):

  @parameterized.named_parameters(('lora_bf16_remat_k2', 4, 'bfloat16', 'dots_no_batch', 'k2'))
  def test_kl_is_exactly_zero_at_step_1_then_positive(self, lora, dtype, remat, kind):
    """k2 = ½(logp − ref)²: any bit of difference between the two passes shows up."""
    self._assert_kl_zero_then_positive(lora, dtype, remat, kind)

  @parameterized.named_parameters(('lora_f32_k3', 4, 'float32', 'none', 'k3'),
                                  ('full_bf16_k2', 0, 'bfloat16', 'full', 'k2'))
  @test_util.slow
  def test_kl_is_exactly_zero_at_step_1_then_positive_other_setups(self, lora, dtype, remat,
                                                                   kind):
    self._assert_kl_zero_then_positive(lora, dtype, remat, kind)

  def _assert_kl_zero_then_positive(self, lora, dtype, remat, kind):
    config = _config(kind, **{'model.lora_rank': lora, 'model.dtype': dtype})
    model_cfg = policy_lib.model_config(config).replace(num_layers=2, remat_policy=remat)
    mesh = sharding_lib.make_mesh((1, 4, 2))  # sharded as on a pod slice
    state, ref, step = _setup(model_cfg, config, mesh)
    batch = _batch()
    state, m1 = step(state, batch, jnp.float32(0.8), ref)
    self.assertEqual(float(m1['kl']), 0.0)
    self.assertEqual(float(m1['update_skipped']), 0.0)
    _, m2 = step(state, batch, jnp.float32(0.8), ref)  # the policy moved, the reference not
    self.assertGreater(float(m2['kl']), 0.0)

  @parameterized.named_parameters(('lora', 4), ('full', 0))
  def test_in_step_reference_is_the_frozen_policy(self, lora):
    """KL k1 in the step = token-mean(logp − ref) from two separate scoring passes: LoRA's
    reference is the adapters-off base (B != 0 here), a full fine-tune's the frozen copy."""
    config = _config('k1', **{'model.lora_rank': lora, 'grpo.aggregation': 'token-mean'})
    model_cfg = policy_lib.model_config(config).replace(num_layers=2)
    mesh = sharding_lib.make_mesh((1, 1, 1))
    state, ref, step = _setup(model_cfg, config, mesh)
    moved = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if p[-1].key in ('lora_b', 'kernel') else x, state.params)
    state = state.replace(params=moved)
    batch = _batch(1)
    score = lambda params, on: steps_lib.score(params, batch, 0.8, model_cfg=model_cfg,
                                              micro_batch=R, lora_on=on, chunk_size=5)
    logp = score(moved, True)
    ref_logp = score(moved, False) if lora else score(ref, True)
    mask = np.asarray(batch.mask)
    want = float((np.asarray(logp - ref_logp) * mask).sum() / mask.sum())
    self.assertGreater(abs(want), 1e-3)
    _, m = step(state, batch, jnp.float32(0.8), ref)
    test_util.assert_approx(float(m['kl']), want, rel=1e-4, abs=1e-6)

  def test_lora_reference_costs_no_second_copy_of_the_base(self):
    """Under LoRA the step's arguments are the state and the batch, nothing else (a reference
    copy of the base would add its bytes): the reference pass reads the policy's base."""
    config = _config('k3', **{'model.lora_rank': 4})
    model_cfg = policy_lib.model_config(config)
    mesh = sharding_lib.make_mesh((1, 1, 1))
    state, ref, step = _setup(model_cfg, config, mesh)
    self.assertIsNone(ref)
    batch = _batch()
    compiled = step.lower(state, batch, jnp.float32(0.8), None).compile()
    nbytes = lambda t: sum(x.nbytes for x in jax.tree.leaves(t))
    # (Unused inputs are pruned: on-policy, the batch's old_logp is not an argument.)
    args = compiled.memory_analysis().argument_size_in_bytes
    self.assertBetween(args, nbytes(state), nbytes(state) + nbytes(batch) + 4)


class TrainerKlTest(absltest.TestCase):

  def test_first_step_logs_kl_zero_and_passes_no_reference_under_lora(self):
    tmp = self.create_tempdir().full_path
    config = test_util.small_config(tmp, total_steps=1, **{
        'model.lora_rank': 4, 'model.dtype': 'bfloat16', 'grpo.kl_coef': 0.1,
        'grpo.kl_kind': 'k2', 'minibatch_size': 8, 'batch_size': 4, 'data.eval_size': 0,
        # The first update must move the adapters whatever the rewards (a random tiny policy
        # may score 0 on every row: no advantage): a constant entropy bonus (cosine decays it
        # to 0 at the last step, and this run has one) and a step visible in bf16.
        'ceeh.entropy_schedule': 'constant', 'optim.lr': 1e-2})
    real = steps_lib.train_step
    refs = []

    def spy(state, batch, temperature, ref_params=None, **kw):
      refs.append(ref_params)
      return real(state, batch, temperature, ref_params, **kw)

    with mock.patch.object(steps_lib, 'train_step', spy):
      record = train_lib.train_and_evaluate(config, tmp + '/w')
    self.assertTrue(refs)
    self.assertTrue(all(r is None for r in refs), refs)
    self.assertEqual(record['kl_first_minibatch'], 0.0)
    self.assertGreater(record['kl'], 0.0)  # the second minibatch follows an update

  def test_first_step_kl_is_zero_from_an_hf_base_with_bf16_excess_precision_off(self):
    """The trainer on a random HF base (D 256, F 512, V 512, 2 layers, 128-dim heads), LoRA
    r32 in bf16, remat full, KL k3: XLA's excess bf16 precision made the policy and the
    reference pass round differently here (KL 1.0e-6 at step 1); the train step's compiler
    options (steps.TRAIN_STEP_COMPILER_OPTIONS) make it 0."""
    tmp = self.create_tempdir().full_path
    cfg = QwenConfig.r1_distill_1p5b().replace(num_layers=2, vocab_size=512, embed_dim=256,
                                               mlp_dim=512, num_heads=2)
    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in hf_io.expected_hf_shapes(cfg).items():
      scale, shift = ((0.1, 1.0) if name.endswith('norm.weight') else
                      (0.1, 0.0) if name.endswith('bias') else (0.02, 0.0))
      tensors[name] = (shift + scale * rng.standard_normal(shape)).astype(np.float32)
    os.makedirs(os.path.join(tmp, 'hf'))
    safetensors.numpy.save_file(tensors, os.path.join(tmp, 'hf', 'model.safetensors'),
                                metadata={'format': 'pt'})
    with open(os.path.join(tmp, 'hf', 'config.json'), 'w') as f:
      json.dump(cfg.to_hf(torch_dtype='float32'), f)
    config = test_util.small_config(tmp, total_steps=1, **{
        'model.hf_dir': os.path.join(tmp, 'hf'), 'model.lora_rank': 32,
        'model.lora_alpha': 64.0, 'model.dtype': 'bfloat16', 'model.remat_policy': 'full',
        'grpo.kl_coef': 0.001, 'grpo.kl_kind': 'k3', 'batch_size': 2,
        'sampling.num_samples': 2, 'minibatch_size': 4, 'micro_batch_size': 4,
        'data.eval_size': 0})
    record = train_lib.train_and_evaluate(config, os.path.join(tmp, 'w'))
    self.assertEqual(record['kl_first_minibatch'], 0.0)


if __name__ == '__main__':
  absltest.main()
