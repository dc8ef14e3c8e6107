"""Qwen2 model: parity with transformers' PyTorch Qwen2, cached decode == full forward, LoRA,
remat, preset sizes, and sharded forward == single device on 8 fake CPU devices."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import flax.traverse_util as tu
import jax
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import torch
import transformers

from ceeh_jax import hf_io
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

TINY = QwenConfig.tiny()  # V 257, D 48, F 67, N 6, K 2 (G 3), H 8, L 3
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [3, 4], [100, 101, 102, 103, 104], [7]]


def _left_pad(rows, width=None):
  """int32[B, T] tokens (pad 0) and bool[B, T] mask, each row right-aligned."""
  width = width or max(map(len, rows))
  toks = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    toks[i, width - len(r):], mask[i, width - len(r):] = r, True
  return toks, mask


def _logits_fn(config, **kw):
  """logits f32[B, T, V] = f(params, tokens, mask), positions from the left padding."""
  def fn(params, toks, mask):
    pos = qwen2_lib.positions_from_mask(mask)
    return qwen2_lib.Qwen2(config).apply({'params': params}, toks, pos, mask, **kw)[0]
  return fn


# These programs run in milliseconds but take seconds to compile at XLA's default -O2 on
# CPU; -O0 cuts compile time ~2.5x and keeps the suite fast.
_FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _jit(fn):
  """jax.jit(fn) compiled at -O0 on its first call (later calls must match its shapes)."""
  jitted, compiled = jax.jit(fn), []
  def call(*args):
    if not compiled:
      compiled.append(jitted.lower(*args).compile(compiler_options=_FAST_COMPILE))
    return compiled[0](*args)
  return call


def _forward(config, **kw):
  """A fresh jit (so it traces under whatever mesh and rules are current)."""
  return _jit(_logits_fn(config, **kw))


class Qwen2Test(parameterized.TestCase):

  @parameterized.named_parameters(('untied', False), ('tied', True))
  def test_logits_match_hf_left_padded(self, tied):
    tmp_path = pathlib.Path(self.create_tempdir())
    hf = test_util.tiny_hf_model(tied=tied)  # biases and norms randomised: they matter
    hf.save_pretrained(tmp_path)
    config, params = hf_io.load_hf(tmp_path)
    self.assertEqual(config, TINY.replace(tie_embeddings=tied, max_position_embeddings=512))

    toks, mask = _left_pad(PROMPTS)
    ours = np.asarray(_forward(config)(params, toks, mask))
    pos = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(toks).long(), attention_mask=torch.tensor(mask).long(),
               position_ids=torch.tensor(pos).long()).logits.numpy()
    self.assertLessEqual(np.abs(ours[mask] - ref[mask]).max(), 1e-4)
    # Left padding changes nothing for a row's real tokens.
    alone = np.asarray(_forward(config)(params, *_left_pad(PROMPTS[1:2])))
    np.testing.assert_allclose(ours[1, -2:], alone[0], atol=1e-5)

  @parameterized.named_parameters(('scanned_chunk8', True, 8), ('unrolled_chunk8', False, 8),
                                  ('unrolled_chunk2', False, 2))
  def test_prefill_then_decode_equals_full_forward(self, scan_layers, chunk):
    """Against the scanned full forward; scan_layers=False runs the unrolled layers the sampler
    uses, on the same weights unstacked. Chunk 2 walks up to 15 chunks per step."""
    config = TINY.replace(decode_chunk=chunk)
    params = test_util.random_params(config)
    full_params = params
    if not scan_layers:
      params = qwen2_lib.unstack_layers(params)
    model = qwen2_lib.Qwen2(config.replace(scan_layers=scan_layers))
    prompts, steps = PROMPTS[:3], 18
    p_toks, p_mask = _left_pad(prompts)                                   # P = 11
    b, p = p_toks.shape
    cont = np.random.default_rng(1).integers(0, config.vocab_size, (b, steps)).astype(np.int32)
    seq = np.concatenate([p_toks, cont], 1)                               # 29 tokens
    seq_mask = np.concatenate([p_mask, np.ones((b, steps), bool)], 1)
    full = np.asarray(_forward(config)(full_params, seq, seq_mask))
    pos = np.asarray(qwen2_lib.positions_from_mask(jnp.asarray(seq_mask)))

    cache = qwen2_lib.init_cache(config, b, 40)                           # 5 chunks of 8
    self.assertEqual(cache['k'].shape, (3, b, 2, 40, 8))
    key_mask = np.concatenate([seq_mask, np.ones((b, 40 - seq.shape[1]), bool)], 1)
    prefill = _jit(lambda prm, c: model.apply({'params': prm}, seq[:, :p], pos[:, :p],
                                              key_mask, c))
    decode = _jit(lambda prm, c, tok, ps, end: model.apply({'params': prm}, tok, ps, key_mask,
                                                           c, end))
    logits, cache = prefill(params, cache)
    out = [np.asarray(logits)]
    for t in range(p, seq.shape[1]):   # live 12..29 slots: 2 to 4 of the 5 chunks walked
      logits, cache = decode(params, cache, seq[:, t:t + 1], pos[:, t:t + 1], jnp.int32(t))
      out.append(np.asarray(logits))
    out = np.concatenate(out, 1)
    np.testing.assert_allclose(out[seq_mask], full[seq_mask], atol=2e-5)

  def test_decode_attention_equals_dense_softmax_at_every_live_length(self):
    """Every live length of a 64-key cache walked in chunks of 2 (full chunks and a ragged
    tail) against a dense softmax over the visible keys; left-padded rows included."""
    rng = np.random.default_rng(0)
    layers, b, kh, g, s_len, h, chunk = 2, 3, 2, 2, 64, 4, 2
    q = jnp.asarray(rng.normal(size=(b, kh, g, h)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(layers, b, kh, s_len, h)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(layers, b, kh, s_len, h)), jnp.float32)
    key_mask = np.ones((b, s_len), bool)
    key_mask[1, :5] = False  # left padding
    key_mask[2, :19] = False  # padding over the first 9 chunks
    attend = jax.jit(lambda live: qwen2_lib._decode_attention(q, k, v, jnp.int32(1),
                                                              jnp.asarray(key_mask), live, chunk))
    for live in range(20, s_len + 1):  # row 2 sees its first key at live 20
      ok = key_mask[:, None, None, :live]
      scores = np.einsum('bkgh,bksh->bkgs', q, k[1, :, :, :live])
      w = np.where(ok, np.exp(scores - np.where(ok, scores, -np.inf).max(-1, keepdims=True)), 0)
      want = np.einsum('bkgs,bksh->bkgh', w / w.sum(-1, keepdims=True), v[1, :, :, :live])
      np.testing.assert_allclose(np.asarray(attend(jnp.int32(live))), want, atol=1e-5,
                                 err_msg=f'live {live}')

  def test_unrolled_layers_tree_and_round_trip(self):
    """scan_layers=False initialises exactly the unstacked tree (LoRA included), and
    stack(unstack(p)) == p."""
    config = TINY.replace(lora_rank=2)
    stacked = sharding_lib.abstract_params(config)
    unrolled = sharding_lib.abstract_params(config.replace(scan_layers=False))
    self.assertEqual(sorted(unrolled), sorted(['embedding', 'final_norm', 'lm_head', 'layer_0',
                                               'layer_1', 'layer_2']))
    want = jax.eval_shape(qwen2_lib.unstack_layers, stacked)
    self.assertEqual(jax.tree.structure(unrolled), jax.tree.structure(want))
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(want)):
      self.assertEqual(a.shape, b.shape)
    params = test_util.random_params(config)
    back = qwen2_lib.stack_layers(qwen2_lib.unstack_layers(params))
    jax.tree.map(np.testing.assert_array_equal, back, params)
    self.assertTrue(qwen2_lib.is_scanned(params))
    self.assertFalse(qwen2_lib.is_scanned(qwen2_lib.unstack_layers(params)))

  def test_lora_init_and_lora_off_are_the_base_model(self):
    lora_cfg = TINY.replace(lora_rank=4, lora_alpha=8.0)
    # The cheap-to-compile RBG generator: the test needs the init's structure (B = 0), not its
    # stream.
    params = _jit(lambda key: qwen2_lib.init_params(lora_cfg, key))(jax.random.key(0, impl='rbg'))
    flat = tu.flatten_dict(params)
    for k, v in flat.items():
      if k[-1] == 'lora_b':
        self.assertFalse(np.any(v), k)   # B = 0 at init
    self.assertEqual({k[-2] for k in flat if k[-1] == 'lora_a'},
                     {'q', 'k', 'v', 'o', 'gate', 'up', 'down'})
    base = tu.unflatten_dict({k: v for k, v in flat.items() if k[-1] not in ('lora_a', 'lora_b')})
    toks, mask = _left_pad(PROMPTS)
    ref = np.asarray(_forward(TINY)(base, toks, mask))
    on, off = _forward(lora_cfg), _forward(lora_cfg, lora_on=False)
    np.testing.assert_array_equal(np.asarray(on(params, toks, mask)), ref)
    # Trained adapters (B != 0): on differs from the base, off is exactly the base.
    rng = np.random.default_rng(2)
    flat = {k: (0.2 * rng.standard_normal(v.shape).astype(np.float32) if k[-1] == 'lora_b' else v)
            for k, v in flat.items()}
    trained = tu.unflatten_dict(flat)
    got_on = np.asarray(on(trained, toks, mask))
    self.assertGreater(np.abs(got_on - ref)[mask].max(), 1e-2)
    np.testing.assert_array_equal(np.asarray(off(trained, toks, mask)), ref)
    merged = np.asarray(_forward(TINY)(hf_io.merged_lora(trained, lora_cfg), toks, mask))
    np.testing.assert_allclose(merged[mask], got_on[mask], atol=1e-4)

  # Several blocks, a ragged last block, one block.
  @parameterized.named_parameters(('block4', 4), ('block5', 5), ('block13', 13))
  def test_blocked_causal_attention_equals_naive_masked_softmax(self, block):
    """The training attention (query blocks, causal skipping, recomputing backward) equals the
    naive [B,K,G,T,S] masked softmax in values and in gradients, on every query that sees a key."""
    b, t, k, g, h = 3, 13, 2, 3, 8
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (b, t, k, g, h))
    kk, vv = jax.random.normal(ks[1], (b, t, k, h)), jax.random.normal(ks[2], (b, t, k, h))
    key_mask = jnp.arange(t)[None] >= jnp.asarray([0, 4, 9])[:, None]   # left padding
    # Cotangent zero on queries with no visible key (left padding): their output is unused.
    w = jax.random.normal(ks[3], q.shape) * key_mask[:, :, None, None, None]
    causal = jnp.tril(jnp.ones((t, t), bool))[None] & key_mask[:, None, :]
    naive = lambda q, kk, vv: qwen2_lib._full_attention(q, kk, vv, causal)[0]
    blocked = lambda q, kk, vv: qwen2_lib.causal_attention(q, kk, vv, key_mask, block)
    got, ref = _jit(blocked)(q, kk, vv), _jit(naive)(q, kk, vv)
    valid = np.asarray(key_mask)
    np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(ref)[valid], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~valid], 0.0)
    grad = lambda fn: _jit(jax.grad(lambda *a: (fn(*a) * w).sum(), argnums=(0, 1, 2)))(q, kk, vv)
    for a, r in zip(grad(blocked), grad(naive)):
      np.testing.assert_allclose(a, r, atol=1e-5)

  def test_training_forward_equals_probability_path(self):
    """The model's no-cache forward (blocked attention) equals the path that materialises the
    attention probabilities (ENTRA's return_mu), on the real tokens."""
    params = test_util.random_params(TINY)
    toks, mask = _left_pad(PROMPTS)
    pos = qwen2_lib.positions_from_mask(mask)
    model = qwen2_lib.Qwen2(TINY)
    fast = _jit(lambda p: model.apply({'params': p}, toks, pos, mask)[0])(params)
    slow = _jit(lambda p: model.apply({'params': p}, toks, pos, mask, return_mu=True)[0])(params)
    np.testing.assert_allclose(np.asarray(fast)[mask], np.asarray(slow)[mask], atol=1e-5)

  def test_remat_policies_same_values_and_grads(self):
    params = test_util.random_params(TINY)
    toks, mask = _left_pad(PROMPTS)
    policies = ('none', 'full', 'dots', 'dots_no_batch')

    def loss(p, policy):
      cfg = TINY.replace(remat_policy=policy)
      out = qwen2_lib.Qwen2(cfg).apply({'params': p}, toks, qwen2_lib.positions_from_mask(mask),
                                       mask)[0]
      return (jnp.where(mask[..., None], out, 0.0) ** 2).mean()

    for policy in policies:  # the remat variants really are rematerialised
      jaxpr = str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, policy))
      self.assertEqual('remat' in jaxpr or 'checkpoint' in jaxpr, policy != 'none', policy)
    # One program for all four (a single compile keeps the test fast).
    results = _jit(lambda p: [jax.value_and_grad(loss)(p, pol) for pol in policies])(params)
    l0, g0 = results[0]
    for policy, (l1, g1) in zip(policies[1:], results[1:]):
      np.testing.assert_allclose(l1, l0, rtol=1e-6)
      for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, atol=1e-6, err_msg=f'{policy} {path}')


