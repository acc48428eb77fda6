from keras_muse.models.muse.muse_backbone import MuseBackbone
