"""Caption embeddings of the synthetic dataset, with nothing to download.

The synthetic scene dataset ships ground-truth captions (``captions.jsonl``, written by rs_shared) in place of BLIP-2
captions, and a tiny random BERT over the offline synthetic vocabulary stands in for ``bert-base-uncased``; both go
through the same cache as real data (:func:`bimors.caption.build_caption_cache` with ``captions_file``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
from rs_shared.data.common import read_json

from .caption import MANIFEST, CaptionCache, FileCaptions, build_caption_cache, read_captions, read_embeddings

SYNTHETIC_BERT_DIR, SYNTHETIC_BERT_HIDDEN, SYNTHETIC_BERT_SEED = "bert", 64, 0


def build_synthetic_bert(out_dir: str | os.PathLike, hidden_size: int = SYNTHETIC_BERT_HIDDEN) -> Path:
    """A tiny random ``BertModel`` (2 layers, ``hidden_size`` wide, 4 heads, seed :data:`SYNTHETIC_BERT_SEED`) with
    the offline synthetic WordPiece tokenizer, saved in Hugging Face format to ``out_dir``; an existing one of the
    same width is reused. The global torch RNG is left untouched."""
    from rs_shared.data.synthetic.tokenizer import build_synthetic_tokenizer
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        found = read_json(out_dir / "config.json").get("hidden_size")
        if found != hidden_size:
            raise ValueError(f"{out_dir / 'config.json'}: the synthetic BERT there is {found} wide, {hidden_size} was "
                             "asked for; use another cache directory")
        return out_dir
    if hidden_size % 4:
        raise ValueError(f"hidden_size must be a multiple of the 4 attention heads, got {hidden_size}")
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = build_synthetic_tokenizer(tmp)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=4 * hidden_size, max_position_embeddings=512,
                            pad_token_id=tokenizer.pad_token_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SYNTHETIC_BERT_SEED)
            BertModel(config).save_pretrained(tmp)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, out_dir)  # complete or absent
        except OSError:
            if not (out_dir / "config.json").is_file():  # not a concurrent builder that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_synthetic_caption_cache(dataset_dir: str | os.PathLike, cache_dir: str | os.PathLike, *,
                                   hidden_size: int = SYNTHETIC_BERT_HIDDEN, progress: bool = False) -> CaptionCache:
    """The caption cache of the synthetic dataset at ``dataset_dir`` (``load_dataset("synthetic", root).directory``),
    built at ``cache_dir`` on first use: its ground-truth ``captions.jsonl`` embedded by the tiny random BERT of
    :func:`build_synthetic_bert` (saved under ``cache_dir/bert``). Later calls only read the cache's small files
    (no image hashing, no BERT).

    ``hidden_size`` is the embedding width D: it must equal the model's ``config.caption_dim`` (64 for
    :meth:`BiMoRSConfig.tiny`, so 768 for :meth:`BiMoRSConfig.paper`, in another ``cache_dir``).
    """
    from rs_shared.data.synthetic.export import SCENE_CAPTIONS

    dataset_dir, cache_dir = Path(dataset_dir), Path(cache_dir)
    captions_file = dataset_dir / SCENE_CAPTIONS
    if not captions_file.is_file():
        raise FileNotFoundError(f"{captions_file} is missing: the synthetic dataset at {dataset_dir} was generated "
                                "without ground-truth captions (an older rs-shared); delete the directory and load it "
                                "again (bimors.datasets.load_dataset('synthetic', root) regenerates it)")
    bert_dir = build_synthetic_bert(cache_dir / SYNTHETIC_BERT_DIR, hidden_size)
    images = FileCaptions(captions_file).images()
    manifest = read_json(cache_dir / MANIFEST) if (cache_dir / MANIFEST).is_file() else {}
    cached = read_captions(cache_dir)
    filled = (manifest.get("captioner", {}).get("fingerprint") == hashlib.sha256(captions_file.read_bytes()).hexdigest()
              and {rel for _, rel in images} <= {r["relpath"] for r in cached.values()}
              and len(read_embeddings(cache_dir)[0]) == len(cached))
    if not filled:
        build_caption_cache(cache_dir, images, None, bert_dir, captions_file=captions_file,
                            captioner_name="synthetic ground truth", bert_name=f"synthetic-bert-{hidden_size}",
                            progress=progress)
    return CaptionCache(cache_dir)


__all__ = ["SYNTHETIC_BERT_DIR", "SYNTHETIC_BERT_HIDDEN", "SYNTHETIC_BERT_SEED", "build_synthetic_bert",
           "ensure_synthetic_caption_cache"]
