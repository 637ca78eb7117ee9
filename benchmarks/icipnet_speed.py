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
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

PRESETS = ("paper", "rmsin", "tiny")
LATENCY_MODES = ("forward", "fwd+bwd")
TINY_VOCAB = 351
WORKER_MARK = "ICIPNET_SPEED_RESULT "


# ---------------------------------------------------------------------------------------------------------------
# Worker side: one measurement in a fresh process


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def _maxrss_mb() -> float:
    """``ru_maxrss`` of this process in MiB (kilobytes on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


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
    base_rss = _status_mb("VmRSS") or _maxrss_mb()
    hwm_reset = _reset_peak_rss()
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

    peak = _status_mb("VmHWM") if hwm_reset else _maxrss_mb()
    row = {
        "preset": spec["preset"], "mode": spec["mode"], "device": str(device), "threads": torch.get_num_threads(),
        "batch": spec["batch"], "image_size": config.image_size, "text_len": config.max_text_len,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "warmup": spec["warmup"], "iterations": spec["iters"],
        "seconds_per_iter": round(seconds, 4), "samples_per_s": round(spec["batch"] / seconds, 2),
        "rss_after_build_mb": round(base_rss, 1),
        "peak_growth_mb": round(peak - base_rss, 1), "peak_rss_mb": round(_maxrss_mb(), 1),
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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _preset_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(PRESETS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown preset(s) {unknown or text!r}; choose from {', '.join(PRESETS)}")
    return names


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


def run_subprocess(spec: dict) -> dict:
    """Run one spec in a fresh interpreter (thread env pinned) and parse its result line."""
    env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(WORKER_MARK)]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark worker {spec['preset']}/{spec['mode']} (threads {spec['threads']}) failed "
                           f"with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(WORKER_MARK):])


def markdown_table(report: dict) -> str:
    env = report["environment"]
    load = ", ".join(f"{a:.2f}" for a in env["loadavg_start"]) + " → " + \
        ", ".join(f"{a:.2f}" for a in env["loadavg_end"])
    lines = [f"torch {env['torch']}, {env['cpu_model']} ({env['cpu_count']} CPUs), load average {load}", "",
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
    parser.add_argument("--presets", type=_preset_list, default=["paper", "tiny"],
                        help="comma-separated subset of paper,rmsin,tiny (default: paper,tiny)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per paper/rmsin latency (median reported)")
    parser.add_argument("--latency-threads", type=int, default=1, help="torch threads for the paper/rmsin rows")
    parser.add_argument("--threads", type=_int_list, default=[1, 2],
                        help="comma-separated torch thread counts for the tiny throughput rows (default: 1,2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the tiny training throughput")
    parser.add_argument("--steps", type=int, default=20, help="timed tiny training steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed tiny training steps before timing")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(WORKER_MARK + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    for name in ("repeats", "latency_threads", "batch_size", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    environment = {"torch": version("torch"), "python": platform.python_version(), "cpu_model": _cpu_model(),
                   "cpu_count": os.cpu_count(), "loadavg_start": [round(a, 2) for a in os.getloadavg()]}
    results = []
    for spec in plan(args):
        print(f"[icipnet_speed] {spec['preset']} {spec['mode']} threads={spec['threads']} …", file=sys.stderr,
              flush=True)
        results.append(run_subprocess(spec))
    environment["loadavg_end"] = [round(a, 2) for a in os.getloadavg()]
    report = {"benchmark": "icipnet_speed", "environment": environment, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report) if args.markdown else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
