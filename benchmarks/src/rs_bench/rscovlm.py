"""RSCoVLM (Qwen2.5-VL multi-task RS VLM): the tiny random Qwen2.5-VL fine-tuned briefly on the synthetic SFT
mixture through ``rscovlm.train.run``, scored on held-out synthetic questions with the real images against its
control, the same questions with blank (constant grey) images.

Scores (greedy decoding, prompt = the conversation up to the question, earlier gold turns included):

- classification: exact match after ``rscovlm.parsing.normalize_answer`` ("What type of area / kind of scene …"),
  the headline (the package's learning check);
- counting: accuracy of ``rscovlm.parsing.parse_count`` against the gold count ("How many …");
- grounding: Acc@0.5 of ``find the {expression}`` answers as ``rscovlm-eval --task vg`` scores them: the first line
  read by the strict ``rscovlm.parsing.parse_grounding`` (``x1,y1,x2,y2 label``, integers of the resized frame), IoU
  **> 0.5** with RSCoVLM's 1-px overlap rule (``rs_shared.metrics.detection.grounding_accuracy``); an unreadable
  answer is wrong and counted in ``parse_failures_grounding`` (the fraction of grounding answers that did not parse).

The helpers here also serve ``benchmarks/rscovlm_learning.py`` (the long learning benchmark of the package README).
Inference latency is one greedy answer (at most 24 new tokens) to one question about one image.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .measure import LOOP_OVERRIDES, Stages, parameter_count, training_speed

CLASS_QUESTION = re.compile(r"^(what type of area|what kind of scene)", re.I)
COUNT_QUESTION = re.compile(r"^how many", re.I)
MAX_NEW_TOKENS = 24
TASKS = ("classification", "counting", "grounding")

# Allowed drop of the classification accuracy below the baseline (about 30 questions: one is 3 points).
TOLERANCE = 0.2


@dataclass(frozen=True)
class Budget:
    steps: int  # optimiser steps (batch size: the preset's)
    train_records: int  # synthetic SFT conversations trained on
    heldout_records: int  # held-out conversations whose questions are scored


BUDGETS = {"smoke": Budget(steps=4, train_records=16, heldout_records=6),
           "quick": Budget(steps=200, train_records=90, heldout_records=60),
           "full": Budget(steps=1000, train_records=500, heldout_records=100)}


def questions(dataset) -> list[dict]:
    """Held-out prompts of an ``SFTDataset``: ``{"index", "task", "messages" (up to the question), "answer"}``."""
    out = []
    for i, record in enumerate(dataset.records):
        messages = dataset.messages(i)
        for k in range(1, len(messages), 2):
            question = "".join(item["text"] for item in messages[k - 1]["content"] if item["type"] == "text")
            answer = messages[k]["content"][0]["text"]
            if record.source == "synthetic:grounding":
                task = "grounding"
            elif CLASS_QUESTION.match(question.strip()):
                task = "classification"
            elif COUNT_QUESTION.match(question.strip()):
                task = "counting"
            else:
                continue
            out.append({"index": i, "task": task, "messages": messages[:k], "answer": answer})
    return out


def correct(task: str, output: str, answer: str) -> bool | None:
    """Whether ``output`` answers a ``task`` question whose gold answer is ``answer`` (module docstring); ``None``
    for a grounding answer the strict parser cannot read (wrong, and counted as a parse failure)."""
    from rs_shared.data.geometry import Boxes
    from rs_shared.metrics.detection import grounding_accuracy
    from rscovlm.parsing import normalize_answer, parse_count, parse_grounding

    if task == "counting":
        parsed = parse_count(output)
        return parsed.ok and parsed.value == int(answer)
    if task == "classification":
        return normalize_answer(output) == normalize_answer(answer)
    parsed, gold = parse_grounding(output), parse_grounding(answer)
    if not gold.ok:
        raise ValueError(f"gold grounding answer {answer!r}: {gold.failure}")
    if not parsed.ok:
        return None
    boxes = [Boxes([r.value.coords], "xyxy", "pixel") for r in (parsed, gold)]
    return grounding_accuracy(boxes[:1], boxes[1:], threshold=0.5, official_iou=True)["correct"] == 1


def generate_answer(loaded, renderer, messages: list[dict], images: list[np.ndarray]) -> str:
    """The greedy answer (≤ :data:`MAX_NEW_TOKENS` tokens) of a ``rscovlm.model_factory.LoadedModel`` to the
    conversation ``messages`` (ending with the question) over ``images`` (``(H, W, 3)`` uint8 each)."""
    import torch

    sample = renderer.render(messages, images, add_generation_prompt=True)
    with torch.no_grad():
        generated = loaded.model.generate(
            input_ids=sample.input_ids[None], attention_mask=torch.ones(1, len(sample), dtype=torch.long),
            mm_token_type_ids=sample.mm_token_type_ids[None], pixel_values=sample.pixel_values,
            image_grid_thw=sample.image_grid_thw, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return loaded.tokenizer.decode(generated[0, len(sample):], skip_special_tokens=True)


def prompt_images(dataset, prompt: dict, blank: bool) -> list[np.ndarray]:
    """The images of a prompt's record, or constant grey images of the same sizes (``blank``)."""
    images = dataset.records[prompt["index"]].load()["images"]
    return [np.full_like(image, 128) for image in images] if blank else images


