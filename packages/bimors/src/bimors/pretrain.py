"""Contrastive pre-training of the tiny CLIP on synthetic image–caption pairs: the CLIP of the learning check.

A randomly initialised CLIP knows nothing, so neither zero-shot CLIP nor prompt learning on it can be measured.
:func:`pretrained_tiny_clip` first teaches the toy CLIP of :meth:`BiMoRSConfig.tiny` image–text alignment, the way
CLIP itself was trained, and caches the result:

* **pairs** — :func:`synthetic_pairs`: procedural aerial scenes (:func:`rs_shared.data.synthetic.make_scene`, the 11
  :data:`~rs_shared.data.synthetic.SCENE_CLASSES` in turn) with one holistic caption each ("An aerial view of an
  airport with a runway on concrete. It contains two planes.", :func:`~rs_shared.data.synthetic.holistic_sentence`).
  Pair seeds are ≥ 2³², so they never coincide with a sample of ``synthesize(task="scene", …)`` (its seeds are
  uint32 draws, :func:`rs_shared.data.synthetic.export.sample_seed`): the classification images are never seen here;
* **images** — rendered at the synthetic dataset's size (64 px), then CLIP's eval transform (bicubic resize to the
  CLIP image size, centre crop, OpenAI mean/std), exactly as the scene-classification images are read;
* **training** — ``open_clip.CLIP(**BiMoRSConfig.tiny().clip_config())`` with open_clip's symmetric InfoNCE
  (:class:`open_clip.ClipLoss`) and a learnable temperature (init ``log(1/0.07)``, clamped at ``log 100`` as
  open_clip's trainer does), AdamW with linear warm-up then cosine, ``steps`` batches drawn epoch by epoch;
* **cache** — ``<cache_dir>/tiny-clip-<key>/open_clip_model.safetensors`` (an open_clip state dict that
  :meth:`BiMoRSModel.from_clip` loads into ``BiMoRSConfig.tiny()``) and ``manifest.json`` (the settings and the
  final metrics). ``key`` hashes every setting, the CLIP config, the recipe version and the rs-shared / open_clip
  versions; the weights are written first and the manifest last, both atomically, so a manifest means a complete
  entry.

Evaluation on held-out pairs (the seeds after the training pool) gives the in-batch image→text retrieval accuracy
and the zero-shot scene accuracy with ``BiMoRSConfig.template`` ("a photo of a {name}.").

CLI: ``bimors-pretrain-clip --out DIR --steps N`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import open_clip
import rs_shared
import torch
import torch.nn.functional as F
from PIL import Image
from rs_shared.data.common import atomic_path, write_json
from rs_shared.data.synthetic import SCENE_CLASSES, holistic_sentence, make_scene
from rs_shared.training.config import ScheduleConfig
from rs_shared.training.optim import build_scheduler, param_groups
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .configuration import BiMoRSConfig
from .modeling import clip_tokenizer

RECIPE_VERSION = 1  # bump when the pairs, the transform or the training loop change: it is part of the cache key
CACHE_ENV = "BIMORS_CACHE_DIR"
CHECKPOINT_NAME = "open_clip_model.safetensors"
MANIFEST_NAME = "manifest.json"
PAIR_SEED_BASE = 1 << 32  # pair seeds start here: above every uint32 sample seed of rs_shared's synthesize()
MAX_LOGIT_SCALE = math.log(100.0)  # open_clip's trainer clamps the learnable temperature here
INIT_LOGIT_SCALE = math.log(1 / 0.07)


@dataclass(frozen=True)
class PretrainSettings:
    """Everything the pre-trained weights depend on (with the CLIP config and the versions: the cache key).

    steps: optimizer steps; batch_size: pairs per step (the in-batch negatives); num_pairs: size of the training
    pool (cycled epoch by epoch, reshuffled each epoch); num_eval_pairs: held-out pairs (the next seeds) for the
    final metrics; lr / weight_decay / warmup_steps: AdamW with linear warm-up then cosine to 0; seed: pair seeds,
    initialisation and batch order; render_size: side of the rendered scenes (the synthetic dataset's 64 px);
    augment: a random one of the 8 rotations/reflections of each training image (top-down scenes have no up, and
    the captions no left/right).
    """

    steps: int = 1500
    batch_size: int = 128
    num_pairs: int = 8192
    num_eval_pairs: int = 352
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    render_size: int = 64
    augment: bool = True

    def __post_init__(self):
        positive = ("steps", "batch_size", "num_pairs", "num_eval_pairs", "render_size")
        bad = [f"{name}={getattr(self, name)!r}" for name in positive if getattr(self, name) < 1]
        bad += [f"{name}={getattr(self, name)!r}" for name in ("lr", "weight_decay", "warmup_steps", "seed")
                if getattr(self, name) < 0]
        if bad:
            raise ValueError(f"pre-training settings out of range: {', '.join(bad)} (counts and render_size must be "
                             f"≥ 1; lr, weight_decay, warmup_steps and seed ≥ 0)")
        if self.batch_size > self.num_pairs:
            raise ValueError(f"batch_size {self.batch_size} is larger than num_pairs {self.num_pairs}")
        if self.render_size < 8:
            raise ValueError(f"render_size must be ≥ 8 (the smallest scene make_scene renders), "
                             f"got {self.render_size}")


@dataclass(frozen=True)
class CaptionedScenes:
    """Synthetic pairs: ``images`` ``(N, H, W, 3)`` uint8, ``captions`` (N strings), ``labels`` ``(N,)`` int64
    indices into :data:`~rs_shared.data.synthetic.SCENE_CLASSES`, ``seeds`` the N scene seeds."""

    images: np.ndarray
    captions: tuple[str, ...]
    labels: np.ndarray
    seeds: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.captions)


# ----------------------------------------------------------------------------------------------------------------
# pairs and their tensors
# ----------------------------------------------------------------------------------------------------------------

def pair_seed(seed: int, index: int) -> int:
    """Scene seed of pair ``index`` of stream ``seed``: ``2³² (seed + 1) + index``, never a uint32 sample seed."""
    if seed < 0 or not 0 <= index < PAIR_SEED_BASE:
        raise ValueError(f"seed must be ≥ 0 and index in [0, 2³²), got seed={seed}, index={index}")
    return PAIR_SEED_BASE * (seed + 1) + index


def synthetic_pairs(n: int, seed: int = 0, start: int = 0, size: int = 64, progress: bool = False) -> CaptionedScenes:
    """Pairs ``start … start + n − 1`` of stream ``seed``: pair ``i`` shows ``SCENE_CLASSES[i % 11]`` rendered at
    ``size`` px from :func:`pair_seed` and is captioned by ``holistic_sentence`` with a generator of the same seed.
    """
    images, captions, labels, seeds = [], [], [], []
    for index in tqdm(range(start, start + n), desc="synthetic pairs", unit="pair", leave=False, disable=not progress):
        label = index % len(SCENE_CLASSES)
        scene_seed = pair_seed(seed, index)
        scene = make_scene(scene_seed, (size, size), SCENE_CLASSES[label])
        images.append(scene.image)
        captions.append(holistic_sentence(scene, np.random.default_rng(scene_seed)))
        labels.append(label)
        seeds.append(scene_seed)
    return CaptionedScenes(np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8), tuple(captions),
                           np.asarray(labels, np.int64), tuple(seeds))


def preprocess_images(images: np.ndarray | Sequence[np.ndarray], image_size: int) -> torch.Tensor:
    """CLIP's eval transform (open_clip ``image_transform(is_train=False)``: bicubic resize of the short side,
    centre crop, OpenAI mean/std) of uint8 ``(H, W, 3)`` images → ``(N, 3, image_size, image_size)`` float32."""
    transform = open_clip.image_transform(image_size, is_train=False)
    if len(images) == 0:
        return torch.zeros(0, 3, image_size, image_size)
    return torch.stack([transform(Image.fromarray(np.asarray(image))) for image in images])


def tokenize_captions(captions: Sequence[str], context_length: int = 77) -> torch.LongTensor:
    """CLIP BPE ids ``(N, context_length)`` (open_clip's tokenizer; over-long captions are cut, EOS kept)."""
    return clip_tokenizer(context_length)(list(captions))


def class_prompts(class_names: Sequence[str], template: str) -> list[str]:
    """``template.format(name)`` with ``_`` → space, the zero-shot prompts of the class list."""
    return [template.format(name.replace("_", " ")) for name in class_names]


# ----------------------------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------------------------

def build_tiny_clip(seed: int, config: BiMoRSConfig | None = None) -> open_clip.CLIP:
    """A freshly initialised CLIP of ``config.clip_model`` (default ``BiMoRSConfig.tiny()``), temperature
    ``log(1/0.07)``, drawn after ``torch.manual_seed(seed)``."""
    config = config if config is not None else BiMoRSConfig.tiny()
    torch.manual_seed(seed)
    return open_clip.CLIP(**config.clip_config(), init_logit_scale=INIT_LOGIT_SCALE)


def encode_text(clip: open_clip.CLIP, input_ids: torch.LongTensor) -> torch.Tensor:
    """``clip.encode_text`` ``(N, L)`` → ``(N, E)`` (not normalised), run only up to the batch's last EOS.

    CLIP's text transformer is causal and pools the EOS row, so the tokens after the last EOS of the batch change
    nothing; dropping them makes the short captions (≤ ~35 of 77 tokens) 2–3× cheaper.
    """
    if clip.text_pool_type != "argmax":
        raise ValueError(f"the CLIP text tower pools {clip.text_pool_type!r}; truncation needs EOS (argmax) pooling")
    eos_index = input_ids.argmax(dim=-1)
    n = int(eos_index.max()) + 1
    x = clip.token_embedding(input_ids[:, :n]) + clip.positional_embedding[:n]
    x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:n, :n]))
    x = x[torch.arange(x.shape[0]), eos_index]
    return clip.text_projection(x) if isinstance(clip.text_projection, torch.nn.Linear) else x @ clip.text_projection


