"""Synthetic chain-arithmetic task and its tiny R1-style tokenizer."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import functools
import json
import os
import pathlib
import re
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from ceeh_jax import data as data_lib
from ceeh_jax import grading
from ceeh_jax import tokenizer as tokenizer_lib
from ceeh_jax.synthetic import task
from ceeh_jax.synthetic import tokenizer as syn_tok

_STEP = re.compile(r'^([a-g])=([a-g0-9])([-+*])([a-g0-9])$')


def _solve(problem: str) -> tuple[int, int]:
  """Independent solver: (answer, number of steps) straight from the problem text."""
  words = problem.split()
  assert words[-2] == 'find' and words[0][:2] == 'a='
  env = {'a': int(words[0][2:])}
  for w in words[1:-2]:
    target, x, op, y = _STEP.match(w).groups()
    x, y = env[x] if x in env else int(x), env[y] if y in env else int(y)
    env[target] = {'+': x + y, '-': x - y, '*': x * y}[op] % 10
  return env[words[-1]], len(words) - 3


@functools.cache
def _tok():
  """The synthetic tokenizer, built once per process (held in memory; its files are removed)."""
  with tempfile.TemporaryDirectory() as d:
    return tokenizer_lib.load_tokenizer(syn_tok.ensure_tokenizer(os.path.join(d, 'tok')))


def _ntok(tok, text):
  return len(tok(text, add_special_tokens=False)['input_ids'])


# --- Task --------------------------------------------------------------------------------------

class TaskTest(parameterized.TestCase):

  def test_hand_worked_example(self):
    start, steps = task.parse_problem('a=3 b=a+4 c=b*3 find c')
    self.assertEqual(task.evaluate(start, steps), {'a': 3, 'b': 7, 'c': 1})  # 3+4=7, 7*3=21 -> 1
    row = {'id': 'x', 'problem': 'a=3 b=a+4 c=b*3 find c', 'answer': '1', 'meta': {}}
    self.assertEqual(task.concise_trace(row), '<think>\nb=3+4=7 c=7*3=1\n</think>\n\n\\boxed{1}')
    # a binary step reaching back: e = d - b with d = 5*7 = 5, b = 6-7 = 9 -> 5-9 = 6
    self.assertEqual(_solve('a=6 b=a-7 c=b+a d=c*7 e=d-b find e'), (6, 4))
    start, steps = task.parse_problem('a=6 b=a-7 c=b+a d=c*7 e=d-b find e')
    self.assertEqual(task.evaluate(start, steps)['e'], 6)

  @parameterized.named_parameters(('easy', 'easy'), ('hard', 'hard'))
  def test_problems_correct_by_construction(self, difficulty):
    rng = np.random.default_rng(0)
    steps_seen, binary = set(), 0
    for _ in range(500):
      row = task.make_problem(rng, difficulty)
      answer, n = _solve(row['problem'])
      self.assertEqual(row['answer'], str(answer))
      self.assertEqual(row['meta'], {'steps': n, 'hard': difficulty == 'hard'})
      steps_seen.add(n)
      binary += len(re.findall(r'=[a-g][-+*][a-g]', row['problem']))
    if difficulty == 'easy':
      self.assertEqual(steps_seen, {1, 2})
      self.assertEqual(binary, 0)  # easy: a digit applied to the previous one
    else:
      self.assertEqual(steps_seen, {4, 5, 6})
      self.assertGreater(binary, 500)  # hard: ~2 lookups further back each

  def test_answers_near_uniform(self):
    rows = task.make_dataset(4000, 3, 0.5)
    for hard in (False, True):
      counts = np.bincount([int(r['answer']) for r in rows if r['meta']['hard'] == hard],
                           minlength=10)
      self.assertLess(counts.max() / counts.sum(), 0.13, counts)  # guessing one digit gains little

  @parameterized.named_parameters(
      ('empty', ''), ('no_step', 'a=3 find a'), ('unknown_variable', 'a=3 b=c+1 find b'),
      ('division', 'a=3 b=a/2 find b'), ('skipped_letter', 'a=3 c=a+1 find c'),
      ('not_starting_at_a', 'b=3 c=b+1 find c'), ('find_not_last', 'a=3 b=a+1 c=b+1 find b'),
      ('two_digit_operand', 'a=3 b=a+12 find b'))
  def test_parse_rejects_malformed(self, bad):
    with self.assertRaises(ValueError):
      task.parse_problem(bad)

  def test_make_problem_rejects_unknown_difficulty(self):
    with self.assertRaisesRegex(ValueError, 'difficulty'):
      task.make_problem(np.random.default_rng(0), 'medium')

  def test_dataset_determinism_fraction_and_loader(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    a, b = task.make_dataset(300, 7, 0.3), task.make_dataset(300, 7, 0.3)
    self.assertEqual(a, b)
    self.assertNotEqual(a, task.make_dataset(300, 8, 0.3))
    self.assertLen({r['id'] for r in a}, 300)
    self.assertGreater(np.mean([r['meta']['hard'] for r in a]), 0.2)
    self.assertLess(np.mean([r['meta']['hard'] for r in a]), 0.4)
    self.assertFalse(any(r['meta']['hard'] for r in task.make_dataset(50, 0, 0.0)))
    path = task.write_jsonl(a, str(tmp_path / 'sub' / 'train.jsonl'))
    first = json.loads(open(path).readline())
    self.assertEqual(set(first), {'id', 'problem', 'answer', 'meta'})
    examples, stats = data_lib.load_examples(path)  # the project's loader reads it as is
    self.assertEqual(stats.skipped, 0)
    self.assertEqual([e.id for e in examples], [r['id'] for r in a])
    self.assertEqual(examples[5].answer, a[5]['answer'])
    self.assertEqual(examples[5].meta, a[5]['meta'])

  def test_traces_grade_correct_and_slips_grade_wrong(self):
    rows = task.make_dataset(60, 11, 0.5)
    rng = np.random.default_rng(0)
    for r in rows:
      c, v = task.concise_trace(r), task.verbose_trace(r, rng)
      bad = task.verbose_trace(r, rng, error_rate=1.0)
      for text, ok in ((c, True), (v, True), (bad, False)):
        self.assertTrue(text.startswith('<think>\n') and text.endswith('}') or
                        text.endswith('}.'), text)
        g = grading.grade(task.completion(text), r['answer'], require_think_close=True)
        self.assertEqual((g.correct, g.boxed, g.status), (ok, True, 'ok'), (text, g))
      # The same verdict from math-verify directly on the boxed content.
      import math_verify  # pylint: disable=g-import-not-at-top
      box = re.findall(r'\\boxed\{(\d)\}', v)[-1]
      self.assertTrue(math_verify.verify(math_verify.parse('$' + r['answer'] + '$'),
                                         math_verify.parse('$' + box + '$')))

  def test_verbose_trace_determinism_and_slip_rate(self):
    row = task.make_problem(np.random.default_rng(5), 'hard')
    self.assertEqual(task.verbose_trace(row, np.random.default_rng(1)),
                     task.verbose_trace(row, np.random.default_rng(1)))
    self.assertGreater(
        len({task.verbose_trace(row, np.random.default_rng(s)) for s in range(20)}), 10)
    rows = task.make_dataset(1000, 2, 0.5)
    traces = task.sft_traces(rows, 0, hard_error_rate=0.3, concise_fraction=0.2)
    self.assertEqual(traces, task.sft_traces(rows, 0, hard_error_rate=0.3, concise_fraction=0.2))
    wrong = np.array([re.findall(r'boxed\{(\d)\}', t)[-1] != r['answer']
                      for t, r in zip(traces, rows)])
    hard = np.array([r['meta']['hard'] for r in rows])
    self.assertFalse(wrong[~hard].any())  # easy traces are always right
    # 0.3 of the 80% verbose hard traces slip: 0.24, ~4 sigma band for ~500 rows
    self.assertGreater(wrong[hard].mean(), 0.16)
    self.assertLess(wrong[hard].mean(), 0.32)
    with self.assertRaisesRegex(ValueError, 'error_rate'):
      task.verbose_trace(row, np.random.default_rng(0), error_rate=1.5)
    with self.assertRaisesRegex(ValueError, '<think>'):
      task.completion('b=1')

  def test_token_lengths(self):
    """Prompt, concise and verbose lengths (completion tokens incl. EOS) within budget."""
    tok = _tok()
    rows = task.make_dataset(600, 4, 0.5)
    rng = np.random.default_rng(0)
    for hard, ratio_lo, ratio_hi in ((False, 2.2, 3.2), (True, 1.9, 2.8)):
      sub = [r for r in rows if r['meta']['hard'] == hard]
      p = np.array([_ntok(tok, tokenizer_lib.build_prompt(tok, r['problem'])) for r in sub])
      c = np.array([_ntok(tok, task.completion(task.concise_trace(r))) + 1 for r in sub])
      v = np.array([_ntok(tok, task.completion(task.verbose_trace(r, rng))) + 1 for r in sub])
      self.assertLessEqual(p.max(), 42 if hard else 22)
      self.assertLessEqual(c.max(), 50 if hard else 22)
      self.assertLessEqual(v.max(), 165 if hard else 90)
      self.assertGreater((v / c).min(), 1.25)
      self.assertGreater((v / c).mean(), ratio_lo)
      self.assertLess((v / c).mean(), ratio_hi)
      self.assertGreater(v.std(), 10)  # lengths vary: room for a length reward to act


# --- Tokenizer ---------------------------------------------------------------------------------

class SyntheticTokenizerTest(absltest.TestCase):

  def test_special_tokens_and_vocab(self):
    tok = _tok()
    self.assertLen(tok, len(syn_tok.vocab()))
    self.assertLessEqual(len(syn_tok.vocab()), 128)
    ids = {t: tok.convert_tokens_to_ids(t) for t, _ in syn_tok.ADDED}
    for t, i in ids.items():
      self.assertEqual(tok(t, add_special_tokens=False)['input_ids'], [i], t)
    self.assertEqual((tok.eos_token_id, tok.pad_token_id, tok.bos_token_id), (0, 0, 1))
    self.assertEqual(tok.eos_token, syn_tok.EOS)
    self.assertEqual(tok.bos_token, syn_tok.BOS)
    self.assertEqual(tokenizer_lib.stop_ids(tok), [0])
    self.assertEqual(tok('a=3')['input_ids'][0], 1)  # like R1: BOS prepended by default
    self.assertEqual(
        tok.convert_ids_to_tokens(tok('\\boxed{7}', add_special_tokens=False)['input_ids']),
        ['\\boxed', '{', '7', '}'])
    # Text outside the closed set is the unknown token, the last id (issue 19: any text encodes).
    self.assertEqual(tok('Q', add_special_tokens=False)['input_ids'], [tok.unk_token_id])
    self.assertEqual(tok.unk_token_id, len(tok) - 1)

  def test_round_trip_random_traces(self):
    tok = _tok()
    rows = task.make_dataset(500, 9, 0.5)
    rng = np.random.default_rng(0)
    texts = [tokenizer_lib.build_prompt(tok, rows[0]['problem'])]
    for r in rows:
      texts += [task.concise_trace(r), task.verbose_trace(r, rng, error_rate=0.2)]
    texts += ['  a\n\n\nb ', ' \\boxed{1}. ', '']
    for text in texts:
      ids = tok(text, add_special_tokens=False)['input_ids']
      self.assertEqual(tok.decode(ids), text)
      plain = text.replace(syn_tok.BOS, '')  # only BOS/EOS are special, as in R1
      self.assertEqual(tok.decode(ids, skip_special_tokens=True), plain)
    decoded = tokenizer_lib.decode_completions(tok, [[10, 55, 0, 0]], [3])
    self.assertEqual(decoded, [tok.decode([10, 55, 0])])
    self.assertTrue(decoded[0].endswith(syn_tok.EOS))

  def test_chat_template_matches_r1(self):
    tok = _tok()
    import transformers  # pylint: disable=g-import-not-at-top
    r1 = transformers.AutoTokenizer.from_pretrained(str(test_util.R1_TOKENIZER_DIR),
                                                    local_files_only=True)
    q = 'a=3 b=a+4 find b\n' + tokenizer_lib.DEFAULT_INSTRUCTION
    convs = [[{'role': 'user', 'content': q}],
             [{'role': 'system', 'content': 'a=1.'}, {'role': 'user', 'content': q},
              {'role': 'assistant', 'content': '<think>\nb=7\n</think>\n\n\\boxed{7}'},
              {'role': 'user', 'content': 'so'}]]
    for conv in convs:
      for gen in (True, False):
        ours = tok.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False)
        self.assertEqual(ours, r1.apply_chat_template(conv, add_generation_prompt=gen,
                                                      tokenize=False))
    prompt = tokenizer_lib.build_prompt(tok, 'a=3 b=a+4 find b')
    self.assertEqual(prompt, syn_tok.BOS + syn_tok.USER + 'a=3 b=a+4 find b\n' +
                     syn_tok.INSTRUCTION + syn_tok.ASSISTANT + '<think>\n')
    ids = tokenizer_lib.encode_prompts(tok, [prompt])[0]
    self.assertEqual(ids[:2], [1, 2])
    self.assertEqual(ids[-3:], [3, 4, tok.convert_tokens_to_ids('\n')])
    self.assertLen(ids, 17)  # the R1 instruction is one token

  def test_saved_files_and_ensure_reuses(self):
    tmp_path = pathlib.Path(self.create_tempdir())
    import transformers  # pylint: disable=g-import-not-at-top
    out = str(tmp_path / 'built')
    syn_tok.build_tokenizer(out)
    for name in ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'):
      self.assertTrue(os.path.exists(os.path.join(out, name)))
    config = json.load(open(os.path.join(out, 'tokenizer_config.json')))
    self.assertIn('<｜User｜>', config['chat_template'])
    self.assertEqual(config['eos_token'], syn_tok.EOS)
    loaded = transformers.AutoTokenizer.from_pretrained(out)
    self.assertIsInstance(loaded, transformers.PreTrainedTokenizerFast)
    self.assertEqual(loaded('b=7')['input_ids'],
                     [1, *loaded('b=7', add_special_tokens=False)['input_ids']])
    cache = str(tmp_path / 'cache')
    self.assertEqual(syn_tok.ensure_tokenizer(cache), cache)
    stamp = os.path.join(cache, 'SPEC_SHA256')
    before = os.stat(os.path.join(cache, 'tokenizer.json')).st_mtime_ns
    self.assertEqual(syn_tok.ensure_tokenizer(cache), cache)
    self.assertEqual(os.stat(os.path.join(cache, 'tokenizer.json')).st_mtime_ns, before)  # reused
    with open(stamp, 'w') as f:
      f.write('stale\n')
    syn_tok.ensure_tokenizer(cache)  # a changed spec rebuilds
    self.assertNotEqual(open(stamp).read().strip(), 'stale')
    self.assertEqual(json.load(open(os.path.join(cache, 'tokenizer.json'))), json.load(
        open(os.path.join(out, 'tokenizer.json'))))


if __name__ == '__main__':
  absltest.main()
