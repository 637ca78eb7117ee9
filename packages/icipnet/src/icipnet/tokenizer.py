"""Referring-expression tokenisation (spec §5.3) and the offline tokenizer of the synthetic data.

ICIPNet reads an expression as BERT WordPiece ids: ``[CLS] … [SEP]`` is encoded first and the ids are
then **cut to** ``max_text_len`` (20 in the paper), so a long sentence loses its ``[SEP]``; shorter ones
are right-padded with id 0 and the attention mask marks kept ids with 1. No token-type ids.

Real data uses ``bert-base-uncased``; :func:`load_tokenizer` reads it from a local directory (or, when
allowed, a hub id). For the synthetic data, :func:`build_synthetic_tokenizer` (from
``rs_shared.data.synthetic.tokenizer``, re-exported here) writes a small WordPiece vocabulary in the same
HF format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from rs_shared.data.synthetic.tokenizer import SPECIAL_TOKENS, build_synthetic_tokenizer, synthetic_vocabulary
from transformers import BertTokenizer

PAD_ID = 0  # SPECIAL_TOKENS[0], [PAD]


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


__all__ = ["PAD_ID", "SPECIAL_TOKENS", "build_synthetic_tokenizer", "load_tokenizer", "synthetic_vocabulary",
           "tokenize_expressions"]
