"""Tokenizer loading and the R1 chat prompt.

The chat template of the tokenizer renders the prompt (BOS, `<｜User｜>`, the problem and the
instruction, `<｜Assistant｜>`); with `think_prefix` the prompt also ends with `<think>\\n`,
which R1-Distill models expect (newer templates add it themselves; it is never doubled).
"""
import os
from typing import Sequence

import numpy as np

DEFAULT_INSTRUCTION = 'Please reason step by step, and put your final answer within \\boxed{}.'
THINK_PREFIX = '<think>\n'


def load_tokenizer(path: str):
  """`AutoTokenizer` from a local directory (never the hub)."""
  import transformers  # pylint: disable=g-import-not-at-top
  if not path:
    raise ValueError('no tokenizer directory given (config.tokenizer_dir or model.hf_dir)')
  if not os.path.isdir(path):
    raise FileNotFoundError(f'tokenizer directory {path!r} does not exist')
  if not any(os.path.exists(os.path.join(path, f)) for f in
             ('tokenizer.json', 'tokenizer_config.json', 'vocab.json')):
    raise FileNotFoundError(f'{path!r} has no tokenizer files (tokenizer.json / tokenizer_config.json)')
  return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def build_prompt(tokenizer, problem: str, *, instruction: str | None = DEFAULT_INSTRUCTION,
                 think_prefix: bool = True) -> str:
  """The chat-formatted prompt text for one problem."""
  content = problem if not instruction else f'{problem}\n{instruction}'
  text = tokenizer.apply_chat_template([{'role': 'user', 'content': content}], tokenize=False,
                                       add_generation_prompt=True)
  if think_prefix and not text.endswith(THINK_PREFIX):
    text += THINK_PREFIX
  return text


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of rendered prompts. The template already holds BOS: no second one is added."""
  return [list(tokenizer(t, add_special_tokens=False)['input_ids']) for t in texts]


def stop_ids(tokenizer) -> list[int]:
  """Ids that end a completion: EOS (for R1, `<｜end▁of▁sentence｜>`), de-duplicated."""
  ids = []
  eos = tokenizer.eos_token_id
  for i in (eos if isinstance(eos, list) else [eos]):
    if i is not None and i not in ids:
      ids.append(int(i))
  for tok in ('<｜end▁of▁sentence｜>',):
    i = tokenizer.convert_tokens_to_ids(tok)
    if isinstance(i, int) and i != tokenizer.unk_token_id and i not in ids and i >= 0:
      ids.append(i)
  if not ids:
    raise ValueError('the tokenizer has no EOS token; set one so completions can end')
  return ids


def decode_completions(tokenizer, token_ids, lengths) -> list[str]:
  """Texts of int32[R, M] completions cut at their lengths (special tokens kept: the grader
  needs `</think>`)."""
  token_ids, lengths = np.asarray(token_ids), np.asarray(lengths)
  return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(token_ids, lengths)],
                                skip_special_tokens=False)
