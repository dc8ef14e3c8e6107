"""Export of a config whose head_dim is not embed_dim // num_heads: written to config.json,
loaded by transformers, and back by us, with the same logits."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import json

from absl.testing import absltest
import jax
import numpy as np

from ceeh_jax import hf_io
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig

# N·H = 6·10 = 60 != D = 48: HF's fallback hidden_size // num_heads would give 8.
CONFIG = QwenConfig.tiny(head_dim=10)


class ExportHeadDimTest(absltest.TestCase):

  def test_explicit_head_dim_round_trips_through_transformers(self):
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    out = self.create_tempdir().full_path
    params = test_util.random_params(CONFIG, 0)
    hf_io.save_hf(params, CONFIG, out)
    with open(f'{out}/config.json') as f:
      self.assertEqual(json.load(f)['head_dim'], 10)

    toks = np.random.default_rng(1).integers(0, CONFIG.vocab_size, (2, 11)).astype(np.int32)
    pos = np.broadcast_to(np.arange(toks.shape[1]), toks.shape)
    ours = np.asarray(qwen2_lib.Qwen2(CONFIG).apply({'params': params}, toks, pos)[0])
    hf = transformers.Qwen2ForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    self.assertEqual(hf.model.layers[0].self_attn.q_proj.weight.shape, (60, 48))
    with torch.no_grad():
      ref = hf(input_ids=torch.tensor(toks).long()).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)

    loaded_cfg, loaded = hf_io.load_hf(out)
    self.assertEqual(loaded_cfg.head_dim, 10)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_default_head_dim_is_written_too(self):
    self.assertEqual(QwenConfig.tiny().to_hf()['head_dim'], 8)


if __name__ == '__main__':
  absltest.main()
