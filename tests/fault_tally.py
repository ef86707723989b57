"""Counts of the faults a test module injects, by kind, printed when the module ends (the
rows of docs/reliability.md's table). A fault test module imports `tally` (an autouse
fixture) and calls `record` when a test's injections have all been survived."""

from __future__ import annotations

import collections

import pytest

# kind -> [trials, survived, data lost]; survived: the result an uninterrupted run gives,
# or the one clear error where that is the guarantee.
FAULTS: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])


def record(kind: str, trials: int, survived: int | None = None, lost: int = 0) -> None:
  row = FAULTS[kind]
  row[0] += trials
  row[1] += trials if survived is None else survived
  row[2] += lost


@pytest.fixture(scope="module", autouse=True)
def tally(request):
  """Prints the module's rows after its last test (past pytest's output capture)."""
  yield
  rows = {k: v for k, v in FAULTS.items() if v[0]}
  if not rows:
    return
  capture = request.config.pluginmanager.getplugin("capturemanager")
  with capture.global_and_fixture_disabled():
    print(f"\n{request.module.__name__}: fault kind | trials | survived | data lost")
    for kind, (trials, survived, lost) in rows.items():
      print(f"  {kind} | {trials} | {survived} | {lost}")
  FAULTS.clear()
