"""The loader survives any bytes, and prompts that cannot be encoded are named (issue 19).

Fuzz: thousands of random and hostile JSONL rows, generated here from a fixed seed, each
labelled with the reason the loader must give it; under on_error='raise' nothing but a
DataError naming the row escapes, under 'skip' every good row is kept and every bad row is
counted under its reason.
"""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import collections
import json
import os
import random


from absl.testing import absltest
from absl.testing import parameterized

from ceeh_jax import data as data_lib
from ceeh_jax import rollouts as rollouts_lib
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.synthetic import paths as synthetic_paths
from ceeh_jax.synthetic import task
from ceeh_jax.synthetic import tokenizer as syn_tok


GOOD = None  # the label of a row the loader must keep
DEEP = 100_000


def _obj(**fields) -> bytes:
  return json.dumps(fields).encode()


def _random_text(rng: random.Random, n: int) -> str:
  """Printable text from several scripts, with JSON-hostile characters (quotes, backslashes,
  controls, U+2028) that json.dumps escapes."""
  alphabet = 'abc XYZ 0123456789 +-*/=\\"{}[]\t\n\x00\x1f\u2028é中😀\ufeff'
  return ''.join(rng.choice(alphabet) for _ in range(n))


def _good_row(rng: random.Random, i: int) -> bytes:
  """A row the loader must keep; the variants are valid but unusual."""
  kind = i % 9
  gid = f'g{i}'
  if kind == 0:
    return _obj(id=gid, problem='q' + _random_text(rng, rng.randrange(60)), answer=str(i))
  if kind == 1:   # integer id and numeric answers (27.0 -> '27'); a 1000-digit integer
    return _obj(id=10**12 + i, problem='p', answer=rng.choice([27.0, -3, 0.5, 10**999]))
  if kind == 2:   # meta nested 100 deep (parses), extra fields
    return _obj(id=gid, problem='p', answer='1', extra=[1, {'x': None}],
                meta=json.loads('[' * 100 + ']' * 100))
  if kind == 3:   # a byte-order mark in front of the line (concatenated files)
    return b'\xef\xbb\xbf' + _obj(id=gid, problem='p', answer='1')
  if kind == 4:   # CRLF line ending
    return _obj(id=gid, problem='p', answer='1') + b'\r'
  if kind == 5:   # an escaped surrogate pair is a valid character
    return b'{"id": "%s", "problem": "\\ud83d\\ude00", "answer": "1"}' % gid.encode()
  if kind == 6:   # a long problem
    return _obj(id=gid, problem='x' * 100_000, answer='1')
  if kind == 7:   # raw UTF-8, not escaped
    return json.dumps({'id': gid, 'problem': 'ünïcödé 中文 😀', 'answer': '½'},
                      ensure_ascii=False).encode()
  return _obj(id=gid, problem='p', answer='1', meta={'hard': True, 'source': 'x'})


