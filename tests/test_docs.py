"""Docstrings cite documents that ship with the code: every `method.md §N.M` cited in the
package, scripts and tests is a section of `docs/method.md`, and nothing cites the
reference's spec or files outside the repository."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join(ROOT, "docs", "method.md")
CODE_DIRS = ("genrl_jax", "experiments", "benchmarks", "launch", "tests", "scripts")


def _code_files() -> list[str]:
  out = []
  for top in CODE_DIRS:
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      out += [os.path.join(d, f) for f in files if f.endswith((".py", ".sh"))]
  return out


def method_sections(text: str) -> set[str]:
  """`'2.3'` for a heading `### 2.3 RSSM`, `'5'` for `## 5. Data-free starts`."""
  return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M)}


def cited_sections(text: str) -> set[str]:
  """Sections cited as `method.md §2.3` (also in lists: `method.md §1.6, §1.11`)."""
  cited = set()
  for m in re.finditer(r"method\.md ((?:§\d+(?:\.\d+)?(?:, )?)+)", text):
    cited.update(re.findall(r"§(\d+(?:\.\d+)?)", m.group(1)))
  return cited


def test_section_parsing():
  text = "## 2. World model\n### 2.3 RSSM\n### 2.10 More\n"
  assert method_sections(text) == {"2", "2.3", "2.10"}
  assert cited_sections("see method.md §1.6, §1.11, §4 and method.md §2.3.") == {
      "1.6", "1.11", "4", "2.3"}


def test_every_cited_section_exists():
  sections = method_sections(open(METHOD).read())
  missing = {}
  for path in _code_files():
    cited = cited_sections(open(path).read())
    if cited - sections:
      missing[os.path.relpath(path, ROOT)] = sorted(cited - sections)
  assert not missing, missing
  assert len(sections) > 40


def test_nothing_cites_the_spec_or_files_outside_the_repository():
  stale = re.compile(r"\bspec (?:section )?\d|\.\./shared/")
  offenders = [os.path.relpath(p, ROOT) for p in _code_files()
               if os.path.abspath(p) != os.path.abspath(__file__)
               and stale.search(open(p).read())]
  assert not offenders, offenders

