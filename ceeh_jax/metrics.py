"""Evaluation metrics on the host (numpy): ACC, LEN, Pass@k, L-Acc, NAG, hard/easy splits.

Letters: P problems, N samples per problem.
ACC is avg@N (mean correctness over the N samples, then over problems), LEN the mean response
length in tokens (thinking included), Pass@k the unbiased estimator of Chen et al. (2021).
L-Acc and NAG weigh accuracy against the length saved relative to a base model, as the CEEH
paper (arXiv 2602.22642) reports them; formulas as in DESIGN.md.
"""
from typing import Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) from n samples of which c are correct.

  Product form C(n-c, k)/C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i): no huge binomials.
  """
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f'pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}')
  if n - c < k:  # every k-subset holds a correct sample
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(correct: np.ndarray, k: int) -> float:
  """Mean over problems of pass@k from bool[P, N] correctness (vectorised product form)."""
  correct = np.asarray(correct, bool)
  if correct.ndim != 2:
    raise ValueError(f'correct must be bool[P, N], got shape {correct.shape}')
  n = correct.shape[1]
  if not 1 <= k <= n:
    raise ValueError(f'pass@k needs 1 <= k <= N={n}, got k={k}')
  c = correct.sum(axis=1)  # [P]
  i = np.arange(1, n + 1)  # [N]
  factors = np.where(i[None, :] > (n - c)[:, None], 1.0 - k / i[None, :], 1.0)  # [P, N]
  return float(np.mean(1.0 - np.prod(factors, axis=1)))


def l_acc(acc, length, base_length):
  """L-Acc = ACC * sqrt(1 - L/L_base), and 0 when L >= L_base.

  At L >= L_base the square root is undefined (negative) or 0: the method saved no length,
  so it earns no credit, however accurate. Works on scalars and arrays.
  """
  acc, saving = np.asarray(acc, float), 1.0 - np.asarray(length, float) / base_length
  return acc * np.sqrt(np.clip(saving, 0.0, None))


def nag(acc, acc_base, length, base_length):
  """NAG = (1 - ACC/ACC_base) * 100 / sqrt(1 - L/L_base): accuracy lost per unit of
  compression, lower is better (negative when accuracy rose).

  Edge cases: L >= L_base -> +inf (no compression to pay for any change, the worst score,
  even when accuracy rose); ACC_base <= 0 -> nan (the relative gap is undefined).
  """
  acc, length = np.asarray(acc, float), np.asarray(length, float)
  saving = 1.0 - length / base_length
  with np.errstate(divide='ignore', invalid='ignore'):
    out = (1.0 - acc / acc_base) * 100.0 / np.sqrt(np.where(saving > 0, saving, 1.0))
  out = np.where(saving > 0, out, np.inf)
  out = np.where(np.asarray(acc_base, float) > 0, out, np.nan)
  return out if out.ndim else float(out)


def _ks(n: int) -> list[int]:
  """k = 1, 2, 4, ... up to n, plus n itself."""
  ks = [1 << j for j in range(n.bit_length()) if 1 << j <= n]
  return ks if ks[-1] == n else ks + [n]


def _summary(correct: np.ndarray, length: np.ndarray, extra: dict) -> dict:
  """Metrics of bool[P, N] correctness and f32[P, N] lengths."""
  out = {'acc': float(correct.mean()), 'len': float(length.mean()),
         'num_problems': int(correct.shape[0]), 'samples_per_problem': int(correct.shape[1])}
  out.update({f'pass@{k}': mean_pass_at_k(correct, k) for k in _ks(correct.shape[1])})
  out.update({k: float(v.mean()) for k, v in extra.items()})
  return out


def summarize(records: Sequence[Mapping], hard_mask=None, base: Mapping | None = None) -> dict:
  """ACC, LEN, pass@k (k = 1, 2, 4, ..., N) over per-sample records, split hard/easy.

  Args:
    records: one dict per sample with 'id' (problem), 'correct' (bool) and 'length' (tokens);
      optional numeric 'boxed', 'entropy', 'truncated' are averaged too. Every problem needs
      the same number N of samples.
    hard_mask: per-problem hard flag, a mapping id -> bool or a sequence in order of the
      problems' first appearance; adds 'hard/...' and 'easy/...' keys.
    base: {'acc', 'len'} of the base model; adds 'l_acc' and 'nag'.
  """
  if not records:
    raise ValueError('summarize needs at least one record')
  by_id = {}
  for r in records:
    missing = {'id', 'correct', 'length'} - set(r)
    if missing:
      raise ValueError(f'record {r!r} lacks {sorted(missing)}')
    by_id.setdefault(r['id'], []).append(r)
  counts = {len(v) for v in by_id.values()}
  if len(counts) != 1:
    raise ValueError(f'every problem needs the same number of samples, got counts {counts}')
  ids, groups = list(by_id), list(by_id.values())
  correct = np.array([[bool(r['correct']) for r in g] for g in groups])  # [P, N]
  length = np.array([[float(r['length']) for r in g] for g in groups])  # [P, N]
  extra = {key: np.array([[float(r[key]) for r in g] for g in groups])
           for key in ('boxed', 'entropy', 'truncated') if all(key in r for r in records)}
  out = _summary(correct, length, extra)
  if base is not None:
    out['l_acc'] = float(l_acc(out['acc'], out['len'], base['len']))
    out['nag'] = float(nag(out['acc'], base['acc'], out['len'], base['len']))
  if hard_mask is not None:
    if isinstance(hard_mask, Mapping):
      hard = np.array([bool(hard_mask[i]) for i in ids])
    else:
      hard = np.asarray(hard_mask, bool)
      if hard.shape != (len(ids),):
        raise ValueError(f'hard_mask has shape {hard.shape}, expected ({len(ids)},)')
    for name, rows in (('hard', hard), ('easy', ~hard)):
      if rows.any():
        part = _summary(correct[rows], length[rows], {k: v[rows] for k, v in extra.items()})
        out.update({f'{name}/{k}': v for k, v in part.items()})
  return out
