"""ICIPNet speed and peak memory on synthetic inputs (random init, no weights), as JSON or a markdown table.

Rows:

* ``paper`` / ``rmsin`` presets (``IcipNetConfig.paper()`` / ``.rmsin()``) at batch 1, 480², ``max_text_len``
  20 random token ids with right padding: *forward* latency (eval mode, ``no_grad``) and *fwd+bwd* latency
  (train mode, ``icipnet_loss`` on a random mask, ``backward``), each the median of ``--repeats`` runs after
  one warm-up, at ``--latency-threads`` threads. No optimiser step.
* ``tiny`` preset (``IcipNetConfig.tiny(vocab_size=351)``) at 64², batch ``--batch-size``: training throughput
  of full steps (forward, loss, backward, ``AdamW.step``) on one fixed random batch — the mean over ``--steps``
  steps after ``--warmup-steps`` — once for every thread count of ``--threads``. Two threads is only meaningful
  on an otherwise idle machine: on a shared 2-core box the second thread competes with other jobs, so check the
  recorded load averages before reading anything into the 1- vs 2-thread ratio.

Every row runs in a fresh subprocess (this script re-invoked with a hidden ``--worker`` flag), so each peak is its
own. Memory on CPU: ``peak_growth_mb`` is the peak resident set during the measurement minus the resident set
after the model and inputs are built; where Linux allows resetting the high-water mark (``/proc/self/clear_refs``)
the peak is ``VmHWM`` reset after construction, otherwise ``ru_maxrss`` (which then also covers construction
transients). ``peak_rss_mb`` is the process's absolute ``ru_maxrss``. On CUDA the two are
``torch.cuda.max_memory_allocated`` minus / including the allocation after construction. The JSON records the
torch version, CPU model and the load average at start and end, so readers can tell whether the machine was busy.

    uv run python benchmarks/icipnet_speed.py [--presets paper,tiny] [--repeats 3] [--threads 1,2]
        [--steps 20] [--batch-size 32] [--device cpu] [--out results.json] [--markdown]

The default run (paper + tiny) takes about 3–4 minutes on an idle 2-core CPU (each worker spends ~15 s importing
and building); ``--presets paper,rmsin,tiny`` adds the RMSIN baseline rows (about 2.5 minutes more).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _bench import (add_report_args, emit_report, environment_line, int_list, maxrss_mb, preset_list, print_worker_row,
                    reset_peak_rss, run_all, status_mb)

PRESETS = ("paper", "rmsin", "tiny")
LATENCY_MODES = ("forward", "fwd+bwd")
TINY_VOCAB = 351
WORKER_MARK = "ICIPNET_SPEED_RESULT "


# ---------------------------------------------------------------------------------------------------------------
# Worker side: one measurement in a fresh process


def _inputs(config, batch: int, device):
    """Random ``pixel_values (B, 3, S, S)``, ``input_ids``/``attention_mask (B, N)`` (right-padded) and labels."""
    import torch

    size, length = config.image_size, config.max_text_len
    pixels = torch.randn(batch, 3, size, size, device=device)
    lengths = torch.randint(length // 2, length + 1, (batch, 1), device=device)
    mask = (torch.arange(length, device=device) < lengths).long()  # (B, N), at least half real tokens
    ids = torch.randint(1, config.text_config.vocab_size, (batch, length), device=device) * mask
    labels = torch.randint(0, 2, (batch, size, size), device=device)
    return pixels, ids, mask, labels


def run_worker(spec: dict) -> dict:
    """Build the model of ``spec["preset"]`` and time ``spec["mode"]``; returns one result row (see module doc)."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    from icipnet import IcipNetConfig, IcipNetModel
    from icipnet.loss import icipnet_loss

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    config = IcipNetConfig.tiny(vocab_size=TINY_VOCAB) if spec["preset"] == "tiny" else \
        getattr(IcipNetConfig, spec["preset"])()
    model = IcipNetModel(config).to(device)
    pixels, ids, mask, labels = _inputs(config, spec["batch"], device)
    optimizer = None
    if spec["mode"] == "train step":
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-5, weight_decay=0.01)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def step() -> None:
        if spec["mode"] == "forward":
            with torch.no_grad():
                model(pixels, ids, mask)
            return
        loss = icipnet_loss(model(pixels, ids, mask).logits, labels, config.ce_weights, config.dice_weight)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)

    model.train(spec["mode"] != "forward")
    sync()
    base_rss = status_mb("VmRSS") or maxrss_mb()
    hwm_reset = reset_peak_rss()
    if cuda:
        base_cuda = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)

    times = []
    for _ in range(spec["warmup"]):
        step()
    sync()
    if spec["mode"] == "train step":  # throughput: mean over consecutive steps
        start = time.perf_counter()
        for _ in range(spec["iters"]):
            step()
        sync()
        seconds = (time.perf_counter() - start) / spec["iters"]
    else:  # latency: median of single calls
        for _ in range(spec["iters"]):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)

    peak = status_mb("VmHWM") if hwm_reset else maxrss_mb()
    row = {
        "preset": spec["preset"], "mode": spec["mode"], "device": str(device), "threads": torch.get_num_threads(),
        "batch": spec["batch"], "image_size": config.image_size, "text_len": config.max_text_len,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "warmup": spec["warmup"], "iterations": spec["iters"],
        "seconds_per_iter": round(seconds, 4), "samples_per_s": round(spec["batch"] / seconds, 2),
        "rss_after_build_mb": round(base_rss, 1),
        "peak_growth_mb": round(peak - base_rss, 1), "peak_rss_mb": round(maxrss_mb(), 1),
        "memory_method": "VmHWM reset after build" if hwm_reset else "ru_maxrss",
    }
    if times:
        row["times"] = [round(t, 4) for t in times]
    if cuda:
        row |= {"peak_growth_mb": round((torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20, 1),
                "peak_allocated_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "memory_method": "torch.cuda.max_memory_allocated"}
    return row


# ---------------------------------------------------------------------------------------------------------------
# Driver side: plan the rows, run each in a subprocess, report


def plan(args: argparse.Namespace) -> list[dict]:
    """The worker specs of one run, in table order."""
    specs = []
    for preset in args.presets:
        if preset == "tiny":
            specs += [dict(preset=preset, mode="train step", threads=t, batch=args.batch_size,
                           warmup=args.warmup_steps, iters=args.steps, device=args.device) for t in args.threads]
        else:
            specs += [dict(preset=preset, mode=mode, threads=args.latency_threads, batch=1, warmup=1,
                           iters=args.repeats, device=args.device) for mode in LATENCY_MODES]
    return specs


def markdown_table(report: dict) -> str:
    lines = [environment_line(report["environment"]), "",
             "| preset | mode | device | threads | batch | input | params (M) | s/iter | samples/s "
             "| peak growth (MB) | peak RSS (MB) |",
             "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        stat = "median" if r["mode"] != "train step" else "mean"
        lines.append(f"| {r['preset']} | {r['mode']} | {r['device']} | {r['threads']} | {r['batch']} "
                     f"| {r['image_size']}², {r['text_len']} tok | {r['parameters_m']} "
                     f"| {r['seconds_per_iter']:.3f} ({stat} of {r['iterations']}) | {r['samples_per_s']} "
                     f"| {r['peak_growth_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", type=preset_list(PRESETS), default=["paper", "tiny"],
                        help="comma-separated subset of paper,rmsin,tiny (default: paper,tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per paper/rmsin latency (median reported)")
    parser.add_argument("--latency-threads", type=int, default=1, help="torch threads for the paper/rmsin rows")
    parser.add_argument("--threads", type=int_list, default=[1, 2],
                        help="comma-separated torch thread counts for the tiny throughput rows (default: 1,2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the tiny training throughput")
    parser.add_argument("--steps", type=int, default=20, help="timed tiny training steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed tiny training steps before timing")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    add_report_args(parser)
    args = parser.parse_args()
    if args.worker:
        print_worker_row(WORKER_MARK, run_worker(json.loads(args.worker)))
        return
    for name in ("repeats", "latency_threads", "batch_size", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    report = run_all("icipnet_speed", __file__, plan(args), WORKER_MARK)
    emit_report(report, args, markdown_table)


if __name__ == "__main__":
    main()
