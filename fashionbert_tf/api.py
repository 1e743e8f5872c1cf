"""`Matcher`: FashionBERT's match probability (paper 3.1) for (text, image) pairs from Python.

  from fashionbert_tf import Matcher
  matcher = Matcher.load("runs/toy")                     # a training run, or an export
  matcher.score(["red wool dress"], ["dress.jpg"])       # float32 [1], P(match)
  matcher.rank_images("red wool dress", ["a.jpg", "b.png", "c.webp"], top_k=2)
  matcher.rank_texts("dress.jpg", ["red wool dress", "black cotton shirt"])

What `Matcher.load(path)` accepts:
  - a training run directory (`fashionbert pretrain`: params.yaml + ckpt-N; or a checkpoint prefix
    `<run>/ckpt-N`): the model is rebuilt from the run's params.yaml and restored by
    `evaluate.build_scorer`, the code `fashionbert evaluate` scores with; precision "float32"
    (default) is the float32 inference copy, "bfloat16" the fused bfloat16 graph
    (`modeling/inference_precision.py`, `modeling/fused_inference.py`);
  - an exported SavedModel (`fashionbert export`): a version folder `<export_dir>/<version>/`, or
    `<export_dir>` itself (its highest integer version is taken); scored through the export's
    `score_features` signature and `compute_patch_features` function, in the precision it was
    exported with.

The model sees what evaluation and prepare-data give it: texts are tokenized by
`tokenization.text_to_model_inputs` (the run's vocabulary, or the export's `assets/` copy;
whole-word truncation at `data.max_text_length`), and images (file paths, encoded bytes, PIL images
or uint8 arrays of any size) go through `image_loading.load_image` with the run's
`data.image_resize` policy.

Work per call, as `pair_scoring.score_pairs` does it for evaluation: each distinct text is tokenized
once; each distinct image (the same path, or the same object) is loaded and run through the patch
backbone once, `images_per_step` images at a time (the next step's images load in threads while the
current step scores); the pairs of a step are sorted by text length and scored `batch_size` at a
time, each batch padded only to its own longest text (variable sequence length, paper 3.4). So
`rank_texts` of one image against 100 texts runs the backbone once. `last_stats` holds the counts
and pairs/s of the latest call.
"""

import concurrent.futures
import os

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from fashionbert_tf.configs import experiment as experiment_config
from fashionbert_tf.data import contract
from fashionbert_tf.data import image_loading
from fashionbert_tf.data import tokenization
from fashionbert_tf.evaluation import evaluate
from fashionbert_tf.evaluation import pair_scoring
from fashionbert_tf.evaluation import pretraining_run
from fashionbert_tf.evaluation import scoring
from fashionbert_tf.modeling import inference_precision
from fashionbert_tf.serving import export
from fashionbert_tf.utils import inference_settings
from fashionbert_tf.utils import progress as progress_lib

SAVED_MODEL_FILE = "saved_model.pb"
_IMAGE_TYPES = (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)
_IMAGE_TYPE_NAMES = "a file path, encoded image bytes, a PIL image or a uint8 array"
_LOAD_THREADS = 4
# Calls with at least this many distinct pairs log progress lines (every 10 s and at the end).
_PROGRESS_MIN_PAIRS = 5000


def _is_single_image(value):
  if isinstance(value, np.ndarray):
    return value.ndim in (2, 3)
  return isinstance(value, _IMAGE_TYPES)


def _latest_version(export_dir):
  """The highest integer `<export_dir>/<version>/` holding a saved_model.pb, or None."""
  versions = [int(name) for name in tf.io.gfile.listdir(export_dir)
              if name.strip("/").isdigit()
              and tf.io.gfile.exists(os.path.join(export_dir, name.strip("/"), SAVED_MODEL_FILE))]
  return os.path.join(export_dir, str(max(versions))) if versions else None


