"""Checkpoint checksums (issue 19): what they detect, that they do not depend on sharding, and
that a checkpoint corrupted in place is set aside and the previous one restored."""
import test_util  # first: 8 CPU devices, repo on sys.path, XLA cache (before jax starts)

import contextlib
import io
import os


from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp

from ceeh_jax import checkpointing as ckpt_lib
from ceeh_jax import checksum as checksum_lib
from ceeh_jax import fingerprint as fingerprint_lib


def _reference_lanes(words: np.ndarray) -> tuple[int, int]:
  """The documented formula, in plain Python integers, over a flat list of uint32 words."""
  m = 2**32

  def fmix32(h):
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % m
    return h ^ (h >> 16)

  lanes = []
  for seed, b in zip(checksum_lib._SEEDS, checksum_lib._B):
    lanes.append(sum(fmix32(((int(w) ^ seed) * checksum_lib._A + i * b) % m)
                     for i, w in enumerate(words)) % m)
  return tuple(lanes)


def _lanes(x) -> str:
  return checksum_lib.tree_checksums({'x': x})['x'].split(' ')[1]


def _device_lanes(x) -> str:
  """The accelerator path (one jitted program), forced here on CPU devices."""
  a, b = np.asarray(checksum_lib._leaf_lanes(x))  # pylint: disable=protected-access
  return f'{int(a):08x}{int(b):08x}'


class ChecksumTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('float32', np.float32, lambda a: a.view(np.uint32)),
      ('bfloat16', ml_dtypes.bfloat16, lambda a: a.view(np.uint16).astype(np.uint32)),
      ('int8', np.int8, lambda a: a.view(np.uint8).astype(np.uint32)),
      ('bool', np.bool_, lambda a: a.astype(np.uint32)),
  )
  def test_equals_the_documented_formula(self, dtype, words):
    a = (np.random.default_rng(0).standard_normal((3, 5)) * 50).astype(dtype)
    lane0, lane1 = _reference_lanes(words(a).reshape(-1))
    want = f'{lane0:08x}{lane1:08x}'
    self.assertEqual(_lanes(jnp.asarray(a)), want)         # host path (numpy)
    self.assertEqual(_lanes(a), want)                      # a numpy leaf
    self.assertEqual(_device_lanes(jnp.asarray(a)), want)  # device path (jit)

  @parameterized.named_parameters(('chunks', (3, 70_000), np.float32),
                                  ('bf16', (2, 40_000), ml_dtypes.bfloat16),
                                  ('int8', (300_001,), np.int8), ('scalar', (), np.float32),
                                  ('empty', (0, 3), np.float32))
  def test_host_and_device_paths_agree(self, shape, dtype):
    """Over several 65,536-word chunks (the index keeps counting across chunks)."""
    a = (np.random.default_rng(3).standard_normal(shape) * 50).astype(dtype)
    self.assertEqual(_lanes(jnp.asarray(a)), _device_lanes(jnp.asarray(a)))

  def test_every_single_bit_flip_is_detected(self):
    a = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    ref = _lanes(jnp.asarray(a))
    seen = {ref}
    for word in range(a.size):
      for bit in (0, 7, 22, 31):
        b = a.copy()
        b.reshape(-1).view(np.uint32)[word] ^= np.uint32(1 << bit)
        got = _lanes(jnp.asarray(b))
        # Both lanes change (each term is a bijection of its word).
        self.assertNotEqual(got[:8], ref[:8])
        self.assertNotEqual(got[8:], ref[8:])
        seen.add(got)
    self.assertLen(seen, 1 + a.size * 4)

  def test_moved_values_are_detected(self):
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    self.assertNotEqual(_lanes(jnp.asarray(a)), _lanes(jnp.asarray(a.T.copy())))
    self.assertNotEqual(_lanes(jnp.asarray(a)), _lanes(jnp.asarray(a[::-1].copy())))

  @parameterized.named_parameters(
      ('rows', P('x', None)), ('cols', P(None, 'y')), ('both', P('x', 'y')),
      ('swapped', P('y', 'x')), ('replicated', P()))
  def test_independent_of_sharding(self, spec):
    self.assertGreaterEqual(jax.device_count(), 8)
    mesh = jax.make_mesh((4, 2), ('x', 'y'))
    a = jnp.asarray(np.random.default_rng(2).standard_normal((8, 12)), jnp.float32)
    sharded = jax.device_put(a, NamedSharding(mesh, spec))
    self.assertEqual(checksum_lib.tree_checksums({'a': sharded}),
                     checksum_lib.tree_checksums({'a': a}))
    self.assertEqual(_device_lanes(sharded), _lanes(a))  # the jitted sum over the shards

  def test_mismatches_compares_same_kind_only(self):
    saved = {'a': 'float32[2] 00000000000000aa', 'b': 'float32[2] 00000000000000bb',
             'c': 'float32[2] 00000000000000cc'}
    now = {'a': 'float32[2] 00000000000000aa', 'b': 'float32[2] 00000000000000ff',
           'c': 'bfloat16[2] 0000000000000011', 'd': 'float32[2] 0000000000000001'}
    # b changed; c was restored into another dtype (cannot be compared); d is new.
    self.assertEqual(checksum_lib.mismatches(saved, now), ['b'])


