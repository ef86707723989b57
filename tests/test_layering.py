"""The package's import structure: no import cycles,
nothing in the library imports the stages layer, `train/` imports no model and no plotting.

Imports are read from the source with `ast` (module-level and function-level alike), so
the test needs no JAX and sees lazy imports too.
"""

from __future__ import annotations

import ast
import os

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "genrl_jax")
# Modules `train/` must not import: the models, and anything that plots.
MODEL_MODULES = ("genrl_jax.world_model", "genrl_jax.connector", "genrl_jax.aligner",
                 "genrl_jax.mfwm", "genrl_jax.rssm", "genrl_jax.nets", "genrl_jax.behavior",
                 "genrl_jax.collect")
PLOTTING = ("matplotlib", "genrl_jax.report.plots")


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-len(".py")]
  parts = rel.split(os.sep)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: str, modules: set[str]) -> set[str]:
  """The modules (of `modules`, or external top-level names) that the file imports."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:  # `from genrl_jax.x import y` imports y when y is a module
        full = f"{node.module}.{a.name}"
        out.add(full if full in modules else node.module)
  return out


def import_graph(package_dir: str = PACKAGE_DIR) -> dict[str, set[str]]:
  """Module name -> the names it imports (genrl_jax modules in full, others as written)."""
  paths = [os.path.join(d, f) for d, _, files in os.walk(package_dir) for f in files
           if f.endswith(".py")]
  modules = {_module_name(p) for p in paths}
  return {_module_name(p): _imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle among the graph's own modules (as a list of names), or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph[node]):
      if nxt not in graph or nxt == node or nxt == "genrl_jax":
        continue
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (found := visit(node)):
      return found
  return None


GRAPH = import_graph()


def test_the_graph_sees_the_package():
  assert "genrl_jax.stages.mfwm" in GRAPH and "genrl_jax.train.loop" in GRAPH
  assert "genrl_jax.mfwm" in GRAPH["genrl_jax.stages.mfwm"]


def test_no_import_cycles():
  assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_cycle_finder_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c", "numpy"}, "c": {"a"}, "d": set()}
  assert find_cycle(graph) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_in_the_library_imports_the_stages():
  offenders = {m: sorted(i for i in imports if i.startswith("genrl_jax.stages"))
               for m, imports in GRAPH.items() if not m.startswith("genrl_jax.stages")}
  assert not {m: i for m, i in offenders.items() if i}


@pytest.mark.parametrize("forbidden", [MODEL_MODULES, PLOTTING])
def test_train_imports_no_model_and_no_plotting(forbidden):
  offenders = {m: sorted(i for i in imports if i.startswith(forbidden))
               for m, imports in GRAPH.items() if m.startswith("genrl_jax.train")}
  assert not {m: i for m, i in offenders.items() if i}


def _defined(module: str) -> set[str]:
  """Top-level function and class names of a package module."""
  path = os.path.join(os.path.dirname(PACKAGE_DIR), *module.split(".")) + ".py"
  tree = ast.parse(open(path).read(), path)
  return {n.name for n in tree.body
          if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}


def test_module_names_shadow_no_builtin_and_do_not_collide():
  """A module's name says which one it is: none is named after a builtin or a standard
  library module, and no two modules share a name, except a stage named after the
  component it trains (`stages/mfwm.py` trains `mfwm.py`)."""
  import builtins  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  leaves = {}
  for module in GRAPH:
    name = module.rsplit(".", 1)[-1]
    if module == "genrl_jax" or module + ".__init__" in GRAPH:
      continue
    assert name not in dir(builtins) and name not in sys.stdlib_module_names, module
    leaves.setdefault(name, []).append(module)
  for name, modules in leaves.items():
    others = [m for m in modules if not (m.startswith("genrl_jax.stages.")
                                         and f"genrl_jax.{name}" in GRAPH)]
    assert len(others) <= 1, modules


def test_collection_lives_in_one_package():
  """Every collector is in `genrl_jax.collect`, which only the stages use."""
  assert {"genrl_jax.collect.random_policy", "genrl_jax.collect.online",
          "genrl_jax.collect.task_agent", "genrl_jax.collect.plan2explore"} <= set(GRAPH)
  offenders = {m: sorted(i for i in imports if i.startswith("genrl_jax.collect"))
               for m, imports in GRAPH.items()
               if not m.startswith(("genrl_jax.collect", "genrl_jax.stages"))}
  assert not {m: i for m, i in offenders.items() if i}


def test_state_of_a_learner_lives_beside_it():
  """`train/` holds the generic train state only; the behaviour's is beside its learner."""
  assert {n for n in _defined("genrl_jax.train.state") if n[0].isupper()} == {"TrainState"}
  assert "BehaviorState" in _defined("genrl_jax.behavior.learner")


def test_baseline_returns_live_beside_evaluation():
  """The baseline policies' returns are an environment-side tool: scripts reach them without
  the stage layer."""
  assert "baseline_returns" in _defined("genrl_jax.envs.baseline_policies")
  assert not any("baseline" in n for n in _defined("genrl_jax.stages.evaluation")
                 if n != "random_baseline")
  script = os.path.join(os.path.dirname(PACKAGE_DIR), "experiments", "baselines.py")
  assert not any(i.startswith("genrl_jax.stages") for i in _imports(script, set(GRAPH)))
