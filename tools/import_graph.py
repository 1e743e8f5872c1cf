"""Prints the package's import circles and its imports that run back up the layers.

Walks every module of `fashionbert_tf` with `ast` (nothing is imported, so it runs in a second)
and builds the graph of imports between the package's own modules, at module level and inside
functions alike. Layers, bottom to top (an import should only run downward or sideways):

  configs -> utils -> data -> modeling -> training | evaluation -> serving | search |
  product_search -> api -> cli

A module in a sub-package takes the layer of its top-level package. A module directly under
`fashionbert_tf/` that is not in the table takes the highest layer of what it imports (where it
could sit without importing upward).

Usage:
  python tools/import_graph.py [--root fashionbert_tf] [--verbose]
"""

import argparse
import ast
import collections
import os
import sys

PACKAGE = "fashionbert_tf"

LAYERS = (
    ("configs",),
    ("utils",),
    ("data",),
    ("modeling",),
    ("training", "evaluation"),
    ("serving", "search", "product_search"),
    ("api",),
    ("cli",),
)
_LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(root, path):
  rel = os.path.relpath(path, os.path.dirname(root))[:-len(".py")]
  parts = rel.split(os.sep)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def find_modules(root):
  """Returns {module name: file path} for every .py file under `root`."""
  modules = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for filename in sorted(filenames):
      if filename.endswith(".py"):
        path = os.path.join(dirpath, filename)
        modules[_module_name(root, path)] = path
  return modules


def _resolve(name, modules):
  """The longest prefix of dotted `name` that is one of `modules`, or None."""
  parts = name.split(".")
  while parts:
    candidate = ".".join(parts)
    if candidate in modules:
      return candidate
    parts.pop()
  return None


def _imports(path, modules):
  """Yields (imported module, line, inside a function) for the package's own imports."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  function_lines = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for child in ast.walk(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
          function_lines.add(child.lineno)
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from a.b import c` imports module a.b.c when it is one, else a name of a.b.
      names = [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names:
      if name.split(".")[0] != PACKAGE:
        continue
      target = _resolve(name, modules)
      if target:
        yield target, node.lineno, node.lineno in function_lines


def build_graph(root):
  """Returns (modules, edges): edges[src] = list of (dst, line, inside a function)."""
  modules = find_modules(root)
  edges = {m: sorted(set(_imports(p, modules))) for m, p in modules.items()}
  return modules, edges


def circles(edges):
  """Strongly connected components with more than one module (Tarjan), sorted."""
  index, low, on_stack, stack, result = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w, _, _ in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        result.append(sorted(component))

  sys.setrecursionlimit(10000)
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return sorted(result)


def layers(edges):
  """Returns {module: layer index}; None for the package's own __init__."""
  layer = {}

  def of(module, seen=()):
    if module in layer:
      return layer[module]
    parts = module.split(".")
    if len(parts) == 1:
      result = None
    elif parts[1] in _LAYER_OF:
      result = _LAYER_OF[parts[1]]
    elif module in seen:
      result = None
    else:  # a loose top-level module: as high as its highest import
      below = [of(dst, seen + (module,)) for dst, _, _ in edges.get(module, ())]
      below = [b for b in below if b is not None]
      result = max(below, default=0)
    layer[module] = result
    return result

  for module in edges:
    of(module)
  return layer


def upward_imports(edges):
  """Yields (src, dst, line) for every import of a module in a higher layer."""
  layer = layers(edges)
  for src in sorted(edges):
    for dst, line, _ in edges[src]:
      if layer[src] is not None and layer[dst] is not None and layer[dst] > layer[src]:
        yield src, dst, line


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE))
  parser.add_argument("--verbose", action="store_true",
                      help="also list every import made inside a function")
  args = parser.parse_args(argv)

  modules, edges = build_graph(args.root)
  layer = layers(edges)
  n_edges = sum(len(v) for v in edges.values())
  local = [(src, dst, line) for src in sorted(edges) for dst, line, inside in edges[src] if inside]

  found = circles(edges)
  print(f"{len(modules)} modules, {n_edges} imports between them")
  print(f"import circles: {len(found)}")
  for component in found:
    print("  " + " <-> ".join(component))
  up = list(upward_imports(edges))
  print(f"upward imports: {len(up)}")
  for src, dst, line in up:
    print(f"  {src}:{line} (layer {layer[src]}) -> {dst} (layer {layer[dst]})")
  print(f"imports inside functions: {len(local)}")
  if args.verbose:
    for src, dst, line in local:
      print(f"  {src}:{line} -> {dst}")


if __name__ == "__main__":
  main()
