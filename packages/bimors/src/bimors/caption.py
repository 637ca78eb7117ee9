"""Offline captions and their BERT embeddings: the caption cache and ``bimors-caption`` (spec §1.3, §1.4, §6.2).

Stage 1 captions an image with BLIP-2 (``Blip2ForConditionalGeneration`` + ``Blip2Processor``, the paper uses
``Salesforce/blip2-flan-t5-xl``) exactly as the official script: resize to 224×224 (bilinear), one global
min–max stretch per image, back to 8-bit, then the processor; unconditional beam search with 4 beams,
``max_length=16``, early stopping; special tokens skipped. Stage 2 embeds the caption with a full
``BertModel`` (``bert-base-uncased``): the mean of ``last_hidden_state`` over all tokens, [CLS] and [SEP]
included. Captions are embedded in padded batches with an attention-mask-weighted mean, which equals the
official one-caption-at-a-time mean.

The cache is keyed by the SHA-256 of the raw image bytes (renamed copies such as the v2 sets reuse their
captions) and holds, in one directory::

    manifest.json            provenance: captioner, generation settings, preprocessing version, BERT, versions
    captions.jsonl           one {"key", "relpath", "caption"} per image, appended batch by batch
    embeddings.safetensors   "embeddings" float32 [N, D] (D = 768 for BERT-base) and "keys" uint8 [N, 32]
                             (the raw SHA-256 digests, row i ↔ key i): the key → row index, in the same file

Runs are incremental: images whose key is already captioned are skipped, a run cut short keeps every
complete caption line, and ``embeddings.safetensors`` / ``manifest.json`` are replaced atomically. One
writer at a time. :class:`CaptionCache` is the reader used during training.

Caption text can also come from a JSONL file instead of BLIP-2 (``bimors-caption --captions FILE``,
:class:`FileCaptions`; the manifest then records the file as the captioner). The synthetic dataset ships its
ground-truth captions that way (:mod:`bimors.synthetic_captions`). The command line is :mod:`bimors.cli_caption`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rs_shared.data.common import atomic_path, read_image, read_json, write_json
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

MANIFEST, CAPTIONS, EMBEDDINGS = "manifest.json", "captions.jsonl", "embeddings.safetensors"
CACHE_FORMAT = "bimors-caption-cache"
PREPROCESSING_VERSION = "bimors-minmax-v1"
PREPROCESSING_STEPS = ("convert to RGB", "resize to 224x224, PIL bilinear (torchvision default), aspect not kept",
                       "to float32 in [0, 1] (/255)", "one global min-max stretch over all channels",
                       "back to 8-bit (x*255 truncated, as ToPILImage)", "Blip2Processor resize + normalise")
CAPTION_SIZE = 224
GENERATION = {"num_beams": 4, "max_length": 16, "early_stopping": True}  # spec §1.3
POOLING = "attention-mask-weighted mean of last_hidden_state over all non-pad tokens incl. [CLS]/[SEP]"
FINGERPRINT_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.txt")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPATIBLE_FIELDS = (("captioner", "fingerprint"), ("generation",), ("preprocessing", "version"),
                     ("embedding", "fingerprint"), ("embedding", "pooling"))
MAX_LISTED = 10


class CaptionCacheError(LookupError):
    """A caption cache is absent, inconsistent or lacks entries; the message says how to fill it."""


# --- keys and preprocessing --------------------------------------------------------------------------------

def image_key(path: str | os.PathLike) -> str:
    """The cache key of an image: SHA-256 (hex) of the raw file bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stretch_image(image: Image.Image, size: int = CAPTION_SIZE) -> Image.Image:
    """Spec §1.3 steps 1–4: RGB, bilinear resize to ``size × size``, one min–max stretch over all channels,
    back to 8-bit by truncation (torchvision ``ToPILImage``). A constant image becomes black (the official
    0/0 → NaN → 0)."""
    x = torch.from_numpy(np.array(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)))
    x = x.float().div(255)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return Image.fromarray(x.mul(255).byte().numpy())


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(N, T, D)`` hidden states, ``(N, T)`` 0/1 mask → ``(N, D)`` mean over the unmasked tokens."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1)


def fingerprint(model_dir: str | os.PathLike) -> str:
    """SHA-256 over the small identifying files of a model directory (config, tokenizer, processor; not the
    weights), so that a cache is never extended with another captioner or BERT."""
    h = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _model_dir(path: str | os.PathLike, what: str, example: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} {path} is not a local model directory (no config.json); expected a "
                                f"save_pretrained copy of e.g. {example} (nothing can be downloaded here)")
    return path


