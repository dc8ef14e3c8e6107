"""The real R1-Distill tokenizer: known ids, the chat prompt, one BOS, stop ids, decoding."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import copy
import pathlib

from absl.testing import absltest
import numpy as np

from ceeh_jax import tokenizer as tokenizer_lib

BOS, EOS, USER, ASSISTANT, THINK, END_THINK = 151646, 151643, 151644, 151645, 151648, 151649


def _newer_template(tok):
  """The Feb-2025 R1 template: the generation prompt already ends with `<think>\\n`."""
  new = copy.deepcopy(tok)  # a shallow copy shares (and would change) the fixture's state
  old_tail = "{{'<｜Assistant｜>'}}{% endif %}"
  assert tok.chat_template.endswith(old_tail)
  new.chat_template = (tok.chat_template[:-len(old_tail)] +
                       "{{'<｜Assistant｜><think>\\n'}}{% endif %}")
  return new


class R1TokenizerTest(absltest.TestCase):
  """The real R1 tokenizer (skipped where it is absent)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tok = test_util.r1_tokenizer()

  def test_known_ids(self):
    tok = self.tok
    self.assertEqual(tok('Hello world', add_special_tokens=False)['input_ids'], [9707, 1879])
    self.assertEqual((tok.bos_token_id, tok.eos_token_id), (BOS, EOS))
    self.assertEqual(
        tok.convert_tokens_to_ids(['<think>', '</think>', '<｜User｜>', '<｜Assistant｜>']),
        [THINK, END_THINK, USER, ASSISTANT])

  def test_prompt_text_and_ids(self):
    tok = self.tok
    text = tokenizer_lib.build_prompt(tok, 'What is 1+1?')
    self.assertEqual(text, '<｜begin▁of▁sentence｜><｜User｜>What is 1+1?\n'
                    'Please reason step by step, and put your final answer within \\boxed{}.'
                    '<｜Assistant｜><think>\n')
    ids = tokenizer_lib.encode_prompts(tok, [text])[0]
    # BOS once (the template writes it; encoding must not add another), the question ids
    # ('What is 1+1' = 3838 374 220 16 10 16 as in the tokenizer README; '?\n' then merges
    # into one token), and at the end `<think>` and '\n'.
    self.assertEqual(ids[:8], [BOS, USER, 3838, 374, 220, 16, 10, 16])
    self.assertEqual(tok.decode(ids[8:9]), '?\n')
    self.assertEqual(ids.count(BOS), 1)
    self.assertEqual(ids[-3:], [ASSISTANT, THINK, 198])
    self.assertEqual(tok.decode(ids), text)

  def test_think_prefix_never_doubled(self):
    tok = self.tok
    newer = _newer_template(tok)
    self.assertEndsWith(newer.apply_chat_template([{'role': 'user', 'content': 'q'}],
                                                  tokenize=False, add_generation_prompt=True),
                        '<think>\n')
    for t in (tok, newer):
      text = tokenizer_lib.build_prompt(t, 'q')
      self.assertEndsWith(text, '<｜Assistant｜><think>\n')
      self.assertEqual(text.count('<think>'), 1)
    self.assertEqual(tokenizer_lib.build_prompt(newer, 'q'), tokenizer_lib.build_prompt(tok, 'q'))
    # Without the prefix, the template's own rendering is kept.
    self.assertEndsWith(tokenizer_lib.build_prompt(tok, 'q', think_prefix=False),
                        '<｜Assistant｜>')
    self.assertEndsWith(tokenizer_lib.build_prompt(newer, 'q', think_prefix=False), '<think>\n')

  def test_instruction_options(self):
    tok = self.tok
    bare = tokenizer_lib.build_prompt(tok, 'Find x.', instruction=None)
    self.assertEqual(bare, '<｜begin▁of▁sentence｜><｜User｜>Find x.<｜Assistant｜><think>\n')
    self.assertEqual(tokenizer_lib.build_prompt(tok, 'Find x.', instruction=''), bare)
    custom = tokenizer_lib.build_prompt(tok, 'Find x.', instruction='Answer briefly.')
    self.assertIn('<｜User｜>Find x.\nAnswer briefly.<｜Assistant｜>', custom)
    with self.assertRaisesRegex(TypeError, 'str'):
      tokenizer_lib.build_prompt(tok, ['Find x.'])

  def test_encode_adds_bos_only_when_missing(self):
    tok = self.tok
    # A prompt without the template (e.g. chat=False) still starts with exactly one BOS,
    # because this tokenizer prepends BOS by default.
    ids = tokenizer_lib.encode_prompts(tok, ['Hello world', '<｜begin▁of▁sentence｜>Hello world'])
    self.assertEqual(ids, [[BOS, 9707, 1879], [BOS, 9707, 1879]])
    with self.assertRaisesRegex(TypeError, 'list'):
      tokenizer_lib.encode_prompts(tok, 'Hello world')

  def test_stop_ids_deduplicated(self):
    tok = self.tok
    # eos is `<｜end▁of▁sentence｜>`: listed once.
    self.assertEqual(tokenizer_lib.stop_ids(tok), [EOS])
    other = copy.deepcopy(tok)
    other.eos_token = '<|EOT|>'  # a tokenizer whose EOS differs still stops on R1's EOS
    self.assertEqual(tokenizer_lib.stop_ids(other), [151647, EOS])
    self.assertEqual(tok.eos_token_id, EOS)

  def test_decode_completions_cut_at_lengths(self):
    tok = self.tok
    think_ids = tok('x=2', add_special_tokens=False)['input_ids']
    row = think_ids + [END_THINK, EOS]
    pad = [0] * 3
    tokens = np.array([row + pad, (row[:2] + [0] * (len(row) + 3))[:len(row) + 3]])
    texts = tokenizer_lib.decode_completions(tok, tokens, [len(row), 2])
    # Special tokens kept for the grader.
    self.assertEqual(texts[0], 'x=2</think><｜end▁of▁sentence｜>')
    self.assertEqual(texts[1], tok.decode(row[:2]))
    with self.assertRaisesRegex(ValueError, 'lengths'):
      tokenizer_lib.decode_completions(tok, tokens, [len(row) + 4, 0])
    with self.assertRaisesRegex(ValueError, r'\[R, M\]'):
      tokenizer_lib.decode_completions(tok, tokens, [1])


class LoadErrorsTest(absltest.TestCase):

  def test_load_errors(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    with self.assertRaisesRegex(FileNotFoundError, 'does not exist'):
      tokenizer_lib.load_tokenizer(tmp_path / 'nope')
    with self.assertRaisesRegex(FileNotFoundError, 'no tokenizer files'):
      tokenizer_lib.load_tokenizer(tmp_path)
    with self.assertRaisesRegex(ValueError, 'no tokenizer directory'):
      tokenizer_lib.load_tokenizer('')


if __name__ == '__main__':
  absltest.main()