def resolve_model_path(path):
  """What `path` is: ("run", run dir, checkpoint or None) or ("saved_model", version dir, None).

  Raises:
    FileNotFoundError: one line naming `path` and what was looked for there.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"Matcher.load: path must be a str or os.PathLike, got {type(path).__name__}")
  path = os.fspath(path)
  if not tf.io.gfile.isdir(path):
    run_dir = os.path.dirname(path) or "."
    if (tf.io.gfile.exists(path + ".index")
        and tf.io.gfile.exists(os.path.join(run_dir, pretraining_run.PARAMS_FILE))):
      return "run", run_dir, path   # a checkpoint prefix <run>/ckpt-N
    raise FileNotFoundError(
        f"{path}: no such directory; expected a training run directory (params.yaml + ckpt-N), a "
        f"checkpoint prefix <run>/ckpt-N, or a SavedModel export (<export_dir>[/<version>]/"
        f"{SAVED_MODEL_FILE})")
  if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
    return "saved_model", path, None
  if tf.io.gfile.exists(os.path.join(path, pretraining_run.PARAMS_FILE)):
    return "run", path, None
  version = _latest_version(path)
  if version:
    return "saved_model", version, None
  raise FileNotFoundError(
      f"{path} is neither a training run (no {pretraining_run.PARAMS_FILE}) nor a SavedModel export (no "
      f"{SAVED_MODEL_FILE}, no <version>/{SAVED_MODEL_FILE})")


def _export_data_config(version_dir):
  """The data config of an export: its copy of the run's params.yaml, else the defaults."""
  params = os.path.join(version_dir, export.PARAMS_COPY)
  if tf.io.gfile.exists(params):
    try:
      return experiment_config.load_config(params).data
    except (KeyError, ValueError) as e:
      logging.warning("%s not readable (%s): default tokenizer settings and image policy",
                      params, e)
  return experiment_config.load_config(None).data


def _export_vocab_file(version_dir, data_config):
  """The WordPiece vocabulary the export saved as an asset (`assets/<name of data.vocab_file>`)."""
  assets = os.path.join(version_dir, "assets")
  names = sorted(tf.io.gfile.listdir(assets)) if tf.io.gfile.isdir(assets) else []
  wanted = os.path.basename(data_config.vocab_file or "vocab.txt")
  if wanted in names:
    return os.path.join(assets, wanted)
  if len(names) == 1:
    return os.path.join(assets, names[0])
  raise FileNotFoundError(f"{version_dir}: no WordPiece vocabulary in assets/ (found {names})")


