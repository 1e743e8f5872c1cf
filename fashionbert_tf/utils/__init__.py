"""Small helpers several layers share: progress logging, an export's inference settings,
TensorBoard images, the `Untracked` holder and the bundled default assets."""