# HF `num_parameters()` of each checkpoint.
PRESET_PARAMS = {
    'r1_distill_1p5b': 1_777_088_000, 'r1_distill_7b': 7_615_616_512,
    'qwen25_0p5b': 494_032_768, 'qwen25_1p5b': 1_543_714_304, 'qwen25_7b': 7_615_616_512,
    'qwen25_math_1p5b': 1_543_714_304, 'qwen25_math_7b': 7_615_616_512}

# config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-{1.5B,7B} (architecture fields).
R1_1P5B_HF = {
    'architectures': ['Qwen2ForCausalLM'], 'attention_dropout': 0.0, 'bos_token_id': 151643,
    'eos_token_id': 151643, 'hidden_act': 'silu', 'hidden_size': 1536,
    'initializer_range': 0.02, 'intermediate_size': 8960, 'max_position_embeddings': 131072,
    'max_window_layers': 21, 'model_type': 'qwen2', 'num_attention_heads': 12,
    'num_hidden_layers': 28, 'num_key_value_heads': 2, 'rms_norm_eps': 1e-06,
    'rope_theta': 10000, 'sliding_window': 4096, 'tie_word_embeddings': False,
    'torch_dtype': 'bfloat16', 'use_cache': True, 'use_mrope': False,
    'use_sliding_window': False, 'vocab_size': 151936}
