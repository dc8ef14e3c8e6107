"""The README's code blocks with their test tags, for tests/test_readme.py and fresh_clone_check.sh.

Every fenced block in README.md is preceded by a tag line (an HTML comment, invisible on GitHub):

  <!-- readme-test: fast -->          run by tests/test_readme.py (default tier)
  <!-- readme-test: slow -->          run by tests/test_readme.py (slow tier)
  <!-- readme-test: fresh-clone -->   run by scripts/fresh_clone_check.sh (the two commands)
  <!-- readme-test: skip: <why> -->   not run (needs a real checkpoint, ...), with the reason

  python scripts/readme_blocks.py fresh-clone 0     # prints the first fresh-clone block
"""
import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
_TAG = re.compile(r'^<!-- readme-test: (fast|slow|fresh-clone|skip: .+) -->$')
_FENCE = re.compile(r'^```(\w*)\s*$')


def blocks(text: str) -> list[dict]:
  """[{'tag', 'lang', 'code', 'line'}] for every fenced block; a block with no tag line right
  above it gets tag None (tests/test_readme.py rejects that)."""
  lines = text.splitlines()
  out, i = [], 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    start = i
    j = i + 1
    while j < len(lines) and not lines[j].startswith('```'):
      j += 1
    prev = lines[start - 1].strip() if start > 0 else ''
    tag = _TAG.match(prev)
    out.append({'tag': tag.group(1) if tag else None, 'lang': m.group(1),
                'code': '\n'.join(lines[start + 1:j]) + '\n', 'line': start + 1})
    i = j + 1
  return out


def tagged(tag: str, path=README) -> list[str]:
  """The code of every block tagged `tag`, in README order."""
  return [b['code'] for b in blocks(pathlib.Path(path).read_text()) if b['tag'] == tag]


if __name__ == '__main__':
  sys.stdout.write(tagged(sys.argv[1])[int(sys.argv[2])])