def random_dihedral(pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image ``(B, 3, S, S)`` turned by a random multiple of 90° and mirrored with probability ½."""
    choice = torch.randint(8, (pixel_values.shape[0],), generator=generator)
    out = pixel_values.clone()
    for k in range(8):
        picked = choice == k
        if picked.any():
            turned = torch.rot90(pixel_values[picked], k % 4, dims=(2, 3))
            out[picked] = turned.flip(3) if k >= 4 else turned
    return out


def train_contrastive(clip: open_clip.CLIP, pixel_values: torch.Tensor, input_ids: torch.LongTensor,
                      settings: PretrainSettings, progress: bool = False) -> list[float]:
    """Train ``clip`` in place with ``open_clip.ClipLoss`` for ``settings.steps`` steps; returns the step losses.

    pixel_values ``(N, 3, S, S)`` and input_ids ``(N, L)`` are the pool; each epoch visits it in a new random order
    (generator seeded with ``settings.seed``), and a batch never straddles two epochs (the short tail is dropped).
    """
    if pixel_values.shape[0] != input_ids.shape[0]:
        raise ValueError(f"{pixel_values.shape[0]} images but {input_ids.shape[0]} captions")
    clip.train()
    # open_clip's AdamW (β₂ 0.98, ε 1e-6; no decay for gains, biases, the temperature); fused: the 1.6 M-entry token
    # embedding makes the optimizer step a sixth of a CPU step otherwise
    optimizer = torch.optim.AdamW(param_groups(clip, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.98),
                                  eps=1e-6, fused=True)
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="cosine", warmup_steps=settings.warmup_steps),
                                total_steps=settings.steps, steps_per_epoch=1)
    loss_fn = open_clip.ClipLoss()
    generator = torch.Generator().manual_seed(settings.seed)
    per_epoch = pixel_values.shape[0] // settings.batch_size
    order, losses = None, []
    bar = tqdm(range(settings.steps), desc="contrastive pre-training", unit="step", leave=False, disable=not progress)
    for step in bar:
        if step % per_epoch == 0:
            order = torch.randperm(pixel_values.shape[0], generator=generator)
        batch = order[(step % per_epoch) * settings.batch_size:][:settings.batch_size]
        images = random_dihedral(pixel_values[batch], generator) if settings.augment else pixel_values[batch]
        image_features = F.normalize(clip.encode_image(images), dim=-1)
        text_features = F.normalize(encode_text(clip, input_ids[batch]), dim=-1)
        logit_scale = clip.logit_scale.exp()
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        if step % 50 == 0 or step == settings.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{logit_scale.item():.1f}")
    clip.eval()
    return losses


@torch.no_grad()
def evaluate_alignment(clip: open_clip.CLIP, pairs: CaptionedScenes, batch_size: int,
                       template: str = BiMoRSConfig.template) -> dict[str, float]:
    """Alignment of ``clip`` on ``pairs`` (held-out): mean ClipLoss and image→text top-1 over in-batch captions
    (a hit when the retrieved caption equals the image's own text: identical captions are indistinguishable), per
    consecutive batch of ``batch_size`` (the last may be smaller); and zero-shot scene accuracy with ``template``.
    """
    clip.eval()
    image_size = clip.visual.image_size[0]
    pixel_values = preprocess_images(pairs.images, image_size)
    input_ids = tokenize_captions(pairs.captions, clip.context_length)
    image_features = F.normalize(clip.encode_image(pixel_values), dim=-1)
    text_features = F.normalize(encode_text(clip, input_ids), dim=-1)
    loss_fn, losses, hits = open_clip.ClipLoss(), [], 0
    for begin in range(0, len(pairs), batch_size):
        span = slice(begin, begin + batch_size)
        image_batch, text_batch = image_features[span], text_features[span]
        losses.append(loss_fn(image_batch, text_batch, clip.logit_scale.exp()).item() * image_batch.shape[0])
        retrieved = (image_batch @ text_batch.t()).argmax(dim=1).tolist()
        captions = pairs.captions[span]
        hits += sum(captions[j] == caption for caption, j in zip(captions, retrieved, strict=True))
    class_features = F.normalize(encode_text(clip, tokenize_captions(class_prompts(SCENE_CLASSES, template),
                                                                    clip.context_length)), dim=-1)
    predictions = (image_features @ class_features.t()).argmax(dim=1).numpy()
    return {"loss": sum(losses) / len(pairs), "retrieval_accuracy": hits / len(pairs),
            "zero_shot_accuracy": float((predictions == pairs.labels).mean())}


# ----------------------------------------------------------------------------------------------------------------
# the cache
# ----------------------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$BIMORS_CACHE_DIR``, else ``$XDG_CACHE_HOME/rs-vlm/bimors`` (``~/.cache/rs-vlm/bimors``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "rs-vlm" / "bimors"


def cache_key(settings: PretrainSettings, config: BiMoRSConfig | None = None) -> str:
    """16 hex digits of the SHA-256 of the settings, the CLIP config, the recipe and the library versions."""
    config = config if config is not None else BiMoRSConfig.tiny()
    identity = {"settings": asdict(settings), "clip": config.clip_config(), "template": config.template,
                "recipe": RECIPE_VERSION, "rs_shared": rs_shared.__version__, "open_clip": open_clip.__version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def pretrained_tiny_clip(cache_dir: str | os.PathLike | None = None, *, progress: bool = True,
                         **settings) -> Path:
    """The checkpoint of the contrastively pre-trained tiny CLIP, trained now unless cached.

    ``settings`` are :class:`PretrainSettings` fields (``steps=``, ``seed=``, ``num_pairs=`` …; defaults: the
    class's). Returns ``<cache_dir>/tiny-clip-<key>/open_clip_model.safetensors`` (``cache_dir`` default:
    :func:`default_cache_dir`); load it with ``BiMoRSModel.from_clip(path, BiMoRSConfig.tiny())``. Its
    ``manifest.json`` records the settings, the versions, the wall time and the metrics (:func:`read_manifest`).
    """
    known = {field.name for field in fields(PretrainSettings)}
    if unknown := sorted(settings.keys() - known):
        raise TypeError(f"unknown pre-training setting(s) {unknown}; expected some of {sorted(known)}")
    settings = PretrainSettings(**settings)
    config = BiMoRSConfig.tiny()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / f"tiny-clip-{cache_key(settings, config)}"
    checkpoint, manifest = entry / CHECKPOINT_NAME, entry / MANIFEST_NAME
    if checkpoint.is_file() and manifest.is_file():
        return checkpoint

    started = time.perf_counter()
    train = synthetic_pairs(settings.num_pairs, settings.seed, size=settings.render_size, progress=progress)
    held_out = synthetic_pairs(settings.num_eval_pairs, settings.seed, start=settings.num_pairs,
                               size=settings.render_size, progress=progress)
    clip = build_tiny_clip(settings.seed, config)
    pixel_values = preprocess_images(train.images, clip.visual.image_size[0])
    input_ids = tokenize_captions(train.captions, clip.context_length)
    prepared = time.perf_counter()
    losses = train_contrastive(clip, pixel_values, input_ids, settings, progress=progress)
    trained = time.perf_counter()
    metrics = evaluate_alignment(clip, held_out, settings.batch_size, config.template)
    seconds = {"data": prepared - started, "training": trained - prepared, "total": time.perf_counter() - started}

    with atomic_path(checkpoint) as tmp:
        save_file({k: v.detach().contiguous() for k, v in clip.state_dict().items()}, tmp,
                  metadata={"format": "pt", "cache_key": entry.name})
    tail = losses[-min(50, len(losses)):]
    write_json(manifest, {
        "checkpoint": CHECKPOINT_NAME, "load_with": "BiMoRSModel.from_clip(path, BiMoRSConfig.tiny())",
        "settings": asdict(settings), "clip_config": config.clip_config(), "template": config.template,
        "recipe": RECIPE_VERSION, "versions": {"rs_shared": rs_shared.__version__, "open_clip": open_clip.__version__,
                                               "torch": torch.__version__},
        "train": {"first_loss": losses[0], "final_loss": sum(tail) / len(tail), "final_loss_steps": len(tail),
                  "logit_scale": clip.logit_scale.exp().item(), "torch_threads": torch.get_num_threads(),
                  "wall_seconds": {k: round(v, 2) for k, v in seconds.items()}},
        "held_out": {"pairs": len(held_out), **metrics},
    }, indent=2)
    return checkpoint


def read_manifest(checkpoint: str | os.PathLike) -> dict:
    """The ``manifest.json`` beside a checkpoint returned by :func:`pretrained_tiny_clip`."""
    path = Path(checkpoint).with_name(MANIFEST_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pre-training manifest beside {checkpoint}; expected a checkpoint "
                                f"returned by pretrained_tiny_clip()")
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------------------------------
# bimors-pretrain-clip
# ----------------------------------------------------------------------------------------------------------------

def pretrain_parser() -> argparse.ArgumentParser:
    defaults = PretrainSettings()
    parser = argparse.ArgumentParser(
        prog="bimors-pretrain-clip",
        description="Contrastively pre-train the tiny CLIP of BiMoRSConfig.tiny() on synthetic aerial image–caption "
                    "pairs (open_clip's ClipLoss) and cache it as an open_clip safetensors state dict, keyed by a hash "
                    "of the settings; an existing entry is reused without training. Prints the checkpoint path "
                    "(load it with BiMoRSModel.from_clip(path, BiMoRSConfig.tiny())) and its held-out metrics.")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/rs-vlm/bimors)")
    for field in fields(PretrainSettings):
        value, flag = getattr(defaults, field.name), f"--{field.name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=f"default {value}")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = pretrain_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {field.name: getattr(args, field.name) for field in fields(PretrainSettings)}
    try:
        checkpoint = pretrained_tiny_clip(args.out, progress=not args.quiet, **settings)
    except ValueError as error:
        print(f"bimors-pretrain-clip: error: {error}", file=sys.stderr)
        return 2
    manifest = read_manifest(checkpoint)
    train, held_out = manifest["train"], manifest["held_out"]
    print(f"checkpoint: {checkpoint}")
    seconds = train["wall_seconds"]
    print(f"trained {manifest['settings']['steps']} steps in {seconds['total']:.1f} s ({seconds['data']:.1f} s making "
          f"the pairs, {seconds['training']:.1f} s training, {train['torch_threads']} thread(s)); "
          f"loss {train['first_loss']:.3f} → {train['final_loss']:.3f}")
    print(f"held-out {held_out['pairs']} pairs: loss {held_out['loss']:.3f}, image→text retrieval "
          f"{held_out['retrieval_accuracy']:.1%}, zero-shot {manifest['template']!r} "
          f"{held_out['zero_shot_accuracy']:.1%}")
    return 0


__all__ = [
    "CaptionedScenes",
    "PretrainSettings",
    "build_tiny_clip",
    "cache_key",
    "class_prompts",
    "default_cache_dir",
    "encode_text",
    "evaluate_alignment",
    "main",
    "pair_seed",
    "preprocess_images",
    "random_dihedral",
    "pretrained_tiny_clip",
    "read_manifest",
    "synthetic_pairs",
    "tokenize_captions",
    "train_contrastive",
]
