"""Referring-expression tokenisation (spec §5.3) and the offline tokenizer of the synthetic data.

ICIPNet reads an expression as BERT WordPiece ids: ``[CLS] … [SEP]`` is encoded first and the ids are
then **cut to** ``max_text_len`` (20 in the paper), so a long sentence loses its ``[SEP]``; shorter ones
are right-padded with id 0 and the attention mask marks kept ids with 1. No token-type ids.

Real data uses ``bert-base-uncased``; :func:`load_tokenizer` reads it from a local directory (or, when
allowed, a hub id). For the synthetic data :func:`build_synthetic_tokenizer` writes a small WordPiece
vocabulary that covers every word the synthetic generator can produce, in the same HF format, so both
load through ``BertTokenizer.from_pretrained(directory)``.

(In transformers 5 ``BertTokenizerFast is BertTokenizer`` and its ``vocab_file=`` argument is ignored;
build from ``vocab=`` or load a directory, as done here.)
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from rs_shared.data.common import atomic_path
from rs_shared.data.synthetic import MARKUP_TOKENS, VOCABULARY
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4; [PAD] = 0 is the padding id
PAD_ID = 0


def tokenize_expressions(tokenizer: BertTokenizer, texts: Sequence[str],
                         max_text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``(len(texts), max_text_len)`` int64, as the official loader
    builds them: ``[CLS] ids [SEP]`` truncated to ``max_text_len`` ids (no room is kept for ``[SEP]``),
    then right-padded with 0; the mask is 1 on kept ids and 0 on padding."""
    if max_text_len < 1:
        raise ValueError(f"max_text_len must be positive, got {max_text_len}")
    texts = list(texts)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, return_token_type_ids=False,
                        return_attention_mask=False, verbose=False)["input_ids"] if texts else []
    input_ids = torch.full((len(encoded), max_text_len), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), max_text_len), dtype=torch.long)
    for row, ids in enumerate(encoded):
        kept = ids[:max_text_len]
        input_ids[row, :len(kept)] = torch.tensor(kept, dtype=torch.long)
        attention_mask[row, :len(kept)] = 1
    return input_ids, attention_mask


def load_tokenizer(name_or_dir: str | os.PathLike) -> BertTokenizer:
    """The WordPiece tokenizer saved in ``name_or_dir`` (``vocab.txt`` and/or ``tokenizer.json``), e.g. a
    local copy of ``bert-base-uncased`` or a directory written by :func:`build_synthetic_tokenizer`."""
    return BertTokenizer.from_pretrained(str(name_or_dir))


def synthetic_vocabulary() -> list[str]:
    """The vocabulary of the synthetic tokenizer, in id order.

    :data:`SPECIAL_TOKENS` first, then every word of the synthetic generator
    (:data:`rs_shared.data.synthetic.VOCABULARY`, plus the pieces BERT's pre-tokenizer makes of the GCG
    markup tokens), then single ASCII letters, digits and punctuation and their ``##`` continuations, so
    that any lower-case ASCII text (e.g. a user's own expression) splits into known pieces instead of
    ``[UNK]``. Words are lower-case, as the synthetic text is and as ``do_lower_case`` makes the input.
    """
    split = BertPreTokenizer()
    pieces = [p for text in (*VOCABULARY, *MARKUP_TOKENS) for p, _ in split.pre_tokenize_str(text.lower())]
    chars = [*string.ascii_lowercase, *string.digits]
    vocab = list(SPECIAL_TOKENS)
    for token in (*pieces, *chars, *string.punctuation, *(f"##{c}" for c in chars)):
        if token not in vocab:
            vocab.append(token)
    return vocab


def build_synthetic_tokenizer(out_dir: str | os.PathLike) -> BertTokenizer:
    """Write ``vocab.txt`` (:func:`synthetic_vocabulary`) and the HF tokenizer files to ``out_dir`` and
    return the tokenizer; :func:`load_tokenizer` (``out_dir``) gives the same one back."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "vocab.txt") as tmp:
        tmp.write_text("".join(f"{token}\n" for token in synthetic_vocabulary()), encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(out_dir / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


__all__ = ["PAD_ID", "SPECIAL_TOKENS", "build_synthetic_tokenizer", "load_tokenizer", "synthetic_vocabulary",
           "tokenize_expressions"]
