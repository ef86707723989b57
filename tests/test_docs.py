"""Docstrings cite documents that ship with the code: every `method.md §N.M` cited in the
package, scripts and tests is a section of `docs/method.md`, and nothing cites the
reference's spec or files outside the repository."""

from __future__ import annotations

import os
import re

import pytest

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



# Run logs belong in docs/ (results.md, experiment_log.md), not in code or configs.
DATE = re.compile(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]")
NO_LOG_DIRS = ("genrl_jax", "experiments", "benchmarks", "launch", "scripts")


def test_code_and_configs_carry_no_dated_run_logs():
  dated = []
  for top in NO_LOG_DIRS:
    for d, _, names in os.walk(os.path.join(ROOT, top)):
      for name in names:
        if name.endswith((".py", ".sh", ".sbatch", ".ipynb", ".json")):
          path = os.path.join(d, name)
          dated += [f"{os.path.relpath(path, ROOT)}:{i + 1}"
                    for i, line in enumerate(open(path, errors="replace"))
                    if DATE.search(line)]
  assert not dated, dated


def _markdown_files() -> list[str]:
  docs = os.path.join(ROOT, "docs")
  return [os.path.join(ROOT, "README.md")] + sorted(
      os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


def test_relative_links_of_the_readme_and_docs_exist():
  broken = []
  for path in _markdown_files():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", open(path).read()):
      if "://" in target or target.startswith("mailto:"):
        continue
      if not os.path.exists(os.path.join(os.path.dirname(path), target)):
        broken.append(f"{os.path.relpath(path, ROOT)} -> {target}")
  assert not broken, broken


def test_readme_is_a_guide_not_a_log():
  text = open(os.path.join(ROOT, "README.md")).read()
  assert len(text.splitlines()) <= 260
  assert not DATE.search(text), DATE.search(text)
  assert not re.search(r"<[a-z ]+(?:prints|flags)[a-z ]*>", text)  # placeholders
  # Exactly the two set-up commands (the main job and the tests), as CI runs them.
  assert ("bash scripts/setup.sh && .venv/bin/python experiments/main.py "
          "--config=configs/stickman.py:tiny --workdir=workdirs/stickman_tiny") in text
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  assert "bash scripts/test.sh" in text and "scripts/test.sh" in ci


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
  blocks = re.findall(r"```python\n(.*?)```", open(os.path.join(ROOT, "README.md")).read(),
                      re.S)
  assert blocks
  monkeypatch.chdir(ROOT)
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # pylint: disable=exec-used


def test_config_docstrings_are_short():
  import ast  # pylint: disable=g-import-not-at-top
  configs = os.path.join(ROOT, "experiments", "configs")
  long = {}
  for name in sorted(os.listdir(configs)):
    if name.endswith(".py"):
      doc = ast.get_docstring(ast.parse(open(os.path.join(configs, name)).read())) or ""
      if len(doc.splitlines()) > 12:
        long[name] = len(doc.splitlines())
  assert not long, long
