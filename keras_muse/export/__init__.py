"""Export for serving: `export_saved_model` writes a TF Serving SavedModel."""

from keras_muse.export.saved_model import export_saved_model
