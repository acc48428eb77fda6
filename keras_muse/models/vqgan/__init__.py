from keras_muse.models.vqgan.vqgan import VQGAN
from keras_muse.models.vqgan.vqgan_decoder import VQGANDecoder
from keras_muse.models.vqgan.vqgan_discriminator import VQGANDiscriminator
from keras_muse.models.vqgan.vqgan_encoder import VQGANEncoder