class Matcher:
  """Scores (text, image) pairs with a trained FashionBERT; see the module docstring.

  Attributes:
    path: the run directory or SavedModel version folder loaded.
    kind: "run" or "saved_model".
    precision: "float32" or "bfloat16".
    image_resize: the `image_loading` policy images are brought to 256 x 256 by.
    feature_dim: D, the size of a patch feature.
    source: what was loaded (checkpoint path and step, or export settings).
    last_stats: dict of the latest call: pairs, distinct_pairs, texts, images (backbone inputs),
      seconds, pairs_per_second (distinct pairs per second, as evaluation counts them).
  """

  def __init__(self, scorer, tokenizer, *, path, kind, precision, image_resize, source,
               max_text_length=contract.MAX_TEXT_LENGTH, batch_size=128, images_per_step=64):
    """Args:
      scorer: a `scoring.PairScorer` (patch_features + match_probability).
      tokenizer: a `tokenization.FashionBertTokenizer`.
      path, kind, precision, source: see the class attributes.
      image_resize: "pad" | "crop" | "stretch".
      max_text_length: T limit including [CLS] and [SEP].
      batch_size: pairs per model call.
      images_per_step: images whose patch features are computed (and held) at once.
    """
    self._scorer = scorer
    self._tokenizer = tokenizer
    self.path, self.kind, self.precision, self.source = path, kind, precision, source
    self.image_resize = image_loading.check_resize_policy(image_resize)
    self.max_text_length = int(max_text_length)
    self.batch_size = int(batch_size)
    self.images_per_step = int(images_per_step)
    if self.batch_size < 1 or self.images_per_step < 1:
      raise ValueError(f"batch_size ({batch_size}) and images_per_step ({images_per_step}) must "
                       "be positive")
    self.feature_dim = int(scorer.feature_dim)
    self.last_stats = {}
    self._pool = None

  # ---- loading -----------------------------------------------------------------------------------

  @classmethod
  def load(cls, path, precision=None, *, checkpoint=None, image_resize=None, batch_size=None,
           images_per_step=None):
    """A Matcher over a training run or an exported SavedModel.

    Args:
      path: a run directory (params.yaml + ckpt-N), a checkpoint prefix `<run>/ckpt-N`, a SavedModel
        version folder, or an export folder with integer versions (the highest is taken).
      precision: "float32" or "bfloat16" ("mixed_bfloat16" too). A run: default float32; bfloat16
        scores with the fused graph `fashionbert evaluate --precision bfloat16` uses. An export:
        default (and the only value accepted) the precision it was exported with.
      checkpoint: a run's checkpoint prefix or folder; None = the latest in the run.
      image_resize: "pad" | "crop" | "stretch"; None = the run's `data.image_resize`.
      batch_size, images_per_step: None = the run's `eval.batch_size` / `eval.images_per_step`.

    Raises:
      FileNotFoundError: `path` is neither a run nor an export, or holds no checkpoint.
      ValueError: an unknown precision, or one the export was not made with.
    """
    if image_resize is not None:
      image_loading.check_resize_policy(image_resize)
    kind, model_path, path_checkpoint = resolve_model_path(path)
    checkpoint = checkpoint or path_checkpoint
    if precision is not None:
      precision = inference_precision.check_precision(precision, "precision")
    if kind == "run":
      config = experiment_config.load_config(os.path.join(model_path, pretraining_run.PARAMS_FILE))
      config.override({"train": {"model_dir": model_path},
                       "eval": {"mixed_precision": precision or "float32"}}, is_strict=True)
      scorer, source, _ = evaluate.build_scorer(config, checkpoint)
      precision = source["precision"]
      data_config, eval_config = config.data, config.eval
      tokenizer = tokenization.build_tokenizer(data_config)
    else:
      if checkpoint:
        raise ValueError(f"checkpoint={checkpoint!r} applies to a training run; {model_path} is "
                         "a SavedModel")
      settings = inference_settings.read_inference_settings(model_path)
      exported = inference_precision.check_precision(settings.get("precision", "float32"))
      if precision not in (None, exported):
        raise ValueError(f"precision={precision!r}: the SavedModel {model_path} was exported in "
                         f"{exported}; export again with --precision={precision}, or load the run")
      precision = exported
      scorer = scoring.SavedModelPairScorer(model_path)
      source = dict(settings, saved_model=model_path)
      data_config = _export_data_config(model_path)
      eval_config = experiment_config.load_config(None).eval
      tokenizer = tokenization.FashionBertTokenizer(
          _export_vocab_file(model_path, data_config), data_config.lower_case)
    matcher = cls(scorer, tokenizer, path=model_path, kind=kind, precision=precision,
                  image_resize=image_resize or data_config.image_resize, source=source,
                  max_text_length=data_config.max_text_length,
                  batch_size=batch_size or eval_config.batch_size,
                  images_per_step=images_per_step or eval_config.images_per_step)
    logging.info("Matcher: %s %s, %s, images by %r", kind, model_path, precision,
                 matcher.image_resize)
    return matcher

  @property
  def scorer(self):
    """The `scoring.PairScorer` behind it (`KerasPairScorer` or `SavedModelPairScorer`)."""
    return self._scorer

  def __repr__(self):
    return (f"Matcher({self.kind}={self.path!r}, precision={self.precision!r}, "
            f"image_resize={self.image_resize!r})")

  # ---- the public calls --------------------------------------------------------------------------

  def score(self, texts, images):
    """P(match) of each pair (texts[i], images[i]).

    Args:
      texts: a list (or tuple / array) of N non-empty strings, or one string.
      images: N images (a list of file paths, encoded bytes, PIL images or uint8 arrays of any
        size, or a uint8 array [N, H, W, 3]), or one image.

    Returns:
      float32 array [N] (N = 1 for one text and one image).

    Raises:
      TypeError: an argument or item of the wrong type (the message names it).
      ValueError: different numbers of texts and images, or an empty text.
      image_loading.ImageLoadError: an image that cannot be read (named, with its position).
    """
    texts, single_text = self._texts(texts, "texts", "score")
    images, single_image = self._images(images, "images", "score")
    if len(texts) != len(images):
      raise ValueError(f"score: {self._count(texts, single_text, 'text')} but "
                       f"{self._count(images, single_image, 'image')}; pass lists of the same "
                       "length (rank_images / rank_texts score one against many)")
    text_list, text_index = _distinct(texts, lambda text: text)
    image_list, image_index = _distinct(images, _image_key)
    return self._score(text_list, text_index, image_list, image_index, "score", "texts", "images")

  def rank_images(self, text, images, top_k=None):
    """The images best matching `text`, best first.

    Args:
      text: one non-empty string.
      images: a list of images (as in `score`) or a uint8 array [N, H, W, 3].
      top_k: how many to return; None = all.

    Returns:
      (indices int64 [k] into `images`, P(match) float32 [k]); ties keep the input order.
    """
    (text,), _ = self._texts(text, "text", "rank_images", single=True)
    images, _ = self._images(images, "images", "rank_images", single=False)
    image_list, image_index = _distinct(images, _image_key)
    scores = self._score([text], np.zeros(len(images), np.int64), image_list, image_index,
                         "rank_images", "text", "images")
    return _top(scores, top_k, "rank_images")

  def rank_texts(self, image, texts, top_k=None):
    """The texts best matching `image`, best first; the image's patch features are computed once.

    Args:
      image: one image (as in `score`).
      texts: a list of non-empty strings.
      top_k: how many to return; None = all.

    Returns:
      (indices int64 [k] into `texts`, P(match) float32 [k]); ties keep the input order.
    """
    (image,), _ = self._images(image, "image", "rank_texts", single=True)
    texts, _ = self._texts(texts, "texts", "rank_texts", single=False)
    text_list, text_index = _distinct(texts, lambda text: text)
    scores = self._score(text_list, text_index, [image], np.zeros(len(texts), np.int64),
                         "rank_texts", "texts", "image")
    return _top(scores, top_k, "rank_texts")

  def patch_features(self, images):
    """The backbone's patch features (paper 2.2) of images: float32 [N, 64, D] numpy.

    Args:
      images: as in `score` (one image gives N = 1).
    """
    images, _ = self._images(images, "images", "patch_features")
    features = []
    for start in range(0, len(images), self.images_per_step):
      chunk = images[start:start + self.images_per_step]
      names = [f"images[{start + i}]" for i in range(len(chunk))]
      pixels = np.stack([f.result() for f in self._submit(chunk, names, "patch_features")])
      features.append(self._scorer.patch_features(pixels).numpy())
    if not features:
      return np.zeros([0, contract.NUM_PATCHES, self.feature_dim], np.float32)
    return np.concatenate(features)

  # ---- argument checks ---------------------------------------------------------------------------

  @staticmethod
  def _count(items, single, noun):
    return f"one {noun}" if single else f"{len(items)} {noun}s"

  @staticmethod
  def _texts(texts, name, method, single=None):
    """(list of str, whether one string was given); checks types and emptiness."""
    if isinstance(texts, str):
      if single is False:
        raise TypeError(f"{method}: {name} must be a list of strings, got one string")
      items, is_single = [texts], True
    else:
      if single is True:
        raise TypeError(f"{method}: {name} must be a string, got {type(texts).__name__}")
      if not isinstance(texts, (list, tuple, np.ndarray)):
        raise TypeError(f"{method}: {name} must be a string or a list of strings, got "
                        f"{type(texts).__name__}")
      items, is_single = list(texts), False
    for i, text in enumerate(items):
      where = name if is_single else f"{name}[{i}]"
      if not isinstance(text, str):
        raise TypeError(f"{method}: {where} must be a string, got {type(text).__name__}")
      if not text.strip():
        raise ValueError(f"{method}: {where} is empty or whitespace only; FashionBERT matches a "
                         "product description against an image")
    return [str(text) for text in items], is_single

  @staticmethod
  def _images(images, name, method, single=None):
    """(list of images, whether one image was given); checks types and that files exist."""
    if _is_single_image(images):
      if single is False:
        raise TypeError(f"{method}: {name} must be a list of images, got one "
                        f"{type(images).__name__}")
      items, is_single = [images], True
    elif single is True:
      raise TypeError(f"{method}: {name} must be one image ({_IMAGE_TYPE_NAMES}), got "
                      f"{_type_name(images)}")
    elif isinstance(images, np.ndarray) and images.ndim == 4:
      items, is_single = list(images), False
    elif isinstance(images, (list, tuple)):
      items, is_single = list(images), False
    else:
      raise TypeError(f"{method}: {name} must be an image or a list of images "
                      f"({_IMAGE_TYPE_NAMES}), got {_type_name(images)}")
    for i, image in enumerate(items):
      where = name if is_single else f"{name}[{i}]"
      if not isinstance(image, _IMAGE_TYPES):
        raise TypeError(f"{method}: {where} must be {_IMAGE_TYPE_NAMES}, got "
                        f"{_type_name(image)}")
      if isinstance(image, (str, os.PathLike)) and not os.path.isfile(image):
        raise image_loading.ImageLoadError(
            f"{method}: {where}: image file not found: {os.fspath(image)}", "missing_file")
    return items, is_single

  # ---- the work ----------------------------------------------------------------------------------

  def _load(self, image, where, method):
    try:
      return image_loading.load_image(image, resize=self.image_resize)
    except image_loading.ImageLoadError as e:
      raise image_loading.ImageLoadError(f"{method}: {where}: {e}", e.reason) from e

  def _submit(self, images, names, method):
    """Futures of the images as model inputs (uint8 [256, 256, 3]), loaded in threads."""
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(_LOAD_THREADS,
                                                         thread_name_prefix="matcher_images")
    return [self._pool.submit(self._load, image, name, method)
            for image, name in zip(images, names)]

  def _score(self, texts, text_index, images, image_index, method, text_name, image_name):
    """P(match) [N] of the pairs (texts[text_index[n]], images[image_index[n]]).

    `texts` and `images` are distinct; every image is used by some pair.
    """
    num_pairs = len(text_index)
    if not num_pairs:
      self.last_stats = {"pairs": 0, "distinct_pairs": 0, "texts": 0, "images": 0,
                         "seconds": 0.0, "pairs_per_second": 0.0}
      return np.zeros([0], np.float32)
    token_ids = pair_scoring.tokenize_texts(self._tokenizer, texts, self.max_text_length)
    tokens = [token_ids[text] for text in texts]
    lengths = np.array([len(row) for row in tokens])
    pairs, inverse = np.unique(np.stack([text_index, image_index], axis=1), axis=0,
                               return_inverse=True)
    # Pairs grouped by image (np.unique sorted them by text first): one step = images [a, b).
    order = np.argsort(pairs[:, 1], kind="stable")
    step_bounds = np.searchsorted(pairs[order, 1],
                                  np.arange(0, len(images) + self.images_per_step,
                                            self.images_per_step))
    first_position = _first_positions(image_index, len(images))
    names = [image_name if image_name == "image" else f"{image_name}[{p}]"
             for p in first_position]
    scores = np.full([len(pairs)], np.nan, np.float32)
    progress = progress_lib.Progress(len(pairs), label=f"Matcher.{method}")
    logged = len(pairs) >= _PROGRESS_MIN_PAIRS   # long calls log progress (pairs/s, ETA)
    starts = list(range(0, len(images), self.images_per_step))
    pending = self._submit(images[:self.images_per_step], names[:self.images_per_step], method)
    for step, start in enumerate(starts):
      stop = start + self.images_per_step
      loading = pending
      if step + 1 < len(starts):   # the next step's images load while this step scores
        pending = self._submit(images[stop:stop + self.images_per_step],
                               names[stop:stop + self.images_per_step], method)
      pixels = np.stack([future.result() for future in loading])
      features = self._scorer.patch_features(pixels)
      step_pairs = order[step_bounds[step]:step_bounds[step + 1]]
      step_pairs = step_pairs[np.argsort(lengths[pairs[step_pairs, 0]], kind="stable")]
      for batch_start in range(0, len(step_pairs), self.batch_size):
        batch = step_pairs[batch_start:batch_start + self.batch_size]
        ids, mask, types = pair_scoring.pad_batch([tokens[t] for t in pairs[batch, 0]])
        scores[batch] = self._scorer.match_probability(
            ids, mask, types, tf.gather(features, pairs[batch, 1] - start))
        if logged:
          progress.update(len(batch))
    self.last_stats = {"pairs": int(num_pairs), "distinct_pairs": int(len(pairs)),
                       "texts": len(texts), "images": len(images),
                       "seconds": float(progress.seconds),
                       "pairs_per_second": float(len(pairs) / max(progress.seconds, 1e-9))}
    return scores[inverse.reshape(-1)]

  def close(self):
    """Stops the image-loading threads (also done when the Matcher is garbage collected)."""
    if self._pool is not None:
      self._pool.shutdown(wait=False)
      self._pool = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown)
      pass