R1_7B_HF = {**R1_1P5B_HF, 'hidden_size': 3584, 'intermediate_size': 18944,
            'num_attention_heads': 28, 'num_key_value_heads': 4, 'vocab_size': 152064}


class PresetsTest(parameterized.TestCase):

  @parameterized.named_parameters(*[(name, name, n) for name, n in PRESET_PARAMS.items()])
  def test_preset_param_counts_from_eval_shape(self, name, want):
    config = QwenConfig.preset(name)
    shapes = sharding_lib.abstract_params(config)
    self.assertEqual(sum(x.size for x in jax.tree.leaves(shapes)), want)
    self.assertEqual(config.num_params, want)

  def test_preset_param_counts_r1_unties_the_head(self):
    # R1-Distill-1.5B unties Qwen2.5-1.5B's head: one more V x D matrix.
    self.assertEqual(PRESET_PARAMS['r1_distill_1p5b'] - PRESET_PARAMS['qwen25_1p5b'],
                     151936 * 1536)

  def test_from_hf_matches_presets(self):
    self.assertEqual(QwenConfig.from_hf(R1_1P5B_HF), QwenConfig.r1_distill_1p5b())
    self.assertEqual(QwenConfig.from_hf(R1_7B_HF), QwenConfig.r1_distill_7b())
    # transformers 5 moves rope_theta under rope_parameters when it re-saves a config.
    resaved = transformers.Qwen2Config(**R1_1P5B_HF).to_dict()
    self.assertEqual(QwenConfig.from_hf(resaved), QwenConfig.r1_distill_1p5b())
    self.assertEqual(QwenConfig.from_hf(QwenConfig.r1_distill_1p5b().to_hf()),
                     QwenConfig.r1_distill_1p5b())
    with self.assertRaisesRegex(ValueError, 'Qwen2'):
      QwenConfig.from_hf({**R1_1P5B_HF, 'model_type': 'llama'})