def _bad_row(rng: random.Random, i: int, good_ids: list[str]) -> tuple[bytes, str]:
  """A row the loader must refuse, with the reason it must give."""
  kind = i % 24
  bid = f'b{i}'
  if kind == 0:   # random bytes (no newline); a raw NUL is never valid JSON
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b'\n', b' ')
    raw = raw.lstrip(b'\xef\xbb\xbf') + b'\x00'
    return raw, _utf8_or(raw, 'bad_json')
  if kind == 1:   # random ASCII after a brace
    raw = b'{' + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 80))) + b'\x00'
    return raw, 'bad_json'
  if kind == 2:
    return b'[' * DEEP + b']' * DEEP, 'too_deep'
  if kind == 3:
    return (b'{"id": "%s", "problem": "p", "answer": "1", "meta": ' % bid.encode() +
            b'{"a": ' * DEEP + b'1' + b'}' * DEEP + b'}'), 'too_deep'
  if kind == 4:   # unterminated deep nesting: the parser recurses before it sees the end
    return b'{"id": "x", "problem": ' + b'[' * DEEP, 'too_deep'
  if kind == 5:   # an integer over Python's 4,300-digit conversion limit
    return b'{"id": "%s", "problem": "p", "answer": %s}' % (bid.encode(), b'9' * 5000), \
        'bad_number'
  if kind == 6:
    return b'{"id": "%s", "problem": "caf\xe9", "answer": "1"}' % bid.encode(), 'bad_utf8'
  if kind == 7:   # a UTF-8 character cut in half
    return '{"id": "x", "problem": "中'.encode()[:-1], 'bad_utf8'
  if kind == 8:   # lone surrogates in each field
    field = rng.choice(['id', 'problem', 'answer'])
    row = {'id': f'"{bid}"', 'problem': '"p"', 'answer': '"1"'}
    row[field] = '"x\\udc80"'
    return ('{' + ', '.join(f'"{k}": {v}' for k, v in row.items()) + '}').encode(), 'bad_utf8'
  if kind == 9:
    return rng.choice([b'[]', b'5', b'"text"', b'null', b'true', b'[{"id": "x"}]']), 'not_object'
  if kind == 10:
    field = rng.choice(['id', 'problem', 'answer'])
    row = {'id': bid, 'problem': 'p', 'answer': '1'}
    del row[field]
    return _obj(**row), 'missing_field'
  if kind == 11:
    return _obj(id=bid, problem=rng.choice(['', ' ', '\n\t']), answer='1'), 'empty_field'
  if kind == 12:
    return _obj(id=bid, problem='p', answer=''), 'empty_field'
  if kind == 13:  # wrong types
    field, value = rng.choice([('problem', 7), ('problem', None), ('problem', ['p']),
                               ('answer', [1]), ('answer', True), ('answer', {'a': 1}),
                               ('id', 1.5), ('id', None), ('id', False)])
    row = {'id': bid, 'problem': 'p', 'answer': '1', field: value}
    return _obj(**row), 'wrong_type'
  if kind == 14:  # non-finite numbers (Python's json reads NaN, Infinity, and 1e999 as inf)
    return b'{"id": "%s", "problem": "p", "answer": %s}' % (
        bid.encode(), rng.choice([b'NaN', b'Infinity', b'-Infinity', b'1e999'])), 'wrong_type'
  if kind == 15 and good_ids:
    return _obj(id=rng.choice(good_ids), problem='p', answer='1'), 'duplicate_id'
  if kind == 16:  # a byte-order mark inside the line is not JSON whitespace
    return b'{\xef\xbb\xbf"id": "x", "problem": "p", "answer": "1"}', 'bad_json'
  if kind == 17:  # a good row cut short
    return _obj(id=bid, problem='p' * 20, answer='1')[:rng.randrange(1, 30)], 'bad_json'
  if kind == 18:  # raw control characters inside a string
    return b'{"id": "x", "problem": "a\x01b", "answer": "1"}', 'bad_json'
  if kind == 19:  # trailing garbage, two objects on one line
    return _obj(id=bid, problem='p', answer='1') * 2, 'bad_json'
  if kind == 20:  # an id too large for a float is read as inf: not an integer
    return b'{"id": 1e400, "problem": "p", "answer": "1"}', 'wrong_type'
  if kind == 21:
    return b'{"id": "x", "problem": "p", "answer": "1",}', 'bad_json'
  if kind == 22:
    return b"{'id': 'x', 'problem': 'p', 'answer': '1'}", 'bad_json'
  return b'\x00' * rng.randrange(1, 10), 'bad_json'


def _utf8_or(raw: bytes, reason: str) -> str:
  try:
    raw.decode('utf-8')
  except UnicodeDecodeError:
    return 'bad_utf8'
  return reason


def fuzz_rows(n: int, seed: int) -> list[tuple[bytes, str | None]]:
  """n labelled rows (bytes without newline, reason or GOOD), roughly 1 good : 2 bad."""
  rng = random.Random(seed)
  rows, good_ids = [], []
  for i in range(n):
    if rng.random() < 1 / 3:
      row = _good_row(rng, i)
      rows.append((row, GOOD))
      good_ids.append(json.loads(row.decode('utf-8-sig'))['id'])
    else:
      rows.append(_bad_row(rng, i, good_ids))
  return rows


def _ids(rows):
  return [str(json.loads(r.decode('utf-8-sig'))['id']) for r, reason in rows if reason is GOOD]


