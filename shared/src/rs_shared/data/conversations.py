"""Chat / SFT conversations with image references: LLaVA-style and unified (Qwen/OpenAI) message records.

Records live in a JSON list or in JSON lines (told apart by the first character of the file, not its name);
each record's style is told by its key: ``conversations`` → LLaVA-style, ``messages`` → unified.

**LLaVA-style** ::

    {"id": "vhm_17", "image": "images/a.png" | ["a.png", "b.png"],
     "conversations": [{"from": "system" | "human" | "gpt", "value": "<image>\\nWhat is shown?"}, ...]}

``from`` maps human → user and gpt → assistant; ``system``, ``user`` and ``assistant`` are taken as given.
Each ``<image>`` tag is consumed in order (across turns) and becomes an image item at its position; one
newline right after a tag is dropped; the text between tags becomes text items and empty pieces are
dropped. The number of tags must equal the number of images. A record with images but no tags is reported:
LLaVA's own data always carries the tags, and placing them implicitly would be a guess.

**Unified** ::

    {"id": "q3", "messages": [{"role": "system" | "user" | "assistant",
                               "content": "text" | [{"type": "text", "text": "..."},
                                                    {"type": "image", "image": "file://<path>" | "<path>",
                                                     "resized_width": 448, "resized_height": 448}]}]}

Extra keys of an image item (``resized_width``, ``resized_height``, ``min_pixels``, ``max_pixels``, as read
by ``qwen_vl_utils``) are kept in :attr:`ImageItem.options`. Only local image files are supported.

**Common fields.** ``id`` (string or integer; default ``<file stem>-<k>``, k the record's 0-based position:
list index, or line index in JSON lines), ``source`` (name of the data source, for per-source counts) and
``coords``: the frame of any box coordinates written in the text, one of
:data:`~rs_shared.data.geometry.Frame` — ``"pixel"`` (pixels of the referenced image file), ``"norm1"``,
``"norm100"``, ``"norm1000"``; absent when the text holds no coordinates. Other top-level fields are kept in
:attr:`Conversation.meta` and written back. Video records (``video``) are not supported and are reported.

**Turns.** An optional leading system turn, then user and assistant turns alternating, starting with the user
and **ending with the assistant** (every record is a supervised example whose last turn is a target). No turn
may be empty. Image paths are relative to ``image_root`` (default: the JSON file's directory) unless absolute;
records keep them as absolute paths and every referenced file must exist.

Rendering, tokenisation and label masking belong to the model packages (rscovlm).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .common import RecordDataset, as_array, atomic_path, read_image, read_json, read_jsonl, write_json
from .errors import DataFormatError, Problems
from .geometry import Frame

Role = Literal["system", "user", "assistant"]

IMAGE_TAG = "<image>"
FRAMES: tuple[str, ...] = get_args(Frame)
IMAGE_OPTIONS = ("resized_width", "resized_height", "min_pixels", "max_pixels")
SPEAKER_ROLES: dict[str, Role] = {"human": "user", "gpt": "assistant", "system": "system",
                                  "user": "user", "assistant": "assistant"}
ROLE_SPEAKERS: dict[str, str] = {"user": "human", "assistant": "gpt", "system": "system"}
_LLAVA_KEYS = ("id", "image", "conversations", "coords", "source")
_UNIFIED_KEYS = ("id", "messages", "coords", "source")


@dataclass(frozen=True)
class TextItem:
    text: str


@dataclass(frozen=True)
class ImageItem:
    """The ``index``-th image of the conversation; ``options`` holds per-image resize hints
    (``resized_width``/``resized_height``/``min_pixels``/``max_pixels``)."""

    index: int
    options: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[TextItem | ImageItem, ...]


@dataclass(frozen=True)
class Conversation:
    """One chat sample. Image items number the images ``0 … len(images) - 1`` in order of appearance;
    ``coords`` is the frame of box coordinates written in the text (``None``: the text has none)."""

    id: str
    messages: tuple[Message, ...]
    images: tuple[Path, ...] = ()
    source: str | None = None
    coords: Frame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        order = [item.index for m in self.messages for item in m.content if isinstance(item, ImageItem)]
        if order != list(range(len(self.images))):
            raise ValueError(f"conversation {self.id}: image items {order} must number the "
                             f"{len(self.images)} images in order of appearance")
        if self.coords is not None and self.coords not in FRAMES:
            raise ValueError(f"conversation {self.id}: unknown coords frame {self.coords!r}; expected one of {FRAMES}")

    def load(self) -> dict[str, Any]:
        """``{"id", "images": [(H, W, 3) uint8], "messages", "coords", "source"}``.

        ``messages`` is the unified form with each image item given as ``{"type": "image", "index": i,
        **options}``, ``i`` indexing ``images``."""
        return {
            "id": self.id,
            "images": [as_array(read_image(p, f"id {self.id}")) for p in self.images],
            "messages": [_message_dict(m, _indexed_image) for m in self.messages],
            "coords": self.coords,
            "source": self.source,
        }


class _Invalid(Exception):
    """A record breaks the format; the message says how (the caller adds file and record)."""


# ----------------------------------------------------------------------------------------------- reading


def read_conversations(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                       problems: Problems | None = None) -> list[Conversation]:
    """Conversations of a JSON / JSON-lines file, or of every ``*.json``/``*.jsonl`` file directly in a
    directory (except ``manifest.json``), in file-name order. ``image_root`` defaults to each file's
    directory. Broken records are reported to ``problems`` (strict by default) and skipped."""
    problems = Problems() if problems is None else problems
    path = Path(path)
    files = _conversation_files(path) if path.is_dir() else [path]
    return [c for f in files for c in _read_file(f, image_root, problems)]


def from_unified(record: dict, image_root: str | os.PathLike | None = None) -> Conversation:
    """Parse one unified record (which must carry ``id``); relative image paths resolve against
    ``image_root`` (default: the working directory)."""
    name = record.get("id") if isinstance(record, dict) else None
    try:
        return _parse(record, Path(image_root or "."), None)
    except _Invalid as e:
        raise DataFormatError("unified record", str(e), name) from None


def _conversation_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.suffix in (".json", ".jsonl") and p.name != "manifest.json")


def _read_file(file: Path, image_root: str | os.PathLike | None, problems: Problems) -> list[Conversation]:
    if not file.is_file():
        problems.add(file, "conversation file is missing")
        return []
    if _is_json_list(file):
        try:
            data = read_json(file)
        except DataFormatError as e:
            problems.add(e.file, e.message, e.record)
            return []
        rows = [(k, None, obj) for k, obj in enumerate(data)]
    else:
        rows = [(lineno - 1, lineno, obj) for lineno, obj in read_jsonl(file, problems)]
    root = Path(image_root) if image_root is not None else file.parent
    out = []
    for k, lineno, obj in rows:
        name = obj.get("id") if isinstance(obj, dict) else None
        where = [f"line {lineno}"] if lineno is not None else []
        where += [] if name is None else [f"id {name}"]
        label = f"{k} ({', '.join(where)})" if where else k
        try:
            out.append(_parse(obj, root, f"{file.stem}-{k}"))
        except _Invalid as e:
            problems.add(file, str(e), label)
    return out


def _is_json_list(file: Path) -> bool:
    with open(file, encoding="utf-8", errors="replace") as f:
        while chunk := f.read(4096):
            if chunk := chunk.lstrip():
                return chunk[0] == "["
    return False


def _parse(obj: Any, root: Path, default_id: str | None) -> Conversation:
    if not isinstance(obj, dict):
        raise _Invalid(f"expected an object, got {type(obj).__name__}")
    if ("conversations" in obj) == ("messages" in obj):
        raise _Invalid("expected exactly one of 'conversations' (LLaVA-style) or 'messages' (unified)")
    if "video" in obj:
        raise _Invalid("video records are not supported")
    name = obj.get("id", default_id)
    if name is None:
        raise _Invalid("missing field 'id'")
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise _Invalid(f"field 'id' must be str or int, got {type(name).__name__}")
    coords, source = obj.get("coords"), obj.get("source")
    if coords is not None and coords not in FRAMES:
        raise _Invalid(f"field 'coords' must be one of {', '.join(FRAMES)}, got {coords!r}")
    if source is not None and not isinstance(source, str):
        raise _Invalid(f"field 'source' must be str, got {type(source).__name__}")
    if "conversations" in obj:
        messages, images = _parse_llava(obj, root)
        reserved = _LLAVA_KEYS
    else:
        messages, images = _parse_unified(obj, root)
        reserved = _UNIFIED_KEYS
    _check_turns(messages)
    meta = {k: v for k, v in obj.items() if k not in reserved}
    return Conversation(str(name), messages, images, source, coords, meta)


def _parse_llava(obj: dict, root: Path) -> tuple[tuple[Message, ...], tuple[Path, ...]]:
    refs = obj.get("image", [])
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise _Invalid(f"field 'image' must be a path or a list of paths, got {obj['image']!r}")
    images = tuple(_image_path(r, root) for r in refs)
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        raise _Invalid("field 'conversations' must be a non-empty list of {'from', 'value'} turns")
    messages, n_tags = [], 0
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"from", "value"}:
            raise _Invalid(f"turn {t}: expected an object with keys 'from' and 'value', got {turn!r:.80}")
        if not isinstance(turn["from"], str) or turn["from"] not in SPEAKER_ROLES:
            raise _Invalid(f"turn {t}: unknown speaker from={turn['from']!r}; expected one of "
                           f"{', '.join(SPEAKER_ROLES)}")
        if not isinstance(turn["value"], str):
            raise _Invalid(f"turn {t}: 'value' must be str, got {type(turn['value']).__name__}")
        content = split_image_tags(turn["value"], first_index=n_tags)
        n_tags += sum(isinstance(item, ImageItem) for item in content)
        messages.append(Message(SPEAKER_ROLES[turn["from"]], content))
    if n_tags != len(images):
        hint = " (tags are never implied: put an <image> tag where each image goes)" if n_tags == 0 else ""
        raise _Invalid(f"{n_tags} {IMAGE_TAG} tag(s) in the turns but {len(images)} image(s) in "
                       f"field 'image'{hint}")
    return tuple(messages), images


def _parse_unified(obj: dict, root: Path) -> tuple[tuple[Message, ...], tuple[Path, ...]]:
    for key in ("image", "images"):
        if key in obj:
            raise _Invalid(f"field {key!r} is not part of a unified record: images are "
                           "{'type': 'image', 'image': path} items of the messages")
    turns = obj["messages"]
    if not isinstance(turns, list) or not turns:
        raise _Invalid("field 'messages' must be a non-empty list of {'role', 'content'} messages")
    messages, images = [], []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise _Invalid(f"message {t}: expected an object with keys 'role' and 'content', got {turn!r:.80}")
        role, content = turn["role"], turn["content"]
        if not isinstance(role, str) or role not in ROLE_SPEAKERS:
            raise _Invalid(f"message {t}: unknown role {role!r}; expected system, user or assistant")
        if isinstance(content, str):
            items = [TextItem(content)] if content else []
        elif isinstance(content, list):
            items = [_unified_item(item, f"message {t} item {j}", root, images) for j, item in enumerate(content)]
        else:
            raise _Invalid(f"message {t}: 'content' must be str or a list of items, got {type(content).__name__}")
        messages.append(Message(role, tuple(items)))
    return tuple(messages), tuple(images)


def _unified_item(item: Any, where: str, root: Path, images: list[Path]) -> TextItem | ImageItem:
    kind = item.get("type") if isinstance(item, dict) else None
    if kind == "text":
        if set(item) != {"type", "text"} or not isinstance(item["text"], str) or not item["text"]:
            raise _Invalid(f"{where}: a text item is {{'type': 'text', 'text': <non-empty str>}}, got {item!r:.80}")
        return TextItem(item["text"])
    if kind == "image":
        if not isinstance(item.get("image"), str):
            raise _Invalid(f"{where}: field 'image' must be a path or file:// URL, got {item.get('image')!r:.80}")
        options = {k: v for k, v in item.items() if k not in ("type", "image")}
        for key, value in options.items():
            if key not in IMAGE_OPTIONS:
                raise _Invalid(f"{where}: unknown image option {key!r}; expected {', '.join(IMAGE_OPTIONS)}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise _Invalid(f"{where}: {key} must be a positive int, got {value!r}")
        images.append(_image_path(item["image"], root))
        return ImageItem(len(images) - 1, options)
    raise _Invalid(f"{where}: expected a {{'type': 'text' | 'image', ...}} item, got {item!r:.80}")


def _image_path(ref: str, root: Path) -> Path:
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", ref) and not ref.startswith("file://"):
        raise _Invalid(f"image {ref!r:.80}: only local files (a path or file:// URL) are supported")
    path = Path(os.path.abspath(root / ref.removeprefix("file://")))
    if not path.is_file():
        raise _Invalid(f"image file {path} is missing")
    return path


def _check_turns(messages: Sequence[Message]) -> None:
    for t, m in enumerate(messages):
        if not any(isinstance(i, ImageItem) or i.text.strip() for i in m.content):
            raise _Invalid(f"turn {t} ({m.role}) is empty")
    start = 1 if messages[0].role == "system" else 0
    for t in range(start, len(messages)):
        expected = "user" if (t - start) % 2 == 0 else "assistant"
        if messages[t].role != expected:
            raise _Invalid(f"turn {t} is {messages[t].role}, expected {expected} (turns alternate user/assistant "
                           "after an optional leading system turn)")
    if messages[-1].role != "assistant":
        raise _Invalid("the last turn must be an assistant turn (the supervised answer)")


def split_image_tags(text: str, first_index: int = 0) -> tuple[TextItem | ImageItem, ...]:
    """LLaVA text → items: each ``<image>`` becomes an image item (numbered from ``first_index``), one
    newline right after a tag is dropped, and empty text pieces are dropped."""
    items: list[TextItem | ImageItem] = []
    for k, piece in enumerate(text.split(IMAGE_TAG)):
        if k > 0:
            items.append(ImageItem(first_index + k - 1))
            piece = piece.removeprefix("\n")
        if piece:
            items.append(TextItem(piece))
    return tuple(items)


def join_image_tags(content: Iterable[TextItem | ImageItem]) -> str:
    """Items → LLaVA text, the inverse of :func:`split_image_tags`: a tag per image item and a newline
    between a tag and the text that follows it. Adjacent text items are joined. Raises ``ValueError`` for
    what LLaVA text cannot hold: image options, or a literal ``<image>`` inside a text item."""
    out, after_image, n_images = [], False, 0
    for item in content:
        if isinstance(item, ImageItem):
            if item.options:
                raise ValueError(f"image options {item.options} cannot be written in LLaVA style; use unified")
            out.append(IMAGE_TAG)
            n_images += 1
        else:
            out.append(("\n" if after_image else "") + item.text)
        after_image = isinstance(item, ImageItem)
    text = "".join(out)
    if text.count(IMAGE_TAG) != n_images:
        raise ValueError(f"text {text!r:.80} contains a literal {IMAGE_TAG}, which LLaVA style reads as an image")
    return text


# ----------------------------------------------------------------------------------------------- writing


def to_llava(conversation: Conversation, image_root: str | os.PathLike) -> dict[str, Any]:
    """The LLaVA-style record, with image paths relative to ``image_root`` (one image as a string)."""
    c = conversation
    refs = [_relative(p, image_root) for p in c.images]
    record: dict[str, Any] = {"id": c.id}
    if refs:
        record["image"] = refs[0] if len(refs) == 1 else refs
    record["conversations"] = [{"from": ROLE_SPEAKERS[m.role], "value": join_image_tags(m.content)}
                               for m in c.messages]
    return _with_common_fields(record, c, _LLAVA_KEYS + ("messages", "video"))


def to_unified(conversation: Conversation, image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The unified record. Images are absolute ``file://`` URLs, or paths relative to ``image_root`` when
    given; text content is always a list of items."""
    c = conversation

    def image(i: int, options: dict) -> dict:
        path = c.images[i]
        ref = "file://" + path.as_posix() if image_root is None else _relative(path, image_root)
        return {"image": ref, **options}

    record = {"id": c.id, "messages": [_message_dict(m, image) for m in c.messages]}
    return _with_common_fields(record, c, _UNIFIED_KEYS + ("conversations", "image", "images", "video"))


