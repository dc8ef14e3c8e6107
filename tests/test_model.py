"""Model parity with HF PyTorch Qwen2, cache == full forward, LoRA, remat, presets, sharding."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ceeh_jax import hf_io
from ceeh_jax import sampler as sampler_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [3, 4], [100, 101, 102, 103, 104]]


def _hf_model(tied: bool, tmp_path):
  """A random tiny HF Qwen2 (non-trivial biases and norms), saved and loaded through hf_io."""
  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(vocab_size=257, hidden_size=48, intermediate_size=67,
                                 num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                                 rope_theta=10000.0, tie_word_embeddings=tied,
                                 max_position_embeddings=512)
  hf = transformers.Qwen2ForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if name.endswith('bias') or 'norm' in name:
        p.copy_(torch.randn_like(p) * 0.3 + (1.0 if 'norm' in name else 0.0))
  hf.save_pretrained(tmp_path)
  config, params = hf_io.load_hf(tmp_path)
  return hf, config, params


@pytest.mark.parametrize('tied', [False, True])
def test_logits_match_hf_left_padded(tied, tmp_path):
  hf, config, params = _hf_model(tied, tmp_path)
  assert config.tie_embeddings == tied
  toks, mask = sampler_lib.pad_prompts(PROMPTS, 0)
  pos = qwen2_lib.positions_from_mask(jnp.asarray(mask))
  ours, _ = qwen2_lib.Qwen2(config).apply({'params': params}, jnp.asarray(toks), pos,
                                          jnp.asarray(mask))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks).long(), attention_mask=torch.tensor(mask).long(),
             position_ids=torch.tensor(np.asarray(pos)).long()).logits.numpy()
  assert np.abs(np.asarray(ours)[mask] - ref[mask]).max() <= 1e-4


def test_prefill_then_decode_equals_full_forward():
  config = QwenConfig.tiny(decode_chunk=8)
  params = qwen2_lib.init_params(config, jax.random.key(0))
  model = qwen2_lib.Qwen2(config)
  seq = jax.random.randint(jax.random.key(1), (2, 29), 0, config.vocab_size)
  full, _ = model.apply({'params': params}, seq, jnp.broadcast_to(jnp.arange(29), (2, 29)))
  cache = qwen2_lib.init_cache(config, 2, 40)          # 40 slots -> 5 chunks of 8
  p = 5
  pos = jnp.broadcast_to(jnp.arange(p), (2, p))
  key_mask = jnp.ones((2, cache['k'].shape[2]), bool)
  logits, cache = model.apply({'params': params}, seq[:, :p], pos, key_mask, cache)
  steps = [logits]
  for t in range(p, 29):
    out, cache = model.apply({'params': params}, seq[:, t:t + 1], jnp.full((2, 1), t), key_mask,
                             cache, jnp.int32(t))
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5)


def test_lora_off_is_base_and_fresh_adapters_change_nothing():
  base_cfg = QwenConfig.tiny()
  lora_cfg = base_cfg.replace(lora_rank=4, lora_alpha=8.0)
  params = qwen2_lib.init_params(lora_cfg, jax.random.key(0))
  base = {k: v for k, v in params.items()}
  strip = lambda t: jax.tree_util.tree_map_with_path(lambda p, x: x, t)
  toks = jax.random.randint(jax.random.key(2), (2, 9), 0, 257)
  pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
  import flax.traverse_util as tu
  flat = tu.flatten_dict(params)
  base = tu.unflatten_dict({k: v for k, v in flat.items() if k[-1] not in ('lora_a', 'lora_b')})
  ref, _ = qwen2_lib.Qwen2(base_cfg).apply({'params': base}, toks, pos)
  on, _ = qwen2_lib.Qwen2(lora_cfg).apply({'params': params}, toks, pos)
  np.testing.assert_allclose(on, ref, atol=1e-6)  # B = 0 at init
  # Non-zero adapters: on differs, off equals the base model; merged export equals "on".
  flat = {k: (v + 0.1 if k[-1] == 'lora_b' else v) for k, v in flat.items()}
  params = tu.unflatten_dict(flat)
  on, _ = qwen2_lib.Qwen2(lora_cfg).apply({'params': params}, toks, pos)
  off, _ = qwen2_lib.Qwen2(lora_cfg).apply({'params': params}, toks, pos, lora_on=False)
  np.testing.assert_allclose(off, ref, atol=1e-6)
  assert np.abs(np.asarray(on - ref)).max() > 1e-3
  merged = hf_io.merged_lora(params, lora_cfg)
  m, _ = qwen2_lib.Qwen2(base_cfg).apply({'params': merged}, toks, pos)
  np.testing.assert_allclose(m, on, atol=1e-4)
  del strip


@pytest.mark.parametrize('policy', ['full', 'dots', 'dots_no_batch'])
def test_remat_policies_same_values_and_grads(policy):
  config = QwenConfig.tiny()
  params = qwen2_lib.init_params(config, jax.random.key(0))
  toks = jax.random.randint(jax.random.key(2), (2, 9), 0, 257)
  pos = jnp.broadcast_to(jnp.arange(9), (2, 9))

  def loss(p, cfg):
    out, _ = qwen2_lib.Qwen2(cfg).apply({'params': p}, toks, pos)
    return (out ** 2).mean()

  l0, g0 = jax.value_and_grad(loss)(params, config)
  l1, g1 = jax.value_and_grad(loss)(params, config.replace(remat_policy=policy))
  assert float(l0) == pytest.approx(float(l1), rel=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_preset_param_counts_from_eval_shape():
  counts = {'r1_distill_1p5b': 1_777_088_000, 'r1_distill_7b': 7_615_616_512,
            'qwen25_0p5b': 494_032_768, 'qwen25_1p5b': 1_543_714_304,
            'qwen25_7b': 7_615_616_512}
  for name, want in counts.items():
    config = QwenConfig.preset(name)
    shapes = sharding_lib.abstract_params(config)
    assert sum(x.size for x in jax.tree.leaves(shapes)) == want == config.num_params, name


def test_from_hf_matches_preset():
  hf = {'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', 'hidden_size': 1536,
        'intermediate_size': 8960, 'num_hidden_layers': 28, 'num_attention_heads': 12,
        'num_key_value_heads': 2, 'vocab_size': 151936, 'rope_theta': 10000,
        'rms_norm_eps': 1e-6, 'tie_word_embeddings': False, 'max_position_embeddings': 131072}
  assert QwenConfig.from_hf(hf) == QwenConfig.r1_distill_1p5b()
  with pytest.raises(ValueError, match='Qwen2'):
    QwenConfig.from_hf({**hf, 'model_type': 'llama'})


@pytest.mark.parametrize('mesh_shape', [(2, 2, 2), (1, 1, 8), (1, 4, 2)])
def test_sharded_forward_equals_single_device(mesh_shape):
  config = QwenConfig.tiny()
  params = qwen2_lib.init_params(config, jax.random.key(0))
  mesh = sharding_lib.make_mesh(mesh_shape)
  sharded = sharding_lib.init_params(config, jax.random.key(0), mesh)
  toks, mask = sampler_lib.pad_prompts(PROMPTS + [[7, 7]], 0)
  pos = qwen2_lib.positions_from_mask(jnp.asarray(mask))
  ref, _ = qwen2_lib.Qwen2(config).apply({'params': params}, toks, pos, mask)
  fn = jax.jit(sharding_lib.traced_under(
      mesh, sharding_lib.DEFAULT_RULES,
      lambda p, t, ps, m: qwen2_lib.Qwen2(config).apply({'params': p}, t, ps, m)[0]))
  out = fn(sharded, toks, pos, mask)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  # kv heads (K = 2) are split only when tensor divides them; else replicated.
  spec = sharded['layers']['attn']['k']['kernel'].sharding.spec
  if mesh.shape['tensor'] in (1, 2):
    assert spec[2] in (None, 'tensor')
  else:
    assert spec[2] is None


def test_kv_heads_replicated_when_tensor_does_not_divide():
  mesh = sharding_lib.make_mesh((1, 2, 4))
  shardings = sharding_lib.param_shardings(QwenConfig.r1_distill_1p5b(), mesh)
  assert shardings['layers']['attn']['k']['kernel'].spec[2] is None        # K = 2, tensor = 4
  assert shardings['layers']['attn']['q']['kernel'].spec[2] == 'tensor'    # N = 12
  cache = sharding_lib.cache_sharding(mesh, QwenConfig.r1_distill_1p5b(), 8)
  assert cache.spec[3] is None