class LoaderFuzzTest(absltest.TestCase):

  def test_1500_hostile_rows_skip_counts_every_kind(self):
    rows = fuzz_rows(1500, seed=19)
    path = os.path.join(self.create_tempdir().full_path, 'fuzz.jsonl')
    # The last line is a truncated row without a newline.
    with open(path, 'wb') as f:
      f.write(b'\n'.join(r for r, _ in rows) + b'\n' + b'{"id": "last", "problem": "p", "an')
    expected = collections.Counter(reason for _, reason in rows if reason is not GOOD)
    expected['bad_json'] += 1  # the truncated last line
    self.assertGreaterEqual(sum(expected.values()), 900)
    self.assertEqual(set(expected), set(data_lib.REASONS) - {'problem_too_long', 'bad_value'})
    examples, stats = data_lib.load_examples(path, on_error='skip')
    self.assertEqual([e.id for e in examples], _ids(rows))
    self.assertEqual(dict(stats.reasons), dict(expected))
    self.assertEqual(stats.rows, len(rows) + 1)
    self.assertTrue(set(stats.reasons) <= set(data_lib.REASONS))

  def test_each_hostile_row_raises_a_data_error_naming_its_line(self):
    rows = [(r, reason) for r, reason in fuzz_rows(1200, seed=7) if reason is not GOOD]
    self.assertGreaterEqual(len(rows), 700)
    tmp = self.create_tempdir().full_path
    good = _obj(id='first', problem='p', answer='1')
    for i, (row, reason) in enumerate(rows):
      path = os.path.join(tmp, f'r{i}.jsonl')
      if reason == 'duplicate_id':
        row = _obj(id='first', problem='q', answer='2')
      with open(path, 'wb') as f:
        f.write(good + b'\n' + row + b'\n' + good.replace(b'first', b'third'))
      try:
        data_lib.load_examples(path)
      except data_lib.DataError as e:
        self.assertTrue(str(e).startswith(f'{path}:2: '), (reason, str(e)[:200]))
        self.assertNotIn('\n', str(e))
      else:
        self.fail(f'row {row[:80]!r} ({reason}) loaded without an error')

  def test_random_mutations_of_good_rows(self):
    """Bytes flipped, dropped or inserted at random in good rows: each row loads or is a
    counted skip; under 'raise' the only exception is a DataError."""
    rng = random.Random(3)
    lines = []
    for i in range(1000):
      raw = bytearray(_good_row(rng, i))
      for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(raw))
        op = rng.randrange(3)
        if op == 0:
          raw[at] = rng.randrange(256)
        elif op == 1:
          del raw[at]
        else:
          raw.insert(at, rng.choice(b'{}[]",:\\\x00\xff\xc3'))
      lines.append(bytes(raw).replace(b'\n', b' '))
    path = os.path.join(self.create_tempdir().full_path, 'mutated.jsonl')
    with open(path, 'wb') as f:
      f.write(b'\n'.join(lines))
    examples, stats = data_lib.load_examples(path, on_error='skip')
    self.assertEqual(stats.loaded + stats.skipped, stats.rows)
    self.assertTrue(set(stats.reasons) <= set(data_lib.REASONS))
    self.assertGreater(stats.skipped, 500)
    with self.assertRaises(data_lib.DataError):
      data_lib.load_examples(path)

  def test_json_list_source_survives_hostile_files(self):
    tmp = self.create_tempdir().full_path
    for name, content, words in (
        ('deep.json', b'[' * DEEP + b']' * DEEP, 'nested too deeply'),
        ('number.json', b'[{"id": 1, "problem": "p", "answer": ' + b'1' * 5000 + b'}]',
         'unreadable number'),
        ('utf8.json', b'[{"id": "\xff"}]', 'invalid UTF-8')):
      path = os.path.join(tmp, name)
      with open(path, 'wb') as f:
        f.write(content)
      with self.assertRaisesRegex(data_lib.DataError, words):
        data_lib.load_examples(path, on_error='skip')


def _no_unk_tokenizer(directory: str):
  """The synthetic tokenizer without its unknown token: text outside the vocabulary fails
  to encode (the default model's tokenizer before issue 19)."""
  syn_tok.build_tokenizer(directory)
  path = os.path.join(directory, 'tokenizer.json')
  with open(path, encoding='utf-8') as f:
    spec = json.load(f)
  spec['model']['unk_token'] = '[UNK]'  # not in the vocabulary: what WordLevel(unk=None) wrote
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(spec, f, ensure_ascii=False)
  return tokenizer_lib.load_tokenizer(directory)


def _examples(problems):
  return [data_lib.Example(f'q{i}', p, '1') for i, p in enumerate(problems)]


