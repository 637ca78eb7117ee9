"""Box-prompted pre-training of the tiny SAM2 on synthetic scenes: the SAM2 the tiny preset starts from.

CLV-Net's grounding encoder and mask decoder start from a pre-trained SAM2 (spec §2 [PAPER]); the paper recipe loads
SAM2-Hiera-L through ``clvnet-convert``. The tiny preset's SAM2 has no released weights, so
:func:`pretrained_tiny_sam2` teaches it SAM's own task once — a box prompt → the mask of what it frames — and
caches the result:

* **data** — procedural scenes of the classes with objects
  (:data:`~rs_shared.data.synthetic.OBJECT_SCENE_CLASSES` in turn, at the synthetic GCG tiles' 128 px) with seeds
  ≥ 2³², so never a tile of ``synthesize(task="gcg", …)`` (its seeds are uint32 draws). Per scene, the phrase groups
  of one :func:`~rs_shared.data.synthetic.region_caption` draw (the objects of one category in a random region)
  and up to :data:`INSTANCE_PROMPTS` single objects: each one's box (around its polygons) is a prompt and the union
  of its objects' masks the target;
* **training** — ``Sam2Model(CLVNetConfig.tiny().sam_config)`` called the SAM2 way (image, ``input_boxes`` in SAM2
  input pixels, ``multimask_output=False``), CLV-Net's mask loss (2·BCE + 0.5·Dice on the low-res logits resized to
  the image, :mod:`clvnet.losses`), AdamW with linear warm-up then cosine, ``batch_size`` scenes per step drawn from
  a pool of ``num_scenes`` (reshuffled every epoch);
* **cache** — ``<cache_dir>/tiny-sam2-<key>/sam2.safetensors`` (a ``Sam2Model`` state dict, loaded into
  ``CLVNetModel.sam``) and ``manifest.json`` (settings, versions, losses, wall time, held-out mask IoU). ``key`` hashes
  the settings, the SAM2 config, the recipe version and the library versions; the manifest is written last, so its
  presence means a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import rs_shared
import torch
import torch.nn.functional as F
import transformers
from rs_shared.data.common import atomic_path, write_json
from rs_shared.data.synthetic import OBJECT_SCENE_CLASSES, make_scene, region_caption
from rs_shared.training.config import ScheduleConfig
from rs_shared.training.optim import build_scheduler
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import Sam2Config, Sam2Model

from .losses import mask_bce, mask_dice
from .processing import sam_transform

RECIPE_VERSION = 1  # bump when the data, the prompts or the loop change: it is part of the cache key
CACHE_ENV = "CLVNET_CACHE_DIR"
CHECKPOINT_NAME = "sam2.safetensors"
MANIFEST_NAME = "manifest.json"
SCENE_SEED_BASE = 1 << 32  # scene seeds start here: above every uint32 sample seed of rs_shared's synthesize()
INSTANCE_PROMPTS = 8  # single-object prompts per scene, besides the region's phrase groups


@dataclass(frozen=True)
class SamPretrainSettings:
    """Everything the pre-trained weights depend on (with the SAM2 config and the versions: the cache key).

    steps: optimizer steps; batch_size: scenes per step; num_scenes: training pool; num_eval_scenes: held-out scenes
    (the seeds after the pool) for the final IoU; lr / warmup_steps: AdamW (no weight decay) with linear warm-up then
    cosine to 0; seed: scene seeds, initialisation and batch order; size: side of the rendered scenes.
    """

    steps: int = 2000
    batch_size: int = 16
    num_scenes: int = 4000
    num_eval_scenes: int = 200
    lr: float = 2e-3
    warmup_steps: int = 50
    seed: int = 0
    size: int = 128

    def __post_init__(self):
        names = ("steps", "batch_size", "num_scenes", "num_eval_scenes", "size")
        bad = [f"{name}={getattr(self, name)!r}" for name in names if getattr(self, name) < 1]
        bad += [f"{name}={getattr(self, name)!r}" for name in ("lr", "warmup_steps", "seed") if getattr(self, name) < 0]
        if bad or self.batch_size > self.num_scenes:
            raise ValueError(f"SAM2 pre-training settings out of range: {', '.join(bad) or 'batch_size > num_scenes'} "
                             "(counts and size ≥ 1, lr, warmup_steps and seed ≥ 0, batch_size ≤ num_scenes)")


@dataclass(frozen=True)
class BoxedScene:
    """One scene for SAM2: ``pixels`` (3, S, S) normalised, ``boxes`` (P, 4) xyxy in SAM2 input pixels, ``masks``
    (P, H, W) float targets at the scene's size (one per prompt box)."""

    pixels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


