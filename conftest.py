import os

# Tests run on JAX unless told otherwise; a machine's ~/.keras/keras.json may
# say "tensorflow", so set the backend before Keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