ENCODE = dict(instruction='', think_prefix=True, max_tokens=64, overflow='reject')


class PromptEncodingTest(parameterized.TestCase):

  def test_unencodable_row_is_a_data_error_naming_it(self):
    tok = _no_unk_tokenizer(self.create_tempdir().full_path)
    examples = _examples(['a=3 find a', 'What is 7*8?', 'b=2 find b'])
    with self.assertRaisesRegex(data_lib.DataError,
                                r"^train\.jsonl: row 2 \(id 'q1'\) cannot be encoded by the "
                                r"tokenizer \(.*UNK.*\): prompt '.*What is 7\*8\?.*"
                                r"on_error='skip'"):
      rollouts_lib.encode_examples(tok, examples, source='train.jsonl', **ENCODE)

  def test_unencodable_rows_are_skipped_and_counted(self):
    tok = _no_unk_tokenizer(self.create_tempdir().full_path)
    examples = _examples(['a=3 find a', 'What?', 'b=2 find b', 'Ünïcode', 'c=1 find c'])
    kept, prompts, _, dropped = rollouts_lib.encode_examples(
        tok, examples, source='train.jsonl', on_error='skip', **ENCODE)
    self.assertEqual([e.id for e in kept], ['q0', 'q2', 'q4'])
    self.assertEqual(dropped, 2)
    want, _ = rollouts_lib.encode_prompts(tok, [examples[i] for i in (0, 2, 4)], **ENCODE)
    self.assertEqual(prompts, want)

  def test_synthetic_tokenizer_encodes_any_text(self):
    tok = syn_tok.build_tokenizer(self.create_tempdir().full_path)
    rng = random.Random(0)
    texts = ['What is 7*8?', '\t', 'Ω≈ç√∫', '<unk>', ''] + [
        ''.join(chr(rng.randrange(1, 0x2FFF)) for _ in range(40)) for _ in range(200)]
    ids = tokenizer_lib.encode_prompts(tok, texts)
    unk = tok.convert_tokens_to_ids(syn_tok.UNK)
    self.assertEqual(unk, 104)
    self.assertIn(unk, ids[0])
    self.assertEqual(max(max(x, default=0) for x in ids), unk)  # nothing past the vocabulary
    self.assertLen(tok, 105)

  def test_task_ids_are_unchanged_by_the_unknown_token(self):
    """The pieces before <unk> keep their ids: the shipped model reads the same tokens."""
    vocab = syn_tok.vocab()
    self.assertEqual(vocab[syn_tok.UNK], len(vocab) - 1)
    tok = tokenizer_lib.load_tokenizer(synthetic_paths.BASE_POLICY)
    # Ids recorded before the unknown token existed (tokenizer of commit 9c7a531).
    self.assertEqual(tok('a=3 b=a+4 find b', add_special_tokens=False)['input_ids'],
                     [52, 36, 16, 55, 36, 52, 30, 18, 67, 55])
    rows = task.make_dataset(200, seed=5)
    traces = [task.completion(t) for t in task.sft_traces(rows, 0)]
    texts = [r['problem'] for r in rows] + traces
    ids = tok(texts, add_special_tokens=False)['input_ids']
    self.assertNotIn(104, {i for x in ids for i in x})
    self.assertEqual(tok.batch_decode(ids, skip_special_tokens=False), texts)

  def test_shipped_tokenizer_files_match_the_code(self):
    for name, text in syn_tok._config_files().items():
      with open(os.path.join(synthetic_paths.BASE_POLICY, name), encoding='utf-8') as f:
        self.assertEqual(f.read(), text, name)
    with open(os.path.join(synthetic_paths.BASE_POLICY, 'config.json')) as f:
      self.assertGreater(json.load(f)['vocab_size'], syn_tok.vocab()[syn_tok.UNK])

  def test_generate_on_the_shipped_model_takes_any_text(self):
    import ceeh_jax.api as cj  # pylint: disable=g-import-not-at-top
    model = cj.load(synthetic_paths.BASE_POLICY)
    out = cj.generate(model, ['What is 7*8?', 'a=3 b=a+4 find b'], max_new_tokens=12)
    self.assertLen(out.texts, 2)
    self.assertTrue(all(1 <= n <= 12 for row in out.lengths for n in row))


if __name__ == '__main__':
  absltest.main()
