"""rs-rscovlm: RSCoVLM, a multi-task remote-sensing VLM on transformers' Qwen2.5-VL.

Foundation modules: :mod:`.resize` (smart_resize, random resizing, scalable boxes), :mod:`.templates`
(prompt strings and answer grammar), :mod:`.tokenizer` (Qwen2.5-VL tokens, the tiny offline BPE),
:mod:`.model_factory` (``tiny`` and ``paper`` presets), :mod:`.render` (conversations → ids, labels and ViT
patches), :mod:`.collate` (padding, length-grouped batches) and :mod:`.parsing` (strict output parsers).
"""

__version__ = "0.1.0"
