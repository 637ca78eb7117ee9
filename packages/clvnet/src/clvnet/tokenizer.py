"""CLV-Net's special tokens, the tiny offline tokenizer and the token additions for a real InternLM2 tokenizer.

Special tokens (§1.2, interfaces): the InternLM2 chat markers ``[UNUSED_TOKEN_146]`` / ``[UNUSED_TOKEN_145]``
(im_start / im_end), ``<s>``, ``</s>``, ``<unk>`` (also the pad token; right padding), GeoPixel's ``[SEG]``,
``<p>``, ``</p>``, CLV-Net's ``<BOX>`` and the image placeholder ``<IMAGE>`` (one per image token; the model
overwrites those positions).

The tiny tokenizer (§6 "Tokenizer offline") is a BPE trained here, fully offline, on the synthetic GCG
generator's words and the query text. Spaces are kept SentencePiece-style as ``▁`` (never prepended), newlines
are tokens of their own and punctuation is split off, so encode → decode is lossless: GeoPixelD markup comes back
exactly ("<p> the plane </p> [SEG]", "car-28"). Every printable ASCII character is in the alphabet, so any
ASCII text encodes without ``<unk>``.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path

from rs_shared.data.gcg import GEOPIXEL_GCG_INSTRUCTION
from rs_shared.data.synthetic import VOCABULARY
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IM_START = "[UNUSED_TOKEN_146]"  # id 92543 in the InternLM2 tokenizer
IM_END = "[UNUSED_TOKEN_145]"  # id 92542
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SEG, P_OPEN, P_CLOSE = "[SEG]", "<p>", "</p>"
BOX = "<BOX>"
IMAGE = "<IMAGE>"
CLVNET_TOKENS = (SEG, P_OPEN, P_CLOSE, BOX, IMAGE)
"""Tokens CLV-Net adds to an InternLM2 tokenizer, in this order (GeoPixel's three first, §1.2 "New tokens")."""

CLVNET_QUERY = (
    "Could you provide a global description of the image and a detailed description centered around the "
    "user-focused region <BOX>, and indicate the corresponding object phrases that appear in the generated "
    "description?"
)
"""The paper's text query (§1.2); ``<BOX>`` is replaced by the K region tokens."""

SPACE = "▁"  # SentencePiece's space symbol, as in InternLM2
TINY_MAX_VOCAB = 4096  # upper bound for the BPE trainer; it stops earlier, once every corpus word is one token


@dataclass(frozen=True)
class TokenIds:
    """Ids of CLV-Net's structural tokens in one tokenizer."""

    bos: int
    eos: int
    pad: int
    im_start: int
    im_end: int
    seg: int
    p_open: int
    p_close: int
    box: int
    image: int

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> TokenIds:
        """Look the tokens up; the pad id is the tokenizer's pad token or, without one, ``<unk>``.
        Raises ``ValueError`` naming every token the vocabulary lacks."""
        vocab = tokenizer.get_vocab()
        names = {"bos": BOS, "eos": EOS, "im_start": IM_START, "im_end": IM_END, "seg": SEG, "p_open": P_OPEN,
                 "p_close": P_CLOSE, "box": BOX, "image": IMAGE}
        pad = tokenizer.pad_token if tokenizer.pad_token is not None else UNK
        missing = [t for t in (*names.values(), pad) if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} lacks the CLV-Net tokens {missing}; "
                             "call add_clvnet_tokens(tokenizer) on a real InternLM2 tokenizer")
        return cls(pad=vocab[pad], **{field: vocab[token] for field, token in names.items()})

    def config_kwargs(self) -> dict[str, int]:
        """The ``CLVNetConfig`` fields ``{name}_token_id`` (bos, eos, pad, seg, p_open, p_close, box, image)."""
        names = ("bos", "eos", "pad", "seg", "p_open", "p_close", "box", "image")
        return {f"{name}_token_id": getattr(self, name) for name in names}


def tiny_corpus() -> list[str]:
    """Training text of the tiny BPE: every synthetic-generator word lower-case and capitalised, both after a
    space and at the start of a line, plus the CLV-Net query, GeoPixel's instruction and the chat role words."""
    words = [*VOCABULARY, *(w.capitalize() for w in VOCABULARY)]
    query = CLVNET_QUERY.replace(BOX, " ")
    return [" ".join(words), "\n".join(words), query, GEOPIXEL_GCG_INSTRUCTION, "user\nassistant\n"]


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # newline alone; spaces → "▁" glued to the next word; punctuation (optionally after one "▁") alone
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), "isolated"),
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True),
        pre_tokenizers.Split(Regex(rf"[^\w{SPACE}]|{SPACE}[^\w{SPACE}]"), "isolated"),
    ])


def build_tiny_tokenizer(out_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Train the tiny BPE on :func:`tiny_corpus`, wrap it as a ``PreTrainedTokenizerFast`` with CLV-Net's special
    tokens (ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, then the base vocabulary, then im_start, im_end, ``[SEG]``,
    ``<p>``, ``</p>``, ``<BOX>``, ``<IMAGE>``), pad = ``<unk>``, right padding, and save it to ``out_dir`` in HF
    format. Deterministic; ``AutoTokenizer.from_pretrained(out_dir)`` returns the same tokenizer."""
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = _pre_tokenizer()
    backend.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    alphabet = [c for c in string.printable if c not in string.whitespace] + ["\n", SPACE]
    trainer = trainers.BpeTrainer(vocab_size=TINY_MAX_VOCAB, special_tokens=[UNK, BOS, EOS],
                                  initial_alphabet=alphabet, show_progress=False)
    backend.train_from_iterator(tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                        pad_token=UNK, padding_side="right", clean_up_tokenization_spaces=False,
                                        model_max_length=1 << 20)
    add_clvnet_tokens(tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def add_clvnet_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the chat markers (when absent) and :data:`CLVNET_TOKENS` as special tokens, set pad = ``<unk>`` when
    the tokenizer has no pad token and pad on the right (GeoPixel's setup). Returns how many tokens were new
    (the embedding matrices must grow by that many rows)."""
    vocab = tokenizer.get_vocab()
    new = [t for t in (IM_START, IM_END, *CLVNET_TOKENS) if t not in vocab]
    added = tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    return added


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer saved in the local directory ``path`` (tiny, or an InternLM2 tokenizer already extended by
    :func:`add_clvnet_tokens` and saved), checked to hold every CLV-Net token (:meth:`TokenIds.of`)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    TokenIds.of(tokenizer)
    return tokenizer


__all__ = ["BOS", "BOX", "CLVNET_QUERY", "CLVNET_TOKENS", "EOS", "IMAGE", "IM_END", "IM_START", "P_CLOSE", "P_OPEN",
           "SEG", "UNK", "TokenIds", "add_clvnet_tokens", "build_tiny_tokenizer", "load_tokenizer", "tiny_corpus"]
