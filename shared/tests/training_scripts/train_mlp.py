"""A tiny MLP trained through rs_shared.training.train, for the resume and distributed tests.

Run directly (one process), under ``accelerate launch`` or ``torchrun``. The dataset adds Gaussian noise
drawn from the global torch RNG in ``__getitem__`` and the model has dropout, so an exact resume needs
the RNG states and the data position restored. Fault injection for the tests:

- ``--kill-at-step N``: SIGKILL this process from ``on_step_end`` of step N.
- ``--resume-output DIR --resume-from-step N``: after training, train again in this process into DIR,
  resuming from this run's checkpoint N (how the DeepSpeed test checks resume within one launch).
- ``--kill-while-saving N``: SIGKILL this process while checkpoint N is being written, after its model,
  optimizer and RNG files and before the rename (the checkpoint writer is patched here, not in the library).
"""

import argparse
import dataclasses
import os
import signal

import torch

torch.set_num_threads(1)

from rs_shared.training import OptimConfig, ScheduleConfig, TrainConfig, checkpoint, train  # noqa: E402


class NoisyBlobs(torch.utils.data.Dataset):
    """Two Gaussian blobs in 4-D; each access adds fresh noise from the global torch RNG (``noise`` > 0)."""

    def __init__(self, n: int = 40, noise: float = 0.1):
        g = torch.Generator().manual_seed(1234)
        self.noise = noise
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 4, generator=g) + 1.5 * (2 * self.y[:, None] - 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + self.noise * torch.randn(4), self.y[i]


def step_fn(model, batch):
    x, y = batch
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    return loss, {"accuracy": (logits.argmax(-1) == y).float().mean()}


class Kill:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_while_saving(step: int) -> None:
    write_scheduler = checkpoint.save_state

    def save_state(directory, stem, state):
        if stem == "scheduler" and directory.name == f".tmp-{checkpoint.checkpoint_name(step)}":
            os.kill(os.getpid(), signal.SIGKILL)
        return write_scheduler(directory, stem, state)

    checkpoint.save_state = save_state


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=12)
    p.add_argument("--save-every", type=int, default=3)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--resume", default="")
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--kill-while-saving", type=int, default=0)
    p.add_argument("--resume-output", default="")
    p.add_argument("--resume-from-step", type=int, default=0)
    args = p.parse_args()

    config = TrainConfig(
        output_dir=args.output_dir, seed=7, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, clip_grad_norm=1.0, log_every=1, save_every=args.save_every,
        keep_last=args.keep_last, resume=args.resume, tensorboard=False,
        optim=OptimConfig(name="adamw", lr=0.05, weight_decay=0.01),
        schedule=ScheduleConfig(name="cosine", warmup_steps=2, warmup_start=0.1),
    )
    if args.kill_while_saving:
        kill_while_saving(args.kill_while_saving)
    callbacks = [Kill(args.kill_at_step)] if args.kill_at_step else []
    train(config, build_model(args.dropout), NoisyBlobs(noise=args.noise), step_fn, callbacks=callbacks)
    if args.resume_output:
        resume = os.path.join(args.output_dir, "checkpoints", checkpoint.checkpoint_name(args.resume_from_step))
        config = dataclasses.replace(config, output_dir=args.resume_output, resume=resume)
        train(config, build_model(args.dropout), NoisyBlobs(noise=args.noise), step_fn)


def build_model(dropout: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(16, 2))


if __name__ == "__main__":
    main()
