"""Training SentencePiece vocabularies that keras-hub's `T5Tokenizer` accepts.

The paper's text encoder uses T5's own 32k vocabulary. Small domains (the
captioned shapes, tests) instead train a tiny vocabulary on their captions, in
process, with the `sentencepiece` package. The vocabulary follows T5's
conventions so the same tokenizer, preprocessor and backbone code serve both:
`<pad>` = 0, `</s>` (end of sequence) = 1, `<unk>` = 2, no `<s>`.

Example:

```python
from keras_muse.datasets import shapes
from keras_muse.models.text import sentencepiece_utils

captions = shapes.make_arrays(2000)[1]
proto = sentencepiece_utils.train_sentencepiece(captions, vocab_size=64)
tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
tokenizer("a large red circle in the top left")
```
"""

import functools
import io
import re

import numpy as np

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
PAD_PIECE, EOS_PIECE, UNK_PIECE = "<pad>", "</s>", "<unk>"
MODEL_TYPES = ("unigram", "bpe", "word", "char")

# The vocabulary of the named "shapes" presets: fixed here so that a preset name
# always yields the same tokenizer (training is deterministic for fixed input).
SHAPES_VOCAB_SIZE = 128
SHAPES_MODEL_TYPE = "bpe"
SHAPES_NUM_CAPTIONS = 2000


def _check_texts(texts):
    if isinstance(texts, (str, bytes)):
        raise ValueError(
            "`texts` must be a sequence of strings, not a single string. "
            f"Received: {texts[:80]!r}"
        )
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(
            f"`texts` must be a sequence of strings. Received: {type(texts).__name__}"
        ) from None
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        elif isinstance(text, np.str_):
            text = str(text)
        if not isinstance(text, str):
            raise ValueError(
                f"`texts` must contain only strings. Received {type(text).__name__} "
                f"at index {i}: {text!r}"
            )
        out.append(text)
    if not any(t.strip() for t in out):
        raise ValueError(
            f"`texts` must contain at least one non-empty string. Received {len(out)} texts."
        )
    return out


def train_sentencepiece(texts, vocab_size, model_type="unigram", **options):
    """Trains a SentencePiece model with T5's special tokens; returns proto bytes.

    Args:
        texts: sequence of str, the training corpus (e.g. captions).
        vocab_size: int, exact number of pieces, special tokens included.
            SentencePiece cannot create more pieces than the corpus supports
            (a unigram model of the shapes captions stops near 66); a
            `ValueError` then tells the largest size it accepts.
        model_type: "unigram" (T5's), "bpe", "word" or "char".
        **options: extra `sentencepiece.SentencePieceTrainer` options, e.g.
            `normalization_rule_name="identity"` or `character_coverage=0.9995`.

    Returns:
        bytes, a serialized SentencePiece model: pass it as
        `keras_hub.models.T5Tokenizer(proto=...)`.
    """
    import sentencepiece as spm

    texts = _check_texts(texts)
    if model_type not in MODEL_TYPES:
        raise ValueError(f"`model_type` must be one of {MODEL_TYPES}. Received: {model_type!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 4:
        raise ValueError(
            "`vocab_size` must be an int >= 4 (3 special tokens and at least one "
            f"piece). Received: {vocab_size!r}"
        )
    reserved = {"bos_id", "pad_id", "eos_id", "unk_id", "pad_piece", "eos_piece", "unk_piece"}
    clash = sorted(reserved & set(options))
    if clash:
        raise ValueError(
            f"`options` may not override T5's special tokens ({', '.join(clash)}): "
            "keras-hub's T5Tokenizer and T5 checkpoints rely on pad=0, eos=1, unk=2."
        )
    config = dict(
        vocab_size=int(vocab_size),
        model_type=model_type,
        bos_id=-1,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        pad_piece=PAD_PIECE,
        eos_piece=EOS_PIECE,
        unk_piece=UNK_PIECE,
        # Small corpora: every character of the captions gets a piece.
        character_coverage=1.0,
        # One thread: the result must not depend on the machine.
        num_threads=1,
        minloglevel=2,
    )
    config.update(options)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buffer, **config
        )
    except RuntimeError as e:
        match = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", str(e))
        if match:
            raise ValueError(
                f"`vocab_size` is too large for this corpus and model_type={model_type!r}: "
                f"SentencePiece accepts at most {match.group(2)}. Received: {vocab_size}. "
                "Use a smaller vocab_size, more text, or model_type='bpe'."
            ) from None
        raise ValueError(f"SentencePiece training failed: {e}") from e
    return buffer.getvalue()


def shapes_captions(num_captions=SHAPES_NUM_CAPTIONS, seed=0):
    """Captions of the procedural shapes domain (train split), no rendering."""
    from keras_muse.datasets import shapes

    captions = []
    for i in range(num_captions):
        # Scenes and captions only: rendering would cost ~10x more and the
        # vocabulary needs words, not pixels.
        rng = np.random.default_rng([seed, i])
        captions.append(shapes.caption_scene(shapes.sample_scene(rng, "train"), rng))
    return captions


@functools.lru_cache(maxsize=4)
def shapes_sentencepiece_proto(vocab_size=SHAPES_VOCAB_SIZE, model_type=SHAPES_MODEL_TYPE):
    """The vocabulary of the shapes domain, trained once per process.

    BPE rather than T5's unigram: on this 51-word domain unigram cannot grow
    past ~66 pieces, which splits colour words ("red" -> "re", "d"); BPE at 128
    keeps every colour, shape and size word one piece, and no caption is
    longer than 26 tokens with its end token.
    """
    return train_sentencepiece(shapes_captions(), vocab_size, model_type=model_type)
