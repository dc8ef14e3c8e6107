"""Every config file's get_config() loads, validates and names a known method."""
import glob
import importlib.util
import os

import pytest

from ceeh_jax import config_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')) +
               glob.glob(os.path.join(ROOT, 'configs', 'baselines', '*.py')))


@pytest.mark.parametrize('path', FILES, ids=[os.path.relpath(f, ROOT) for f in FILES])
def test_config_loads_and_validates(path):
  spec = importlib.util.spec_from_file_location('cfg', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config()
  if config.get('mode', 'train') == 'train':
    if not config.model.hf_dir:  # the real recipes take the checkpoint on the command line
      with pytest.raises(config_check.ConfigError, match='hf_dir'):
        config_check.validate(config, num_devices=8)
      config.model.hf_dir = '/ckpt/DeepSeek-R1-Distill-Qwen-1.5B'
    config_check.validate(config, num_devices=8)
  if 'baselines' in path:
    assert config.method == os.path.splitext(os.path.basename(path))[0]
