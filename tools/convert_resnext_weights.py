"""Converts torchvision / timm ResNeXt weights (.safetensors) into a tf_keras weights file.

  python tools/convert_resnext_weights.py --input resnext101_32x8d.safetensors \
      --output data/weights/resnext101_32x8d.weights.h5

The output loads faster than the state dict (no conversion at start-up) and is used with
`model.backbone=resnext101,model.backbone_weights=<output>`; the `.safetensors` file itself also works
as `model.backbone_weights`. The shape flags default to ResNeXt-101 (32x8d); pass the config's
`model.resnext_*` values for another ResNeXt. The state dict is read with safetensors' NumPy API
(no torch, no pickle); a missing, unexpected or mis-shaped key stops the conversion and is named.
Getting the file: e.g. torchvision's `resnext101_32x8d(weights="IMAGENET1K_V2").state_dict()` saved
with `safetensors.torch.save_file` on a machine that has torch, or timm's
`resnext101_32x8d.*` `model.safetensors` from its model hub.
"""

from absl import app
from absl import flags
from absl import logging

from fashionbert_tf.modeling.backbones import resnext
from fashionbert_tf.modeling.backbones import resnext_weights

INPUT = flags.DEFINE_string("input", None, "torchvision / timm ResNeXt .safetensors state dict.")
OUTPUT = flags.DEFINE_string("output", None, "tf_keras weights file to write (.weights.h5).")
BLOCKS_PER_STAGE = flags.DEFINE_list("blocks_per_stage", ["3", "4", "23", "3"],
                                     "Bottleneck blocks per stage (ResNeXt-101: 3,4,23,3).")
GROUPS = flags.DEFINE_integer("groups", 32, "Cardinality (32 for 32x8d).")
WIDTH_PER_GROUP = flags.DEFINE_integer("width_per_group", 8, "Channels per group (8 for 32x8d).")
BASE_WIDTH = flags.DEFINE_integer("base_width", 64, "Stem width (64 in torchvision).")

flags.mark_flags_as_required(["input", "output"])


def main(argv):
  del argv
  model = resnext.build_resnext(
      input_size=32, blocks_per_stage=[int(b) for b in BLOCKS_PER_STAGE.value],
      groups=GROUPS.value, width_per_group=WIDTH_PER_GROUP.value, base_width=BASE_WIDTH.value)
  resnext_weights.convert_to_keras_weights(INPUT.value, OUTPUT.value, model)
  logging.info("%d variables (%d values) from %s -> %s", len(model.weights),
               model.count_params(), INPUT.value, OUTPUT.value)
  print(f"wrote {OUTPUT.value}: ResNeXt {model.output_shape[-1]}-d features, "
        f"{model.count_params()} values")


if __name__ == "__main__":
  app.run(main)
