"""What a new user sees first: the progress line, the API's texts and ids, the compare table."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import io
import json
import os
import pathlib

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

REPO = test_util.REPO

from ceeh_jax import api
from ceeh_jax import compare
from ceeh_jax import progress
from ceeh_jax import tokenizer as tokenizer_lib

RECORD = {'acc': 0.609375, 'length': 61.4, 'entropy': 0.12345, 'hard_fraction': 0.4375,
          'loss': 0.0057, 'reward/mean': 0.57, 'tokens_per_s': 9883.0}


def _bar(total=30, **kw):
  out = io.StringIO()
  return progress.StepBar(total, 0, 'ceeh_me', True, file=out, ncols=80, **kw), out


def _last_line(out: io.StringIO) -> str:
  return out.getvalue().replace('\n', '\r').split('\r')[-1].rstrip()


class ProgressTest(parameterized.TestCase):

  def test_short_metrics(self):
    self.assertEqual(progress.short_metrics(RECORD), 'acc 0.61 len 61 ent 0.123 hard 0.44')
    self.assertEqual(progress.short_metrics({'acc': 1.0}), 'acc 1.00')

  def test_no_eta_from_the_compile_step(self):
    bar, _ = _bar()
    bar.step(40.0, RECORD)  # the first step compiles
    self.assertIsNone(bar.eta())
    bar.step(2.0, RECORD)
    self.assertIsNone(bar.eta())  # one steady step is not a rate yet
    bar.step(4.0, RECORD)
    self.assertEqual(bar.eta(), 3.0 * 27)  # median(2, 4) s x 27 steps left; the 40 s is not in it
    bar.close()

  def test_eta_follows_recent_steps(self):
    bar, _ = _bar(total=100)
    for seconds in [40.0] + [10.0] * 20 + [1.0] * 11:
      bar.step(seconds, RECORD)
    self.assertEqual(bar.eta(), 1.0 * (100 - 32))  # the last 10 steady steps
    bar.close()

  @parameterized.named_parameters(
      ('metrics_and_eta', None),
      ('base_eval', 'evaluating the base policy (128 questions)...'),
      ('first_step', 'step 1: compiling the rollout and the update...'),
      ('final_eval', 'evaluating the final policy (128 questions)...'))
  def test_line_fits_80_columns_with_a_bar(self, status):
    bar, out = _bar()
    for seconds in (40.0, 2.0, 2.0, 2.0):
      bar.step(seconds, RECORD)
    if status:
      bar.status(status)
    line = _last_line(out)
    self.assertLessEqual(len(line), 80, line)
    self.assertGreaterEqual(line.index('|', line.index('|') + 1) - line.index('|'), 6, line)
    self.assertIn(status or 'acc 0.61 len 61 ent 0.123 hard 0.44, eta 00:52', line)
    bar.close()


class ApiTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = api.load('synthetic:base_policy')

  def test_texts_end_before_eos_ids_keep_it(self):
    out = api.generate(self.model, ['a=2 b=a+1 c=b+1 find c'], num_samples=4, max_new_tokens=128,
                       instruction='', seed=1)
    tok = self.model.tokenizer
    stops = tokenizer_lib.stop_ids(tok)
    finished = 0
    for text, ids, n, lps in zip(out.texts[0], out.token_ids[0], out.lengths[0], out.logps[0]):
      self.assertLen(ids, n)
      self.assertLen(lps, n)
      self.assertNotIn(tokenizer_lib.R1_EOS, text)
      if ids[-1] in stops:
        finished += 1
        self.assertEqual(text, tok.decode(ids[:-1]))
      else:
        self.assertEqual(text, tok.decode(ids))
    self.assertGreater(finished, 0, 'the tiny policy should finish within 128 tokens')

  def test_encode_left_pads_and_logits_take_strings(self):
    texts = ['a=2 b=a+1 c=b+1 find c', 'a=3 find a']
    tokens, mask = api.encode(self.model, texts)
    ids = tokenizer_lib.encode_prompts(self.model.tokenizer, texts)
    self.assertEqual(tokens.shape, (2, len(ids[0])))
    self.assertEqual(tokens.dtype, np.int32)
    for row, m, want in zip(tokens, mask, ids):
      self.assertEqual(row[m].tolist(), want)
      self.assertTrue(m[-len(want):].all() and not m[:-len(want)].any())  # left-padded
    from_ids = np.asarray(api.logits(self.model, tokens, mask))
    from_texts = np.asarray(api.logits(self.model, texts))
    np.testing.assert_array_equal(from_ids, from_texts)
    # Row 1 alone (no padding) predicts the same next token as in the padded batch.
    alone = np.asarray(api.logits(self.model, texts[1:]))
    np.testing.assert_allclose(alone[0, -1], from_ids[1, -1], atol=1e-4)


class CompareTableTest(absltest.TestCase):

  def _results(self, path, acc, length):
    path.mkdir()
    (path / 'results.json').write_text(json.dumps({'benchmarks': {'b': {'acc': acc,
                                                                        'len': length}}}))
    return str(path)

  def test_base_row_nag_is_a_dash_and_acc_a_fraction(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    base = self._results(tmp / 'eval_base', 0.605, 67.1)
    trained = self._results(tmp / 'eval_ceeh', 0.527, 62.8)
    table = compare.compare([base, trained], base=os.path.join(base, 'results.json'),
                            out=str(tmp / 'out'))
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in table.splitlines()[2:]}
    self.assertEqual(rows['eval_base'], ['0.605', '67.1', '—'])
    # NAG by hand: (1 - 0.527 / 0.605) * 100 / sqrt(1 - 62.8 / 67.1) = 12.89 / 0.2531 = 50.93
    self.assertEqual(rows['eval_ceeh'], ['0.527', '62.8', '50.93'])


if __name__ == '__main__':
  absltest.main()
