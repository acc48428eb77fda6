"""Evaluation: FID, CLIP score, and text alignment for the shapes domain.

```python
from keras_muse import metrics

metrics.fid.frechet_distance(stats1, stats2)
metrics.alignment.score_alignment(images, prompts)   # the shapes judge
judge = metrics.ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")
```
"""

from keras_muse.metrics import alignment
from keras_muse.metrics import attribute_classifier
from keras_muse.metrics import clip_score
from keras_muse.metrics import fid
from keras_muse.metrics.alignment import classifier_fid
from keras_muse.metrics.alignment import parse_prompt
from keras_muse.metrics.alignment import score_alignment
from keras_muse.metrics.attribute_classifier import ShapesAttributeClassifier
from keras_muse.metrics.clip_score import CLIPScore
from keras_muse.metrics.fid import FeatureStatistics
from keras_muse.metrics.fid import WeightsUnavailableError
from keras_muse.metrics.fid import compute_statistics
from keras_muse.metrics.fid import frechet_distance
from keras_muse.metrics.fid import inception_feature_model
