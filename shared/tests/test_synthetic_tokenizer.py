"""The offline WordPiece tokenizer of the synthetic data: BERT special ids, HF round trip, no [UNK] in any
text the generator writes."""

import numpy as np
from rs_shared.data.synthetic import VOCABULARY
from rs_shared.data.synthetic.language import grounded_caption, holistic_sentence
from rs_shared.data.synthetic.scene import make_scene
from rs_shared.data.synthetic.tokenizer import SPECIAL_TOKENS, build_synthetic_tokenizer, synthetic_vocabulary
from transformers import BertTokenizer


def test_round_trip_keeps_bert_special_ids(tmp_path):
    tokenizer = build_synthetic_tokenizer(tmp_path)
    reloaded = BertTokenizer.from_pretrained(str(tmp_path))
    assert reloaded.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert len(reloaded) == len(tokenizer) == len(synthetic_vocabulary())
    text = ["An aerial view of a harbor with piers along the water.", "the car closest to the tank"]
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_generator_captions_have_no_unknown_tokens(tmp_path):
    tokenizer = build_synthetic_tokenizer(tmp_path)
    words = tokenizer(list(VOCABULARY), add_special_tokens=False)["input_ids"]
    assert all(len(ids) == 1 and ids[0] != tokenizer.unk_token_id for ids in words)
    texts = []
    for seed in range(30):
        scene = make_scene(seed, (64, 64))
        rng = np.random.default_rng(seed)
        texts.append(holistic_sentence(scene, rng))
        if scene.objects:
            texts.append(grounded_caption(scene, rng)[0])
    ids = tokenizer(texts)["input_ids"]
    assert not any(tokenizer.unk_token_id in row for row in ids)
