"""A word-level HF tokenizer for the synthetic task, with R1's special tokens and chat template.

Saved as real HF files (tokenizer.json, tokenizer_config.json, special_tokens_map.json) and
loaded with `transformers.AutoTokenizer` — the code path of DeepSeek-R1-Distill-Qwen's own
tokenizer, so the trainer cannot tell the two apart. The files are written directly (not via
`save_pretrained`) so their bytes do not depend on the transformers version.

Pieces are a closed set: digits, variables, operators, the task's words and `\\boxed`, each
bare or with one leading space (GPT-style, so ` c=7*3=1` is 7 tokens and decoding is plain
concatenation). The default R1 instruction (`tokenizer.DEFAULT_INSTRUCTION`) is one token: it
carries nothing the tiny model needs, and the prompt stays short. Any other piece of text (a
capital letter, `What`, a tab) encodes as the unknown token `<unk>`, the last id (104, a row
of the shipped model's 128-row embedding that training never used), so arbitrary text
encodes; the task's own text never produces it, and its ids are unchanged.
"""
import hashlib
import json
import os
import shutil
import tempfile

from ceeh_jax import tokenizer as tokenizer_lib

BOS, EOS = '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>'
USER, ASSISTANT = '<｜User｜>', '<｜Assistant｜>'
THINK, END_THINK = '<think>', '</think>'
UNK = '<unk>'
INSTRUCTION = tokenizer_lib.DEFAULT_INSTRUCTION
# id order: EOS first so pad = 0; R1 marks only BOS/EOS special (User/Assistant/think are
# added tokens that survive `skip_special_tokens`), and so do we.
ADDED = ((EOS, True), (BOS, True), (USER, False), (ASSISTANT, False), (THINK, False),
         (END_THINK, False), (INSTRUCTION, False))
WORDS = ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'find', 'okay', 'so', 'we', 'need', 'let', 'me',
         'the', 'question', 'asks', 'for', 'wait', 'check', 'yes', 'hmm', 'is', 'right',
         'answer', 'verify')
SYMBOLS = tuple('0123456789') + tuple('+-*=,.:?{}') + ('\\boxed',)
WHITESPACE = ('\n', '\n\n', ' ')
# Longest match first: `\boxed` before `\`, a word with its leading space, then one char.
PATTERN = r' ?\\boxed| ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]|\n\n|\n| '
# Mirrors R1-Distill's template for system/user/assistant turns (tool turns dropped): BOS,
# system prompt, `<｜User｜>` + content, `<｜Assistant｜>` + the answer after `</think>` + EOS,
# and `<｜Assistant｜>` for a generation prompt (no `<think>\n`: like R1's template, the
# caller adds it; see ceeh_jax.tokenizer.build_prompt).
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")


def vocab() -> dict[str, int]:
  """Piece -> id: added tokens, whitespace, each symbol/word bare and space-prefixed, then
  the unknown token (last, so the ids before it are those of the tokenizer without it)."""
  pieces = [t for t, _ in ADDED] + list(WHITESPACE)
  for p in SYMBOLS + WORDS:
    pieces += [p, ' ' + p]
  pieces.append(UNK)
  return {p: i for i, p in enumerate(pieces)}


def _tokenizer_json() -> str:
  from tokenizers import Regex, Tokenizer, AddedToken, decoders, models, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  v = vocab()
  tok = Tokenizer(models.WordLevel(v, unk_token=UNK))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERN), behavior='isolated')
  tok.decoder = decoders.Fuse()  # pieces carry their own spaces: decoding is concatenation
  # Like R1: `tokenizer(text)` prepends BOS; chat-rendered prompts already hold it.
  tok.post_processor = processors.TemplateProcessing(
      single=f'{BOS} $A', pair=f'{BOS} $A {BOS} $B', special_tokens=[(BOS, v[BOS])])
  tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in ADDED])
  tok.add_special_tokens([AddedToken(UNK, special=True, normalized=False)])  # keeps id v[UNK]
  return tok.to_str(pretty=True)


def _config_files() -> dict[str, str]:
  token = lambda t: {'content': t, 'lstrip': False, 'normalized': False, 'rstrip': False,
                     'single_word': False}
  v = vocab()
  config = {
      'add_bos_token': True, 'add_eos_token': False, 'bos_token': BOS, 'eos_token': EOS,
      'pad_token': EOS, 'unk_token': UNK, 'clean_up_tokenization_spaces': False,
      'model_max_length': 4096, 'tokenizer_class': 'PreTrainedTokenizerFast',
      'added_tokens_decoder': {str(v[t]): dict(token(t), special=s)
                               for t, s in ADDED + ((UNK, True),)},
      'chat_template': CHAT_TEMPLATE,
  }
  special = {'bos_token': token(BOS), 'eos_token': token(EOS), 'pad_token': token(EOS),
             'unk_token': token(UNK)}
  return {'tokenizer.json': _tokenizer_json(),
          'tokenizer_config.json': json.dumps(config, indent=2, ensure_ascii=False),
          'special_tokens_map.json': json.dumps(special, indent=2, ensure_ascii=False)}


def build_tokenizer(out_dir: str):
  """Writes the tokenizer files into `out_dir` and loads them with `AutoTokenizer`."""
  os.makedirs(out_dir, exist_ok=True)
  for name, text in _config_files().items():
    with open(os.path.join(out_dir, name), 'w', encoding='utf-8') as f:
      f.write(text)
  return tokenizer_lib.load_tokenizer(out_dir)


def ensure_tokenizer(cache_dir: str) -> str:
  """The directory holding this tokenizer, built on first use and rebuilt if the spec changed.

  Built in a temporary sibling directory and renamed into place, so concurrent callers never
  see half-written files.
  """
  files = _config_files()
  digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
  stamp = os.path.join(cache_dir, 'SPEC_SHA256')
  if os.path.exists(stamp):
    with open(stamp) as f:
      if f.read().strip() == digest:
        return cache_dir
  parent = os.path.dirname(os.path.abspath(cache_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.tokenizer-', dir=parent)
  try:
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
    for name, text in files.items():
      with open(os.path.join(tmp, name), 'w', encoding='utf-8') as f:
        f.write(text)
    with open(os.path.join(tmp, 'SPEC_SHA256'), 'w') as f:
      f.write(digest + '\n')
    if os.path.isdir(cache_dir):
      shutil.rmtree(cache_dir, ignore_errors=True)
    try:
      os.rename(tmp, cache_dir)
    except OSError:  # another process won the race; its files are identical
      if not os.path.exists(stamp):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return cache_dir
