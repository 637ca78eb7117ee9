"""Single-image prediction with a fake model: the batch it gets, the JSON/overlay outputs, clvnet-predict."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from clvnet import cli_predict, predict
from clvnet.predict import load_for_inference, predict_image, prompt_box, write_prediction
from clvnet.processing import CLVNetProcessor
from clvnet.tokenizer import build_tiny_tokenizer
from PIL import Image
from rs_shared.data.gcg import parse_grounded_caption
from rs_shared.data.masks import rle_to_mask
from rs_shared.viz import palette


@dataclass
class GroundedPrediction:
    """Stand-in for clvnet.modeling.GroundedPrediction (same fields)."""

    text: str
    caption: str
    phrases: list[str]
    masks: np.ndarray
    mask_scores: np.ndarray


H, W = 48, 64
TEXT = "A <p> red car </p> [SEG] next to <p> a truck </p> [SEG] in a lot."


def masks():
    out = np.zeros((2, H, W), bool)
    out[0, 5:20, 5:30] = True
    out[1, 30:45, 40:60] = True
    return out


class FakeModel:
    def __init__(self):
        self.batches = []

    def generate_grounded(self, batch, tokenizer=None, max_new_tokens=None):
        self.batches.append((batch, tokenizer, max_new_tokens))
        parsed = parse_grounded_caption(TEXT)
        return [GroundedPrediction(TEXT, parsed.caption, list(parsed.phrases), masks(), np.array([0.9, 0.8]))]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tokenizer = build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return CLVNetProcessor(tokenizer, vision_image_size=56, patch_size=14, hd_num=1, region_tokens=4,
                           sam_image_size=64)


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)


def test_predict_image_builds_one_batch(processor, image):
    model = FakeModel()
    pred = predict_image(model, processor, image, [8, 4, 40, 30], max_new_tokens=9)
    batch, tokenizer, budget = model.batches[0]
    assert pred.phrases == ["red car", "a truck"] and tokenizer is processor.tokenizer and budget == 9
    assert batch["boxes"].tolist() == [[8.0, 4.0, 40.0, 30.0]] and batch["image_sizes"].tolist() == [[H, W]]
    assert batch["input_ids"].shape[0] == 1 and "labels" not in batch  # generation prompt only
    predict_image(model, processor, Image.fromarray(image), None)
    assert model.batches[1][0]["boxes"].tolist() == [[0.0, 0.0, W, H]]  # no box → the whole image


def test_prompt_box_checks():
    assert prompt_box(None, W, H) == [0.0, 0.0, W, H]
    assert prompt_box((1, 2, 3, 4), W, H) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="degenerate"):
        prompt_box([10, 10, 5, 20], W, H)
    with pytest.raises(ValueError, match="outside"):
        prompt_box([0, 0, W + 10, H], W, H)
    with pytest.raises(ValueError, match="4 finite numbers"):
        prompt_box([0, 0, 1], W, H)


def test_write_prediction(tmp_path, image):
    pred = FakeModel().generate_grounded({})[0]
    paths = write_prediction(pred, image, [8, 4, 40, 30], tmp_path / "out", "tile")
    data = json.loads(paths["json"].read_text())
    assert data["caption"] == "A red car next to a truck in a lot." and data["phrases"] == ["red car", "a truck"]
    assert data["box"] == [8.0, 4.0, 40.0, 30.0] and data["mask_scores"] == pytest.approx([0.9, 0.8])
    assert data["text"] == TEXT
    np.testing.assert_array_equal(np.stack([rle_to_mask(r) for r in data["masks"]]), masks())
    overlay = np.asarray(Image.open(paths["png"]).convert("RGB"))
    scale = 256 // H + (256 % H > 0)  # viz enlarges small images by an integer factor
    assert overlay.shape[1] == W * scale and overlay.shape[0] > H * scale  # caption panel below
    inside = overlay[12 * scale, 20 * scale].astype(int)  # a pixel of mask 0, away from its outline
    expected = np.round(0.55 * image[12, 20] + 0.45 * np.array(palette(1)[0]))
    np.testing.assert_allclose(inside, expected, atol=1)


def test_write_prediction_tolerates_odd_model_output(tmp_path, image):
    # phrase text not found verbatim in the caption, more masks than phrases, no masks at all
    odd = GroundedPrediction("<p> x </p> [SEG] [SEG]", "a caption", ["x"], masks(), np.zeros(2))
    empty = GroundedPrediction("nothing", "nothing", [], np.zeros((0, H, W), bool), np.zeros(0))
    for k, pred in enumerate((odd, empty)):
        paths = write_prediction(pred, image, None, tmp_path, f"p{k}")
        assert paths["png"].is_file()
        assert len(json.loads(paths["json"].read_text())["masks"]) == len(pred.masks)
    with pytest.raises(ValueError, match="image is"):
        write_prediction(odd, image[:10], None, tmp_path)


def test_load_for_inference_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_for_inference(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_for_inference(tmp_path)


# --- clvnet-predict ---------------------------------------------------------------------------------------


@pytest.fixture
def fake_loading(monkeypatch, processor):
    model = FakeModel()
    monkeypatch.setattr(predict, "load_for_inference", lambda model_dir, device="cpu": (model, processor))
    return model


def test_cli_predict(tmp_path, image, fake_loading, capsys):
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    code = cli_predict.main(["--model", str(tmp_path), "--image", str(path), "--box", "8,4,40,30",
                             "--out", str(tmp_path / "out")])
    assert code == 0
    assert json.loads((tmp_path / "out" / "scene.json").read_text())["box"] == [8.0, 4.0, 40.0, 30.0]
    assert (tmp_path / "out" / "scene.png").is_file()
    assert "A red car next to a truck in a lot." in capsys.readouterr().out
    assert cli_predict.main(["--model", str(tmp_path), "--image", str(path), "--out", str(tmp_path / "o2"),
                             "--name", "whole"]) == 0
    assert json.loads((tmp_path / "o2" / "whole.json").read_text())["box"] == [0.0, 0.0, W, H]


def test_cli_predict_errors(tmp_path, image, fake_loading, capsys):
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    assert cli_predict.main(["--model", str(tmp_path), "--image", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert cli_predict.main(["--model", str(tmp_path), "--image", str(path), "--box", "0,0,500,10"]) == 2
    assert "outside" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert cli_predict.main(["--model", str(tmp_path), "--image", str(tmp_path / "broken.png")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        cli_predict.main(["--model", str(tmp_path), "--image", str(path), "--box", "1,2,3"])
    assert exit_info.value.code == 2 and "x1,y1,x2,y2" in capsys.readouterr().err
    assert fake_loading.batches == []  # every error was caught before the model ran


def test_cli_predict_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_predict.main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--box" in out and "whole image" in out and "Exit codes" in out
