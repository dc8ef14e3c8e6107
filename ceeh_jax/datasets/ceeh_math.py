"""`ceeh_math`: the vendored math benchmarks and the DeepScaleR sample as one TFDS builder.

One config per short name of `ceeh_jax.data.BENCHMARKS` (`ceeh_math/math500`, ...,
`ceeh_math/deepscaler2k`), built offline from the JSONL files under `data_lib.DATA_DIR` (no
download), row for row in file order (`disable_shuffling`), into any file format TFDS writes;
the project prepares array_record, which `tfds.data_source` reads by random access without
TensorFlow. Evaluation sets have one split, `test`; the DeepScaleR sample has `train`.

Features (all text): `id`, `problem`, `answer`, `source` (`<owner>/<repo>:<path>` the row came
from), `solution` ('' where the source has none) and `meta`, the row's other source fields as
a JSON object ('{}' when none; the keys differ per benchmark, see data/README.md). The info
carries the license the redistributing repository states, BibTeX for the benchmark's paper
and for the exact snapshot (repository, path, commit from data/manifest.json), and the sha256
of the JSONL it was built from (`metadata['source_sha256']`).
"""
import dataclasses
import hashlib
import json

import tensorflow_datasets as tfds

from ceeh_jax import data as data_lib

_QWEN_MATH = ('@article{yang2024qwen25math,\n  title={Qwen2.5-Math Technical Report: Toward '
              'Mathematical Expert Model via Self-Improvement},\n  author={Yang, An and '
              'others},\n  journal={arXiv preprint arXiv:2409.12122},\n  year={2024}\n}')
_MATH = ('@article{hendrycks2021math,\n  title={Measuring Mathematical Problem Solving With the '
         'MATH Dataset},\n  author={Hendrycks, Dan and others},\n  journal={NeurIPS Datasets '
         'and Benchmarks},\n  year={2021}\n}\n@article{lightman2023verify,\n  title={Let\'s '
         'Verify Step by Step},\n  author={Lightman, Hunter and others},\n  journal={arXiv '
         'preprint arXiv:2305.20050},\n  year={2023}\n}')
_QWEN_LICENSE = ('no top-level LICENSE; evaluation/LICENSE is MIT, (c) 2024 Zhibin Gou (code '
                 'from math-evaluation-harness)')
_MAA = 'The problems belong to the MAA (AIME, AMC).'


@dataclasses.dataclass
class MathConfig(tfds.core.BuilderConfig):
  """One vendored file: its short name in data_lib.BENCHMARKS, split, license, paper BibTeX."""
  split: str = 'test'
  license: str = ''
  paper: str = ''
  note: str = ''


_CONFIGS = (
    MathConfig(name='gsm8k', license='MIT, (c) 2021 OpenAI', paper=(
        '@article{cobbe2021gsm8k,\n  title={Training Verifiers to Solve Math Word Problems},\n'
        '  author={Cobbe, Karl and others},\n  journal={arXiv preprint arXiv:2110.14168},\n'
        '  year={2021}\n}'), description='GSM8K test set (grade-school word problems).'),
    MathConfig(name='math500', license=(
        'MIT, (c) 2025 NLP Group @ HKUST; the original, openai/prm800k, is MIT, (c) 2023 '
        'OpenAI'), paper=_MATH, description='MATH-500: the 500-problem test subset of MATH.'),
    MathConfig(name='aime24', license=_QWEN_LICENSE, paper=_QWEN_MATH, note=_MAA,
               description='AIME 2024 I and II.'),
    MathConfig(name='aime25', license=(
        'no top-level LICENSE; evaluation/LICENSE is MIT, (c) 2024 Zhibin Gou (copied from '
        'Qwen2.5-Math)'), note=_MAA, description='AIME 2025 I (rows 0-14) and II (15-29).'),
    MathConfig(name='amc23', license=_QWEN_LICENSE, paper=_QWEN_MATH, note=_MAA,
               description='AMC 2023: the 40 problems of the Qwen2.5-Math evaluation.'),
    MathConfig(name='amc83', license='MIT, (c) 2025 agentica-project', note=_MAA,
               description='AMC 2022 and 2023: the 83 problems DeepScaleR reports as "AMC".'),
    MathConfig(name='minerva', license=_QWEN_LICENSE, paper=(
        '@article{lewkowycz2022minerva,\n  title={Solving Quantitative Reasoning Problems with '
        'Language Models},\n  author={Lewkowycz, Aitor and others},\n  journal={NeurIPS},\n'
        '  year={2022}\n}\n' + _QWEN_MATH),
               note='The problems come from MIT OpenCourseWare.',
               description='Minerva math (MIT OCW science and engineering problems).'),
    MathConfig(name='olympiadbench', license=_QWEN_LICENSE, paper=(
        '@article{he2024olympiadbench,\n  title={OlympiadBench: A Challenging Benchmark for '
        'Promoting AGI with Olympiad-Level Bilingual Multimodal Scientific Problems},\n  '
        'author={He, Chaoqun and others},\n  journal={arXiv preprint arXiv:2402.14008},\n'
        '  year={2024}\n}\n' + _QWEN_MATH),
               description='OlympiadBench, the OE_TO_maths_en_COMP split.'),
    MathConfig(name='deepscaler2k', split='train', license='Apache-2.0', paper=(
        '@misc{luo2025deepscaler,\n  title={DeepScaleR: Surpassing O1-Preview with a 1.5B '
        'Model by Scaling RL},\n  author={Luo, Michael and others},\n  year={2025},\n'
        '  howpublished={agentica-project blog}\n}'),
               description='2000 problems of DeepScaleR-Preview (a sample, not the full set '
               'of 40,315).'),
)


