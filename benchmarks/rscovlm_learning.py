"""Does the tiny RSCoVLM learn to *look*? Train the tiny preset on the synthetic SFT mixture for a fixed step budget,
then score held-out synthetic questions with the real images and with blank (constant grey) images.

Scores (greedy decoding, prompts = the conversation up to the question, earlier gold turns included):
- counting: accuracy of ``rscovlm.parsing.parse_count`` against the gold count ("How many …" questions);
- classification: exact match after ``rscovlm.parsing.normalize_answer`` ("What type of area / kind of scene …");
- grounding: ``find the {expression}`` answered ``x1,y1,x2,y2 {expression}`` (integer pixels of the resized frame);
  Acc@0.5 as ``rscovlm-eval --task vg`` scores it (the strict ``rscovlm.parsing.parse_grounding`` on the first line,
  IoU > 0.5 with the official 1-px overlap rule), with the fraction of answers that did not parse.

    uv run python benchmarks/rscovlm_learning.py --steps 2000 --out runs/rscovlm-learning
Writes ``<out>/learning.json`` and ``<out>/learning.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rs_bench.rscovlm import questions, score
from rs_shared.data.conversations import read_conversations
from rs_shared.training import load_config

from rscovlm.cli_train import CONFIG_DIR
from rscovlm.mixture import SFTDataset, ensure_synthetic_sft
from rscovlm.model_factory import load_pretrained
from rscovlm.train import RSCoVLMTrainConfig, run


def _accuracies(scores: dict) -> dict:
    """The per-task accuracies and question counts of :func:`rs_bench.rscovlm.score` (without outputs/timings)."""
    return {k: v for k, v in scores.items() if k not in ("outputs", "seconds")}


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
    loaded = load_pretrained(result["model"])
    dataset = SFTDataset(heldout, loaded.renderer(), random_resize_prob=0.0)
    prompts = questions(dataset)
    report = {
        "command": f"uv run python benchmarks/rscovlm_learning.py --steps {steps} --train-n {train_n} "
                   f"--heldout-n {heldout_n} --seed {seed}",
        "steps": steps, "train_records": train_n, "heldout_records": heldout_n, "seed": seed,
        "final_train_loss": result["logs"]["loss"], "train_seconds": round(train_time, 1),
        "steps_per_second": round(steps / train_time, 2), "data_seconds": round(data_time, 1),
        "real": _accuracies(score(loaded, dataset, prompts, blank=False)),
        "blank": _accuracies(score(loaded, dataset, prompts, blank=True)),
    }
    report["total_seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [f"| {task} | {report['real'][task]:.3f} | {report['blank'][task]:.3f} | {report['real']['n_' + task]} |"
            for task in ("counting", "classification", "grounding") if task in report["real"]]
    failures = [f"{report[k]['parse_failures_grounding']:.3f}" for k in ("real", "blank")
                if "parse_failures_grounding" in report[k]]
    (out / "learning.md").write_text(
        f"Tiny RSCoVLM, {steps} steps × batch 8 on {train_n} synthetic SFT records "
        f"({report['train_seconds']} s, {report['steps_per_second']} steps/s, final loss "
        f"{report['final_train_loss']:.3f}); {heldout_n} held-out records.\n\n"
        "| task | real images | blank images | questions |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
        + (f"\nGrounding answers that did not parse: {failures[0]} (real), {failures[1]} (blank).\n" if failures else ""))
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