def write_llava(path: str | os.PathLike, conversations: Iterable[Conversation],
                image_root: str | os.PathLike | None = None) -> None:
    """Write a LLaVA-style JSON list atomically; image paths relative to ``image_root`` (default: the
    output file's directory, which is where :func:`read_conversations` looks by default)."""
    root = Path(image_root) if image_root is not None else Path(path).parent
    write_json(path, [to_llava(c, root) for c in conversations], indent=1)


def write_jsonl(path: str | os.PathLike, conversations: Iterable[Conversation],
                image_root: str | os.PathLike | None = None, style: Literal["llava", "unified"] = "llava") -> None:
    """Write one record per line atomically, LLaVA-style or unified; image paths relative to ``image_root``
    (default: the output file's directory)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    convert: Callable[[Conversation, Path], dict] = {"llava": to_llava, "unified": to_unified}[style]
    lines = [json.dumps(convert(c, root), ensure_ascii=False) + "\n" for c in conversations]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")


def _message_dict(message: Message, image: Callable[[int, dict], dict]) -> dict[str, Any]:
    content = [{"type": "text", "text": item.text} if isinstance(item, TextItem)
               else {"type": "image", **image(item.index, item.options)} for item in message.content]
    return {"role": message.role, "content": content}


def _indexed_image(index: int, options: dict) -> dict:
    return {"index": index, **options}


def _with_common_fields(record: dict, c: Conversation, reserved: tuple[str, ...]) -> dict:
    if c.coords is not None:
        record["coords"] = c.coords
    if c.source is not None:
        record["source"] = c.source
    clash = sorted(set(c.meta) & set(reserved))
    if clash:
        raise ValueError(f"conversation {c.id}: meta keys {clash} collide with record fields")
    return {**record, **c.meta}


def _relative(path: Path, root: str | os.PathLike) -> str:
    return Path(os.path.relpath(path, os.path.abspath(root))).as_posix()


# ------------------------------------------------------------------------------------ datasets and checks


class ConversationDataset(RecordDataset):
    """Torch dataset over a conversation file or directory; item ``i`` is ``transform(conversation.load())``."""

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 transform: Callable[[dict], Any] | None = None):
        super().__init__(read_conversations(path, image_root), transform)


def to_hf_dataset(conversations: Sequence[Conversation]):
    """A ``datasets.Dataset`` with columns ``id``, ``messages`` (JSON string of :meth:`Conversation.load`'s
    ``messages``: image items carry ``index``), ``images`` (sequence of ``datasets.Image``, referenced by
    path), ``source``, ``coords`` and ``meta`` (JSON string)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"),
        "messages": datasets.Value("string"),
        "images": datasets.Sequence(datasets.Image()),
        "source": datasets.Value("string"),
        "coords": datasets.Value("string"),
        "meta": datasets.Value("string"),
    })
    columns = {
        "id": [c.id for c in conversations],
        "messages": [json.dumps([_message_dict(m, _indexed_image) for m in c.messages], ensure_ascii=False)
                     for c in conversations],
        "images": [[str(p) for p in c.images] for c in conversations],
        "source": [c.source for c in conversations],
        "coords": [c.coords for c in conversations],
        "meta": [json.dumps(c.meta, ensure_ascii=False) for c in conversations],
    }
    return datasets.Dataset.from_dict(columns, features=features)