def score(loaded, dataset, prompts: list[dict], blank: bool) -> dict[str, Any]:
    """Accuracy per task, ``n_<task>`` (the number of questions) and ``parse_failures_grounding`` (the fraction of
    grounding answers the strict parser could not read) of ``loaded`` on ``prompts``; ``"outputs"`` holds the
    generated answers in prompt order and ``"seconds"`` the time of each generation."""
    renderer = loaded.renderer()
    hits: dict[str, list[bool | None]] = {}
    outputs, seconds = [], []
    for prompt in prompts:
        images = prompt_images(dataset, prompt, blank)
        start = time.perf_counter()
        output = generate_answer(loaded, renderer, prompt["messages"], images)
        seconds.append(time.perf_counter() - start)
        outputs.append(output)
        hits.setdefault(prompt["task"], []).append(correct(prompt["task"], output, prompt["answer"]))
    failures = {"parse_failures_grounding": float(np.mean([h is None for h in hits["grounding"]]))} \
        if "grounding" in hits else {}
    return ({task: float(np.mean([bool(h) for h in v])) for task, v in sorted(hits.items())}
            | {f"n_{task}": len(v) for task, v in sorted(hits.items())} | failures
            | {"outputs": outputs, "seconds": seconds})


def run(work: Path, budget: str, seed: int, stages: Stages) -> dict[str, Any]:
    from rs_shared.data.conversations import read_conversations
    from rs_shared.training import load_config
    from rs_shared.viz import compose, draw_caption, save_png
    from rscovlm.cli_train import CONFIG_DIR
    from rscovlm.mixture import SFTDataset, ensure_synthetic_sft
    from rscovlm.model_factory import load_pretrained
    from rscovlm.train import RSCoVLMTrainConfig
    from rscovlm.train import run as train

    b = BUDGETS[budget]
    cfg = load_config(RSCoVLMTrainConfig, CONFIG_DIR / "tiny-synthetic.yaml", [
        *LOOP_OVERRIDES, f"train.output_dir={work / 'run'}", f"train.seed={seed}", f"train.max_steps={b.steps}",
        f"data.synthetic_dir={work / 'data' / 'train'}", f"data.synthetic_n={b.train_records}",
        f"data.synthetic_seed={seed}"])
    with stages("data", f"{b.train_records} training and {b.heldout_records} held-out SFT records"):
        ensure_synthetic_sft(cfg.data.synthetic_dir, b.train_records, seed)
        heldout = read_conversations(ensure_synthetic_sft(work / "data" / "heldout", b.heldout_records, 1000 + seed))
    with stages("train", f"{b.steps} steps × batch {cfg.train.batch_size}"):
        result = train(cfg)
    loaded = load_pretrained(result["model"])
    dataset = SFTDataset(heldout, loaded.renderer(), random_resize_prob=0.0)
    prompts = questions(dataset)
    with stages("evaluate", f"{len(prompts)} held-out questions with real and blank images"):
        real = score(loaded, dataset, prompts, blank=False)
        blank = score(loaded, dataset, prompts, blank=True)
    firsts = [[k for k, p in enumerate(prompts) if p["task"] == task][:2] for task in TASKS]
    shown = [k for i in range(2) for ks in firsts for k in ks[i:i + 1]][:4]  # one question per task, then more
    panels = []
    for k in shown:
        text = "".join(item["text"] for item in prompts[k]["messages"][-1]["content"] if item["type"] == "text")
        image = prompt_images(dataset, prompts[k], blank=False)[0]
        panels.append(draw_caption(image, f"Q: {text} A: {real['outputs'][k]} (gold: {prompts[k]['answer']})"))
    picture = save_png(compose(panels, ncols=2), work / "answers.png")

    return {
        "preset": "tiny", "parameters": parameter_count(loaded.model),
        "train": training_speed(work / "run" / "log.jsonl", cfg.train.batch_size),
        "inference": {"median_s": round(statistics.median(real["seconds"]), 4), "calls": len(real["seconds"]),
                      "unit": f"one question + image, ≤ {MAX_NEW_TOKENS} new tokens"},
        "quality": {"metric": "classification accuracy", "value": real.get("classification", 0.0),
                    "higher_is_better": True, "tolerance": TOLERANCE,
                    "control": "blank images", "control_value": blank.get("classification", 0.0),
                    "split": "held-out synthetic questions", "samples": real.get("n_classification", 0),
                    "extra": {f"{task}{' (blank)' if name == 'blank' else ''}": scores[task]
                              for task in TASKS[1:] for name, scores in (("real", real), ("blank", blank))
                              if task in scores}},
        "picture": picture,
        "settings": asdict(b),
    }
