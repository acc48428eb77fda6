"""Multi-device training for the Muse models with `keras.distribution`.

`layout_maps`: which weight is split on which mesh axis (the static
`get_layout_map` of every backbone delegates here); `mesh`: one-call
`data_parallel` / `model_parallel` distributions.

Example:
```python
import keras
from keras_muse.distribution import model_parallel
from keras_muse.models import MuseTextToImage

keras.distribution.set_distribution(model_parallel(MuseTextToImage, mesh_shape=(2, 4)))
task = MuseTextToImage.from_preset("./my_muse")   # create after setting it
```
"""

from keras_muse.distribution.layout_maps import check_layout_map
from keras_muse.distribution.layout_maps import check_variable_layout
from keras_muse.distribution.layout_maps import muse_backbone_layout_map
from keras_muse.distribution.layout_maps import muse_super_res_layout_map
from keras_muse.distribution.layout_maps import task_layout_map
from keras_muse.distribution.layout_maps import text_encoder_layout_map
from keras_muse.distribution.layout_maps import vqgan_layout_map
from keras_muse.distribution.mesh import CheckedModelParallel
from keras_muse.distribution.mesh import data_parallel
from keras_muse.distribution.mesh import get_layout_map
from keras_muse.distribution.mesh import model_parallel
