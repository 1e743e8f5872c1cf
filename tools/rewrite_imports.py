"""Rewrites imports and module paths of moved `fashionbert_tf` modules in Python files.

For each moved module (`MOVES`: old dotted path -> new dotted path) it rewrites, in every file given:
  `from fashionbert_tf.a import b [as c]`  -> `from fashionbert_tf.x import y [as c]`, and without
      an alias renames the module's uses in the file (`b.f(...)` -> `y.f(...)`);
  `from fashionbert_tf.a.b import Name`    -> `from fashionbert_tf.x.y import Name`;
  dotted (`fashionbert_tf.a.b`) and file (`fashionbert_tf/a/b.py`, `a/b.py`) mentions in strings,
      comments and docstrings.
Files are rewritten in place; the tool prints the files it changed.

Usage:
  python tools/rewrite_imports.py fashionbert_tf tools            # imports, uses and mentions
  python tools/rewrite_imports.py --keep_names tests some/file.py  # import lines only, old names
"""

import os
import re
import sys

PACKAGE = "fashionbert_tf"

MOVES = {
    # The configs: dataclasses only, the ground floor.
    "experiment_config": "configs.experiment",
    "data.config": "configs.data",
    "modeling.config": "configs.model",
    "training.config": "configs.train",
    "evaluation.config": "configs.evaluation",
    "search.config": "configs.search",
    "search.retrieval_config": "configs.product_search",
    # Helpers shared across layers.
    "tensorboard_images": "utils.tensorboard_images",
    "modeling.untracked": "utils.untracked",
    "default_assets": "utils.default_assets",
    # Data sources and the toy generators.
    "data.fashiongen_hdf5": "data.sources.fashion_gen_hdf5",
    "data.fashion_gen_builder": "data.sources.fashion_gen_tfds_builder",
    "data.tfds_source": "data.sources.fashion_gen_tfds",
    "data.toy_fashiongen": "data.toy.fashion_gen",
    "data.toy_attribute_swaps": "data.toy.attribute_swaps",
    "data.toy_search_logs": "data.toy.search_log_generator",
    # One meaning per name.
    "evaluation.retrieval": "evaluation.rank_at_k",
    "evaluation.restore": "evaluation.pretraining_run",
    "search.restore": "search.search_model_builder",
    "search.model_builder": "search.search_model_builder",
    "search.scoring": "search.click_scoring",
    "search.evaluate": "search.click_evaluation",
    "search.model": "search.click_model",
    # Two-stage product search, apart from the click model.
    "search.retrieval_setup": "product_search.search_setup",
    "search.retrieval_finetuned": "product_search.finetuned_parts",
    "search.two_stage": "product_search.two_stage",
    "search.vectorizers": "product_search.vectorizers",
    "search.ann_index": "product_search.ann_index",
    "search.ranking_metrics": "product_search.ranking_metrics",
    "search.result_strip": "product_search.result_strip",
}

# The name a module is used under when imported without an alias, where its base name would
# read ambiguously in the importing file.
IMPORT_AS = {
    "configs.experiment": "experiment_config",
    "configs.data": "data_config_lib",
    "configs.model": "model_config_lib",
    "configs.train": "train_config_lib",
    "configs.evaluation": "eval_config_lib",
    "configs.search": "search_config",
    "configs.product_search": "product_search_config",
}

_FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<module>fashionbert_tf(?:\.\w+)*) import (?P<names>[^\n(#]+?)"
    r"(?P<tail>[ \t]*(#[^\n]*)?)$", re.M)


def _full(path):
  return f"{PACKAGE}.{path}" if path else PACKAGE


def _split(dotted):
  parent, _, name = dotted.rpartition(".")
  return parent, name


def _rename_uses(text, old, new):
  """`old.` -> `new.` where `old` is a name of its own (not an attribute, not part of a word)."""
  return re.sub(rf"(?<![\w./]){re.escape(old)}\.(?!py\b)", f"{new}.", text)


def rewrite(text, moves=None, keep_names=False):
  """The rewritten `text` of a Python file.

  Args:
    text: the file's text.
    moves: old -> new dotted paths below the package; default `MOVES`.
    keep_names: import a moved module under its old name (`from x import y as b`) and leave the
      rest of the file as it is (for files other work changes at the same time: no merge conflict
      outside the import lines).
  """
  moves = {_full(k): _full(v) for k, v in (moves or MOVES).items()}
  renames = []

  def replace(match):
    indent, module, names, tail = match.group("indent", "module", "names", "tail")
    if module in moves:  # from fashionbert_tf.a.b import Name
      return f"{indent}from {moves[module]} import {names}{tail}"
    parts = [p.strip() for p in names.split(",")]
    lines = []
    kept = []
    for part in parts:
      name, _, alias = (p.strip() for p in part.partition(" as "))
      old = f"{module}.{name}"
      if old not in moves:
        kept.append(part)
        continue
      new_parent, new_name = _split(moves[old])
      short = moves[old][len(PACKAGE) + 1:]
      used_as = alias or (name if keep_names else IMPORT_AS.get(short, new_name))
      if not alias and used_as != name:
        renames.append((name, used_as))
      as_clause = f" as {used_as}" if used_as != new_name else ""
      lines.append(f"{indent}from {new_parent} import {new_name}{as_clause}")
    if kept:
      lines.insert(0, f"{indent}from {module} import {', '.join(kept)}")
    lines[0] += tail
    return "\n".join(lines)

  text = _FROM_IMPORT.sub(replace, text)
  for old, new in renames:
    text = _rename_uses(text, old, new)
  # Mentions in strings, comments and docstrings.
  for old, new in sorted(moves.items(), key=lambda item: -len(item[0])):
    text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w])", new, text)
    old_file, new_file = old.replace(".", "/") + ".py", new.replace(".", "/") + ".py"
    text = text.replace(old_file, new_file)
    short_old, short_new = old_file[len(PACKAGE) + 1:], new_file[len(PACKAGE) + 1:]
    if "/" in short_old:
      text = re.sub(rf"(?<![\w/]){re.escape(short_old)}", short_new, text)
  return text


def python_files(paths):
  for path in paths:
    if os.path.isfile(path):
      yield path
      continue
    for dirpath, dirnames, filenames in os.walk(path):
      dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".venv", ".git")]
      for filename in filenames:
        if filename.endswith((".py", ".md", ".yaml")):
          yield os.path.join(dirpath, filename)


def main(argv):
  keep_names = "--keep_names" in argv
  paths = [a for a in argv[1:] if a != "--keep_names"]
  for path in python_files(paths or [PACKAGE, "tools", "tests"]):
    with open(path, encoding="utf-8") as f:
      text = f.read()
    if not path.endswith(".py"):
      new = rewrite_mentions(text)
    elif keep_names:
      new = rewrite_imports_only(text)
    else:
      new = rewrite(text)
    if new != text:
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
      print(path)


def rewrite_imports_only(text):
  """`rewrite` with `keep_names`, and only on import lines."""
  lines = text.split("\n")
  out = []
  for line in lines:
    if _FROM_IMPORT.match(line):
      line = rewrite(line, keep_names=True)
    out.append(line)
  return "\n".join(out)


def rewrite_mentions(text):
  """Only the dotted and file mentions (for Markdown and YAML)."""
  moves = {_full(k): _full(v) for k, v in MOVES.items()}
  for old, new in sorted(moves.items(), key=lambda item: -len(item[0])):
    text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w])", new, text)
    text = text.replace(old.replace(".", "/") + ".py", new.replace(".", "/") + ".py")
  return text


if __name__ == "__main__":
  main(sys.argv)
