"""Samplers: iterative parallel decoding and classifier-free guidance."""

from keras_muse.samplers.guidance import GUIDANCE_SCHEDULES
from keras_muse.samplers.guidance import guidance_weight
from keras_muse.samplers.guidance import guide_logits
from keras_muse.samplers.parallel_decoding import filter_logits
from keras_muse.samplers.parallel_decoding import keep_masked_counts
from keras_muse.samplers.parallel_decoding import parallel_decode