def detect(root_or_file: str | os.PathLike) -> bool:
    """Whether ``root_or_file`` is (or directly holds) a conversation file: its first record has
    ``conversations`` or ``messages``. GeoPixelD index files (records with ``polygons``/``segmentation``)
    belong to :mod:`rs_shared.data.gcg` and are not claimed."""
    path = Path(root_or_file)
    files = _conversation_files(path) if path.is_dir() else [path] if path.is_file() else []
    return any(_looks_like_conversation(_first_record(f)) for f in files)


def check(root_or_file: str | os.PathLike, problems: Problems) -> dict[str, Any]:
    """Read every record, reporting problems; counts for ``rs-data check``: files, records, turns,
    images and records per source (``"(none)"`` when a record names no source)."""
    path = Path(root_or_file)
    files = _conversation_files(path) if path.is_dir() else [path]
    per_file = {f.name: _read_file(f, None, problems) for f in files}
    convs = [c for cs in per_file.values() for c in cs]
    return {
        "format": "conversations",
        "files": {name: len(cs) for name, cs in per_file.items()},
        "records": len(convs),
        "turns": sum(len(c.messages) for c in convs),
        "images": sum(len(c.images) for c in convs),
        "sources": dict(Counter(c.source or "(none)" for c in convs)),
    }


def _first_record(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8").lstrip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.startswith("["):
        text = text[1:].lstrip()
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except json.JSONDecodeError:
        return None


def _looks_like_conversation(record: Any) -> bool:
    return (isinstance(record, dict) and ("conversations" in record or "messages" in record)
            and "polygons" not in record and "segmentation" not in record)
