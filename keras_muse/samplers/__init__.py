"""Samplers: iterative parallel decoding and classifier-free guidance."""

from keras_muse.samplers.guidance import GUIDANCE_SCHEDULES
from keras_muse.samplers.guidance import guidance_weight
from keras_muse.samplers.guidance import guide_logits
from keras_muse.samplers.parallel_decoding import filter_logits
from keras_muse.samplers.parallel_decoding import keep_masked_counts
from keras_muse.samplers.parallel_decoding import parallel_decode
from keras_muse.samplers.mask_free_editing import resample_random_tokens
from keras_muse.samplers.parallel_decoding import sample_tokens
