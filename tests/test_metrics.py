"""Metrics: pass@k against brute-force subsets, L-Acc / NAG hand numbers, summarize."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import itertools
import math

from absl.testing import absltest
import numpy as np

from ceeh_jax import metrics

approx = test_util.assert_approx


def _brute_pass_at_k(n, c, k):
  """Fraction of the k-subsets of n samples (c correct) that hold a correct one."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def _records():
  # Problem a: 3/4 correct, lengths 100..400; b: 0/4, length 1000; c: 4/4, length 50.
  recs = []
  for pid, correct, lengths in (('a', [1, 1, 0, 1], [100, 200, 300, 400]),
                                ('b', [0, 0, 0, 0], [1000] * 4),
                                ('c', [1, 1, 1, 1], [50] * 4)):
    recs += [{'id': pid, 'correct': bool(x), 'length': n, 'boxed': 1.0}
             for x, n in zip(correct, lengths)]
  return recs


class PassAtKTest(absltest.TestCase):

  def test_pass_at_k_equals_brute_force(self):
    for n in range(1, 9):
      for c in range(n + 1):
        for k in range(1, n + 1):
          approx(metrics.pass_at_k(n, c, k), _brute_pass_at_k(n, c, k), abs=1e-12,
                 msg=f'n={n} c={c} k={k}')

  def test_pass_at_k_hand_numbers_and_stability(self):
    approx(metrics.pass_at_k(5, 2, 2), 0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    approx(metrics.pass_at_k(10, 1, 1), 0.1)
    self.assertEqual(metrics.pass_at_k(4, 0, 4), 0.0)
    self.assertEqual(metrics.pass_at_k(4, 1, 4), 1.0)
    # C(2000, 1000) overflows a float; the product form does not.
    expected = 1 - math.comb(1990, 1000) / math.comb(2000, 1000)
    approx(metrics.pass_at_k(2000, 10, 1000), expected, rel=1e-12)
    with self.assertRaisesRegex(ValueError, '1 <= k <= n'):
      metrics.pass_at_k(4, 1, 5)
    with self.assertRaises(ValueError):
      metrics.pass_at_k(4, 5, 1)

  def test_mean_pass_at_k_vectorised(self):
    rng = np.random.default_rng(0)
    correct = rng.random((9, 6)) < 0.3
    correct[0], correct[1] = False, True
    for k in range(1, 7):
      expected = np.mean([_brute_pass_at_k(6, int(row.sum()), k) for row in correct])
      approx(metrics.mean_pass_at_k(correct, k), expected, abs=1e-12, msg=f'k={k}')
    with self.assertRaisesRegex(ValueError, 'bool\\[P, N\\]'):
      metrics.mean_pass_at_k(np.ones(4, bool), 1)


class LAccNagTest(absltest.TestCase):

  def test_l_acc_hand_numbers(self):
    # CEEH-style numbers: ACC 0.8 at a quarter of the base length -> 0.8 * sqrt(0.75).
    approx(metrics.l_acc(0.8, 2500, 10000), 0.8 * math.sqrt(0.75))
    approx(metrics.l_acc(0.5, 3600, 10000), 0.4)  # 0.5 * sqrt(0.64)
    self.assertEqual(metrics.l_acc(0.9, 10000, 10000), 0.0)  # no compression, no credit
    self.assertEqual(metrics.l_acc(0.9, 12000, 10000), 0.0)  # longer than base: clamped, not nan
    np.testing.assert_allclose(metrics.l_acc(np.array([1.0, 0.5]), np.array([0, 7500]), 10000),
                               [1.0, 0.25])

  def test_nag_hand_numbers_and_edges(self):
    # Lost 10% of the base accuracy while saving 36% of the length: 10 / sqrt(0.64) = 12.5.
    approx(metrics.nag(0.72, 0.8, 3600, 10000), 12.5)
    approx(metrics.nag(0.88, 0.8, 3600, 10000), -12.5)  # accuracy rose
    self.assertEqual(metrics.nag(0.8, 0.8, 1900, 10000), 0.0)
    self.assertEqual(metrics.nag(0.9, 0.8, 10000, 10000), math.inf)  # no compression: worst,
    self.assertEqual(metrics.nag(0.7, 0.8, 11000, 10000), math.inf)  # even if accuracy rose
    self.assertTrue(math.isnan(metrics.nag(0.5, 0.0, 3600, 10000)))  # no base accuracy
    np.testing.assert_allclose(metrics.nag(np.array([0.72, 0.8]), 0.8, np.array([3600, 20000]),
                                           10000), [12.5, np.inf])


class SummarizeTest(absltest.TestCase):

  def test_summarize_hand_numbers(self):
    s = metrics.summarize(_records())
    approx(s['acc'], 7 / 12)
    approx(s['len'], (1000 + 4000 + 200) / 12)
    approx(s['pass@1'], 7 / 12)
    # pass@2: a = 1 - C(1,2)/C(4,2) = 1, b = 0, c = 1 -> 2/3; pass@4 likewise.
    approx(s['pass@2'], 2 / 3)
    approx(s['pass@4'], 2 / 3)
    self.assertNotIn('pass@3', s)
    self.assertEqual(s['boxed'], 1.0)
    self.assertEqual((s['num_problems'], s['samples_per_problem']), (3, 4))

  def test_summarize_hard_easy_split_and_base(self):
    base = {'acc': 0.7, 'len': 1000.0}
    s = metrics.summarize(_records(), hard_mask={'a': True, 'b': True, 'c': False}, base=base)
    approx(s['hard/acc'], 3 / 8)
    self.assertEqual(s['hard/num_problems'], 2)
    approx(s['hard/len'], 5000 / 8)
    self.assertEqual(s['easy/acc'], 1.0)
    self.assertEqual(s['easy/len'], 50.0)
    self.assertEqual(s['easy/pass@4'], 1.0)
    approx(s['l_acc'], 7 / 12 * math.sqrt(1 - s['len'] / 1000))
    approx(s['nag'], (1 - (7 / 12) / 0.7) * 100 / math.sqrt(1 - s['len'] / 1000))
    same = metrics.summarize(_records(), hard_mask=[True, True, False], base=base)
    self.assertEqual(same, s)
    only_hard = metrics.summarize(_records(), hard_mask=[True, True, True])
    self.assertNotIn('easy/acc', only_hard)
    self.assertEqual(only_hard['hard/acc'], only_hard['acc'])

  def test_summarize_rejects_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'same number of samples'):
      metrics.summarize(_records()[:-1])
    with self.assertRaisesRegex(ValueError, "lacks \\['length'\\]"):
      metrics.summarize([{'id': 'a', 'correct': True}])
    with self.assertRaisesRegex(ValueError, 'hard_mask has shape'):
      metrics.summarize(_records(), hard_mask=[True])


if __name__ == '__main__':
  absltest.main()
