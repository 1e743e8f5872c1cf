"""The paper's input layout sizes (section 3.1), shared by the configs and the batch contract."""

# 512 positions = 448 text positions (special tokens included) + 64 patches (an 8x8 grid).
MAX_SEQUENCE_LENGTH = 512
GRID_SIZE = 8
NUM_PATCHES = GRID_SIZE * GRID_SIZE
MAX_TEXT_LENGTH = MAX_SEQUENCE_LENGTH - NUM_PATCHES
IMAGE_SIZE = 256
PAPER_FEATURE_DIM = 2048
