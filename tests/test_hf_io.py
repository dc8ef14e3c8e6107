"""HF checkpoint round trips, sharded loading and clear errors."""
import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ceeh_jax import hf_io
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def _tensors(d):
  out = {}
  index = os.path.join(d, 'model.safetensors.index.json')
  files = (set(json.load(open(index))['weight_map'].values()) if os.path.exists(index)
           else {'model.safetensors'})
  for f in files:
    with __import__('safetensors').safe_open(os.path.join(d, f), framework='flax') as h:
      out.update({k: np.asarray(h.get_tensor(k)) for k in h.keys()})
  return out


@pytest.mark.parametrize('dtype,shard', [('float32', None), ('bfloat16', None),
                                         ('float32', 20_000)])
def test_hf_ours_hf_round_trip_is_bitwise(tmp_path, dtype, shard):
  config = QwenConfig.tiny()
  params = qwen2_lib.init_params(config, jax.random.key(0))
  hf_io.save_hf(params, config, tmp_path / 'a', dtype=dtype, max_shard_bytes=shard)
  if shard:
    assert (tmp_path / 'a' / 'model.safetensors.index.json').exists()
  cfg2, loaded = hf_io.load_hf(tmp_path / 'a')
  assert cfg2.replace(param_dtype=config.param_dtype) == config.replace(
      max_position_embeddings=cfg2.max_position_embeddings)
  hf_io.save_hf(loaded, cfg2, tmp_path / 'b', dtype=dtype)
  a, b = _tensors(tmp_path / 'a'), _tensors(tmp_path / 'b')
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


def test_transformers_loads_export_with_same_logits(tmp_path):
  config = QwenConfig.tiny(tie_embeddings=True)
  params = qwen2_lib.init_params(config, jax.random.key(3))
  hf_io.save_hf(params, config, tmp_path)
  hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
  toks = np.random.default_rng(0).integers(0, 257, (2, 13))
  ours, _ = qwen2_lib.Qwen2(config).apply({'params': params}, toks,
                                          np.broadcast_to(np.arange(13), (2, 13)))
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(toks)).logits.numpy()
  assert np.abs(np.asarray(ours) - ref).max() < 1e-4


def test_load_onto_mesh_places_shards(tmp_path):
  config = QwenConfig.tiny()
  params = qwen2_lib.init_params(config, jax.random.key(0))
  hf_io.save_hf(params, config, tmp_path)
  mesh = sharding_lib.make_mesh((1, 4, 2))
  _, loaded = hf_io.load_hf(tmp_path, mesh=mesh)
  q = loaded['layers']['attn']['q']['kernel']          # [L, D, N, H] over (-, fsdp, tensor, -)
  assert q.sharding.spec[1] == 'fsdp' and q.sharding.spec[2] == 'tensor'
  shapes = {s.data.shape for s in q.addressable_shards}
  assert shapes == {(3, 48 // 4, 6 // 2, 8)}
  np.testing.assert_array_equal(np.asarray(q), np.asarray(params['layers']['attn']['q']['kernel']))


def test_clear_errors(tmp_path):
  config = QwenConfig.tiny()
  params = qwen2_lib.init_params(config, jax.random.key(0))
  with pytest.raises(FileNotFoundError, match='config.json'):
    hf_io.load_hf(tmp_path)
  hf_io.save_hf(params, config, tmp_path)
  path = tmp_path / 'model.safetensors'
  tensors = load_file(path)

  def rewrite(t):
    save_file(t, path)

  rewrite({k: v for k, v in tensors.items() if k != 'model.layers.1.mlp.up_proj.weight'})
  with pytest.raises(hf_io.CheckpointFormatError, match='model.layers.1.mlp.up_proj.weight'):
    hf_io.load_hf(tmp_path)
  rewrite({**tensors, 'model.layers.0.self_attn.rotary.inv_freq': np.zeros(4, np.float32)})
  with pytest.raises(hf_io.CheckpointFormatError, match='unexpected tensor .*inv_freq'):
    hf_io.load_hf(tmp_path)
  bad = dict(tensors)
  bad['model.norm.weight'] = np.zeros(7, np.float32)
  rewrite(bad)
  with pytest.raises(hf_io.CheckpointFormatError, match=r"model.safetensors.*model.norm.weight.*\(7,\)"):
    hf_io.load_hf(tmp_path)