def _type_name(value):
  if isinstance(value, np.ndarray):
    return f"a {value.ndim}-d {value.dtype} array"
  return type(value).__name__


def _image_key(image):
  """Images that are the same input: the same file path, the same bytes, or the same object."""
  if isinstance(image, (str, os.PathLike)):
    return ("path", os.path.abspath(os.fspath(image)))
  if isinstance(image, (bytes, bytearray)):
    return ("bytes", bytes(image))
  return ("object", id(image))


def _distinct(items, key):
  """(distinct items in first-seen order, int64 [len(items)] index of each item among them)."""
  seen, distinct, index = {}, [], np.empty(len(items), np.int64)
  for i, item in enumerate(items):
    k = key(item)
    if k not in seen:
      seen[k] = len(distinct)
      distinct.append(item)
    index[i] = seen[k]
  return distinct, index


def _first_positions(index, count):
  """For each of `count` distinct items, the first position in `index` that uses it."""
  values, first = np.unique(index, return_index=True)
  positions = np.zeros(count, np.int64)
  positions[values] = first
  return positions


def _top(scores, top_k, method):
  """(indices, scores) of the `top_k` highest scores, best first (stable: ties in input order)."""
  if top_k is not None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
      raise TypeError(f"{method}: top_k must be an int or None, got {type(top_k).__name__}")
    if top_k < 1:
      raise ValueError(f"{method}: top_k must be at least 1, got {top_k}")
  order = np.argsort(-scores, kind="stable")[:top_k]
  return order.astype(np.int64), scores[order]
