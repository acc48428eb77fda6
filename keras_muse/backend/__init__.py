"""Backend shims: the few things `keras.ops` cannot express.

Keras 3 has no backend-agnostic gradient API, and a GAN needs two gradient
computations (and gradients with respect to inputs, for R1) in one train step.
Everything backend-specific lives in `train_step.py`; models call
`run_train_step`, `variable_grads` and `input_grads` and stay backend-free.
"""

from keras_muse.backend.train_step import input_grads
from keras_muse.backend.train_step import run_test_step
from keras_muse.backend.train_step import run_train_step
from keras_muse.backend.train_step import variable_grads
from keras_muse.backend.compile import compile_function
from keras_muse.backend.compile import enable_compilation_cache
from keras_muse.backend.deferred_init import load_with_deferred_init
