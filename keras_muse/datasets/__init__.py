"""Datasets: the procedural captioned shapes (DESIGN §6) and image-text folders."""

from keras_muse.datasets import image_text_folder
from keras_muse.datasets import shapes
from keras_muse.datasets.image_text_folder import load_image_text_folder
from keras_muse.datasets.image_text_folder import scan_image_text_folder
