"""experiments/memory_plan.py: AOT compile on abstract arrays gives positive per-device bytes."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'experiments'))

import memory_plan  # noqa: E402  pylint: disable=g-import-not-at-top


def test_tiny_plan_on_8_devices_has_positive_numbers_and_a_row():
  config = memory_plan.load_config('tiny')
  res = memory_plan.plan(config, 8, prompt_len=16)
  assert set(res) == {'train', 'decode'}
  for r in res.values():
    assert r['argument'] > 0 and r['output'] > 0 and r['total'] > 0
    assert r['total'] >= r['temp'] >= 0
  # Decode donates its state, so its cache output aliases the input.
  assert res['decode']['alias'] > 0
  line = memory_plan.row('train', config, 8, res['train'])
  cells = [c.strip() for c in line.strip('|').split('|')]
  assert cells[:4] == ['train', 'tiny', 'full', '8']
  assert len(cells) == memory_plan.HEADER.splitlines()[0].count('|') - 1
  assert 'TPU v5e-8' in cells[-2]  # a tiny model fits everywhere


def test_fits_thresholds():
  assert memory_plan.fits(14.0) == 'TPU v5e-8, 8xH100, TPU v4-16'
  assert memory_plan.fits(20.0, devices=4) == 'TPU v4-8, TPU v5p-8'
  assert memory_plan.fits(75.0) == 'none'
