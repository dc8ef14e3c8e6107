"""The pure step: exact micro-batching, grads vs finite differences, sharded == unsharded, AOT."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from ceeh_jax import default_config
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import steps as steps_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

R, P, M, Q = 8, 16, 12, 6
approx = test_util.assert_approx


def _batch(seed=0):
  return test_util.random_batch(R, P, M, seed)


def _config(**kw):
  c = default_config.get_config()
  c.model.preset = 'tiny'
  c.batch_size, c.sampling.num_samples = 2, 4
  c.minibatch_size, c.micro_batch_size = R, R
  c.logp_chunk = 5
  c.total_steps = 10
  c.grpo.kl_coef = 0.0  # the in-step KL reference is tested in test_kl_reference.py
  c.optim.lr = 1e-3
  c.old_logp = 'sampler'  # use the batch's old_logp (random here): a non-trivial PPO ratio
  return test_util.override(c, **kw)


def _state(config, model_cfg, params):
  opt = steps_lib.make_optimizer(config)
  hp = {}
  return steps_lib.init_train_state(params, opt, Q, 0, model_cfg.lora_rank > 0, config.method,
                                    hp), opt


class MinibatchLossTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('ceeh_me_token_mean', 'ceeh_me', 'token-mean'),
      ('ceeh_ea_seq_mean_token_mean', 'ceeh_ea', 'seq-mean-token-mean'),
      ('grpo_seq_mean_token_sum_norm', 'grpo', 'seq-mean-token-sum-norm'))
  def test_micro_batching_equals_full_batch(self, method, agg):
    model_cfg = QwenConfig.tiny(num_layers=2)
    params = qwen2_lib.init_params(model_cfg, jax.random.key(0))
    train, frozen = steps_lib.split_params(params, False)
    batch = _batch()
    outs = []
    for micro in (R, 2):
      config = _config(method=method, micro_batch_size=micro, **{'grpo.aggregation': agg,
                                                                  'ceeh.entropy_coef': 0.05})
      outs.append(jax.jit(lambda t: steps_lib.minibatch_loss(
          t, frozen, batch, 0.8, jnp.int32(1), config=config, model_cfg=model_cfg))(train))
    (l0, a0, g0), (l1, a1, g1) = outs
    approx(float(l0), float(l1), rel=1e-5, abs=1e-7)
    for k in a0:
      approx(float(a0[k]), float(a1[k]), rel=1e-5, abs=1e-6, msg=k)
    # float32 sums in another order (scan vs unrolled layers): differences up to ~1e-5 of the
    # largest gradient entry (1.1e-5 seen on one of 128 entries); a wrong path is O(scale).
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g0))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, atol=3e-5 * scale)

  @parameterized.named_parameters(('full', 0), ('lora4', 4))
  def test_unrolled_training_forward_equals_scanned(self, lora):
    """model.scan_layers=False: the loss's forward unrolls the layers over the stacked params;
    the same loss, aux and gradients (in the stacked tree) as the scanned forward."""
    model_cfg = QwenConfig.tiny(num_layers=2, lora_rank=lora)
    params = qwen2_lib.init_params(model_cfg, jax.random.key(3))
    if lora:  # B = 0 at init would leave the LoRA gradients of A at zero
      params = jax.tree_util.tree_map_with_path(
          lambda p, x: x + 0.1 if p[-1].key == 'lora_b' else x, params)
    train, frozen = steps_lib.split_params(params, lora > 0)
    batch = _batch(3)
    config = _config(method='ceeh_me', **{'ceeh.entropy_coef': 0.05})
    outs = [jax.jit(lambda t, c=c: steps_lib.minibatch_loss(
        t, frozen, batch, 0.8, jnp.int32(1), config=config, model_cfg=c))(train)
            for c in (model_cfg, model_cfg.replace(scan_layers=False))]
    (l0, a0, g0), (l1, a1, g1) = outs
    approx(float(l0), float(l1), rel=1e-5, abs=1e-7)
    for k in a0:
      approx(float(a0[k]), float(a1[k]), rel=1e-5, abs=1e-6, msg=k)
    self.assertEqual(jax.tree.structure(g0), jax.tree.structure(g1))
    self.assertEqual(jax.tree.structure(g1), jax.tree.structure(train))
    # float32 sums in another order (scan vs unrolled layers): differences up to ~1e-5 of the
    # largest gradient entry (1.1e-5 seen on one of 128 entries); a wrong path is O(scale).
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g0))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, atol=3e-5 * scale)

  def test_grad_matches_finite_differences(self):
    model_cfg = QwenConfig.tiny(num_layers=2)
    params = qwen2_lib.init_params(model_cfg, jax.random.key(1))
    batch = _batch(1)
    config = _config(method='ceeh_me', **{'ceeh.entropy_coef': 0.05})
    train, frozen = steps_lib.split_params(params, False)
    # One compiled program for the gradient and both probes (an eager probe would run op by op).
    loss_fn = jax.jit(lambda t: steps_lib.minibatch_loss(t, frozen, batch, 0.8, jnp.int32(0),
                                                         config=config, model_cfg=model_cfg))
    _, _, grads = loss_fn(train)
    # Moving off the old policy so the clip is active on some tokens but not at the probe point.
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(7), x.shape), train)
    norm = jnp.sqrt(sum(jnp.vdot(d, d) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d: d / norm, direction)
    along = lambda eps: loss_fn(jax.tree.map(lambda t, d: t + eps * d, train, direction))[0]
    eps = 1e-2
    fd = (float(along(eps)) - float(along(-eps))) / (2 * eps)
    analytic = float(sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                        jax.tree.leaves(direction))))
    approx(analytic, fd, rel=2e-2, abs=1e-5)

  def test_on_policy_update_equals_recomputed_old_logp(self):
    """One update per batch: stop_gradient(logp) as old_logp == the scoring pass's log-probs."""
    model_cfg = QwenConfig.tiny(num_layers=2)
    params = qwen2_lib.init_params(model_cfg, jax.random.key(2))
    train, frozen = steps_lib.split_params(params, False)
    recompute = _config(method='ceeh_me', old_logp='recompute', **{'ceeh.entropy_coef': 0.05})
    self.assertTrue(steps_lib.on_policy(recompute))
    self.assertFalse(steps_lib.on_policy(_config(old_logp='recompute', minibatch_size=R // 2)))
    self.assertFalse(steps_lib.on_policy(_config()))          # 'sampler': sampler log-probs
    batch = _batch(2)
    scored = batch.replace(old_logp=steps_lib.score(params, batch, 0.8, model_cfg=model_cfg,
                                                    micro_batch=R, chunk_size=5))
    run = lambda config, b: jax.jit(lambda t: steps_lib.minibatch_loss(
        t, frozen, b, 0.8, jnp.int32(1), config=config, model_cfg=model_cfg))(train)
    l0, a0, g0 = run(recompute, batch)          # batch.old_logp (random) is ignored
    l1, a1, g1 = run(_config(method='ceeh_me', **{'ceeh.entropy_coef': 0.05}), scored)
    approx(float(l0), float(l1), rel=1e-5, abs=1e-7)
    clipped = {k: float(v) for k, v in a0.items() if k.startswith('clip/')}
    self.assertTrue(clipped, clipped)
    self.assertFalse(any(clipped.values()), clipped)          # ratio 1: nothing clipped
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  def test_egrc_positive_only_wrong_responses_have_no_gradient(self):
    model_cfg = QwenConfig.tiny(num_layers=1)
    params = qwen2_lib.init_params(model_cfg, jax.random.key(2))
    config = _config(method='egrc', **{'grpo.kl_coef': 0.0})
    batch = _batch(2)
    wrong = np.arange(R) % 2 == 1
    batch = batch.replace(advantages=jnp.where(jnp.asarray(wrong), 0.0, jnp.abs(batch.advantages)))
    other = batch.replace(completion=jnp.where(jnp.asarray(wrong)[:, None],
                                               (batch.completion + 5) % 257, batch.completion))
    train, frozen = steps_lib.split_params(params, False)
    g = jax.jit(lambda b: steps_lib.minibatch_loss(train, frozen, b, 1.0, jnp.int32(0),
                                                   config=config, model_cfg=model_cfg)[2])
    for a, b in zip(jax.tree.leaves(g(batch)), jax.tree.leaves(g(other))):
      np.testing.assert_allclose(a, b, atol=1e-7)


def _two_steps(mesh, config, model_cfg):
  rules = sharding_lib.DEFAULT_RULES
  params = sharding_lib.init_params(model_cfg, jax.random.key(0), mesh, rules)
  state, opt = _state(config, model_cfg, params)
  shardings = steps_lib.state_shardings(state, sharding_lib.param_shardings(model_cfg, mesh, rules),
                                        mesh)
  state = jax.device_put(state, shardings)
  under = functools.partial(sharding_lib.traced_under, mesh, rules)
  update = jax.jit(under(functools.partial(steps_lib.rollout_update, config=config, group_size=4)),
                   out_shardings=(shardings, None, None, None, None, None))
  train = jax.jit(under(functools.partial(steps_lib.train_step, config=config, model_cfg=model_cfg,
                                          optimizer=opt)), out_shardings=(shardings, None))
  rng = np.random.default_rng(0)
  for it in range(2):
    batch = _batch(10 + it)
    qids = jnp.asarray(np.repeat(rng.choice(Q, 2, replace=False), 4), jnp.int32)
    correct = jnp.asarray(rng.random(R) < 0.5)
    lengths = batch.mask.sum(1).astype(jnp.int32)
    state, _, adv, hard, _, _ = update(state, qids, correct, correct, lengths, ~batch.mask[:, -1])
    state, _ = train(state, batch.replace(advantages=adv, hard=hard), jnp.float32(0.9))
  return jax.device_get(state)


class ShardedStepTest(parameterized.TestCase):

  def test_two_sharded_steps_equal_unsharded(self):
    model_cfg = QwenConfig.tiny()
    config = _config(method='ceeh_me', micro_batch_size=4)
    ref = _two_steps(sharding_lib.make_mesh((1, 1, 1)), config, model_cfg)
    got = _two_steps(sharding_lib.make_mesh((2, 2, 2)), config, model_cfg)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
      np.testing.assert_allclose(a, b, atol=1e-5)
    self.assertEqual((np.asarray(got.difficulty['acc_h']) >= 0).sum(), 4)

  @parameterized.named_parameters(('lora32', 32), ('full', 0))
  def test_r1_1p5b_train_step_lowers_on_abstract_arrays(self, lora):
    """The 1.5B recipe's train_step traces and lowers on 8 fake devices, nothing allocated."""
    from configs import r1_1p5b  # pylint: disable=g-import-not-at-top
    config = r1_1p5b.get_config()
    config.model.lora_rank = lora
    m = config.model
    model_cfg = QwenConfig.preset(m.preset, dtype=m.dtype, param_dtype=m.param_dtype,
                                  remat_policy=m.remat_policy, lora_rank=m.lora_rank,
                                  lora_alpha=m.lora_alpha)
    mesh = sharding_lib.make_mesh(config.mesh.shape)
    rules = sharding_lib.DEFAULT_RULES
    opt = steps_lib.make_optimizer(config)
    abstract = jax.eval_shape(lambda: _state(
        config, model_cfg, qwen2_lib.init_params(model_cfg, jax.random.key(0)))[0])
    param_sh = sharding_lib.param_shardings(model_cfg, mesh, rules)
    state_sh = steps_lib.state_shardings(abstract, param_sh, mesh)
    repl = sharding_lib.replicated(mesh)
    if not lora:  # full fine-tune: Adam moments are sharded like their params
      mu = state_sh.opt_state[1][0].mu
      self.assertEqual(mu[('layers', 'mlp', 'up', 'kernel')],
                       param_sh['layers']['mlp']['up']['kernel'])
    r, p, mlen = config.minibatch_size, 1024, 2048
    sds = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt)
    batch = steps_lib.Batch(prompt=sds((r, p), jnp.int32), prompt_mask=sds((r, p), bool),
                            completion=sds((r, mlen), jnp.int32), mask=sds((r, mlen), bool),
                            old_logp=sds((r, mlen), jnp.float32),
                            advantages=sds((r,), jnp.float32), hard=sds((r,), jnp.float32))
    step = jax.jit(sharding_lib.traced_under(mesh, rules, functools.partial(
        steps_lib.train_step, config=config, model_cfg=model_cfg, optimizer=opt)),
        in_shardings=(state_sh, jax.tree.map(
            lambda x: sharding_lib.batch_sharding(mesh, r, x.ndim, rules), batch), repl,
            None if lora else param_sh),
        out_shardings=(state_sh, None), donate_argnums=(0,))
    lowered = step.lower(abstract, batch, jax.ShapeDtypeStruct((), jnp.float32),
                         None if lora else abstract.params)  # full FT: the KL reference
    text = lowered.as_text()
    self.assertIn('sharding', text)
    n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
    self.assertGreaterEqual(n_params, 1_777_088_000)


if __name__ == '__main__':
  absltest.main()
