"""``bimors-caption``: fill the caption cache with the images a protocol reads (spec §1.3, §1.4)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from .caption import DTYPES, CaptionCacheError, FileCaptions, build_caption_cache


def protocol_images(dataset, num_shots: int, seeds: Sequence[int], splits: Sequence[str],
                    shots_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The ``(path, relpath)`` images of ``dataset`` (a :class:`bimors.datasets.SceneDataset`) that a protocol
    reads: whole ``test`` lists, and for ``train``/``val`` the few-shot lists of every seed (all images when
    ``num_shots`` is 0). ``relpath`` is ``<Dir>/images/<path in the split>``."""
    from .protocols import fewshot_split

    out: dict[Path, str] = {}
    for split in splits:
        sources = [dataset.split] if split == "test" or num_shots == 0 else \
            [fewshot_split(dataset, num_shots, seed, shots_dir) for seed in seeds]
        for source in sources:
            out.update((s.path, f"{dataset.directory.name}/images/{s.impath_rel}") for s in source[split])
    return list(out.items())


def caption_parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS
    from .protocols import NUM_SHOTS, PROTOCOLS, SEEDS

    parser = argparse.ArgumentParser(
        prog="bimors-caption", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Caption images with a local BLIP-2 and store their BERT caption embeddings in a cache keyed "
                    "by the SHA-256 of the image bytes (spec §1.3, §1.4). Only the images a protocol reads are "
                    "captioned: the full test splits and the few-shot train images of each seed. Images already in "
                    "the cache are skipped, so an interrupted run resumes where it stopped.",
        epilog="Examples:\n  bimors-caption --cache data/captions --captioner models/blip2-flan-t5-xl "
               "--bert models/bert-base-uncased --protocol base2new --root data\n"
               "  bimors-caption --cache data/synthetic-captions --captions data/synthetic/captions.jsonl "
               "--bert models/synthetic-bert\n"
               "  bimors-caption --cache data/captions --captioner … --bert … --dataset RSICD --root data "
               "--shots 0\n"
               "  bimors-caption --cache data/MyScenes-captions --fixed-caption 'a satellite image.' "
               "--synthetic-bert 64 --dataset data/MyScenes   (pipeline check, no BLIP-2)\n"
               "Nothing is downloaded: --captioner and --bert are local save_pretrained directories.")
    models = parser.add_argument_group("models and cache")
    models.add_argument("--cache", required=True, help="caption cache directory (created if absent, extended if not)")
    source = models.add_mutually_exclusive_group(required=True)
    source.add_argument("--captioner",
                        help="local BLIP-2 directory (Blip2ForConditionalGeneration + Blip2Processor), e.g. a copy "
                             "of Salesforce/blip2-flan-t5-xl")
    source.add_argument("--captions", metavar="FILE.jsonl",
                        help='take the caption text from this file instead of BLIP-2: lines {"relpath": <path under '
                             'the images/ folder beside the file>, "caption": <text>} (optionally "key": the image '
                             "SHA-256), e.g. the synthetic dataset's captions.jsonl; without --protocol/--dataset/"
                             "--images every image of the file is embedded. The manifest records the file as the "
                             "captioner")
    source.add_argument("--fixed-caption", metavar="TEXT",
                        help="give every image this same caption, without BLIP-2: a quick pipeline check on your own "
                             "data, NOT BiMoRS's caption conditioning (the embeddings then say nothing about the "
                             "image, so the caption branch carries no information)")
    bert = models.add_mutually_exclusive_group(required=True)
    bert.add_argument("--bert", help="local BERT directory (BertModel + BertTokenizer), e.g. a copy of "
                                     "bert-base-uncased")
    bert.add_argument("--synthetic-bert", type=int, metavar="WIDTH",
                      help="instead of --bert: build (once, under CACHE/bert) the tiny random BERT of the tiny "
                           "preset, WIDTH wide (64 for the tiny-synthetic model's caption_dim); for a quick CPU try "
                           "with --fixed-caption, not for real captions")
    models.add_argument("--captioner-name", help="name recorded in the manifest (default: the directory name)")
    models.add_argument("--bert-name", help="name recorded in the manifest (default: the directory name)")
    which = parser.add_argument_group("which images")
    which.add_argument("--protocol", choices=sorted(PROTOCOLS),
                       help="caption every dataset of this protocol (its training sources and evaluation targets)")
    which.add_argument("--dataset", nargs="+", metavar="NAME",
                       help=f"dataset name(s), case-sensitive: {', '.join(DATASETS)}; or the path of your own "
                            "dataset folder (images/ + CoOp split JSON, e.g. from rs-data convert labels-to-scene) "
                            "or of its JSON")
    which.add_argument("--root", help="datasets root holding <Dir>/images and the split JSONs (needed with "
                                      "--protocol / dataset names; unused for a dataset given by path)")
    which.add_argument("--shots", type=int, default=NUM_SHOTS,
                       help=f"shots per class of the train/val images (default {NUM_SHOTS}; 0 = every image)")
    which.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                       help=f"seeds whose few-shot images are captioned (default {' '.join(map(str, SEEDS))})")
    which.add_argument("--splits", nargs="+", choices=("train", "val", "test"), default=["train", "test"],
                       help="splits to caption (default: train test; the few-shot val set is never used)")
    which.add_argument("--shots-dir",
                       help="read/write shots JSONs under SHOTS_DIR/<Dir>/ (default: beside each dataset)")
    which.add_argument("--images", nargs="+", metavar="FILE", help="caption these image files as well")
    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", type=int, default=8, help="images per BLIP-2 generate call (default 8)")
    run.add_argument("--bert-batch-size", type=int, default=64, help="captions per BERT forward (default 64)")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, … (default cpu)")
    run.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                     help="BLIP-2 weights dtype; float32 is the official setting, the others may change captions "
                          "(BERT always runs in float32)")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from rs_shared.data.errors import DataFormatError

    from .datasets import is_dataset_path, load_dataset
    from .protocols import get_protocol

    parser = caption_parser()
    args = parser.parse_args(argv)
    names = list(args.dataset or [])
    if args.protocol:
        protocol = get_protocol(args.protocol)
        names += [n for run in protocol.runs for n in (run.dataset, *(e.dataset for e in run.evaluations))]
    if not names and not args.images and not args.captions:
        parser.error("nothing to caption: give --protocol, --dataset or --images (or --captions FILE alone)")
    if any(not is_dataset_path(n) for n in names) and not args.root:
        parser.error("--root is required with --protocol / a dataset name")
    if args.synthetic_bert is not None and (args.synthetic_bert < 4 or args.synthetic_bert % 4):
        parser.error(f"--synthetic-bert must be a positive multiple of 4, got {args.synthetic_bert}")
    if args.shots < 0 or args.batch_size < 1 or args.bert_batch_size < 1:
        parser.error("--shots must be >= 0 and the batch sizes >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bert = args.bert
        if args.synthetic_bert is not None:
            from .synthetic_captions import SYNTHETIC_BERT_DIR, build_synthetic_bert

            bert = build_synthetic_bert(Path(args.cache) / SYNTHETIC_BERT_DIR, args.synthetic_bert)
        images: dict[Path, str] = {}
        for name in dict.fromkeys(names):
            images.update(protocol_images(load_dataset(name, args.root), args.shots, args.seeds, args.splits,
                                          args.shots_dir))
        for file in args.images or []:
            if not Path(file).is_file():
                raise FileNotFoundError(f"--images: {file} is not a file")
            images.setdefault(Path(file), file)
        if args.captions and not images:  # the file alone: every image it captions
            images.update(FileCaptions(args.captions).images())
        counts = build_caption_cache(args.cache, list(images.items()), args.captioner, bert,
                                     batch_size=args.batch_size, bert_batch_size=args.bert_batch_size,
                                     device=args.device, dtype=args.dtype, captioner_name=args.captioner_name,
                                     bert_name=args.bert_name, progress=not args.no_progress,
                                     captions_file=args.captions, fixed_caption=args.fixed_caption)
    except (CaptionCacheError, DataFormatError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"bimors-caption: error: {e}", file=sys.stderr)
        return 1
    print(f"{counts['images']} image(s) asked for: {counts['captioned']} captioned, {counts['embedded']} embedded "
          f"now; the cache {args.cache} holds {counts['total']} entries")
    return 0
