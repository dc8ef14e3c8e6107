"""Every config file's get_config() loads, validates and names a known method."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import importlib.util
import os

from absl.testing import absltest
from absl.testing import parameterized

from ceeh_jax import config_check

CONFIGS = test_util.REPO / 'configs'
FILES = sorted(CONFIGS.glob('*.py')) + sorted(CONFIGS.glob('baselines/*.py'))
# Case names: configs/tiny.py -> 'tiny', configs/baselines/dler.py -> 'baselines_dler'.
CASES = [(str(f.relative_to(CONFIGS).with_suffix('')).replace(os.sep, '_'), str(f))
         for f in FILES]


class ConfigsTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_config_loads_and_validates(self, path):
    spec = importlib.util.spec_from_file_location('cfg', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config()
    if config.get('mode', 'train') == 'train':
      if not config.model.hf_dir:  # the real recipes take the checkpoint on the command line
        with self.assertRaisesRegex(config_check.ConfigError, 'hf_dir'):
          config_check.validate(config, num_devices=8)
        config.model.hf_dir = '/ckpt/DeepSeek-R1-Distill-Qwen-1.5B'
      config_check.validate(config, num_devices=8)
    if 'baselines' in path:
      self.assertEqual(config.method, os.path.splitext(os.path.basename(path))[0])


if __name__ == '__main__':
  absltest.main()
