"""HF checkpoints: the name/axis mapping, bitwise round trips, transformers loading our export,
streaming onto an 8-device mesh, and errors that name the file and tensor."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import pathlib
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
from safetensors.numpy import load_file, save_file
import torch
import transformers

from ceeh_jax import hf_io
from ceeh_jax import sharding as sharding_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

TINY = QwenConfig.tiny()  # V 257, D 48, F 67, N 6, K 2, H 8, L 3


def _tensors(d) -> dict[str, np.ndarray]:
  """All tensors of a HF directory, single file or sharded."""
  files = [f for f in os.listdir(d) if f.endswith('.safetensors')]
  out = {}
  for f in files:
    with safetensors.safe_open(os.path.join(d, f), framework='numpy') as fh:
      out.update({k: fh.get_tensor(k) for k in fh.keys()})
  return out


def _apply(config, params, toks):
  pos = jnp.broadcast_to(jnp.arange(toks.shape[1]), toks.shape)
  return jax.jit(lambda p: qwen2_lib.Qwen2(config).apply({'params': p}, toks, pos)[0])(params)


class MappingAndRoundTripTest(parameterized.TestCase):

  def test_mapping_reads_any_slice_like_the_full_transform(self):
    rng = np.random.default_rng(0)
    for path, m in hf_io.param_mapping(TINY).items():
      w = rng.standard_normal(m.hf_shape).astype(np.float32)
      ours = m.to_ours(w)
      self.assertEqual(ours.shape, m.shape, path)
      self.assertTrue(np.array_equal(m.to_hf(ours), w), path)
      for _ in range(5):  # random boxes, inner dims (head_dim) included
        idx = []
        for n in m.shape:
          a, b = sorted(rng.choice(n + 1, 2, replace=False))
          idx.append(slice(int(a), int(b)))
        np.testing.assert_array_equal(m.read(w, tuple(idx)), ours[tuple(idx)], err_msg=str(path))
    q = hf_io.param_mapping(TINY)[('layers', 'attn', 'q', 'kernel')]
    self.assertEqual((q.hf, q.hf_shape, q.shape),
                     ('model.layers.{i}.self_attn.q_proj.weight', (48, 48), (48, 6, 8)))
    o = hf_io.param_mapping(TINY)[('layers', 'attn', 'o', 'kernel')]
    self.assertEqual((o.hf_shape, o.shape), ((48, 48), (6, 8, 48)))
    self.assertNotIn(('lm_head',), hf_io.param_mapping(TINY.replace(tie_embeddings=True)))
    self.assertLen(hf_io.expected_hf_shapes(TINY), 3 + 3 * 12)

  @parameterized.named_parameters(('float32', 'float32', None, False),
                                  ('bfloat16_tied', 'bfloat16', None, True),
                                  ('float32_sharded_tied', 'float32', '40KB', True),
                                  ('bfloat16_sharded', 'bfloat16', '20KB', False))
  def test_hf_ours_hf_round_trip_is_bitwise(self, dtype, shard_size, tied):
    tmp_path = pathlib.Path(self.create_tempdir())
    src = test_util.tiny_hf_dir(tmp_path / 'hf', tied=tied, dtype=dtype, shard_size=shard_size)
    if shard_size:
      self.assertTrue((src / hf_io.INDEX_FILE).exists())
    config, params = hf_io.load_hf(src)
    self.assertEqual(config.tie_embeddings, tied)
    self.assertEqual(config.param_dtype, 'float32')
    self.assertEqual({x.dtype for x in jax.tree.leaves(params)}, {jnp.dtype(jnp.float32)})
    max_bytes = None if shard_size is None else 30_000
    files = hf_io.save_hf(params, config, tmp_path / 'ours', dtype=dtype, max_shard_bytes=max_bytes)
    self.assertEqual(len(files) > 1, bool(shard_size))
    self.assertEqual((tmp_path / 'ours' / hf_io.INDEX_FILE).exists(), bool(shard_size))
    a, b = _tensors(src), _tensors(tmp_path / 'ours')
    self.assertEqual(a.keys(), b.keys())
    for k in a:
      self.assertEqual(a[k].dtype, b[k].dtype, k)
      self.assertEqual(a[k].shape, b[k].shape, k)
      self.assertEqual(a[k].tobytes(), b[k].tobytes(), k)
    # Loading in the disk dtype keeps it.
    _, p16 = hf_io.load_hf(src, dtype=dtype)
    self.assertEqual({x.dtype for x in jax.tree.leaves(p16)}, {jnp.dtype(dtype)})

  def test_transformers_loads_sharded_lora_merged_export(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    config = TINY.replace(lora_rank=4, lora_alpha=8.0, lora_targets=('q', 'v', 'o', 'down'))
    # B != 0: the adapters change the model.
    flat = tu.flatten_dict(test_util.random_params(config, 3))
    params = tu.unflatten_dict(flat)
    files = hf_io.save_hf(params, config, tmp_path, max_shard_bytes=100_000)
    self.assertGreater(len(files), 1)
    hf = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    toks = np.random.default_rng(0).integers(0, 257, (2, 13)).astype(np.int32)
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(toks).long()).logits.numpy()
    ours = np.asarray(_apply(config, params, toks))              # LoRA on
    base = tu.unflatten_dict({k: v for k, v in flat.items() if k[-1] not in ('lora_a', 'lora_b')})
    self.assertGreater(np.abs(np.asarray(_apply(TINY, base, toks)) - ours).max(), 1e-2)
    self.assertLessEqual(np.abs(ours - ref).max(), 1e-4)
    merged = np.asarray(_apply(TINY, hf_io.merged_lora(params, config), toks))
    self.assertLessEqual(np.abs(merged - ours).max(), 1e-4)

  def test_load_onto_8_devices_reads_only_each_shard(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    src = test_util.tiny_hf_dir(tmp_path, shard_size='30KB')
    reads = []
    real_read = hf_io.Mapping.read

    def spy(mapping, tensor_slice, index):
      out = real_read(mapping, tensor_slice, index)
      reads.append((mapping.hf, out.shape))
      return out

    self.enter_context(mock.patch.object(hf_io.Mapping, 'read', spy))
    ref_cfg, ref = hf_io.load_hf(src)
    for shape in ((1, 4, 2), (2, 2, 2), (1, 1, 8)):
      mesh = sharding_lib.make_mesh(shape)
      reads.clear()
      config, params = hf_io.load_hf(src, mesh=mesh)
      want = tu.flatten_dict(sharding_lib.param_shardings(config, mesh))
      for path, x in tu.flatten_dict(params).items():
        self.assertEqual(x.sharding, want[path], (shape, path))
        per_device = want[path].shard_shape(x.shape)
        self.assertEqual({s.data.shape for s in x.addressable_shards}, {per_device}, (shape, path))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(tu.flatten_dict(ref)[path]))
        # Every disk read is one layer's shard (a stacked param reads layer by layer).
        m = hf_io.param_mapping(config)[path]
        layer_shard = per_device[1:] if m.stacked else per_device
        self.assertEqual({s for name, s in reads if name == m.hf}, {layer_shard}, (shape, path))
    # Export straight from the 8-device arrays (gathered one param at a time): same bytes.
    hf_io.save_hf(params, config, tmp_path / 'back')
    a, b = _tensors(src), _tensors(tmp_path / 'back')
    self.assertEqual(a.keys(), b.keys())
    for k in a:
      self.assertEqual(a[k].tobytes(), b[k].tobytes(), k)
    spec = lambda cfg, mesh: sharding_lib.param_shardings(cfg, mesh)['layers']['attn']['k'][
        'kernel']
    q = params['layers']['attn']['q']['kernel']  # on (1, 1, 8): N = 6 is not divisible by 8
    self.assertEqual(q.sharding.spec, jax.sharding.PartitionSpec(None, None, None, None))
    self.assertIsNone(spec(ref_cfg, sharding_lib.make_mesh((1, 2, 4))).spec[2])  # K = 2, tensor 4


def _single(tmp_path, tied=False):
  src = test_util.tiny_hf_dir(tmp_path / 'm', tied=tied)
  path = src / 'model.safetensors'
  return src, path, load_file(path)


class CheckpointErrorsTest(absltest.TestCase):

  def test_errors_name_file_and_tensor(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    with self.assertRaisesRegex(FileNotFoundError, f'{tmp_path}.*config.json'):
      hf_io.load_hf(tmp_path)
    src, path, tensors = _single(tmp_path)
    name = 'model.layers.1.mlp.up_proj.weight'
    save_file({k: v for k, v in tensors.items() if k != name}, path)
    with self.assertRaisesRegex(
        hf_io.CheckpointFormatError,
        f'model.safetensors: missing tensor .{name}. .expected shape .67, 48.'):
      hf_io.load_hf(src)
    save_file({**tensors, 'model.layers.0.self_attn.stray': np.zeros(4, np.float32)}, path)
    with self.assertRaisesRegex(ValueError, 'model.safetensors: unexpected tensor .*stray'):
      hf_io.load_hf(src)
    save_file({**tensors, 'model.norm.weight': np.zeros(7, np.float32)}, path)
    with self.assertRaisesRegex(ValueError, r"model.safetensors: tensor 'model.norm.weight' has "
                                         r'shape \(7,\), expected \(48,\)'):
      hf_io.load_hf(src)
    save_file(tensors, path)
    os.remove(src / 'model.safetensors')
    with self.assertRaisesRegex(FileNotFoundError, 'neither model.safetensors nor'):
      hf_io.load_hf(src)

  def test_sharded_index_errors(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    src = test_util.tiny_hf_dir(tmp_path, shard_size='30KB')
    index = json.loads((src / hf_io.INDEX_FILE).read_text())
    name = 'model.layers.2.self_attn.k_proj.bias'
    fname = index['weight_map'][name]
    tensors = load_file(src / fname)
    save_file({k: v for k, v in tensors.items() if k != name}, src / fname)
    with self.assertRaisesRegex(ValueError, f'{fname}: tensor .{name}. is listed in .*index.json'):
      hf_io.load_hf(src)
    del index['weight_map'][name]
    (src / hf_io.INDEX_FILE).write_text(json.dumps(index))
    with self.assertRaisesRegex(ValueError, f'index.json: missing tensor .{name}.'):
      hf_io.load_hf(src)

  def test_tied_checkpoint_with_a_saved_head(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    src, path, tensors = _single(tmp_path, tied=True)
    self.assertNotIn('lm_head.weight', tensors)
    save_file({**tensors, 'lm_head.weight': tensors['model.embed_tokens.weight']}, path)
    config, params = hf_io.load_hf(src)   # equal head: accepted, not a separate param
    self.assertTrue(config.tie_embeddings)
    self.assertNotIn('lm_head', params)
    head = tensors['model.embed_tokens.weight'].copy()
    head[200, 5] += 1.0
    save_file({**tensors, 'lm_head.weight': head}, path)
    with self.assertRaisesRegex(ValueError, r"lm_head.weight' differs .* \(rows 0\.\.257\)"):
      hf_io.load_hf(src)

  def test_save_options_and_errors(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    params = test_util.random_params(TINY, 0)
    tok_dir = tmp_path / 'tok'
    tok_dir.mkdir()
    (tok_dir / 'tokenizer_config.json').write_text('{}')
    (tok_dir / 'unrelated.bin').write_text('x')
    hf_io.save_hf(params, TINY, tmp_path / 'out', max_shard_bytes=50_000, tokenizer_dir=tok_dir)
    files = hf_io.save_hf(params, TINY, tmp_path / 'out', tokenizer_dir=tok_dir)  # re-export
    self.assertEqual(files, ['model.safetensors'])
    self.assertEqual(sorted(os.listdir(tmp_path / 'out')), ['config.json', 'model.safetensors',
                                                   'tokenizer_config.json'])  # stale shards gone
    cfg = json.loads((tmp_path / 'out' / 'config.json').read_text())
    self.assertEqual(cfg['model_type'], 'qwen2')
    self.assertEqual(cfg['torch_dtype'], 'float32')
    with self.assertRaisesRegex(ValueError, 'dtype'):
      hf_io.save_hf(params, TINY, tmp_path / 'x', dtype='float16')
    lora = test_util.random_params(TINY.replace(lora_rank=2), 0)
    with self.assertRaisesRegex(ValueError, 'lora_rank is 0'):
      hf_io.save_hf(lora, TINY, tmp_path / 'x')
    with self.assertRaisesRegex(ValueError, 'lm_head'):
      hf_io.save_hf(params, TINY.replace(tie_embeddings=True), tmp_path / 'x')
    with self.assertRaisesRegex(FileNotFoundError, 'tokenizer directory'):
      hf_io.save_hf(params, TINY, tmp_path / 'x', tokenizer_dir=tmp_path / 'none')


if __name__ == '__main__':
  absltest.main()
