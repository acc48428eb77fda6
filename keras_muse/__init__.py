"""keras_muse: Muse text-to-image generation with masked generative transformers.

```python
import keras_muse
vqgan = keras_muse.models.VQGAN.from_preset("vqgan_tiny_f4", load_weights=False)
```
"""

from keras_muse import datasets
from keras_muse import distribution
from keras_muse import export
from keras_muse import layers
from keras_muse import metrics
from keras_muse import models
from keras_muse.version import __version__
