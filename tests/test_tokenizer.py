"""The real R1-Distill tokenizer: known ids, the chat prompt, one BOS, stop ids, decoding."""
import copy

import numpy as np
import pytest

from conftest import R1_TOKENIZER as R1_DIR
from ceeh_jax import tokenizer as tokenizer_lib

BOS, EOS, USER, ASSISTANT, THINK, END_THINK = 151646, 151643, 151644, 151645, 151648, 151649


@pytest.fixture(scope='module')
def tok():
  if not R1_DIR.exists():
    pytest.skip(f'R1 tokenizer not found at {R1_DIR}')
  return tokenizer_lib.load_tokenizer(R1_DIR)


def _newer_template(tok):
  """The Feb-2025 R1 template: the generation prompt already ends with `<think>\\n`."""
  new = copy.deepcopy(tok)  # a shallow copy shares (and would change) the fixture's state
  old_tail = "{{'<｜Assistant｜>'}}{% endif %}"
  assert tok.chat_template.endswith(old_tail)
  new.chat_template = tok.chat_template[:-len(old_tail)] + "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
  return new


def test_known_ids(tok):
  assert tok('Hello world', add_special_tokens=False)['input_ids'] == [9707, 1879]
  assert (tok.bos_token_id, tok.eos_token_id) == (BOS, EOS)
  assert tok.convert_tokens_to_ids(['<think>', '</think>', '<｜User｜>', '<｜Assistant｜>']) == [
      THINK, END_THINK, USER, ASSISTANT]


def test_prompt_text_and_ids(tok):
  text = tokenizer_lib.build_prompt(tok, 'What is 1+1?')
  assert text == ('<｜begin▁of▁sentence｜><｜User｜>What is 1+1?\n'
                  'Please reason step by step, and put your final answer within \\boxed{}.'
                  '<｜Assistant｜><think>\n')
  ids = tokenizer_lib.encode_prompts(tok, [text])[0]
  # BOS once (the template writes it; encoding must not add another), the question ids
  # ('What is 1+1' = 3838 374 220 16 10 16 as in the tokenizer README; '?\n' then merges
  # into one token), and at the end `<think>` and '\n'.
  assert ids[:8] == [BOS, USER, 3838, 374, 220, 16, 10, 16]
  assert tok.decode(ids[8:9]) == '?\n'
  assert ids.count(BOS) == 1 and ids[-3:] == [ASSISTANT, THINK, 198]
  assert tok.decode(ids) == text


def test_think_prefix_never_doubled(tok):
  newer = _newer_template(tok)
  assert newer.apply_chat_template([{'role': 'user', 'content': 'q'}], tokenize=False,
                                   add_generation_prompt=True).endswith('<think>\n')
  for t in (tok, newer):
    text = tokenizer_lib.build_prompt(t, 'q')
    assert text.endswith('<｜Assistant｜><think>\n') and text.count('<think>') == 1
  assert tokenizer_lib.build_prompt(newer, 'q') == tokenizer_lib.build_prompt(tok, 'q')
  # Without the prefix, the template's own rendering is kept.
  assert tokenizer_lib.build_prompt(tok, 'q', think_prefix=False).endswith('<｜Assistant｜>')
  assert tokenizer_lib.build_prompt(newer, 'q', think_prefix=False).endswith('<think>\n')


def test_instruction_options(tok):
  bare = tokenizer_lib.build_prompt(tok, 'Find x.', instruction=None)
  assert bare == '<｜begin▁of▁sentence｜><｜User｜>Find x.<｜Assistant｜><think>\n'
  assert tokenizer_lib.build_prompt(tok, 'Find x.', instruction='') == bare
  custom = tokenizer_lib.build_prompt(tok, 'Find x.', instruction='Answer briefly.')
  assert '<｜User｜>Find x.\nAnswer briefly.<｜Assistant｜>' in custom
  with pytest.raises(TypeError, match='str'):
    tokenizer_lib.build_prompt(tok, ['Find x.'])


def test_encode_adds_bos_only_when_missing(tok):
  # A prompt without the template (e.g. chat=False) still starts with exactly one BOS,
  # because this tokenizer prepends BOS by default.
  ids = tokenizer_lib.encode_prompts(tok, ['Hello world', '<｜begin▁of▁sentence｜>Hello world'])
  assert ids == [[BOS, 9707, 1879], [BOS, 9707, 1879]]
  with pytest.raises(TypeError, match='list'):
    tokenizer_lib.encode_prompts(tok, 'Hello world')


def test_stop_ids_deduplicated(tok):
  assert tokenizer_lib.stop_ids(tok) == [EOS]  # eos is `<｜end▁of▁sentence｜>`: listed once
  other = copy.deepcopy(tok)
  other.eos_token = '<|EOT|>'  # a tokenizer whose EOS differs still stops on R1's EOS
  assert tokenizer_lib.stop_ids(other) == [151647, EOS]
  assert tok.eos_token_id == EOS


def test_decode_completions_cut_at_lengths(tok):
  think_ids = tok('x=2', add_special_tokens=False)['input_ids']
  row = think_ids + [END_THINK, EOS]
  pad = [0] * 3
  tokens = np.array([row + pad, (row[:2] + [0] * (len(row) + 3))[:len(row) + 3]])
  texts = tokenizer_lib.decode_completions(tok, tokens, [len(row), 2])
  assert texts[0] == 'x=2</think><｜end▁of▁sentence｜>'  # special tokens kept for the grader
  assert texts[1] == tok.decode(row[:2])
  with pytest.raises(ValueError, match='lengths'):
    tokenizer_lib.decode_completions(tok, tokens, [len(row) + 4, 0])
  with pytest.raises(ValueError, match=r'\[R, M\]'):
    tokenizer_lib.decode_completions(tok, tokens, [1])


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    tokenizer_lib.load_tokenizer(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match='no tokenizer files'):
    tokenizer_lib.load_tokenizer(tmp_path)
  with pytest.raises(ValueError, match='no tokenizer directory'):
    tokenizer_lib.load_tokenizer('')