def _manifest_entry(file_name: str) -> dict:
  """data/manifest.json's record of a vendored file ({} when the manifest is absent)."""
  path = data_lib.DATA_DIR / 'manifest.json'
  if not path.exists():
    return {}
  entries = json.loads(path.read_text(encoding='utf-8'))
  return next((e for e in entries.values() if e.get('file') == file_name), {})


def _snapshot_bibtex(name: str, entry: dict) -> str:
  """A @misc entry per input of the vendored file: repository, path and snapshot commit."""
  out = []
  for i, src in enumerate(entry.get('sources', ())):
    out.append(f'@misc{{ceeh_math_{name}_source{i},\n  title={{{src["path"]}}},\n'
               f'  howpublished={{{src["repo"]} at commit {src["snapshot_commit"]}}},\n'
               f'  note={{file last changed in {src["file_commit"]} '
               f'({src["file_commit_date"]}); sha256 {src["sha256"]}}}\n}}')
  return '\n'.join(out)


def source_path(name: str):
  """The vendored JSONL a config builds from."""
  return data_lib.DATA_DIR / data_lib.BENCHMARKS[name]


def file_sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


class CeehMath(tfds.core.GeneratorBasedBuilder):
  """The project's math benchmarks and training sample, from the vendored JSONL files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'The vendored files of data/manifest.json, row for row.'}
  BUILDER_CONFIGS = list(_CONFIGS)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    path = source_path(cfg.name)
    entry = _manifest_entry(path.name)
    repos = ', '.join(s['repo'] for s in entry.get('sources', ()))
    description = ' '.join(x for x in (
        cfg.description, cfg.note, f'Built from {path.name} (copied from {repos}; see '
        'data/README.md for how each field was derived).' if repos else '') if x)
    citation = '\n'.join(x for x in (cfg.paper, _snapshot_bibtex(cfg.name, entry)) if x)
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
        builder=self, description=description, citation=citation or None,
        license=cfg.license or None,
        homepage=f'https://github.com/{entry["sources"][0]["repo"]}' if repos else None,
        features=tfds.features.FeaturesDict({
            'id': text(), 'problem': text(), 'answer': text(), 'source': text(),
            'solution': text(doc="worked solution, '' when the source has none"),
            'meta': text(doc='the other source fields as a JSON object'),
        }),
        # Row order is the file's order: the epoch iterator, the difficulty state and the
        # dataset fingerprint index rows by position, exactly as for the JSONL file.
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(source_file=path.name,
                                        source_sha256=file_sha256(path)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # offline: everything is in the repository
    cfg = self.builder_config
    return {cfg.split: self._generate_examples(source_path(cfg.name))}

  def _generate_examples(self, path):
    # id / problem / answer come from the project's loader, which validates the file (ids,
    # empty fields, UTF-8) first: a prepared dataset holds exactly what `load_examples(path)`
    # returns, so the two sources give the same examples and the same fingerprint.
    examples, _ = data_lib.load_examples(str(path))
    with open(path, encoding='utf-8-sig') as f:
      rows = [json.loads(line) for line in f if line.strip()]
    for index, (ex, row) in enumerate(zip(examples, rows, strict=True)):
      yield index, {
          'id': ex.id, 'problem': ex.problem, 'answer': ex.answer,
          'source': row.get('source', ''), 'solution': row.get('solution') or '',
          'meta': json.dumps(row.get('meta') or {}, ensure_ascii=False, sort_keys=True),
      }
