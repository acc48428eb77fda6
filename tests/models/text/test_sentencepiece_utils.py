import keras_hub
import pytest

from keras_muse.models.text import sentencepiece_utils


def test_t5_special_tokens_and_determinism(captions, proto):
    tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
    assert tokenizer.vocabulary_size() == 64
    assert tokenizer.get_vocabulary()[:3] == ["<pad>", "</s>", "<unk>"]
    assert (tokenizer.pad_token_id, tokenizer.end_token_id) == (0, 1)
    # Same corpus, same bytes: a named preset always means one vocabulary.
    assert sentencepiece_utils.train_sentencepiece(captions, 64) == proto


def test_bpe_and_round_trip(captions):
    proto = sentencepiece_utils.train_sentencepiece(captions, 96, model_type="bpe")
    tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
    assert tokenizer.vocabulary_size() == 96
    ids = tokenizer("a large red circle in the top left")
    assert 2 not in list(ids)  # no <unk> for in-domain words
    assert tokenizer.detokenize(ids) == "a large red circle in the top left"


def test_bad_arguments(captions):
    with pytest.raises(ValueError, match="at most"):
        sentencepiece_utils.train_sentencepiece(captions, 5000)
    with pytest.raises(ValueError, match="model_type"):
        sentencepiece_utils.train_sentencepiece(captions, 64, model_type="wordpiece")
    with pytest.raises(ValueError, match="vocab_size"):
        sentencepiece_utils.train_sentencepiece(captions, 2)
    with pytest.raises(ValueError, match="only strings"):
        sentencepiece_utils.train_sentencepiece(["a red circle", 3], 16)
    with pytest.raises(ValueError, match="single string"):
        sentencepiece_utils.train_sentencepiece("a red circle", 16)
    with pytest.raises(ValueError, match="non-empty"):
        sentencepiece_utils.train_sentencepiece(["", " "], 16)
    with pytest.raises(ValueError, match="pad_id"):
        sentencepiece_utils.train_sentencepiece(captions, 64, pad_id=3)
