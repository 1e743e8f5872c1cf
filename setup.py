"""FashionBERT-TF: install with `pip install -e ".[test]"` (see README.md)."""

import setuptools

# One TensorFlow family, pinned together: TensorFlow, tf-keras, TF Text and Model Garden 2.20.
INSTALL_REQUIRES = [
    "tensorflow~=2.20.0",
    "tf-keras~=2.20.0",
    "tensorflow-text~=2.20.0",
    "tf-models-official~=2.20.0",
    "tensorflow-hub",
    "tensorflow-datasets",
    "numpy",
    "pillow",
    "matplotlib",
    "absl-py",
    "h5py",
    "safetensors",
    "pyyaml",
    # tensorflow_hub 0.16 imports `pkg_resources` (`from pkg_resources import parse_version`),
    # which setuptools 82 dropped, and a Python 3.12 venv starts without setuptools. The bound
    # makes the resolver install setuptools 81.x, also when another requirement asks for a newer
    # one (torch 2.13 in the "bench" extra asks for setuptools >= 77.0.3 and would get the newest).
    # A later bare `pip install -U setuptools` is not held back: pip then warns that
    # fashionbert-tf requires setuptools<82, and re-installing this package puts 81.x back.
    "setuptools<82",
]

setuptools.setup(
    name="fashionbert-tf",
    version="0.1.0",
    description="FashionBERT (Gao et al., SIGIR 2020) in TensorFlow 2 / Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["fashionbert_tf", "fashionbert_tf.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # scikit-image: its bundled sample photos for the ImageNet check of the EfficientNet-Lite0
        # backbone (tests/test_backbone_efficientnet_lite.py). pytest-xdist: the README's test
        # command runs the suite in two processes, one test file each at a time (`-n 2 --dist
        # loadfile`, so a file's module fixtures are built once).
        "test": ["pytest", "pytest-xdist", "scann~=1.4.2", "scikit-image"],
        # ScaNN: the nearest-neighbour index of the two-stage search (fashionbert_tf/product_search/ann_index.py).
        # 1.4.x is the line built against TensorFlow 2.20 / numpy 2.x (Linux x86_64 / aarch64 wheels).
        "search": ["scann~=1.4.2"],
        # Building the fashion_gen TFDS dataset with Apache Beam (`tfds build ...
        # --beam_pipeline_options=...`); mlcroissant because tensorflow-datasets' `tfds` command
        # imports it. Not in "test": apache-beam pins protobuf < 7 and pillow < 13 (it resolves
        # beside TensorFlow 2.20 but downgrades both); the Beam build is tested in a venv of its
        # own (tests/beam, run by .ci/run after the main suite).
        "beam": ["apache-beam", "mlcroissant"],
        # The PyTorch peer of tools/benchmark_inference.py (Hugging Face BertModel, CPU).
        "bench": ["torch==2.13.0", "transformers"],
    },
    entry_points={
        "console_scripts": [
            "fashionbert=fashionbert_tf.cli.main:main",
        ],
    },
)
