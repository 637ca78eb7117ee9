"""BiMoRS speed and peak memory on random inputs (random init, no weights), as JSON or a markdown table.

Rows, for the ``paper`` (OpenAI ViT-B/16 architecture, 224², caption_dim 768) and ``tiny`` (toy CLIP, 32²,
caption_dim 64) presets of :class:`bimors.BiMoRSConfig`, with C = 19 classes (the PatternNet base classes of
the base-to-new protocol, spec §2) and random caption embeddings:

* *train step*: images/s of full steps — forward over all ``B · C`` prompts, cross-entropy, ``backward``, and
  the recipe's SGD step (lr 0.009, momentum 0.9, weight decay 5e-4 on the trainable prompt learner) — on one fixed
  random batch of ``--batch-size`` (4, spec §2); the mean over ``--steps`` steps after ``--warmup-steps``;
* *inference*: images/s of the eval-mode forward (``torch.inference_mode``) at ``--eval-batch-size``, the class
  prompts built once beforehand, as an evaluation loop does; the mean over the same number of calls.

Spec §8 measured on this kind of machine (fp32, 2 threads, random ViT-B/16): 3.41 training images/s and 3.27
inference images/s with exact prompt truncation, against 0.68 for the official per-image loop.

Every row runs in a fresh subprocess (this script re-invoked with a hidden ``--worker`` flag), so each peak is its
own, once for every thread count of ``--threads``. Memory: ``peak_rss_mb`` is the process's ``ru_maxrss``;
``peak_growth_mb`` is the peak during the measurement minus the resident set after the model and inputs are built
(``VmHWM`` reset after construction where Linux allows it, else ``ru_maxrss``). The JSON records the torch version,
CPU model and the load average at start and end: on a shared 2-core machine other jobs compete for the cores, so
read the numbers together with the load.

    uv run python benchmarks/bimors_speed.py [--presets paper,tiny] [--threads 1,2] [--steps 3]
        [--tiny-steps 30] [--batch-size 4] [--eval-batch-size 4] [--out results.json] [--markdown]

The default run takes about 2 minutes on an idle 2-core CPU (the paper model takes ~10 s to build per row).
"""

from __future__ import annotations

import argparse
import json
import time

from _bench import (add_report_args, emit_report, environment_line, int_list, maxrss_mb, preset_list, print_worker_row,
                    reset_peak_rss, run_all, status_mb)

PRESETS = ("paper", "tiny")
MODES = ("train step", "inference")
NUM_CLASSES = 19  # B2N PatternNet base classes
WORKER_MARK = "BIMORS_SPEED_RESULT "


# ---------------------------------------------------------------------------------------------------------------
# Worker side: one measurement in a fresh process


def run_worker(spec: dict) -> dict:
    """Build the model of ``spec["preset"]`` and time ``spec["mode"]``; returns one result row (see module doc)."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    from bimors import BiMoRSConfig, BiMoRSModel
    from bimors.datasets import PATTERNNET_CLASSES

    config = getattr(BiMoRSConfig, spec["preset"])()
    model = BiMoRSModel(config)
    classes = list(PATTERNNET_CLASSES[:NUM_CLASSES])
    model.set_class_names(classes)
    size = model.clip.visual.image_size[0]
    batch = spec["batch"]
    pixels = torch.randn(batch, 3, size, size)
    captions = torch.randn(batch, config.caption_dim)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    train = spec["mode"] == "train step"
    model.train(train)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.009, momentum=0.9,
                                weight_decay=5e-4) if train else None

    def step() -> None:
        if train:
            model(pixels, captions, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode():
                model(pixels, captions)

    base_rss = status_mb("VmRSS") or maxrss_mb()
    hwm_reset = reset_peak_rss()
    for _ in range(spec["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(spec["iters"]):
        step()
    seconds = (time.perf_counter() - start) / spec["iters"]
    peak = status_mb("VmHWM") if hwm_reset else maxrss_mb()
    return {
        "preset": spec["preset"], "mode": spec["mode"], "threads": torch.get_num_threads(), "batch": batch,
        "classes": NUM_CLASSES, "image_size": size, "caption_dim": config.caption_dim,
        "prompt_tokens": int(model.token_prefix.shape[1] + config.n_ctx + model.token_suffix.shape[1]),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "warmup": spec["warmup"], "iterations": spec["iters"],
        "seconds_per_iter": round(seconds, 4), "images_per_s": round(batch / seconds, 2),
        "rss_after_build_mb": round(base_rss, 1), "peak_growth_mb": round(peak - base_rss, 1),
        "peak_rss_mb": round(maxrss_mb(), 1), "memory_method": "VmHWM reset after build" if hwm_reset else "ru_maxrss",
    }


# ---------------------------------------------------------------------------------------------------------------
# Driver side: plan the rows, run each in a subprocess, report


def plan(args: argparse.Namespace) -> list[dict]:
    """The worker specs of one run, in table order."""
    return [dict(preset=preset, mode=mode, threads=threads,
                 batch=args.batch_size if mode == "train step" else args.eval_batch_size,
                 warmup=args.warmup_steps, iters=args.steps if preset == "paper" else args.tiny_steps)
            for preset in args.presets for mode in MODES for threads in args.threads]


def markdown_table(report: dict) -> str:
    lines = [environment_line(report["environment"]), "",
             "| preset | mode | threads | batch × classes | input | params (M) | s/iter | images/s "
             "| peak growth (MB) | peak RSS (MB) |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['preset']} | {r['mode']} | {r['threads']} | {r['batch']} × {r['classes']} "
                     f"| {r['image_size']}², {r['prompt_tokens']} tok | {r['parameters_m']} "
                     f"| {r['seconds_per_iter']:.3f} (mean of {r['iterations']}) | {r['images_per_s']} "
                     f"| {r['peak_growth_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", type=preset_list(PRESETS), default=list(PRESETS),
                        help="comma-separated subset of paper,tiny (default: both)")
    parser.add_argument("--threads", type=int_list, default=[1],
                        help="comma-separated torch thread counts, one row each (default: 1)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per training step (default 4, spec §2)")
    parser.add_argument("--eval-batch-size", type=int, default=4, help="images per inference call (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations of the paper rows (default 3)")
    parser.add_argument("--tiny-steps", type=int, default=30, help="timed iterations of the tiny rows (default 30)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed iterations first (default 1)")
    add_report_args(parser)
    args = parser.parse_args()
    if args.worker:
        print_worker_row(WORKER_MARK, run_worker(json.loads(args.worker)))
        return
    for name in ("batch_size", "eval_batch_size", "steps", "tiny_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")

    report = run_all("bimors_speed", __file__, plan(args), WORKER_MARK, extra_env={"HF_HUB_OFFLINE": "1"})
    emit_report(report, args, markdown_table)


if __name__ == "__main__":
    main()
