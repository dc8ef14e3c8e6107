"""experiments/memory_plan.py: AOT compile on abstract arrays gives positive per-device bytes."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

from absl.testing import absltest

from experiments import memory_plan


class MemoryPlanTest(absltest.TestCase):

  def test_tiny_plan_on_8_devices_has_positive_numbers_and_a_row(self):
    config = memory_plan.load_config('tiny')
    res = memory_plan.plan(config, 8, prompt_len=16)
    self.assertEqual(set(res), {'train', 'decode'})
    for name, r in res.items():
      self.assertGreater(r['argument'], 0, name)
      self.assertGreater(r['output'], 0, name)
      self.assertGreater(r['total'], 0, name)
      self.assertGreaterEqual(r['total'], r['temp'], name)
      self.assertGreaterEqual(r['temp'], 0, name)
    # Decode donates its state, so its cache output aliases the input.
    self.assertGreater(res['decode']['alias'], 0)
    line = memory_plan.row('train', config, 8, res['train'])
    cells = [c.strip() for c in line.strip('|').split('|')]
    self.assertEqual(cells[:4], ['train', 'tiny', 'full', '8'])
    self.assertLen(cells, memory_plan.HEADER.splitlines()[0].count('|') - 1)
    self.assertIn('TPU v5e-8', cells[-2])  # a tiny model fits everywhere

  def test_fits_thresholds(self):
    self.assertEqual(memory_plan.fits(14.0), 'TPU v5e-8, 8xH100, TPU v4-16')
    self.assertEqual(memory_plan.fits(20.0, devices=4), 'TPU v4-8, TPU v5p-8')
    self.assertEqual(memory_plan.fits(75.0), 'none')


if __name__ == '__main__':
  absltest.main()
