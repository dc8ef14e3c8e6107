"""Tokenizer loading, the R1 chat prompt, prompt ids, stop ids and completion text.

The prompt is the tokenizer's own chat template with a generation prompt: for R1-Distill,
BOS + `<｜User｜>` + problem + instruction + `<｜Assistant｜>`. R1-Distill models are meant to
start their answer with `<think>\\n` (DeepSeek's usage notes); the original template stops at
`<｜Assistant｜>`, the Feb-2025 one already ends with `<think>\\n`, so `build_prompt` appends it
only when missing.
"""
import json
import os
from typing import Sequence

import numpy as np

from ceeh_jax import errors

# DeepSeek's recommended instruction for math problems (R1 model card, "Usage Recommendations").
DEFAULT_INSTRUCTION = 'Please reason step by step, and put your final answer within \\boxed{}.'
THINK_PREFIX = '<think>\n'
R1_EOS = '<｜end▁of▁sentence｜>'
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'vocab.json')
# The real DeepSeek-R1-Distill-Qwen tokenizer, shipped in the package (provenance and license:
# its README.md): tests and weights-only checkpoints use it without any download.
R1_TOKENIZER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'r1_tokenizer')


def load_tokenizer(path):
  """`transformers.AutoTokenizer` from a local directory (never the hub)."""
  # Only tokenizers come from transformers here: its import-time advice that PyTorch is missing
  # (models unavailable) is noise to a user of this package, the first line a fresh install saw.
  os.environ.setdefault('TRANSFORMERS_NO_ADVISORY_WARNINGS', '1')
  import transformers  # pylint: disable=g-import-not-at-top  (heavy; only tokenizer users pay)
  if not path:
    raise ValueError('no tokenizer directory given (config.tokenizer_dir or model.hf_dir)')
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise errors.MissingFileError(f'tokenizer directory {path!r} does not exist')
  if not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
    raise errors.MissingFileError(f'{path!r} has no tokenizer files (one of {_TOKENIZER_FILES})')
  # A generic fast tokenizer saved next to a model's config.json would be re-typed by
  # AutoTokenizer from the model type (qwen2 -> Qwen2Tokenizer, whose byte-level pre-tokenizer
  # replaces the saved one); honour the class the tokenizer files name.
  config_path = os.path.join(path, 'tokenizer_config.json')
  if os.path.exists(config_path):
    with open(config_path) as f:
      if json.load(f).get('tokenizer_class') == 'PreTrainedTokenizerFast':
        return transformers.PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
  return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def build_prompt(tokenizer, problem: str, *, instruction: str | None = DEFAULT_INSTRUCTION,
                 think_prefix: bool = True) -> str:
  """The chat-formatted prompt text for one problem (`problem\\ninstruction` as the user turn).

  With `think_prefix` the text ends with exactly one `<think>\\n`; without it the template's
  rendering is returned unchanged. An empty or None instruction adds nothing.
  """
  if not isinstance(problem, str):
    raise TypeError(f'problem must be a str, got {type(problem).__name__}')
  if getattr(tokenizer, 'chat_template', None) is None:
    raise ValueError('the tokenizer has no chat template; R1 prompts need one')
  content = f'{problem}\n{instruction}' if instruction else problem
  text = tokenizer.apply_chat_template([{'role': 'user', 'content': content}], tokenize=False,
                                       add_generation_prompt=True)
  if think_prefix and not text.endswith(THINK_PREFIX):
    text += '\n' if text.endswith(THINK_PREFIX[:-1]) else THINK_PREFIX
  return text


def _adds_bos(tokenizer) -> bool:
  """Whether plain encoding prepends BOS (read from behaviour: in transformers 5 the
  `add_bos_token` attribute can say False while tokenizer.json's post-processor adds it)."""
  bos = tokenizer.bos_token_id
  ids = tokenizer('a')['input_ids']
  return bos is not None and len(ids) > 0 and ids[0] == bos


class EncodeError(errors.UserError, ValueError):
  """A text the tokenizer cannot encode (e.g. a word-level vocabulary without an unknown
  token); `index` is its position in the list given to `encode_prompts`."""

  def __init__(self, index: int, reason: str, text: str):
    shown = f'{text[:80]!r}{"..." if len(text) > 80 else ""}'
    super().__init__(f'the tokenizer cannot encode text {index} ({reason}): {shown}')
    self.index, self.reason, self.shown = index, reason, shown


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of rendered prompts, with exactly one BOS when the tokenizer uses one.

  The R1 template already writes BOS as text, and encoding with special tokens would add a
  second; so texts are encoded without them and BOS is prepended only where it is missing.
  The texts go to the tokenizer as one batch; if that fails they are encoded one by one, and
  the first that fails raises EncodeError naming its index.
  """
  if isinstance(texts, str):
    raise TypeError('encode_prompts takes a list of texts, got a single str')
  texts = list(texts)
  bos = tokenizer.bos_token_id if _adds_bos(tokenizer) else None
  try:
    batch = tokenizer(texts, add_special_tokens=False)['input_ids']
  except Exception:  # noqa: BLE001 - find the text that fails and name it
    batch = [_encode_one(tokenizer, text, i) for i, text in enumerate(texts)]
  out = []
  for ids in batch:
    ids = [int(i) for i in ids]
    out.append([bos] + ids if bos is not None and ids[:1] != [bos] else ids)
  return out


def _encode_one(tokenizer, text: str, index: int) -> list[int]:
  try:
    return tokenizer(text, add_special_tokens=False)['input_ids']
  except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception
    raise EncodeError(index, ' '.join(str(e).split())[:200] or type(e).__name__, text) from None


def stop_ids(tokenizer) -> list[int]:
  """Ids that end a completion: EOS and, where the vocab has it, R1's `<｜end▁of▁sentence｜>`."""
  ids = []
  eos = tokenizer.eos_token_id
  for i in (eos if isinstance(eos, (list, tuple)) else [eos]):
    if i is not None and int(i) not in ids:
      ids.append(int(i))
  r1 = tokenizer.convert_tokens_to_ids(R1_EOS)
  if isinstance(r1, int) and r1 >= 0 and r1 != tokenizer.unk_token_id and r1 not in ids:
    ids.append(r1)
  if not ids:
    raise ValueError('the tokenizer has no EOS token; set one so completions can end')
  return ids


def decode_completions(tokenizer, token_ids, lengths) -> list[str]:
  """Texts of int32[R, M] completions cut at lengths int32[R].

  Special tokens are kept: the grader needs `</think>`, and EOS marks a finished answer.
  """
  token_ids, lengths = np.asarray(token_ids), np.asarray(lengths)
  if token_ids.ndim != 2 or lengths.shape != token_ids.shape[:1]:
    raise ValueError(f'expected token_ids [R, M] and lengths [R], got {token_ids.shape} and '
                     f'{lengths.shape}')
  if lengths.size and (lengths.min() < 0 or lengths.max() > token_ids.shape[1]):
    raise ValueError(f'lengths must lie in [0, {token_ids.shape[1]}], got {lengths.min()}..'
                     f'{lengths.max()}')
  return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(token_ids, lengths)],
                                skip_special_tokens=False)
