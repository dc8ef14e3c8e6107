"""The three-call public API and the R1 tokenizer/prompt helpers."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import pathlib

from absl.testing import absltest
import jax
import numpy as np

from ceeh_jax import api
from ceeh_jax import hf_io
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.models import qwen2 as qwen2_lib
from ceeh_jax.models.config import QwenConfig
from ceeh_jax.synthetic import tokenizer as syn_tok


class R1PromptTest(absltest.TestCase):
  """The real R1 tokenizer (skipped where it is absent)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.r1_tok = test_util.r1_tokenizer()

  def test_real_tokenizer_ids(self):
    r1_tok = self.r1_tok
    self.assertEqual(r1_tok('Hello world', add_special_tokens=False)['input_ids'], [9707, 1879])
    self.assertEqual((r1_tok.bos_token_id, r1_tok.eos_token_id), (151646, 151643))
    self.assertEqual(r1_tok.convert_tokens_to_ids('<think>'), 151648)
    self.assertEqual(tokenizer_lib.stop_ids(r1_tok), [151643])

  def test_r1_prompt_has_one_bos_and_ends_with_think(self):
    r1_tok = self.r1_tok
    text = tokenizer_lib.build_prompt(r1_tok, 'What is 2+2?')
    self.assertStartsWith(text, '<｜begin▁of▁sentence｜><｜User｜>What is 2+2?\n')
    self.assertEndsWith(text, '<｜Assistant｜><think>\n')
    self.assertEqual(text.count('<think>'), 1)
    ids = tokenizer_lib.encode_prompts(r1_tok, [text])[0]
    self.assertEqual(ids[0], 151646)
    self.assertEqual(ids.count(151646), 1)
    self.assertEqual(ids[-2:], [151648, 198])
    no_think = tokenizer_lib.build_prompt(r1_tok, 'q', think_prefix=False)
    self.assertEndsWith(no_think, '<｜Assistant｜>')


class ApiTest(absltest.TestCase):

  def test_load_logits_generate(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    config = QwenConfig.tiny(vocab_size=128)
    params = qwen2_lib.init_params(config, jax.random.key(0))
    tok_dir = syn_tok.ensure_tokenizer(str(tmp_path / 'tok'))
    hf_io.save_hf(params, config, tmp_path / 'model', tokenizer_dir=tok_dir)
    model = api.load(str(tmp_path / 'model'))
    tokens = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = tokens != 0
    got = api.logits(model, tokens, mask)
    want, _ = qwen2_lib.Qwen2(config).apply({'params': params}, tokens,
                                            qwen2_lib.positions_from_mask(mask), mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    out = api.generate(model, ['a=1 b=a+2 find b', 'a=3 find a'], num_samples=3,
                       max_new_tokens=9)
    self.assertLen(out.texts, 2)
    self.assertTrue(all(len(t) == 3 for t in out.texts), out.texts)
    for ids, lps, n in zip(out.token_ids[0], out.logps[0], out.lengths[0]):
      self.assertLen(ids, n)
      self.assertLen(lps, n)
      self.assertBetween(n, 1, 9)

  def test_shipped_base_policy_tokenizer_round_trips(self):
    """A generic fast tokenizer next to a qwen2 config.json keeps its own pre-tokenizer."""
    # pylint: disable=g-import-not-at-top
    from ceeh_jax.synthetic import paths
    from ceeh_jax.synthetic import task
    # pylint: enable=g-import-not-at-top
    tok = tokenizer_lib.load_tokenizer(paths.BASE_POLICY)
    row = task.make_dataset(1, seed=3)[0]
    trace = task.completion(task.sft_traces([row], 0)[0])
    ids = tok(trace, add_special_tokens=False)['input_ids']
    self.assertEqual(tok.decode(ids), trace)


if __name__ == '__main__':
  absltest.main()
