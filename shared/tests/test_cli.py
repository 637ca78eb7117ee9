"""`rs-data`: synth → check → show → convert, and broken copies that `check` must report, not crash on."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from rs_shared.data.cli import build_parser, main
from rs_shared.data.synthetic.export import synthesize


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """One small synthetic dataset per format, generated once for this module (copied before breaking)."""
    root = tmp_path_factory.mktemp("synthetic")
    specs = {"scene": ("scene", {}), "rrsisd": ("refseg", {}), "refsegrs": ("refseg", {"layout": "refsegrs"}),
             "gcg": ("gcg", {"regions": 1}), "dota": ("dota", {"size": 384}), "sft": ("sft", {"size": 96})}
    for name, (task, kwargs) in specs.items():
        synthesize(task, root / name, n=11, seed=1, **kwargs)
    return root


def broken_copy(datasets, name, tmp_path):
    return shutil.copytree(datasets / name, tmp_path / name)


def run_check(path, capsys):
    code = main(["check", str(path)])
    return code, capsys.readouterr().out


def test_help_of_every_command():
    out = subprocess.run([sys.executable, "-m", "rs_shared.data.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("synth", "check", "show", "convert", "quickstart"):
        assert command in out
    parser = build_parser()
    for argv in (["synth"], ["check"], ["show"], ["convert"], ["convert", "dota-tiles"], ["quickstart"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*argv, "--help"])
        assert exit_info.value.code == 0


@pytest.mark.parametrize("name,fmt", [("scene", "coop"), ("rrsisd", "rrsisd"), ("refsegrs", "refsegrs"),
                                      ("gcg", "geopixeld"), ("dota", "dota"), ("sft", "llava")])
def test_check_and_show_every_format(datasets, name, fmt, tmp_path, capsys):
    code, out = run_check(datasets / name, capsys)
    assert code == 0 and f": {fmt} (" in out and "0 problem(s)" in out and "manifest: generator seed 1" in out
    assert main(["check", str(datasets / name), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == fmt and report["problems"] == []
    assert main(["show", str(datasets / name), "--index", "1", "--out", str(tmp_path / "x.png")]) == 0
    with Image.open(tmp_path / "x.png") as im:
        assert im.width >= 256


def test_show_reports_bad_index_and_split(datasets, tmp_path, capsys):
    assert main(["show", str(datasets / "gcg"), "--index", "99", "--out", str(tmp_path / "x.png")]) == 1
    assert "out of range" in capsys.readouterr().err
    assert main(["show", str(datasets / "gcg"), "--split", "val", "--out", str(tmp_path / "x.png")]) == 1
    assert "no split 'val'" in capsys.readouterr().err


def test_check_unknown_directory(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["check", str(tmp_path)]) == 1
    assert "no known dataset format" in capsys.readouterr().err


def test_missing_image_is_reported(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "scene", tmp_path)
    victim = next((root / "images").rglob("*.png"))
    victim.unlink()
    code, out = run_check(root, capsys)
    assert code == 1 and "image file is missing" in out and victim.name in out and "record train[" in out
    assert "listed in manifest.json but missing" in out


def test_truncated_json_is_reported(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "gcg", tmp_path)
    tile = root / "train" / "S00000.json"
    tile.write_text(tile.read_text()[:40])
    code, out = run_check(root, capsys)
    assert code == 1 and "S00000.json" in out and "invalid JSON" in out


def test_polygon_with_three_coordinates_is_reported(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "gcg", tmp_path)
    tile = root / "train" / "S00001.json"
    data = json.loads(tile.read_text())
    data["polygons"][0][0][0] = [*data["polygons"][0][0][0], 7]
    tile.write_text(json.dumps(data))
    code, out = run_check(root, capsys)
    assert code == 1 and "S00001.json" in out and "must be [x, y] (2 numbers)" in out


def test_unknown_class_is_reported(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "dota", tmp_path)
    label = sorted((root / "labelTxt").glob("*.txt"))[0]
    lines = label.read_text().splitlines()
    obj = next(i for i, line in enumerate(lines) if ":" not in line)
    fields = lines[obj].split()
    lines[obj] = " ".join([*fields[:8], "spaceship", fields[9]])
    label.write_text("\n".join(lines) + "\n")
    code, out = run_check(root, capsys)
    assert code == 1 and f"{label.name}: record line {obj + 1}: unknown class 'spaceship'" in out


def test_malicious_pickle_is_rejected_and_never_run(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "rrsisd", tmp_path)
    witness = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps([Exploit()]))
    code, out = run_check(root, capsys)
    assert code == 1 and "refs(unc).p" in out and "pickle asks for global" in out and "system" in out
    assert not witness.exists()


def test_sft_missing_image_and_unknown_role(datasets, tmp_path, capsys):
    root = broken_copy(datasets, "sft", tmp_path)
    records = json.loads((root / "sft.json").read_text())
    records[2]["conversations"][1]["from"] = "robot"
    (root / "sft.json").write_text(json.dumps(records))
    (root / "images" / "S00004.png").unlink()
    code, out = run_check(root, capsys)
    assert code == 1 and "sft.json: record 2 (id S00002)" in out and "robot" in out
    assert "record 4 (id S00004)" in out and "S00004.png" in out


def test_conversions(datasets, tmp_path, capsys):
    assert main(["convert", "dota-tiles", str(datasets / "dota"), str(tmp_path / "tiles"), "--size", "256",
                 "--gap", "64"]) == 0
    assert run_check(tmp_path / "tiles", capsys)[0] == 0
    assert main(["convert", "dota-to-sft", str(datasets / "dota"), str(tmp_path / "det" / "sft.json")]) == 0
    code, out = run_check(tmp_path / "det", capsys)
    assert code == 0 and "records: 11" in out
    assert main(["convert", "geopixeld-to-rrsisd", str(datasets / "gcg"), str(tmp_path / "ref")]) == 0
    code, out = run_check(tmp_path / "ref", capsys)
    assert code == 0 and ": rrsisd (" in out
    images = shutil.copytree(datasets / "scene" / "images", tmp_path / "scene" / "images")
    assert main(["convert", "folders-to-split", str(images), str(tmp_path / "scene" / "split.json")]) == 0
    code, out = run_check(tmp_path / "scene", capsys)
    assert code == 0 and "classes: 11" in out


def test_convert_to_arrow_round_trips(datasets, tmp_path):
    import datasets as hf

    assert main(["convert", "to-arrow", str(datasets / "rrsisd"), str(tmp_path / "arrow")]) == 0
    loaded = hf.load_from_disk(str(tmp_path / "arrow"))
    assert sum(len(loaded[s]) for s in loaded) == 11 and set(loaded) == {"train", "val", "test"}
    row = loaded["train"][0]
    assert row["expression"] and row["mask"].size == (64, 64)


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    assert main(["synth", "--task", "scene", "--out", str(tmp_path / "a"), "-n", "0"]) == 2
    assert "n must be at least 1" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    assert main(["synth", "--task", "scene", "--out", str(tmp_path / "b")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", "--task", "scene", "--out", str(tmp_path / "d"), "--regions", "2"]) == 2
    assert "regions must be >= 0 and is only available for gcg" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--task", "scene", "--out", str(tmp_path / "c"), "--size", "8"])
    assert exit_info.value.code == 2