def _state(seed):
  rng = np.random.default_rng(seed)
  return {'params': {'w': jnp.asarray(rng.standard_normal((256, 512)), jnp.float32),
                     'b': jnp.asarray(rng.standard_normal(512), jnp.bfloat16)},
          'opt': [{'mu': jnp.asarray(rng.standard_normal((256, 512)), jnp.float32)}],
          'step': jnp.int32(seed)}


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _largest_file(step_dir: str) -> str:
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  return max(files, key=os.path.getsize)


def _restore_unverified(workdir, step):
  """Orbax's own restore of `step` (no checksum check), or None when orbax cannot read it."""
  ckpt = ckpt_lib.Checkpointer(workdir, keep=3)
  try:
    return ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(_state(0)))))['state']
  except Exception:  # noqa: BLE001 - unreadable
    return None
  finally:
    ckpt.close()


def corrupt_silently(workdir: str, step: int, nbytes: int = 4096) -> int:
  """Overwrites `nbytes` random bytes inside the step's largest file (size kept) at the first
  of a fixed list of places where orbax still reads the file without error, but other values:
  the corruption only a checksum can see. (Elsewhere the compressed stream fails to decode:
  an unreadable checkpoint, which is the other test's case.) Returns the attempt used."""
  path = _largest_file(os.path.join(workdir, 'checkpoints', str(step)))
  pristine = open(path, 'rb').read()
  for attempt in range(40):
    data = bytearray(pristine)
    at = int(len(data) * (0.05 + 0.0225 * attempt))
    data[at:at + nbytes] = np.random.default_rng(attempt).integers(0, 256, nbytes,
                                                                   np.uint8).tobytes()
    with open(path, 'wb') as f:
      f.write(bytes(data[:len(pristine)]))
    state = _restore_unverified(workdir, step)
    if state is not None and any(jax.tree.leaves(jax.tree.map(
        lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)), state, _state(step)))):
      return attempt
  raise AssertionError('orbax reported every in-place corruption itself: no silent case left '
                       'to test the checksum on')


class CheckpointCorruptionTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.workdir = self.create_tempdir().full_path
    ckpt = ckpt_lib.Checkpointer(self.workdir, keep=3)
    for step in (1, 2):
      ckpt.save(step, _state(step), {'iterator': {'step': step}})
    ckpt.close()
    corrupt_silently(self.workdir, 2)

  def test_corrupted_in_place_falls_back_and_is_set_aside(self):
    ckpt = ckpt_lib.Checkpointer(self.workdir, keep=3)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      step, state, meta = ckpt.restore(_abstract(_state(0)))
    ckpt.close()
    self.assertEqual(step, 1)
    self.assertEqual(meta['iterator'], {'step': 1})
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))
    warning = out.getvalue()
    self.assertIn('checkpoint step 2', warning)
    self.assertIn(os.path.join(self.workdir, 'checkpoints', '2'), warning)
    self.assertIn('corrupted', warning)
    self.assertIn('ChecksumMismatch', warning)
    aside = os.listdir(os.path.join(self.workdir, 'checkpoints_corrupt'))
    self.assertLen(aside, 1)
    self.assertTrue(aside[0].startswith('2-'), aside)
    self.assertFalse(os.path.exists(os.path.join(self.workdir, 'checkpoints', '2')))

  def test_unreadable_in_place_corruption_falls_back_too(self):
    """4 KiB overwritten in the middle of the largest file: whether orbax fails to decode it
    or reads other values, the previous step is restored."""
    workdir = self.create_tempdir().full_path
    ckpt = ckpt_lib.Checkpointer(workdir, keep=3)
    for step in (1, 2):
      ckpt.save(step, _state(step), {'iterator': {'step': step}})
    path = _largest_file(os.path.join(workdir, 'checkpoints', '2'))
    with open(path, 'r+b') as f:
      f.seek(os.path.getsize(path) // 2 - 2048)
      f.write(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      step, state, _ = ckpt.restore(_abstract(_state(0)))
    ckpt.close()
    self.assertEqual(step, 1)
    jax.tree.map(np.testing.assert_array_equal, state, _state(1))
    self.assertRegex(out.getvalue(), r'checkpoint step 2 \(.*\) is (corrupted|unreadable)')

  def test_fingerprint_reads_the_previous_step_and_warns(self):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      text = fingerprint_lib.describe(self.workdir)
    self.assertTrue(text.startswith('step 1 sha256 '))
    self.assertIn('skipped checkpoint step 2', err.getvalue())
    self.assertIn('ChecksumMismatch', err.getvalue())
    self.assertTrue(os.path.exists(os.path.join(self.workdir, 'checkpoints', '2')))  # read-only

  def test_checkpoint_without_checksums_is_accepted(self):
    """Checkpoints written before checksums existed still restore (unverified)."""
    workdir = self.create_tempdir().full_path
    ckpt = ckpt_lib.Checkpointer(workdir)
    ckpt.manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(3)),
                                                 meta=ocp.args.JsonSave({'iterator': {}})))
    ckpt.wait()
    step, state, _ = ckpt.restore(_abstract(_state(0)))
    ckpt.close()
    self.assertEqual(step, 3)
    jax.tree.map(np.testing.assert_array_equal, state, _state(3))


if __name__ == '__main__':
  absltest.main()