def boxed_scene(index: int, seed: int, size: int, sam_size: int) -> BoxedScene:
    """Scene ``index`` of stream ``seed`` (seed ``2³²·(seed + 1) + index``, class ``index`` mod 7) with one prompt per
    phrase group of a :func:`region_caption` draw and per single object drawn (see module docstring)."""
    scene_seed = SCENE_SEED_BASE * (seed + 1) + index
    scene = make_scene(scene_seed, (size, size), OBJECT_SCENE_CLASSES[index % len(OBJECT_SCENE_CLASSES)])
    attempt = 0
    while not scene.objects:  # nothing to frame: redraw from a derived seed
        attempt += 1
        scene = make_scene(scene_seed + attempt * SCENE_SEED_BASE * 1024, (size, size), scene.scene_class)
    rng = np.random.default_rng(scene_seed)
    _, groups = region_caption(scene, rng)
    groups += [[int(i)] for i in rng.permutation(len(scene.objects))[:INSTANCE_PROMPTS]]
    masks = scene.instance_masks()
    boxes = scene.boxes("xyxy").data
    group_boxes = np.array([[*boxes[g, :2].min(0), *boxes[g, 2:].max(0)] for g in groups], dtype=np.float32)
    return BoxedScene(sam_transform(scene.image, sam_size), torch.from_numpy(group_boxes * sam_size / size),
                      torch.from_numpy(np.stack([masks[g].any(0) for g in groups]).astype(np.float32)))


