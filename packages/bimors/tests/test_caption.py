"""The caption cache and ``bimors-caption``, end to end on a tiny random BLIP-2 (T5 text model) and a tiny
random BERT, both built offline with local tokenizers and loaded back from ``save_pretrained`` directories."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from rs_shared.data.synthetic import SCENE_CLASSES, make_scene
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    PreTrainedTokenizerFast,
    T5Config,
)

from bimors import BiMoRSConfig
from bimors.caption import (
    CAPTIONS,
    EMBEDDINGS,
    GENERATION,
    MANIFEST,
    PREPROCESSING_VERSION,
    CaptionCache,
    CaptionCacheError,
    CaptionEmbedder,
    build_caption_cache,
    image_key,
    masked_mean,
    read_captions,
    stretch_image,
)
from bimors.cli_caption import main
from bimors.synthetic_captions import ensure_synthetic_caption_cache

WORDS = ("a an the of with and in on near aerial view field road river house tree car building green blue "
         "water boat").split()


def build_blip2(out):
    """A 4-query-token BLIP-2 with a 1-layer T5 and a WordLevel tokenizer, saved to ``out``."""
    vocab = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", "<image>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    text = T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                    num_heads=2, decoder_start_token_id=0, bos_token_id=1, pad_token_id=0, eos_token_id=1)
    config = Blip2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, initializer_range=0.5),
        qformer_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            encoder_hidden_size=16, vocab_size=64),
        text_config=text, num_query_tokens=4, image_token_index=vocab["<image>"])
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_bert(out):
    """A 1-layer BERT (hidden 32) with a WordPiece vocabulary of the BLIP-2 words, saved to ``out``."""
    out.mkdir(parents=True)
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer.from_pretrained(str(out)).save_pretrained(out)
    torch.manual_seed(1)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_blip2(root / "blip2"), build_bert(root / "bert")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five synthetic scenes of different sizes, plus a byte-identical copy of the first under another name."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(5):
        path = root / f"scene_{i}.png"
        Image.fromarray(make_scene(i, (40 + 8 * i, 48), SCENE_CLASSES[i]).image).save(path)
        paths.append(path)
    copy = root / "renamed_copy.png"
    copy.write_bytes(paths[0].read_bytes())
    return paths, copy


def _unbatched_embedding(bert_dir, caption):
    """The official embedding: one caption, no padding, plain mean of last_hidden_state."""
    tokenizer, model = BertTokenizer.from_pretrained(str(bert_dir)), BertModel.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(caption, return_tensors="pt")).last_hidden_state.mean(1)[0]


def test_stretch_image_spans_full_range_and_truncates():
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[..., 0] = np.linspace(50, 150, 20, dtype=np.uint8)  # min 0 (G, B), max 150 (R)
    out = np.asarray(stretch_image(Image.fromarray(pixels), size=8))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    resized = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.Resampling.BILINEAR), np.float32) / 255
    expected = (resized - resized.min()) / (resized.max() - resized.min()) * 255
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert out.min() == 0 and out.max() == 255
    assert not np.asarray(stretch_image(Image.new("RGB", (9, 9), (7, 7, 7)), size=4)).any()  # constant → black


def test_stretch_image_matches_the_official_torchvision_pipeline():
    from torchvision import transforms

    image = Image.fromarray(make_scene(7, (150, 90), SCENE_CLASSES[2]).image)
    x = transforms.ToTensor()(transforms.Resize((224, 224))(image))
    official = transforms.ToPILImage()((x - x.min()) / (x.max() - x.min()))
    np.testing.assert_array_equal(np.asarray(stretch_image(image)), np.asarray(official))


def test_masked_mean_equals_unpadded_mean():
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = masked_mean(hidden, mask)
    torch.testing.assert_close(out[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(out[1], hidden[1].mean(0))


def test_batched_bert_embedding_equals_one_at_a_time(model_dirs):
    _, bert_dir = model_dirs
    captions = ["a", "an aerial view of a river near the road", "green trees"]  # different lengths: padding
    batched = CaptionEmbedder(bert_dir)(captions)
    assert batched.shape == (3, 32) and batched.dtype == torch.float32
    for row, caption in zip(batched, captions, strict=True):
        assert (row - _unbatched_embedding(bert_dir, caption)).abs().max() < 1e-5


def test_cli_end_to_end_resume_and_lookup(model_dirs, images, tmp_path, capsys):
    blip2_dir, bert_dir = model_dirs
    paths, copy = images
    cache = tmp_path / "cache"
    argv = ["--cache", str(cache), "--captioner", str(blip2_dir), "--bert", str(bert_dir), "--no-progress",
            "--batch-size", "2", "--bert-batch-size", "2", "--images"]
    assert main([*argv, *map(str, paths[:3])]) == 0
    assert "3 captioned, 3 embedded" in capsys.readouterr().out

    records = read_captions(cache)
    assert set(records) == {image_key(p) for p in paths[:3]}
    assert all(isinstance(r["caption"], str) and r["relpath"].endswith(".png") for r in records.values())

    manifest = json.loads((cache / MANIFEST).read_text())
    assert manifest["captioner"]["path"] == str(blip2_dir.resolve()) and manifest["captioner"]["name"] == "blip2"
    assert manifest["generation"] == {**GENERATION, "prompt": None, "skip_special_tokens": True, "dtype": "float32"}
    assert manifest["preprocessing"]["version"] == PREPROCESSING_VERSION
    assert manifest["embedding"]["dim"] == 32 and manifest["embedding"]["path"] == str(bert_dir.resolve())
    assert {"torch", "transformers"} <= set(manifest["versions"])
    assert manifest["counts"] == {"captions": 3, "embeddings": 3}
    with safe_open(cache / EMBEDDINGS, framework="pt") as f:
        assert f.get_tensor("embeddings").dtype == torch.float32 and f.get_tensor("keys").shape == (3, 32)

    # Resume: the three are skipped, the two new ones and nothing else are captioned; the renamed byte-identical
    # copy reuses its original's entry.
    lines_before = (cache / CAPTIONS).read_text().splitlines()
    assert main([*argv, *map(str, paths), str(copy)]) == 0
    assert "5 image(s) asked for: 2 captioned, 2 embedded" in capsys.readouterr().out
    assert (cache / CAPTIONS).read_text().splitlines()[:3] == lines_before
    assert main([*argv, *map(str, paths)]) == 0
    assert "0 captioned, 0 embedded" in capsys.readouterr().out

    reader = CaptionCache(cache)
    assert len(reader) == 5 and reader.dim == 32
    records = read_captions(cache)
    for path in paths:
        expected = _unbatched_embedding(bert_dir, records[image_key(path)]["caption"])
        assert (reader.lookup(path) - expected).abs().max() < 1e-5
    torch.testing.assert_close(reader.lookup(copy), reader.lookup(paths[0]))
    assert reader.lookup_many(paths).shape == (5, 32)

    # The captions are what the captioner itself produces for these images.
    from bimors.caption import Blip2Captioner
    texts = Blip2Captioner(blip2_dir)([Image.open(p) for p in paths])
    assert texts == [records[image_key(p)]["caption"] for p in paths]


def test_missing_entry_names_images_and_command(model_dirs, images, tmp_path):
    blip2_dir, bert_dir = model_dirs
    paths, _ = images
    cache = tmp_path / "cache"
    build_caption_cache(cache, [(paths[0], "scene_0.png")], blip2_dir, bert_dir, progress=False)
    reader = CaptionCache(cache)
    with pytest.raises(CaptionCacheError) as e:
        reader.lookup_many(paths)
    message = str(e.value)
    assert "no entry for 4 image(s)" in message and all(str(p) in message for p in paths[1:])
    assert str(paths[0]) not in message.split(":", 1)[1].split(". Fill")[0]
    assert f"bimors-caption --cache {cache} --captioner {blip2_dir.resolve()} --bert {bert_dir.resolve()}" in message
    with pytest.raises(CaptionCacheError, match="no caption cache at"):
        CaptionCache(tmp_path / "nowhere")


def test_interrupted_line_is_dropped_and_recaptioned(model_dirs, images, tmp_path):
    blip2_dir, bert_dir = model_dirs
    paths, _ = images
    cache = tmp_path / "cache"
    build_caption_cache(cache, [(p, p.name) for p in paths[:2]], blip2_dir, bert_dir, progress=False)
    with open(cache / CAPTIONS, "ab") as f:
        f.write(b'{"key": "abc", "relp')  # a write cut short
    assert len(read_captions(cache)) == 2
    counts = build_caption_cache(cache, [(p, p.name) for p in paths[:3]], blip2_dir, bert_dir, progress=False)
    assert counts == {"images": 3, "captioned": 1, "embedded": 1, "total": 3}
    assert all(json.loads(line) for line in (cache / CAPTIONS).read_text().splitlines())


def test_settings_mismatch_and_bad_inputs_are_refused(model_dirs, images, tmp_path, capsys):
    blip2_dir, bert_dir = model_dirs
    paths, _ = images
    cache = tmp_path / "cache"
    build_caption_cache(cache, [(paths[0], "a.png")], blip2_dir, bert_dir, progress=False)
    with pytest.raises(CaptionCacheError, match="generation"):
        build_caption_cache(cache, [(paths[1], "b.png")], blip2_dir, bert_dir, dtype="bfloat16", progress=False)
    with pytest.raises(FileNotFoundError, match="not a local model directory"):
        build_caption_cache(cache, [], tmp_path / "no-model", bert_dir, progress=False)
    assert main(["--cache", str(cache), "--captioner", str(blip2_dir), "--bert", str(bert_dir),
                 "--dataset", "PatternNet", "--root", str(tmp_path)]) == 1
    assert "cannot be downloaded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--cache", str(cache), "--captioner", str(blip2_dir), "--bert", str(bert_dir)])


def test_cli_captions_only_the_few_shot_images_a_protocol_reads(model_dirs, tmp_path):
    from bimors.datasets import load_dataset
    from bimors.protocols import shots_file

    blip2_dir, bert_dir = model_dirs
    cache = tmp_path / "cache"
    assert main(["--cache", str(cache), "--captioner", str(blip2_dir), "--bert", str(bert_dir), "--no-progress",
                 "--dataset", "synthetic", "--root", str(tmp_path), "--shots", "1", "--seeds", "1",
                 "--splits", "train"]) == 0
    dataset = load_dataset("synthetic", tmp_path)
    shots = json.loads(shots_file(dataset, 1, 1).read_text())
    assert len(shots["train"]) == len(SCENE_CLASSES)
    expected = {image_key(dataset.directory / "images" / rel) for rel, _, _ in shots["train"]}
    assert set(read_captions(cache)) == expected
    relpaths = {r["relpath"] for r in read_captions(cache).values()}
    assert relpaths == {f"synthetic/images/{rel}" for rel, _, _ in shots["train"]}


# --- caption text from a file; the synthetic dataset's ground-truth captions and tiny BERT ----------------------

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from bimors.datasets import load_dataset

    return load_dataset("synthetic", tmp_path_factory.mktemp("root"))


def test_cli_captions_file_replaces_blip2(model_dirs, synthetic, tmp_path, capsys):
    _, bert_dir = model_dirs
    file = synthetic.directory / "captions.jsonl"
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    cache = tmp_path / "cache"
    argv = ["--cache", str(cache), "--captions", str(file), "--bert", str(bert_dir), "--no-progress"]
    images = [synthetic.directory / "images" / r["relpath"] for r in lines[:3]]
    assert main([*argv, "--images", *map(str, images)]) == 0
    assert "3 captioned, 3 embedded" in capsys.readouterr().out
    records = read_captions(cache)
    assert [records[image_key(p)]["caption"] for p in images] == [r["caption"] for r in lines[:3]]
    manifest = json.loads((cache / MANIFEST).read_text())
    assert manifest["captioner"]["source"] == "file" and manifest["captioner"]["path"] == str(file.resolve())
    assert manifest["generation"] is None and manifest["preprocessing"] is None
    expected = CaptionEmbedder(bert_dir)([r["caption"] for r in lines[:3]])
    torch.testing.assert_close(CaptionCache(cache).lookup_many(images), expected)
    # the file alone: every image it lists; the first three are already there
    assert main(argv) == 0
    assert f"{len(lines)} image(s) asked for: {len(lines) - 3} captioned" in capsys.readouterr().out
    # a BLIP-2 run never extends a cache of file captions
    blip2_dir, _ = model_dirs
    with pytest.raises(CaptionCacheError, match="captioner.fingerprint"):
        build_caption_cache(cache, [(images[0], "x.png")], blip2_dir, bert_dir, progress=False)
    with pytest.raises(ValueError, match="exactly one caption source"):
        build_caption_cache(cache, [], blip2_dir, bert_dir, captions_file=file, progress=False)


def test_captions_file_errors_name_the_line(model_dirs, images, tmp_path, capsys):
    _, bert_dir = model_dirs
    paths, _ = images
    file = tmp_path / "captions.jsonl"
    argv = ["--cache", str(tmp_path / "cache"), "--captions", str(file), "--bert", str(bert_dir)]
    file.write_text('{"relpath": "a.png", "caption": "a river"}\n{"relpath": "b.png"}\n')
    assert main(argv) == 1
    assert "captions.jsonl: line 2: expected {'relpath'" in capsys.readouterr().err
    file.write_text('{"relpath": "a.png", "caption": "a river"}\n')
    assert main(argv) == 1
    assert f"line 1: image {tmp_path / 'images' / 'a.png'} not found" in capsys.readouterr().err
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(paths[1].read_bytes())
    assert main([*argv, "--images", str(paths[2])]) == 1  # an image the file does not caption
    assert f"has no caption for 1 image(s): {paths[2]}" in capsys.readouterr().err
    assert main([*argv, "--images", str(paths[1])]) == 0  # found by content: the same bytes as images/a.png
    assert read_captions(tmp_path / "cache")[image_key(paths[1])]["caption"] == "a river"
    assert main(["--cache", str(tmp_path / "c2"), "--captions", str(tmp_path / "nope.jsonl"), "--bert",
                 str(bert_dir)]) == 1
    assert "nope.jsonl is not a file" in capsys.readouterr().err


def test_synthetic_caption_cache_embeds_the_ground_truth_once(synthetic, tmp_path):
    cache_dir = tmp_path / "cache"
    state = torch.random.get_rng_state()
    cache = ensure_synthetic_caption_cache(synthetic.directory, cache_dir)
    assert torch.equal(torch.random.get_rng_state(), state)  # the seeded BERT leaves the global RNG alone
    config = json.loads((cache_dir / "bert" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2) == (BiMoRSConfig.tiny().caption_dim, 2)
    samples = [*synthetic.split.train[:4], *synthetic.split.test[-3:]]
    lines = {json.loads(line)["relpath"]: json.loads(line)["caption"]
             for line in (synthetic.directory / "captions.jsonl").read_text().splitlines()}
    assert len(cache) == len(lines) == len(synthetic.split.train) + len(synthetic.split.val) + len(synthetic.split.test)
    expected = CaptionEmbedder(cache_dir / "bert")([lines[s.impath_rel] for s in samples])
    torch.testing.assert_close(cache.lookup_many([s.path for s in samples]), expected)
    assert cache.manifest["captioner"]["name"] == "synthetic ground truth" and cache.dim == 64

    # idempotent and cheap: nothing is rewritten; a second cache directory gets the same (seeded) BERT
    stamps = {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}
    again = ensure_synthetic_caption_cache(synthetic.directory, cache_dir)
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()} == stamps
    torch.testing.assert_close(again.embeddings, cache.embeddings, rtol=0, atol=0)
    other = ensure_synthetic_caption_cache(synthetic.directory, tmp_path / "other")
    weights = [load_file(d / "bert" / "model.safetensors") for d in (cache_dir, tmp_path / "other")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    torch.testing.assert_close(other.lookup_many([s.path for s in samples]), expected)

    with pytest.raises(ValueError, match="is 64 wide, 32 was asked for"):
        ensure_synthetic_caption_cache(synthetic.directory, cache_dir, hidden_size=32)
    empty = tmp_path / "old-synthetic"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="without ground-truth captions"):
        ensure_synthetic_caption_cache(empty, tmp_path / "cache3")


def test_fixed_caption_gives_every_image_one_embedding(tmp_path):
    """``bimors-caption --fixed-caption … --synthetic-bert 16 --dataset <path>``: the no-BLIP-2 quick path."""
    from rs_shared.data.scene_cls import write_dataset

    from bimors.caption import CaptionCache
    from bimors.cli_caption import main

    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "Own", "own", {s: [(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), label, c)
                                                for label, c in enumerate(("a", "b", "c"))] for s in ("train", "test")})
    cache = tmp_path / "cache"
    argv = ["--cache", str(cache), "--fixed-caption", "a satellite image.", "--synthetic-bert", "16",
            "--dataset", str(tmp_path / "Own"), "--shots", "0", "--no-progress"]
    assert main(argv) == 0
    embeddings = CaptionCache(cache).lookup_many(sorted((tmp_path / "Own" / "images").rglob("*.jpg")))
    assert embeddings.shape == (6, 16) and torch.equal(embeddings, embeddings[:1].expand(6, -1))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["captioner"]["source"] == "fixed" and manifest["captioner"]["text"] == "a satellite image."
    assert main([*argv[:3], "another caption", *argv[4:]]) == 1  # never mixed with other captions in one cache
