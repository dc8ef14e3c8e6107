"""LoRA that loads and saves lean: adapters from jax.eval_shape (no random base), trainable-only
checkpoints naming their base weights, bitwise resume, a one-line error against other weights."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import os
import shutil
from unittest import mock

from absl.testing import absltest
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.numpy

from ceeh_jax import errors
from ceeh_jax import evaluate as evaluate_lib
from ceeh_jax import fingerprint as fingerprint_lib
from ceeh_jax import hf_io
from ceeh_jax import policy as policy_lib
from ceeh_jax import sharding as sharding_lib
from ceeh_jax import train as train_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig


class AdaptersTest(absltest.TestCase):

  def test_init_adapters_makes_only_the_adapters_in_their_shardings(self):
    cfg = QwenConfig.tiny(lora_rank=4, lora_targets=('q', 'o', 'down'))
    mesh = sharding_lib.make_mesh((1, 4, 2))
    with mock.patch.object(qwen2_lib, 'init_params', side_effect=AssertionError('random base')):
      adapters = tu.flatten_dict(policy_lib.init_adapters(cfg, jax.random.key(0), mesh))
    abstract = tu.flatten_dict(sharding_lib.abstract_params(cfg))
    shardings = tu.flatten_dict(sharding_lib.param_shardings(cfg, mesh))
    want = {p for p in abstract if p[-1] in ('lora_a', 'lora_b')}
    self.assertLen(want, 6)  # 3 targets x (A, B), each stacked over the layers
    self.assertEqual(set(adapters), want)
    for path, x in adapters.items():
      self.assertEqual((x.shape, x.dtype), (abstract[path].shape, abstract[path].dtype), path)
      self.assertEqual(x.sharding, shardings[path], path)
      if path[-1] == 'lora_b':
        self.assertEqual(float(jnp.abs(x).max()), 0.0)
      else:  # A ~ N(0, 1/in): the std of a [L, in, R] leaf is in**-0.5 (within sampling error)
        test_util.assert_approx(float(jnp.std(x)), x.shape[-2] ** -0.5, rel=0.15)


class WeightsFingerprintTest(absltest.TestCase):

  def test_layout_free_and_sees_changed_weights(self):
    tmp = self.create_tempdir().full_path
    single = test_util.tiny_hf_dir(os.path.join(tmp, 'single'))
    sharded = test_util.tiny_hf_dir(os.path.join(tmp, 'sharded'), shard_size='30KB')
    fp = hf_io.weights_fingerprint(single)
    self.assertEqual(hf_io.weights_fingerprint(sharded), fp)  # same tensors, other files
    self.assertLen(fp, 64)
    for name, edit in (('model.norm.weight', lambda x: x.__setitem__(17, x[17] + 1e-3)),
                       ('model.layers.1.mlp.up_proj.weight', lambda x: x.__imul__(1.001))):
      other = os.path.join(tmp, name)
      shutil.copytree(single, other)
      path = os.path.join(other, hf_io.SINGLE_FILE)
      tensors = safetensors.numpy.load_file(path)
      edit(tensors[name])
      safetensors.numpy.save_file(tensors, path, metadata={'format': 'pt'})
      self.assertNotEqual(hf_io.weights_fingerprint(other), fp, name)

  def test_check_base(self):
    rec = {'hf_dir': '/a', 'weights': 'f' * 64}
    policy_lib.check_base({'base': rec}, rec, 'w', lora=True)
    policy_lib.check_base({'base': {**rec, 'hf_dir': '/moved'}}, rec, 'w', lora=True)
    policy_lib.check_base({}, rec, 'w', lora=False)  # a full fine-tune's params are all saved
    for meta in ({'base': {**rec, 'weights': 'e' * 64}}, {},
                 {'base': {'preset': 'tiny', 'seed': 0}}):
      with self.assertRaises(policy_lib.BaseMismatchError) as e:
        policy_lib.check_base(meta, rec, 'w', lora=True)
      self.assertIsInstance(e.exception, errors.UserError)
      self.assertNotIn('\n', str(e.exception))
    preset = {'preset': 'tiny', 'seed': 0}
    policy_lib.check_base({'base': preset}, preset, 'w', lora=True)
    with self.assertRaisesRegex(policy_lib.BaseMismatchError, 'seed 1'):
      policy_lib.check_base({'base': preset}, {**preset, 'seed': 1}, 'w', lora=True)


class LoraFromHfTrainerTest(absltest.TestCase):
  """Two steps of LoRA on a tiny HF checkpoint, uninterrupted (once for the class)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = test_util.class_tempdir(cls)
    cls.hf_dir = str(test_util.tiny_hf_dir(cls.tmp / 'hf'))
    cls.full = str(cls.tmp / 'full')
    calls = []
    real = sharding_lib.init_params
    with mock.patch.object(sharding_lib, 'init_params',
                           lambda *a, **k: calls.append(a) or real(*a, **k)):
      train_lib.train_and_evaluate(cls.config(), cls.full)
    cls.random_inits = calls

  @classmethod
  def config(cls, **kw):
    return test_util.small_config(str(cls.tmp), total_steps=2, checkpoint_every=1, **{
        'model.hf_dir': cls.hf_dir, 'model.lora_rank': 4, 'model.dtype': 'bfloat16',
        'data.eval_size': 0, **kw})

  def test_no_random_base_and_a_bf16_frozen_base(self):
    self.assertEqual(self.random_inits, [])
    _, state = fingerprint_lib.load_latest_state(self.full)
    self.assertEqual(int(state['step']), 2)

  def test_checkpoint_holds_the_trainable_part_and_names_its_base(self):
    _, state = fingerprint_lib.load_latest_state(self.full)
    paths = set(tu.flatten_dict(state['params']))
    self.assertTrue(paths)
    self.assertTrue(all(p[-1] in ('lora_a', 'lora_b') for p in paths), paths)
    self.assertTrue(any(np.abs(v).max() > 0 for p, v in tu.flatten_dict(state['params']).items()
                        if p[-1] == 'lora_b'))  # trained
    meta = policy_lib.read_meta(self.full, 2)
    self.assertEqual(meta['base'], {'hf_dir': os.path.abspath(self.hf_dir),
                                    'weights': hf_io.weights_fingerprint(self.hf_dir)})

  def test_resume_equals_uninterrupted(self):
    work = str(self.tmp / 'resumed')
    train_lib.train_and_evaluate(self.config(), work, stop_after=1)
    self.assertEqual(fingerprint_lib.fingerprint(work)['step'], 1)
    train_lib.train_and_evaluate(self.config(), work)
    a, b = fingerprint_lib.fingerprint(work), fingerprint_lib.fingerprint(self.full)
    self.assertEqual(a['step'], 2)
    self.assertEqual(a['parts'], b['parts'])

  def test_resume_against_other_base_weights_is_a_one_line_error(self):
    other = str(self.tmp / 'hf_other')
    shutil.copytree(self.hf_dir, other)
    path = os.path.join(other, hf_io.SINGLE_FILE)
    tensors = safetensors.numpy.load_file(path)
    tensors['model.embed_tokens.weight'] *= 1.01
    safetensors.numpy.save_file(tensors, path, metadata={'format': 'pt'})
    work = str(self.tmp / 'other_base')
    shutil.copytree(self.full, work)
    with self.assertRaises(policy_lib.BaseMismatchError) as e:
      train_lib.train_and_evaluate(self.config(**{'model.hf_dir': other}), work)
    msg = str(e.exception)
    self.assertNotIn('\n', msg)
    self.assertIn(os.path.abspath(self.hf_dir), msg)
    self.assertIn(other, msg)

  def test_evaluate_merges_the_adapters_into_the_configured_base(self):
    config = self.config()
    config.eval = ml_collections.ConfigDict({'checkpoint_workdir': self.full})
    mesh = sharding_lib.make_mesh((1, 1, 1))
    model_cfg, params, info, _ = evaluate_lib.load_model(config, mesh, sharding_lib.DEFAULT_RULES)
    self.assertEqual((model_cfg.lora_rank, info['step']), (0, 2))
    _, state = fingerprint_lib.load_latest_state(self.full)
    _, base = hf_io.load_hf(self.hf_dir, dtype='bfloat16')
    lora_cfg = policy_lib.model_config(config)
    want = hf_io.merged_lora(policy_lib.with_base(state['params'], base), lora_cfg)
    for p, x in tu.flatten_dict(want).items():
      np.testing.assert_array_equal(np.asarray(tu.flatten_dict(params)[p]), np.asarray(x),
                                    err_msg=str(p))


if __name__ == '__main__':
  absltest.main()