def mask_loss(model: Sam2Model, scenes: list[BoxedScene]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """CLV-Net's 2·BCE + 0.5·Dice, averaged over every prompt of ``scenes``, and the logits per scene
    ((P, H, W) at the targets' size)."""
    pixels = torch.stack([s.pixels for s in scenes])
    count = max(len(s.boxes) for s in scenes)
    boxes = torch.stack([torch.cat([s.boxes, s.boxes[-1:].expand(count - len(s.boxes), 4)]) for s in scenes])
    low_res = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks[:, :, 0]
    logits, total, n = [], 0.0, 0
    for scene, masks in zip(scenes, low_res, strict=True):
        up = F.interpolate(masks[:len(scene.boxes), None], size=scene.masks.shape[1:], mode="bilinear",
                           align_corners=False)[:, 0]
        logits.append(up)
        total = total + 2.0 * mask_bce(up, scene.masks).sum() + 0.5 * mask_dice(up, scene.masks).sum()
        n += len(up)
    return total / n, logits


def train_sam(model: Sam2Model, pool: list[BoxedScene], settings: SamPretrainSettings,
              progress: bool = True) -> list[float]:
    """Train ``model`` on ``pool`` as ``settings`` say; the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = build_scheduler(optimizer, ScheduleConfig(name="cosine", warmup_steps=settings.warmup_steps),
                                settings.steps, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(settings.steps), desc="pre-train tiny SAM2", disable=not progress, leave=False):
        if len(order) < settings.batch_size:
            order += torch.randperm(len(pool), generator=generator).tolist()
        batch, order = [pool[i] for i in order[:settings.batch_size]], order[settings.batch_size:]
        loss, _ = mask_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def held_out_iou(model: Sam2Model, scenes: list[BoxedScene], batch_size: int) -> float:
    """Mean IoU of the thresholded masks (logits > 0) over every prompt of ``scenes``."""
    model.eval()
    ious = []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start:start + batch_size]
        _, logits = mask_loss(model, chunk)
        for scene, pred in zip(chunk, logits, strict=True):
            pred, target = pred > 0, scene.masks > 0
            union = (pred | target).sum((1, 2)).clamp(min=1)
            ious += ((pred & target).sum((1, 2)) / union).tolist()
    return float(np.mean(ious))


def default_cache_dir() -> Path:
    """``$CLVNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/rs-vlm/clvnet`` (``~/.cache/rs-vlm/clvnet``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "rs-vlm" / "clvnet"


def cache_key(settings: SamPretrainSettings, sam_config: Sam2Config) -> str:
    """16 hex digits of the SHA-256 of the settings, the SAM2 config, the recipe and the library versions."""
    identity = {"settings": asdict(settings), "sam2": sam_config.to_dict(), "recipe": RECIPE_VERSION,
                "rs_shared": rs_shared.__version__, "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrained_tiny_sam2(sam_config: Sam2Config, cache_dir: str | os.PathLike | None = None, *,
                         progress: bool = True, **settings) -> dict[str, torch.Tensor]:
    """The state dict of ``Sam2Model(sam_config)`` pre-trained by box prompts (module docstring), trained now
    unless cached. ``settings`` are :class:`SamPretrainSettings` fields (``steps=``, ``seed=`` …); ``cache_dir``
    defaults to :func:`default_cache_dir`. The entry's ``manifest.json`` records settings, versions, losses, wall
    time and the held-out IoU."""
    known = {f.name for f in fields(SamPretrainSettings)}
    if unknown := sorted(settings.keys() - known):
        raise TypeError(f"unknown SAM2 pre-training setting(s) {unknown}; expected some of {sorted(known)}")
    settings = SamPretrainSettings(**settings)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / f"tiny-sam2-{cache_key(settings, sam_config)}"
    checkpoint, manifest = entry / CHECKPOINT_NAME, entry / MANIFEST_NAME
    if checkpoint.is_file() and manifest.is_file():
        return load_file(checkpoint)

    started = time.perf_counter()
    sam_size = sam_config.vision_config.backbone_config.image_size[0]
    scenes = [boxed_scene(i, settings.seed, settings.size, sam_size)
              for i in tqdm(range(settings.num_scenes + settings.num_eval_scenes), desc="render scenes",
                            disable=not progress, leave=False)]
    pool, held_out = scenes[:settings.num_scenes], scenes[settings.num_scenes:]
    torch.manual_seed(settings.seed)
    model = Sam2Model(sam_config)
    prepared = time.perf_counter()
    losses = train_sam(model, pool, settings, progress)
    trained = time.perf_counter()
    iou = held_out_iou(model, held_out, settings.batch_size)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(checkpoint) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "cache_key": entry.name})
    tail = losses[-min(50, len(losses)):]
    write_json(manifest, {
        "checkpoint": CHECKPOINT_NAME, "load_with": "model.sam.load_state_dict(safetensors.torch.load_file(path))",
        "settings": asdict(settings), "recipe": RECIPE_VERSION,
        "versions": {"rs_shared": rs_shared.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        "train": {"first_loss": losses[0], "final_loss": sum(tail) / len(tail),
                  "torch_threads": torch.get_num_threads(),
                  "wall_seconds": {"data": round(prepared - started, 2), "training": round(trained - prepared, 2),
                                   "total": round(time.perf_counter() - started, 2)}},
        "held_out": {"scenes": len(held_out), "prompts": sum(len(s.boxes) for s in held_out), "mask_iou": iou},
    }, indent=2)
    return state


__all__ = ["BoxedScene", "SamPretrainSettings", "boxed_scene", "cache_key", "default_cache_dir", "held_out_iou",
           "mask_loss", "pretrained_tiny_sam2", "train_sam"]