class ShardingTest(absltest.TestCase):

  def test_sharded_forward_equals_single_device(self):
    toks, mask = _left_pad(PROMPTS + [[9, 8, 7], [1] * 6, [2, 3], [4]])   # B = 8
    params = sharding_lib.init_params(TINY, jax.random.key(0, impl='rbg'),
                                      sharding_lib.make_mesh((2, 2, 2)))
    host = jax.device_get(params)
    ref = np.asarray(_forward(TINY)(jax.device_put(host, jax.devices()[0]), toks, mask))
    rules = sharding_lib.DEFAULT_RULES
    for shape in ((2, 2, 2), (1, 1, 8), (1, 2, 4)):
      mesh = sharding_lib.make_mesh(shape)
      shardings = sharding_lib.param_shardings(TINY, mesh)
      placed = params if shape == (2, 2, 2) else jax.device_put(host, shardings)
      for x, s in zip(jax.tree.leaves(placed), jax.tree.leaves(shardings)):
        self.assertEqual(x.sharding, s)
      data = sharding_lib.batch_sharding(mesh, 8, 2)
      toks_d, mask_d = jax.device_put(toks, data), jax.device_put(mask, data)
      if shape == (2, 2, 2):  # the concrete mesh as context, as a user script would do
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
          out = _forward(TINY)(placed, toks_d, mask_d)
        self.assertEqual(out.sharding.spec[0], ('data', 'fsdp'))   # act_batch rows stay split
      else:                   # the abstract mesh, as the sampler and trainer trace
        out = _jit(sharding_lib.traced_under(mesh, rules, _logits_fn(TINY)))(placed, toks_d, mask_d)
      np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, err_msg=str(shape))
      # K = 2 kv heads split over `tensor` only when it divides them; else replicated.
      k_spec = shardings['layers']['attn']['k']['kernel'].spec
      self.assertEqual(k_spec[2], 'tensor' if shape[2] == 2 else None, shape)

  def test_kv_heads_replicated_when_tensor_does_not_divide(self):
    mesh = sharding_lib.make_mesh((1, 2, 4))
    r1 = QwenConfig.r1_distill_1p5b()                                      # N 12, K 2
    shardings = sharding_lib.param_shardings(r1, mesh)
    for name in ('k', 'v'):
      self.assertEqual(shardings['layers']['attn'][name]['kernel'].spec,
                       P(None, 'fsdp', None, None))
      self.assertEqual(shardings['layers']['attn'][name]['bias'].spec, P(None, None, None))
    self.assertEqual(shardings['layers']['attn']['q']['kernel'].spec,
                     P(None, 'fsdp', 'tensor', None))
    self.assertIsNone(sharding_lib.cache_sharding(mesh, r1, 8).spec[2])          # [L, B, K, S, H]
    # 7B has K = 4: tensor = 4 splits the kv heads and the cache.
    r7 = QwenConfig.r1_distill_7b()
    self.assertEqual(
        sharding_lib.param_shardings(r7, mesh)['layers']['attn']['k']['kernel'].spec[2], 'tensor')
    self.assertEqual(sharding_lib.cache_sharding(mesh, r7, 8).spec[2], 'tensor')


if __name__ == '__main__':
  absltest.main()