# --- the two models ----------------------------------------------------------------------------------------

class Blip2Captioner:
    """BLIP-2 captioning as in the official script (spec §1.3), from a local ``save_pretrained`` directory."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu", dtype: str = "float32"):
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        self.model_dir = _model_dir(model_dir, "--captioner", "Salesforce/blip2-flan-t5-xl")
        self.processor = Blip2Processor.from_pretrained(self.model_dir)
        self.model = Blip2ForConditionalGeneration.from_pretrained(self.model_dir, dtype=DTYPES[dtype]).to(device)
        self.model.eval()
        config = self.model.config  # unconditional generate() starts from <image> × num_query_tokens + BOS
        if config.image_token_index is None or getattr(config.text_config, "bos_token_id", None) is None:
            raise ValueError(f"{self.model_dir / 'config.json'}: image_token_index and text_config.bos_token_id must "
                             "be set for unconditional captioning (current Salesforce BLIP-2 configs set both)")
        self.device, self.dtype = torch.device(device), DTYPES[dtype]

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions of ``images`` (any size, RGB), one string each."""
        inputs = self.processor(images=[stretch_image(im) for im in images], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.dtype)  # (B, 3, S, S)
        ids = self.model.generate(pixel_values=pixel_values, **GENERATION)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


class CaptionEmbedder:
    """A caption → its BERT sentence embedding (spec §1.4), fp32, from a local directory."""

    def __init__(self, bert_dir: str | os.PathLike, device: str = "cpu"):
        from transformers import BertModel, BertTokenizer

        self.bert_dir = _model_dir(bert_dir, "--bert", "bert-base-uncased")
        self.tokenizer = BertTokenizer.from_pretrained(str(self.bert_dir))
        self.model = BertModel.from_pretrained(self.bert_dir, dtype=torch.float32).to(device).eval()
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @torch.inference_mode()
    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        """``len(captions)`` strings → float32 ``(N, D)``: per caption the mean of ``last_hidden_state`` over
        its [CLS] … [SEP] tokens (padding excluded; no truncation)."""
        batch = self.tokenizer(list(captions), padding=True, truncation=False, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state  # (N, T, D)
        return masked_mean(hidden, batch["attention_mask"]).float().cpu()


class FileCaptions:
    """Caption text from a JSONL file instead of BLIP-2: one ``{"relpath", "caption"}`` object per line, ``relpath``
    relative to the ``images/`` folder beside the file (the layout of a dataset, e.g. the synthetic dataset's
    ``captions.jsonl``). A line may carry the image's ``"key"`` (SHA-256 hex) instead of a readable image, so a
    cache's own ``captions.jsonl`` is a valid input too. ``by_key()[key]`` is the text of that image."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"--captions: {self.path} is not a file (expected JSONL lines "
                                    '{"relpath": <path under images/>, "caption": <text>})')
        self.records = read_caption_file(self.path)
        self._by_key: dict[str, str] | None = None

    def image_path(self, lineno: int, record: dict) -> Path:
        path = self.path.parent / "images" / record["relpath"]
        if not path.is_file():
            raise FileNotFoundError(f"{self.path}: line {lineno}: image {path} not found (relpath is relative to "
                                    f"{self.path.parent / 'images'})")
        return path

    def images(self) -> list[tuple[Path, str]]:
        """``(image path, relpath)`` of every line, ``relpath`` as ``<folder of the file>/images/<relpath>``."""
        return [(self.image_path(i, r), f"{self.path.parent.name}/images/{r['relpath']}")
                for i, r in enumerate(self.records, 1)]

    def by_key(self) -> dict[str, str]:
        """``{image key: caption}``; the images are hashed once, on first use."""
        if self._by_key is None:
            self._by_key = {}
            for lineno, record in enumerate(self.records, 1):
                key = record.get("key") or image_key(self.image_path(lineno, record))
                self._by_key.setdefault(key, record["caption"])
        return self._by_key


# --- reading -----------------------------------------------------------------------------------------------

def read_captions(cache_dir: str | os.PathLike) -> dict[str, dict]:
    """``{key: {"key", "relpath", "caption"}}`` from ``captions.jsonl`` (first record of a key wins). A last
    line without its newline is a write cut short and is ignored; any other bad line raises."""
    path = Path(cache_dir) / CAPTIONS
    if not path.exists():
        return {}
    out: dict[str, dict] = {}
    lines = path.read_bytes().split(b"\n")[:-1]  # the part after the last newline is incomplete
    for lineno, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaptionCacheError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
        if not (isinstance(record, dict) and isinstance(record.get("key"), str) and len(record["key"]) == 64
                and isinstance(record.get("relpath"), str) and isinstance(record.get("caption"), str)):
            raise CaptionCacheError(f"{path}: line {lineno}: expected {{'key': 64 hex chars, 'relpath': str, "
                                    f"'caption': str}}, got {line[:120]!r}")
        out.setdefault(record["key"], record)
    return out


def read_caption_file(path: str | os.PathLike) -> list[dict]:
    """The records of a captions JSONL file (see :class:`FileCaptions`), checked line by line."""
    path = Path(path)
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaptionCacheError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
        key = record.get("key") if isinstance(record, dict) else None
        if not (isinstance(record, dict) and isinstance(record.get("relpath"), str)
                and isinstance(record.get("caption"), str) and record["caption"].strip()
                and (key is None or (isinstance(key, str) and len(key) == 64))):
            raise CaptionCacheError(f"{path}: line {lineno}: expected {{'relpath': path under images/, 'caption': "
                                    f"non-empty str[, 'key': 64 hex chars]}}, got {line[:120]!r}")
        out.append(record)
    if not out:
        raise CaptionCacheError(f"{path}: no caption lines")
    return out


def read_embeddings(cache_dir: str | os.PathLike) -> tuple[list[str], torch.Tensor]:
    """``(keys, embeddings)`` of ``embeddings.safetensors``: hex keys in row order and float32 ``(N, D)``;
    empty when the file does not exist."""
    path = Path(cache_dir) / EMBEDDINGS
    if not path.exists():
        return [], torch.zeros(0, 0)
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        if names != {"embeddings", "keys"}:
            raise CaptionCacheError(f"{path}: expected tensors 'embeddings' and 'keys', found {sorted(names)}")
        embeddings, digests = f.get_tensor("embeddings"), f.get_tensor("keys")
    if (embeddings.dtype != torch.float32 or embeddings.ndim != 2 or digests.dtype != torch.uint8
            or tuple(digests.shape) != (embeddings.shape[0], 32)):
        raise CaptionCacheError(f"{path}: expected 'embeddings' float32 [N, D] and 'keys' uint8 [N, 32], got "
                                f"{embeddings.dtype} {list(embeddings.shape)} and "
                                f"{digests.dtype} {list(digests.shape)}")
    return [bytes(row).hex() for row in digests.numpy()], embeddings


class CaptionCache:
    """Read side of a caption cache directory: image file → its caption embedding.

    ``lookup(path)`` hashes the file and returns float32 ``(D,)``; ``lookup_many(paths)`` returns
    ``(N, D)``. A missing image raises :class:`CaptionCacheError` naming it (all of them, for
    ``lookup_many``) and the ``bimors-caption`` command that fills the cache.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not (self.directory / MANIFEST).is_file():
            raise CaptionCacheError(f"no caption cache at {self.directory} (expected {MANIFEST}, {CAPTIONS} and "
                                    f"{EMBEDDINGS}); build it with: bimors-caption --cache {self.directory} "
                                    "--captioner <local BLIP-2 dir> --bert <local BERT dir> --dataset NAME --root ROOT")
        self.manifest = read_json(self.directory / MANIFEST)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != CACHE_FORMAT:
            raise CaptionCacheError(f"{self.directory / MANIFEST}: not a bimors-caption manifest (expected "
                                    f"\"format\": \"{CACHE_FORMAT}\")")
        keys, self.embeddings = read_embeddings(self.directory)
        self.rows = {key: row for row, key in enumerate(keys)}
        self._keys: dict[tuple[str, int, int], str] = {}  # (path, mtime_ns, size) -> key

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    @property
    def dim(self) -> int | None:
        """D, the embedding width (``None`` while the cache holds no embedding)."""
        return self.embeddings.shape[1] if self.rows else None

    def key(self, image_path: str | os.PathLike) -> str:
        """:func:`image_key`, remembered per (path, modification time, size)."""
        stat = os.stat(image_path)
        ident = (os.fspath(image_path), stat.st_mtime_ns, stat.st_size)
        if ident not in self._keys:
            self._keys[ident] = image_key(image_path)
        return self._keys[ident]

    def lookup(self, image_path: str | os.PathLike) -> torch.Tensor:
        """The caption embedding of one image, float32 ``(D,)``."""
        return self.lookup_many([image_path])[0]

    def lookup_many(self, image_paths: Iterable[str | os.PathLike]) -> torch.Tensor:
        """Caption embeddings of several images, float32 ``(N, D)``."""
        paths = list(image_paths)
        keys = [self.key(p) for p in paths]
        missing = [os.fspath(p) for p, k in zip(paths, keys, strict=True) if k not in self.rows]
        if missing:
            raise CaptionCacheError(self.missing_message(missing))
        return self.embeddings[[self.rows[k] for k in keys]].clone()

    def missing_message(self, missing: Sequence[str]) -> str:
        shown = ", ".join(missing[:MAX_LISTED]) + (f" … and {len(missing) - MAX_LISTED} more"
                                                   if len(missing) > MAX_LISTED else "")
        source = self.manifest.get("captioner", {})
        flag = "--captions" if source.get("source") == "file" else "--captioner"
        bert = self.manifest.get("embedding", {}).get("path", "<BERT dir>")
        return (f"caption cache {self.directory} has no entry for {len(missing)} image(s): {shown}. Fill it with: "
                f"bimors-caption --cache {self.directory} {flag} {source.get('path', '<BLIP-2 dir>')} --bert {bert} "
                "--dataset NAME --root ROOT (the protocol's images) or --images FILE … (these images)")


# --- writing -----------------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "rs-bimors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _manifest(source: Path | str, from_file: bool, bert_dir: Path, dtype: str, names: dict) -> dict:
    """``source``: the BLIP-2 directory, with ``from_file`` the captions file, or a ``str``: the one fixed caption of
    every image (without BLIP-2 there is no generation or preprocessing; the fingerprint is the SHA-256 of the text)."""
    if isinstance(source, str):
        captioner = {"source": "fixed", "text": source, "name": names["captioner"] or "fixed caption",
                     "fingerprint": hashlib.sha256(source.encode()).hexdigest()}
    elif from_file:
        captioner = {"source": "file", "path": str(source.resolve()), "name": names["captioner"] or source.name,
                     "fingerprint": hashlib.sha256(source.read_bytes()).hexdigest()}
    else:
        captioner = {"source": "blip2", "path": str(source.resolve()), "name": names["captioner"] or source.name,
                     "fingerprint": fingerprint(source)}
    return {
        "format": CACHE_FORMAT, "format_version": 1, "key": "sha256 of the raw image file bytes",
        "captioner": captioner,
        "generation": None if from_file or isinstance(source, str) else {**GENERATION, "prompt": None, "skip_special_tokens": True,
                                              "dtype": dtype},
        "preprocessing": None if from_file or isinstance(source, str) else {"version": PREPROCESSING_VERSION, "size": CAPTION_SIZE,
                                                 "steps": list(PREPROCESSING_STEPS)},
        "embedding": {"path": str(bert_dir.resolve()), "name": names["bert"] or bert_dir.name,
                      "fingerprint": fingerprint(bert_dir), "pooling": POOLING, "dim": None, "dtype": "float32"},
        "versions": _versions(),
        "files": {"captions": CAPTIONS, "embeddings": EMBEDDINGS},
    }


def _check_compatible(path: Path, old: dict, new: dict) -> None:
    for fields in COMPATIBLE_FIELDS:
        a, b = old, new
        for f in fields:
            a, b = (a or {}).get(f), (b or {}).get(f)
        if a != b:
            raise CaptionCacheError(f"{path}: this cache was built with {'.'.join(fields)} = {a!r}, this run uses "
                                    f"{b!r}; use another --cache directory (entries of two settings never mix)")


def _append_captions(path: Path, records: Sequence[dict]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that lacks its newline (a write interrupted mid-line) so that appends stay valid."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def build_caption_cache(cache_dir: str | os.PathLike, images: Sequence[tuple[str | os.PathLike, str]],
                        captioner_dir: str | os.PathLike | None, bert_dir: str | os.PathLike, *, batch_size: int = 8,
                        bert_batch_size: int = 64, device: str = "cpu", dtype: str = "float32",
                        captioner_name: str | None = None, bert_name: str | None = None,
                        progress: bool = True, captions_file: str | os.PathLike | None = None,
                        fixed_caption: str | None = None) -> dict[str, int]:
    """Caption and embed the ``(image path, relpath)`` pairs not yet in the cache at ``cache_dir``.

    The text comes from exactly one source: BLIP-2 at ``captioner_dir``, ``captions_file`` (:class:`FileCaptions`),
    or ``fixed_caption``, one text for every image (a pipeline check: the embeddings then carry no information
    about the image). Models are loaded only when there is work. Returns counts: ``images`` (distinct keys asked
    for), ``captioned`` and ``embedded`` (this run), ``total`` (entries in the cache).
    """
    cache_dir = Path(cache_dir)
    if sum(x is not None for x in (captioner_dir, captions_file, fixed_caption)) != 1:
        raise ValueError("give exactly one caption source: captioner_dir (BLIP-2), captions_file (JSONL) or "
                         "fixed_caption")
    if fixed_caption is not None and not fixed_caption.strip():
        raise ValueError("fixed_caption must not be empty")
    file_captions = FileCaptions(captions_file) if captions_file is not None else None
    source = (fixed_caption if fixed_caption is not None else file_captions.path if file_captions
              else _model_dir(captioner_dir, "--captioner", "Salesforce/blip2-flan-t5-xl"))
    bert_dir = _model_dir(bert_dir, "--bert", "bert-base-uncased")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    names = {"captioner": captioner_name, "bert": bert_name}
    manifest = _manifest(source, file_captions is not None, bert_dir, dtype, names)
    if (cache_dir / MANIFEST).exists():
        old = read_json(cache_dir / MANIFEST)
        _check_compatible(cache_dir / MANIFEST, old, manifest)
        manifest["embedding"]["dim"] = old["embedding"].get("dim")  # same fingerprint: a dict
    else:
        write_json(cache_dir / MANIFEST, manifest, indent=2)
    _drop_partial_line(cache_dir / CAPTIONS)
    captions = read_captions(cache_dir)

    todo: dict[str, tuple[Path, str]] = {}
    asked: set[str] = set()
    for path, relpath in tqdm(images, desc="hashing", unit="image", disable=not progress, leave=False):
        key = image_key(path)
        asked.add(key)
        if key not in captions:
            todo.setdefault(key, (Path(path), relpath))
    if file_captions is not None and todo:
        absent = [os.fspath(path) for key, (path, _) in todo.items() if key not in file_captions.by_key()]
        if absent:
            raise CaptionCacheError(f"{file_captions.path} has no caption for {len(absent)} image(s): "
                                    + ", ".join(absent[:MAX_LISTED]) + (" …" if len(absent) > MAX_LISTED else ""))
    if todo:
        blip2 = None if file_captions or fixed_caption is not None else Blip2Captioner(source, device, dtype)
        items = list(todo.items())
        bar = tqdm(total=len(items), desc="captioning (BLIP-2)" if blip2 else "captions (given)", unit="image",
                   disable=not progress)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            texts = ([fixed_caption] * len(chunk) if fixed_caption is not None else
                     [file_captions.by_key()[k] for k, _ in chunk] if blip2 is None else
                     blip2([read_image(path, record=rel) for _, (path, rel) in chunk]))
            records = [{"key": k, "relpath": rel, "caption": t} for (k, (_, rel)), t in zip(chunk, texts, strict=True)]
            _append_captions(cache_dir / CAPTIONS, records)
            captions.update({r["key"]: r for r in records})
            bar.update(len(chunk))
        bar.close()

    keys, embeddings = read_embeddings(cache_dir)
    known = set(keys)
    pending = [k for k in captions if k not in known]
    if pending:
        embedder = CaptionEmbedder(bert_dir, device)
        if manifest["embedding"]["dim"] not in (None, embedder.dim):
            raise CaptionCacheError(f"{cache_dir / MANIFEST}: embedding dim {manifest['embedding']['dim']}, "
                                    f"but {bert_dir} gives {embedder.dim}")
        manifest["embedding"]["dim"] = embedder.dim
        new = [embedder([captions[k]["caption"] for k in pending[i:i + bert_batch_size]])
               for i in tqdm(range(0, len(pending), bert_batch_size), desc="embedding (BERT)", unit="batch",
                             disable=not progress)]
        keys = keys + pending
        embeddings = torch.cat([embeddings.reshape(-1, embedder.dim), *new]).contiguous()
        digests = torch.frombuffer(bytearray(b"".join(bytes.fromhex(k) for k in keys)), dtype=torch.uint8)
        digests = digests.reshape(-1, 32)
        with atomic_path(cache_dir / EMBEDDINGS) as tmp:
            save_file({"embeddings": embeddings, "keys": digests}, tmp, metadata={"format": CACHE_FORMAT})
    manifest["counts"] = {"captions": len(captions), "embeddings": len(keys)}
    manifest["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(cache_dir / MANIFEST, manifest, indent=2)
    return {"images": len(asked), "captioned": len(todo), "embedded": len(pending), "total": len(keys)}
