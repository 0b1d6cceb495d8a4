"""The package's layers: each module imports only its own layer and those below, and no two
modules import each other (directly or round a longer loop)."""

import ast
import pathlib

import fer_flax

PACKAGE = pathlib.Path(fer_flax.__file__).parent
# Bottom to top; the command-line modules (fer_flax/*.py and the layers' __main__) sit above.
LAYERS = ('core', 'data', 'models', 'train', 'serve')


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in PACKAGE.rglob('*.py')}


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """The fer_flax modules a file imports, at its top or inside functions."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith('fer_flax.'))
    elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('fer_flax'):
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        found.add(full if full in modules else node.module)
  return found - {'fer_flax'}


def _layer(module: str) -> int:
  parts = module.split('.')
  if parts[-1] != '__main__' and (len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS)):
    return LAYERS.index(parts[1])
  return len(LAYERS)  # a command: fer_flax/*.py, or a layer's __main__


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) for name, path in modules.items() if name != 'fer_flax'}


def test_every_import_goes_down_or_sideways():
  upward = [f'{m} imports {d}' for m, deps in _graph().items() for d in deps
            if _layer(d) > _layer(m)]
  assert not upward


def test_no_import_cycles():
  graph = _graph()

  def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), list(graph.get(start, ()))
    while todo:
      module = todo.pop()
      if module == goal:
        return True
      if module not in seen:
        seen.add(module)
        todo.extend(graph.get(module, ()))
    return False

  cycles = sorted(m for m in graph if reaches(m, m))
  assert not cycles


def test_the_layers_hold_what_they_name():
  assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / '__init__.py').exists()} == {
      *LAYERS}
  commands = sorted(m for m in _graph() if _layer(m) == len(LAYERS))
  assert commands == ['fer_flax.aot', 'fer_flax.benchmark', 'fer_flax.evaluate', 'fer_flax.export',
                      'fer_flax.main', 'fer_flax.models.__main__', 'fer_flax.plots',
                      'fer_flax.predict', 'fer_flax.serve.__main__', 'fer_flax.timing']
