"""An offline WordPiece tokenizer that covers every word of the synthetic generator.

Models that read text with a BERT (ICIPNet's expressions, BiMoRS's caption embeddings) use
``bert-base-uncased`` on real data. On the synthetic data, where nothing can be downloaded,
:func:`build_synthetic_tokenizer` writes a small vocabulary in the same Hugging Face format, so both load
through ``BertTokenizer.from_pretrained(directory)``.

(In transformers 5 ``BertTokenizerFast is BertTokenizer`` and its ``vocab_file=`` argument is ignored;
build from ``vocab=`` or load a directory, as done here.)
"""

from __future__ import annotations

import os
import string
from pathlib import Path

from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizer

from ..common import atomic_path
from .language import MARKUP_TOKENS, VOCABULARY

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4; [PAD] = 0 is the padding id


def synthetic_vocabulary() -> list[str]:
    """The vocabulary of the synthetic tokenizer, in id order.

    :data:`SPECIAL_TOKENS` first, then every word of the synthetic generator (:data:`VOCABULARY`, plus the
    pieces BERT's pre-tokenizer makes of the GCG markup tokens), then single ASCII letters, digits and
    punctuation and their ``##`` continuations, so that any lower-case ASCII text (e.g. a user's own
    expression) splits into known pieces instead of ``[UNK]``. Words are lower-case, as the synthetic text is
    and as ``do_lower_case`` makes the input.
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
    return the tokenizer; ``BertTokenizer.from_pretrained(out_dir)`` gives the same one back."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "vocab.txt") as tmp:
        tmp.write_text("".join(f"{token}\n" for token in synthetic_vocabulary()), encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(out_dir / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


__all__ = ["SPECIAL_TOKENS", "build_synthetic_tokenizer", "synthetic_vocabulary"]
