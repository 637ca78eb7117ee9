"""Does the tiny RSCoVLM learn to *look*? Train the tiny preset on the synthetic SFT mixture for a fixed step budget,
then score held-out synthetic questions with the real images and with blank (constant grey) images.

Scores (greedy decoding, prompts = the conversation up to the question, earlier gold turns included):
- counting: accuracy of ``rscovlm.parsing.parse_count`` against the gold count ("How many …" questions);
- classification: exact match after ``rscovlm.parsing.normalize_answer`` ("What type of area / kind of scene …");
- grounding: Acc@0.5 (IoU > 0.5, ``rs_shared.metrics.boxes.xyxy_iou``) of the first ``x1,y1,x2,y2`` of the answer
  (the synthetic grounding answers carry no label, so ``parse_grounding``'s label rule does not apply).

    uv run python benchmarks/rscovlm_learning.py --steps 2000 --out runs/rscovlm-learning
Writes ``<out>/learning.json`` and ``<out>/learning.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from rs_shared.data.conversations import read_conversations
from rs_shared.metrics.boxes import xyxy_iou
from rs_shared.training import load_config

from rscovlm.cli_train import CONFIG_DIR
from rscovlm.mixture import SFTDataset, ensure_synthetic_sft
from rscovlm.model_factory import load_pretrained
from rscovlm.parsing import normalize_answer, parse_count
from rscovlm.train import RSCoVLMTrainConfig, run

CLASS_QUESTION = re.compile(r"^(what type of area|what kind of scene)", re.I)
COUNT_QUESTION = re.compile(r"^how many", re.I)
BOX = re.compile(r"^(-?[0-9]{1,6}),(-?[0-9]{1,6}),(-?[0-9]{1,6}),(-?[0-9]{1,6})")


def questions(dataset: SFTDataset) -> list[dict]:
    """Held-out prompts: ``{"index", "task", "messages" (up to the question), "answer"}``."""
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


def correct(task: str, output: str, answer: str) -> bool:
    if task == "counting":
        parsed = parse_count(output)
        return parsed.ok and parsed.value == int(answer)
    if task == "classification":
        return normalize_answer(output) == normalize_answer(answer)
    match, gold = BOX.match(output.strip()), BOX.match(answer)
    if match is None:
        return False
    pred = np.array([[float(v) for v in match.groups()]])
    return bool(xyxy_iou(pred, np.array([[float(v) for v in gold.groups()]]))[0, 0] > 0.5)


@torch.no_grad()
def score(model_dir: Path, dataset: SFTDataset, prompts: list[dict], blank: bool) -> dict[str, float]:
    loaded = load_pretrained(model_dir)
    renderer = loaded.renderer()
    hits: dict[str, list[bool]] = {}
    for prompt in prompts:
        images = dataset.records[prompt["index"]].load()["images"]
        if blank:
            images = [np.full_like(image, 128) for image in images]
        sample = renderer.render(prompt["messages"], images, add_generation_prompt=True)
        generated = loaded.model.generate(
            input_ids=sample.input_ids[None], attention_mask=torch.ones(1, len(sample), dtype=torch.long),
            mm_token_type_ids=sample.mm_token_type_ids[None], pixel_values=sample.pixel_values,
            image_grid_thw=sample.image_grid_thw, max_new_tokens=24, do_sample=False)
        output = loaded.tokenizer.decode(generated[0, len(sample):], skip_special_tokens=True)
        hits.setdefault(prompt["task"], []).append(correct(prompt["task"], output, prompt["answer"]))
    return {task: float(np.mean(v)) for task, v in sorted(hits.items())} | {
        f"n_{task}": len(v) for task, v in sorted(hits.items())}


def benchmark(out: Path, steps: int, train_n: int, heldout_n: int, data_root: Path, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    started = time.monotonic()
    train_dir = data_root / f"train-n{train_n}"
    heldout = read_conversations(ensure_synthetic_sft(data_root / f"heldout-n{heldout_n}", heldout_n, seed=1000 + seed))
    cfg = load_config(RSCoVLMTrainConfig, CONFIG_DIR / "tiny-synthetic.yaml", [
        f"train.output_dir={out / 'run'}", f"train.max_steps={steps}", f"train.seed={seed}",
        f"data.synthetic_dir={train_dir}", f"data.synthetic_n={train_n}", f"data.synthetic_seed={seed}",
        f"train.save_every={steps}"])
    ensure_synthetic_sft(train_dir, train_n, seed)
    data_time = time.monotonic() - started
    result = run(cfg)
    train_time = time.monotonic() - started - data_time
    dataset = SFTDataset(heldout, load_pretrained(result["model"]).renderer(), random_resize_prob=0.0)
    prompts = questions(dataset)
    report = {
        "command": f"uv run python benchmarks/rscovlm_learning.py --steps {steps} --train-n {train_n} "
                   f"--heldout-n {heldout_n} --seed {seed}",
        "steps": steps, "train_records": train_n, "heldout_records": heldout_n, "seed": seed,
        "final_train_loss": result["logs"]["loss"], "train_seconds": round(train_time, 1),
        "steps_per_second": round(steps / train_time, 2), "data_seconds": round(data_time, 1),
        "real": score(Path(result["model"]), dataset, prompts, blank=False),
        "blank": score(Path(result["model"]), dataset, prompts, blank=True),
    }
    report["total_seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [f"| {task} | {report['real'][task]:.3f} | {report['blank'][task]:.3f} | {report['real']['n_' + task]} |"
            for task in ("counting", "classification", "grounding") if task in report["real"]]
    (out / "learning.md").write_text(
        f"Tiny RSCoVLM, {steps} steps × batch 8 on {train_n} synthetic SFT records "
        f"({report['train_seconds']} s, {report['steps_per_second']} steps/s, final loss "
        f"{report['final_train_loss']:.3f}); {heldout_n} held-out records.\n\n"
        "| task | real images | blank images | questions |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--train-n", type=int, default=1000)
    parser.add_argument("--heldout-n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default="data/rscovlm-learning")
    parser.add_argument("--out", default="runs/rscovlm-learning")
    args = parser.parse_args()
    report = benchmark(Path(args.out), args.steps, args.train_n, args.heldout_n, Path(args.data_root), args.seed)
    print(json.dumps(report, indent=2))
    print((Path(args.out) / "learning.md").read_text())


if __name__ == "__main__":
    main()
