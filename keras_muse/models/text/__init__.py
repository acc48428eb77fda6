"""The text side of Muse (paper §2.1): T5 tokenization and the frozen encoder."""

from keras_muse.models.text import sentencepiece_utils
from keras_muse.models.text.t5_text_encoder import MuseTextEncoder
from keras_muse.models.text.text_embedding_cache import StaleTextEmbeddingCacheError
from keras_muse.models.text.text_embedding_cache import TextEmbeddingCache
from keras_muse.models.text.text_preprocessor import UNCONDITIONAL_PROMPT
from keras_muse.models.text.text_preprocessor import MuseTextPreprocessor
from keras_muse.models.text.text_preprocessor import PromptTruncationWarning
from keras_muse.models.text.text_presets import MUSE_TEXT_ENCODER_PRESETS
from keras_muse.models.text.text_presets import PresetDownloadError
