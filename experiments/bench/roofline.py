"""The machine's roofline, measured in the same process as the benchmark that uses it.

Peak matmul FLOP/s: the best of a few large square jitted matmuls (fp32 and bf16).
Memory bandwidth: the larger of two streaming kernels over a 512 MiB fp32 array, each the best
of a few calls: a read-only reduction (`x.sum()`) and an in-place update (`x * a + b` with the
input donated, so no page is freshly allocated), counting read + written bytes. The larger one
is the roofline (the stricter bar for us).

A roofline fraction is then `ideal_time / measured_time` with
`ideal_time = max(flops / peak_flops, bytes / bandwidth)`.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Roofline:
  matmul_flops: dict          # dtype name -> FLOP/s
  bandwidth: float            # bytes/s (read + write)

  def ideal_seconds(self, flops: float, bytes_moved: float, dtype: str = 'float32') -> float:
    return max(flops / self.matmul_flops[dtype], bytes_moved / self.bandwidth)

  def fraction(self, seconds: float, flops: float, bytes_moved: float,
               dtype: str = 'float32') -> float:
    return self.ideal_seconds(flops, bytes_moved, dtype) / seconds

  def describe(self) -> str:
    peaks = ', '.join(f'{k} {v / 1e9:.1f} GFLOP/s' for k, v in self.matmul_flops.items())
    return f'matmul {peaks}; memory {self.bandwidth / 1e9:.1f} GB/s'


def best_seconds(fn, *args, repeats: int = 5) -> float:
  """Best wall time of `fn(*args)` (already compiled by one warm-up call)."""
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of an n x n x n jitted matmul (2 n^3 FLOPs)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.normal(k1, (n, n), dtype)
  b = jax.random.normal(k2, (n, n), dtype)
  f = jax.jit(lambda a, b: a @ b)
  return 2 * n ** 3 / best_seconds(f, a, b, repeats=repeats)


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
  """Bytes/s streamed over `mib` MiB: max(read-only reduction, donated in-place update)."""
  x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
  read = x.nbytes / best_seconds(jax.jit(jnp.sum), x, repeats=repeats)
  update = jax.jit(lambda x: x * 1.0001 + 0.5, donate_argnums=0)
  x = update(x).block_until_ready()  # compiled; x is now the live, donated buffer
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    x = update(x).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return max(read, 2 * x.nbytes / best)


def measure(dtypes=('float32', 'bfloat16'), matmul_n: int = 2048, mib: int = 512) -> Roofline:
  peaks = {d: matmul_peak(matmul_n, jnp.dtype(d)) for d in dtypes}
  return Roofline(matmul_flops=peaks, bandwidth=memory_bandwidth(mib))


if __name__ == '__main__':
  print(measure().describe())
