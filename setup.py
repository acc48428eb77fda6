"""keras-muse: Muse text-to-image generation with masked generative transformers, in Keras 3."""

import pathlib

from setuptools import find_packages
from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = {}
exec((HERE / "keras_muse" / "version.py").read_text(), VERSION)

# The ranges are the ones known to install and work together on Python 3.11
# (../shared/DESIGN.md §5): jax >= 0.11 needs Python >= 3.12 and its StableHLO
# is too new for TF 2.21 to load a dynamic-batch SavedModel, so jax stays < 0.11.
# `tensorflow` (not `tensorflow-cpu`): tensorflow-text depends on `tensorflow`.
INSTALL_REQUIRES = [
    "keras>=3.15.1,<3.16",
    "keras-hub>=0.32.0,<0.33",
    "jax[cpu]>=0.10.2,<0.11",
    "tensorflow>=2.21.0,<2.22",
    "tensorflow-text>=2.21.1,<2.22",
    "numpy>=1.26",
    "pillow>=10",
    "sentencepiece>=0.2",
]

EXTRAS = {
    # tf-keras-vis: guides/attention_maps.py, which CI runs.
    "dev": ["pytest>=8", "pytest-xdist>=3.8,<4", "grain>=0.2", "tf-keras-vis==0.8.7"],
    "vis": ["tf-keras-vis==0.8.7"],
}

setup(
    name="keras-muse",
    version=VERSION["__version__"],
    description="Muse (masked generative transformers for text-to-image) in Keras 3.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_muse", "keras_muse.*"]),
    package_data={"keras_muse": ["presets/**/*"]},
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["keras-muse=keras_muse.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "License :: OSI Approved :: Apache Software License",
    ],
)
