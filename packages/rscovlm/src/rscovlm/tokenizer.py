"""The chat tokenizer: Qwen2.5-VL's special tokens and chat template, and the tiny offline BPE (spec §1, §2.3, §8).

The tiny tokenizer is a real :class:`transformers.Qwen2Tokenizer` (the class Qwen2.5-VL checkpoints name in
transformers 5.x, also exported as ``Qwen2TokenizerFast``) with a small vocabulary: a byte-level BPE trained
here, fully offline, with Qwen2's own pre-tokenizer (split regex + byte-level), so the class rebuilds the
same pipeline from the saved ``vocab``/``merges`` when it is loaded again.

- Special tokens (dropped by ``skip_special_tokens=True``): :data:`SPECIAL_TOKENS`; ``<|endoftext|>`` pads,
  ``<|im_end|>`` ends a turn and generation.
- ``<tool_call>`` / ``</tool_call>`` are **non-special** added tokens: they stay whole when encoding and
  survive ``skip_special_tokens=True``, so the zoom chain can see a tool call in decoded output (§8).
- The chat template (:data:`CHAT_TEMPLATE`) renders the §2.3 layout; :mod:`rscovlm.render` produces the
  same text and is what training uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rs_shared.data.dota import DOTA_V1_0
from rs_shared.data.synthetic import SCENE_CLASSES, VOCABULARY, holistic_sentence, make_scene, qa_pairs
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from . import templates

PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
TOOL_TOKENS = (templates.TOOL_CALL_OPEN, templates.TOOL_CALL_CLOSE)
TINY_VOCAB_SIZE = 512  # BPE vocabulary incl. the 256 byte symbols and the special tokens

# §2.3: default system turn when the first message is not a system one; images as one placeholder each
# (the renderer expands it to N image tokens); the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + templates.DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TokenIds:
    """Ids of the structural tokens of a Qwen2.5-VL tokenizer."""

    pad: int
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image: int
    video: int
    tool_call_open: int | None
    tool_call_close: int | None

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> TokenIds:
        """Look the tokens up; raises ``ValueError`` naming any structural token the vocabulary lacks."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} lacks the Qwen2.5-VL tokens {missing}")
        return cls(vocab[PAD_TOKEN], vocab[IM_START], vocab[IM_END], vocab[VISION_START], vocab[VISION_END],
                   vocab[IMAGE_PAD], vocab[VIDEO_PAD], vocab.get(TOOL_TOKENS[0]), vocab.get(TOOL_TOKENS[1]))


def tokenizer_corpus(n_scenes: int = 48, seed: int = 0) -> list[str]:
    """The in-memory training text of the tiny BPE: every template string, the role names, detection and
    tool-call answers with numbers, the DOTA class names, the synthetic generator's vocabulary and the QA
    pairs and captions of ``n_scenes`` synthetic scenes (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    texts = [
        templates.DEFAULT_SYSTEM_PROMPT, *templates.SYSTEM_PROMPTS.values(), templates.TOOL_SYSTEM_PROMPT,
        templates.ZOOM_INSTRUCTION, templates.ZOOMED_IMAGE_NOTE, templates.MCQ_CHOICES_HEADER,
        templates.MCQ_INSTRUCTION, templates.MCQ_ANSWER_CUE, templates.VQA_SHORT_ANSWER,
        templates.CLASSIFICATION_PROMPT, templates.CAPTION_PROMPT, templates.EMPTY_DETECTION,
        templates.find_prompt(templates.category_list()), templates.find_prompt(templates.category_list(), True),
        " ".join(VOCABULARY), " ".join(SCENE_CLASSES), *(["system\nuser\nassistant\n"] * 32),  # role headers
    ]
    for _ in range(64):
        names = [templates.class_key(DOTA_V1_0[k]) for k in rng.integers(0, len(DOTA_V1_0), 3)]
        texts.append(templates.detection_answer(rng.integers(0, 1008, (3, 4)), names, kind="hbb"))
        texts.append(" ".join(templates.detection_line(rng.integers(0, 1008, 8), n) for n in names))
        texts.append(templates.tool_call(np.sort(rng.integers(0, 1008, 4))))
    for i in range(n_scenes):
        scene_seed = int(rng.integers(0, 2**31))
        scene = make_scene(scene_seed, (96, 96), SCENE_CLASSES[i % len(SCENE_CLASSES)])
        scene_rng = np.random.default_rng(scene_seed)
        texts += [f"{qa.question} {qa.answer}" for qa in qa_pairs(scene, scene_rng)]
        texts.append(holistic_sentence(scene, scene_rng))
    return texts


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE, corpus: list[str] | None = None) -> Qwen2Tokenizer:
    """Train the tiny byte-level BPE on :func:`tokenizer_corpus` and wrap it as a ``Qwen2Tokenizer`` with the
    Qwen2.5-VL special tokens, the non-special tool-call tokens and :data:`CHAT_TEMPLATE`. Deterministic:
    the same corpus gives the same ids."""
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = _qwen_pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus if corpus is not None else tokenizer_corpus(), trainer)
    model = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
                               unk_token=None, eos_token=IM_END, pad_token=PAD_TOKEN)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The tokenizer saved in the local directory ``path`` (tiny or a Qwen2.5-VL checkpoint), checked for the
    structural tokens and for ``<tool_call>`` being a non-special token. A missing chat template is set to
    :data:`CHAT_TEMPLATE`."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    TokenIds.of(tokenizer)
    special = set(tokenizer.all_special_tokens)
    bad = [t for t in TOOL_TOKENS if t in special]
    if bad:
        raise ValueError(f"{path}: {bad} are special tokens; skip_special_tokens would delete tool calls")
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _qwen_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Qwen2's pre-tokenizer: its split regex, then byte-level mapping without a second regex."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


__all__ = [
    "CHAT_TEMPLATE", "IMAGE_PAD", "IM_END", "IM_START", "PAD_TOKEN", "SPECIAL_TOKENS", "TINY_VOCAB_SIZE",
    "TOOL_TOKENS", "TokenIds", "VIDEO_PAD", "VISION_END", "VISION_START", "build_tiny_tokenizer",
    "load_tokenizer", "tokenizer_corpus",
]
