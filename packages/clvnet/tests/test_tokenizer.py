"""The tiny offline tokenizer: special tokens, lossless GeoPixelD markup, reload, token additions."""

import json
import string

import numpy as np
import pytest
from rs_shared.data.synthetic import OBJECT_SCENE_CLASSES, VOCABULARY, grounded_caption, make_scene
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from clvnet.tokenizer import (
    BOS,
    BOX,
    CLVNET_QUERY,
    EOS,
    IM_END,
    IM_START,
    IMAGE,
    P_CLOSE,
    P_OPEN,
    SEG,
    UNK,
    TokenIds,
    add_clvnet_tokens,
    build_tiny_tokenizer,
    load_tokenizer,
)

SPECIALS = (IM_START, IM_END, SEG, P_OPEN, P_CLOSE, BOX, IMAGE)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def synthetic_captions(n):
    captions = []
    for i in range(n):
        scene = make_scene(100 + i, (128, 128), OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])
        captions.append(grounded_caption(scene, np.random.default_rng(i))[0])
    return captions


def test_ids_layout_and_padding(tokenizer):
    ids = TokenIds.of(tokenizer)
    assert (ids.pad, ids.bos, ids.eos) == (0, 1, 2)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == [UNK, BOS, EOS]
    assert tokenizer.pad_token == UNK and tokenizer.padding_side == "right"
    added = [ids.im_start, ids.im_end, ids.seg, ids.p_open, ids.p_close, ids.box, ids.image]
    assert added == list(range(len(tokenizer) - 7, len(tokenizer)))  # appended after the base vocabulary
    kwargs = ids.config_kwargs()
    assert kwargs["seg_token_id"] == ids.seg and kwargs["pad_token_id"] == 0 and len(kwargs) == 8


def test_reload_gives_the_same_tokenizer(tokenizer_dir, tokenizer, tmp_path):
    built = build_tiny_tokenizer(tmp_path)
    text = f"{IM_START}user\n{CLVNET_QUERY}{IM_END}\nThe <p> plane </p> [SEG] is red."
    assert encode(built, text) == encode(tokenizer, text)
    assert built.get_vocab() == tokenizer.get_vocab()
    assert TokenIds.of(built) == TokenIds.of(load_tokenizer(tokenizer_dir))
    # deterministic training: two builds write the same file
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == \
        json.loads((tokenizer_dir / "tokenizer.json").read_text())


def test_special_tokens_are_single_ids_and_skippable(tokenizer):
    for token in SPECIALS:
        assert len(encode(tokenizer, token)) == 1, token
    ids = encode(tokenizer, "We see <p> the plane </p> [SEG] here")
    assert tokenizer.decode(ids, skip_special_tokens=True).split() == ["We", "see", "the", "plane", "here"]


def test_geopixeld_markup_round_trips_exactly(tokenizer):
    text = "There is <p> the plane </p> [SEG] at the top. We can see <p> car-28 </p> [SEG] on the left."
    ids = encode(tokenizer, text)
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert "<p> the plane </p> [SEG]" in tokenizer.decode(ids)
    for caption in synthetic_captions(24):
        decoded = tokenizer.decode(encode(tokenizer, caption), skip_special_tokens=False)
        assert decoded == caption
        assert " ".join(decoded.split()) == " ".join(caption.split())


def test_vocabulary_words_are_single_tokens_and_ascii_never_unknown(tokenizer):
    for word in VOCABULARY:
        assert len(encode(tokenizer, word)) == 1, word
        assert len(encode(tokenizer, " " + word.capitalize())) == 1, word
    text = string.ascii_lowercase + " " + string.digits + " " + string.punctuation + " zqxj wkv, 12-34?\n"
    ids = encode(tokenizer, text)
    assert TokenIds.of(tokenizer).pad not in ids  # <unk> never appears
    assert tokenizer.decode(ids) == text


def test_query_has_one_box_token(tokenizer):
    ids = encode(tokenizer, CLVNET_QUERY)
    assert ids.count(TokenIds.of(tokenizer).box) == 1
    assert tokenizer.decode(ids) == CLVNET_QUERY


def bare_tokenizer():
    vocab = {UNK: 0, BOS: 1, EOS: 2, "the": 3, "plane": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, bos_token=BOS, eos_token=EOS)


def test_token_ids_name_missing_tokens():
    with pytest.raises(ValueError, match=r"lacks the CLV-Net tokens .*\[SEG\].*<BOX>"):
        TokenIds.of(bare_tokenizer())


def test_add_clvnet_tokens_adds_only_missing_ones():
    tokenizer = bare_tokenizer()
    assert add_clvnet_tokens(tokenizer) == 7
    assert add_clvnet_tokens(tokenizer) == 0
    ids = TokenIds.of(tokenizer)
    assert ids.pad == 0 and tokenizer.padding_side == "right"
    assert [ids.im_start, ids.im_end, ids.seg, ids.p_open, ids.p_close, ids.box, ids.image] == list(range(5, 12))
    assert encode(tokenizer, "the [SEG] <p> plane </p>") == [3, ids.seg, ids.p_open, 4, ids.p_close]


def test_load_tokenizer_checks_directory_and_tokens(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")
    bare_tokenizer().save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match="add_clvnet_tokens"):
        load_tokenizer(tmp_path / "bare")
