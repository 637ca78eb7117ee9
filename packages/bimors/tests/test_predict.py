"""bimors-predict on a tiny random BiMoRS saved to disk, with the tiny synthetic BERT: the JSON record, the picture,
the defaults a bimors-train model directory supplies, and clear errors for missing or wrong inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from rs_shared.data.synthetic import SCENE_CLASSES, make_scene
from rs_shared.data.synthetic.export import synthesize

from bimors import BiMoRSConfig, BiMoRSModel
from bimors.caption import CaptionEmbedder
from bimors.synthetic_captions import build_synthetic_bert, ensure_synthetic_caption_cache
from bimors.data import eval_transform
from bimors.predict import main, predict_top_k

CAPTION = "An aerial view of an airport with a runway on bare soil. It contains two planes."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A plain save_pretrained model dir, a synthetic BERT and a 64 px synthetic scene."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    BiMoRSModel(BiMoRSConfig.tiny()).save_pretrained(root / "model")
    bert = build_synthetic_bert(root / "bert")
    image = root / "scene.png"
    Image.fromarray(make_scene(3, (64, 64), SCENE_CLASSES[0]).image).save(image)
    return root, bert, image


def test_plain_model_dir_with_explicit_inputs(setup, tmp_path, capsys):
    root, bert, image = setup
    out = tmp_path / "out"
    classes = list(SCENE_CLASSES)
    assert main(["--model", str(root / "model"), "--image", str(image), "--classes", ",".join(classes),
                 "--bert", str(bert), "--caption", CAPTION, "--top-k", "4", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    record = json.loads((out / "prediction.json").read_text())
    assert printed == record
    assert record["caption"] == CAPTION and record["caption_source"] == "text" and record["bert"] == str(bert)
    assert record["num_classes"] == len(classes) and record["picture"] == "prediction.png"
    top = record["top_k"]
    assert [t["rank"] for t in top] == [1, 2, 3, 4] and len({t["class"] for t in top}) == 4
    probabilities = [t["probability"] for t in top]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert all(t["class"] in classes for t in top)

    # the same numbers as the model itself on the eval-transformed image and the embedded caption
    model = BiMoRSModel.from_pretrained(root / "model").eval()
    pixels = eval_transform(32)(Image.open(image).convert("RGB")).unsqueeze(0)
    embeds = CaptionEmbedder(bert)([CAPTION])
    with torch.no_grad():
        expected = model(pixels, embeds, class_names=classes).logits[0].softmax(-1)
    assert top[0]["class"] == classes[int(expected.argmax())]
    np.testing.assert_allclose(probabilities, expected.sort(descending=True).values[:4].numpy(), rtol=1e-5)

    picture = Image.open(out / "prediction.png")
    assert picture.format == "PNG" and picture.width > 256 + 300 and picture.height >= 256


def test_top_k_larger_than_the_class_list(setup):
    root, bert, image = setup
    model = BiMoRSModel.from_pretrained(root / "model").eval()
    top = predict_top_k(model, torch.zeros(1, 3, 32, 32), CaptionEmbedder(bert)([CAPTION]), ["forest", "harbor"], 5)
    assert [t["class"] for t in top] in (["forest", "harbor"], ["harbor", "forest"])
    assert sum(t["probability"] for t in top) == pytest.approx(1.0)


def test_training_dir_supplies_classes_and_bert(setup, tmp_path, capsys):
    root, _, image = setup
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    BiMoRSModel(BiMoRSConfig.tiny()).save_pretrained(model_dir)
    data_root = tmp_path / "data"
    synthesize("scene", data_root / "synthetic", n=len(SCENE_CLASSES))
    # bimors-train without a cache on the synthetic dataset: <root>/synthetic/captions-d<caption_dim>
    ensure_synthetic_caption_cache(data_root / "synthetic", data_root / "synthetic" / "captions-d64")
    info = {"dataset": "synthetic", "root": str(data_root), "captions": "", "class_names": ["forest", "harbor",
                                                                                             "airport"]}
    (model_dir / "training.json").write_text(json.dumps(info))
    argv = ["--model", str(model_dir), "--image", str(image), "--caption", CAPTION, "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["bert"] == str(data_root / "synthetic" / "captions-d64" / "bert")
    assert {t["class"] for t in record["top_k"]} == {"forest", "harbor", "airport"}
    # a caption cache given at training: its manifest names the BERT
    (model_dir / "training.json").write_text(json.dumps({**info, "dataset": "RSICD",
                                                          "captions": str(data_root / "synthetic" / "captions-d64")}))
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["bert"] == str((data_root / "synthetic" / "captions-d64" / "bert")
                                                              .resolve())


def test_caption_from_a_captioner(setup, tmp_path, capsys, monkeypatch):
    root, bert, image = setup

    class FakeBlip2:  # stands in for the BLIP-2 of bimors.caption (tested in test_caption.py)
        def __init__(self, model_dir, device="cpu"):
            self.model_dir = model_dir

        def __call__(self, images):
            assert len(images) == 1 and images[0].size == (64, 64)
            return ["a harbor with two ships"]

    monkeypatch.setattr("bimors.caption.Blip2Captioner", FakeBlip2)
    assert main(["--model", str(root / "model"), "--image", str(image), "--classes", "forest,harbor", "--bert",
                 str(bert), "--captioner", str(tmp_path / "blip2"), "--out", str(tmp_path / "o")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["caption"] == "a harbor with two ships"
    assert record["caption_source"] == f"BLIP-2 {tmp_path / 'blip2'}"


def test_bad_inputs_give_clear_errors(setup, tmp_path, capsys):
    root, bert, image = setup
    base = ["--model", str(root / "model"), "--image", str(image), "--out", str(tmp_path / "o")]

    def error(*argv):
        assert main([*base, *argv]) == 1
        return capsys.readouterr().err

    assert "no caption source" in error("--classes", "a,b", "--bert", str(bert))
    assert "no class list" in error("--bert", str(bert), "--caption", CAPTION)
    assert "no BERT" in error("--classes", "forest,harbor", "--caption", CAPTION)
    assert "has no config.json" in error("--classes", "forest", "--caption", CAPTION, "--bert", str(tmp_path))
    assert "--top-k must be >= 1" in error("--classes", "forest", "--caption", CAPTION, "--bert", str(bert),
                                           "--top-k", "0")
    assert "--classes: expected comma-separated" in error("--classes", " , ", "--caption", CAPTION)
    assert "--caption is empty" in error("--classes", "forest", "--caption", " ")
    other = build_synthetic_bert(tmp_path / "bert32", hidden_size=32)
    assert "gives 32-d caption embeddings, the model expects caption_dim = 64" in error(
        "--classes", "forest", "--caption", CAPTION, "--bert", str(other))
    assert main(["--model", str(tmp_path), "--image", str(image), "--caption", CAPTION]) == 1
    assert "not a BiMoRS model directory" in capsys.readouterr().err
    assert main(["--model", str(root / "model"), "--image", str(tmp_path / "none.png"), "--classes", "forest",
                 "--caption", CAPTION, "--bert", str(bert)]) == 1
    assert "none.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: both caption sources
        main([*base, "--caption", CAPTION, "--captioner", "x"])
    assert not (tmp_path / "o").exists()
