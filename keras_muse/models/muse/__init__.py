from keras_muse.models.muse.muse_backbone import MuseBackbone
from keras_muse.models.muse.muse_text_to_image import MuseTextToImage
