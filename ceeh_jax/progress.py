"""The training progress bar: what is happening now, four metrics, an ETA that means something.

One line that fits an 80-column terminal (the full metrics go to metrics.jsonl / TensorBoard):

  ceeh_me 12/30 |████      | 00:41, acc 0.61 len 61 ent 0.124 hard 0.44, eta 00:54

While a phase with no step to count runs (the base-policy eval, the first step, which
compiles), the postfix says so. The ETA comes from the median of the recent steps of this
process after its first: tqdm's own estimate averages in the compile step (the first ETA of
the default job said 27 minutes for a 2-minute run).
"""
import statistics

import tqdm

BAR_FORMAT = '{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}'
# (record key, label, format): what a glance needs; every other metric is in metrics.jsonl.
SHORT = (('acc', 'acc', '.2f'), ('length', 'len', '.0f'), ('entropy', 'ent', '.3f'),
         ('hard_fraction', 'hard', '.2f'))
_RECENT = 10  # steps in the ETA's median: follows a drifting machine, ignores one slow eval


def short_metrics(record: dict) -> str:
  """'acc 0.61 len 61 ent 0.124 hard 0.44' from a metrics record (missing keys skipped)."""
  return ' '.join(f'{label} {record[key]:{fmt}}' for key, label, fmt in SHORT
                  if isinstance(record.get(key), (int, float)))


def clock(seconds: float) -> str:
  """'01:05' / '1:02:03', as tqdm writes elapsed time."""
  return tqdm.tqdm.format_interval(seconds)


class StepBar:
  """tqdm over training steps with a status line and a steady-state ETA."""

  def __init__(self, total: int, initial: int, desc: str, enabled: bool, **tqdm_kwargs):
    self.total = total
    tqdm_kwargs.setdefault('dynamic_ncols', True)
    self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, disable=not enabled,
                          bar_format=BAR_FORMAT, **tqdm_kwargs)
    self._steps = []  # seconds of each step this process ran; the first compiles

  def status(self, text: str) -> None:
    """Says what runs now (until the next step ends); keep it under ~45 characters."""
    self._bar.set_postfix_str(text)

  def eta(self) -> float | None:
    """Seconds left from the median of recent steps after the first; None before two."""
    steady = self._steps[1:][-_RECENT:]
    if len(steady) < 2:
      return None
    return statistics.median(steady) * (self.total - self._bar.n)

  def step(self, seconds: float, record: dict) -> None:
    """One step done in `seconds`: advance, show its short metrics and the ETA."""
    self._steps.append(seconds)
    self._bar.update(1)
    eta = self.eta()
    text = short_metrics(record)
    self._bar.set_postfix_str(text if eta is None else f'{text}, eta {clock(eta)}')

  def close(self) -> None:
    self._bar.close()
