from keras_muse.layers.resnet_block import ResnetBlock
from keras_muse.layers.vector_quantizer import VectorQuantizer
