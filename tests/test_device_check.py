"""scripts/device_check.sh --dry_run runs end to end here (tiny shapes), so the device check
cannot rot before a TPU or GPU runs it."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json
import os
import subprocess

from absl.testing import absltest

from configs import r1_1p5b
from ceeh_jax.models.config import QwenConfig
from scripts import device_check


@test_util.slow
class DeviceCheckDryRunTest(absltest.TestCase):

  def test_dry_run_writes_every_part(self):
    out = self.create_tempdir().full_path
    proc = subprocess.run(['bash', str(test_util.REPO / 'scripts' / 'device_check.sh'),
                           '--dry_run', f'--out={out}'], capture_output=True, text=True,
                          timeout=900, cwd='/')
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(out, 'device_check.json')) as f:
      res = json.load(f)
    self.assertTrue(res['dry_run'])
    self.assertEqual(res['env']['backend'], 'cpu')
    self.assertEqual(res['env']['devices'], 1)
    self.assertEqual(res['tests']['status'], 'ok', res['tests'])
    self.assertGreater(sum(v for k, v in res['tests']['counts'].items()), 0)
    sampler = res['sampler']
    self.assertEqual(sampler['status'], 'ok', sampler)
    self.assertEqual({r['layout'] for r in sampler['runs']}, {'scanned', 'unrolled'})
    for r in sampler['runs']:
      self.assertGreater(r['tok_s'], 0)
      self.assertGreater(r['roofline_fraction'], 0)
    train = res['train']
    self.assertEqual(train['status'], 'ok', train)
    self.assertTrue(train['loss_finite'])
    self.assertEqual(train['kl_step1'], 0.0)  # policy == reference at step 1
    self.assertGreater(train['mfu'], 0)
    self.assertIsNone(train['peak_bytes'])  # CPU has no memory_stats
    self.assertIn('total_bytes', train['plan'], train['plan'])
    self.assertGreater(train['plan']['total_bytes'], 0)
    with open(os.path.join(out, 'device_check.md')) as f:
      table = f.read()
    self.assertIn('DRY RUN', table)
    self.assertIn('MFU', table)
    self.assertIn('device check: cpu', proc.stdout)


class TrainFlopsTest(absltest.TestCase):
  """The MFU's numerator by hand at a prime-sized shape."""

  def test_train_flops_by_hand(self):
    cfg = QwenConfig.tiny(num_layers=1, lora_rank=2, lora_targets=('q',))
    # tiny: V 257, D 48, F 67, N 6, K 2, H 8; non-embedding params n:
    n = (48 * 48 + 48 + 2 * (48 * 16 + 16) + 48 * 48) + 3 * 48 * 67 + 2 * 48 + 48
    self.assertEqual(cfg.num_params - 2 * 257 * 48, n)
    r, p, m = 3, 5, 7
    f = device_check.train_flops(cfg, r, p, m, lora=True, kl=True)
    self.assertEqual(f['dense'], (4 + 2) * n * r * 12)
    self.assertEqual(f['lm_head'], (4 + 2) * 48 * 257 * r * m)
    self.assertEqual(f['attention'], 4 * 48 * 144 / 2 * r * 4)
    self.assertEqual(f['adapters'], 3 * 2 * 2 * (48 + 48) * r * 12)
    full = device_check.train_flops(cfg, r, p, m, lora=False, kl=False)
    self.assertEqual(full['dense'], 6 * n * r * 12)
    self.assertEqual(full['adapters'], 0)

  def test_scaled_recipe_is_the_recipe_on_one_device(self):
    recipe = r1_1p5b.get_config()
    config, p = device_check.scaled_recipe(dry=False)
    # One device's share of the recipe's 8-row micro-batch (8 devices), 4 micro-batches.
    self.assertEqual(recipe.micro_batch_size, 8)
    self.assertEqual((config.minibatch_size, config.micro_batch_size), (4, 1))
    self.assertEqual((p, config.sampling.max_new_tokens), (512, 1536))
    for key in ('lora_rank', 'dtype', 'remat_policy', 'preset'):
      self.assertEqual(config.model[key], recipe.model[key], key)
    self.assertEqual(config.grpo.kl_coef, recipe.grpo.kl_coef)


if __name__ == '__main__':
  absltest.main()
