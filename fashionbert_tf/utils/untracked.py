"""`Untracked`: holds an object without making it a tf.Module / SavedModel dependency.

A tf.Module walks its attributes for `variables` and for what a SavedModel saves; an attribute
holding a Keras model would bring every layer's variables and Keras functions along. Wrapped in
`Untracked` it is neither walked nor saved (used by the serving modules and the fused inference
graph, which track only the variables they read).
"""


class Untracked:
  """`Untracked(value).value` is `value`; tf.Module does not look inside."""

  def __init__(self, value):
    self.value = value
