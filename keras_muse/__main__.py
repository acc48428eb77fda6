import os

# The CLI runs on JAX unless told otherwise (a ~/.keras/keras.json may say
# "tensorflow"); this must happen before Keras is imported.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_muse.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
