from keras_muse.models.text import MuseTextEncoder
from keras_muse.models.text import MuseTextPreprocessor
from keras_muse.models.muse import MuseBackbone
from keras_muse.models.muse import MuseTextToImage
from keras_muse.models.vqgan import VQGAN
from keras_muse.models.vqgan import VQGANDecoder
from keras_muse.models.vqgan import VQGANDiscriminator
from keras_muse.models.vqgan import VQGANEncoder
