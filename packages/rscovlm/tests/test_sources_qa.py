"""Converters of RSVQA, scene-classification folders, caption sets and LRS-VQA-Zoom into conversation sources
and ``rscovlm-eval`` sets (spec §2.1, §4.1, §6). Every fixture is a tiny fake file written here."""

import json

import pytest
from PIL import Image
from rs_shared.data.conversations import read_conversations
from rs_shared.data.errors import DataFormatError

from rscovlm import cli_data
from rscovlm.eval_data import load_eval_set
from rscovlm.mixture import SFTDataset
from rscovlm.sources_qa import lrs_zoom_conversations, qa_conversations, read_captions, read_rsvqa, read_scene
from rscovlm.templates import CAPTION_PROMPT, CLASSIFICATION_PROMPT, TOOL_SYSTEM_PROMPT, ZOOMED_IMAGE_NOTE, mcq_prompt


def _image(path, width=64, height=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (30, 60, 90)).save(path)
    return path


def _texts(conversation):
    return [(m.role, "".join(getattr(i, "text", "<img>") for i in m.content)) for m in conversation.messages]


def test_rsvqa_active_questions_and_eval_set(tmp_path):
    _image(tmp_path / "Images_LR" / "0.tif")
    questions = {"questions": [
        {"id": 0, "img_id": 0, "type": "presence", "question": "Is there a road?", "answers_ids": [0], "active": True},
        {"id": 1, "img_id": 0, "type": "comp", "question": "Are there more buildings than roads?",
         "answers_ids": [1], "active": False},
        {"id": 2, "img_id": 0, "type": "rural_urban", "question": "Is it a rural or an urban area",
         "answers_ids": [3, 2], "active": True}]}
    answers = {"answers": [{"id": 0, "question_id": 0, "answer": "yes", "active": True},
                           {"id": 1, "question_id": 1, "answer": "no", "active": True},
                           {"id": 2, "question_id": 2, "answer": "rural", "active": True},
                           {"id": 3, "question_id": 2, "answer": "urban", "active": False}]}
    (tmp_path / "LR_split_test_questions.json").write_text(json.dumps(questions))
    (tmp_path / "LR_split_test_answers.json").write_text(json.dumps(answers))
    items = read_rsvqa(tmp_path, "LR_split_test", tmp_path / "Images_LR")
    assert [(i.id, i.question, i.answers, i.meta["type"]) for i in items] == [
        ("0", "Is there a road?", ("yes",), "presence"),
        ("2", "Is it a rural or an urban area", ("rural",), "rural_urban")]
    conversations = qa_conversations(items, "rsvqa")
    assert _texts(conversations[1]) == [("user", "<img>Is it a rural or an urban area"), ("assistant", "rural")]
    out = tmp_path / "eval" / "rsvqa.jsonl"
    assert cli_data.main(["rsvqa", str(tmp_path), str(out), "--prefix", "LR_split_test", "--images",
                          str(tmp_path / "Images_LR"), "--eval"]) == 0
    samples = load_eval_set("vqa", out)
    assert [(s.question, s.answers) for s in samples] == [("Is there a road?", ("yes",)),
                                                          ("Is it a rural or an urban area", ("rural",))]
    assert json.loads(out.read_text().splitlines()[1])["type"] == "rural_urban"
    questions["questions"][0]["answers_ids"] = [1, 3]  # only inactive or foreign answers
    questions["questions"][0]["active"] = True
    answers["answers"][1]["active"] = False
    (tmp_path / "LR_split_test_questions.json").write_text(json.dumps(questions))
    (tmp_path / "LR_split_test_answers.json").write_text(json.dumps(answers))
    with pytest.raises(DataFormatError, match=r"questions.json: record questions\[0\]: no active answer"):
        read_rsvqa(tmp_path, "LR_split_test", tmp_path / "Images_LR")


def test_scene_folders_to_classification(tmp_path):
    for cls, n in [("baseball_diamond", 2), ("forest", 1)]:
        for k in range(n):
            _image(tmp_path / "NWPU" / cls / f"{cls}_{k:03d}.jpg")
    (tmp_path / "NWPU" / "readme.txt").write_text("not a class")
    items = read_scene(tmp_path / "NWPU")
    assert [(i.id, i.answers[0]) for i in items] == [("baseball_diamond/baseball_diamond_000", "baseball diamond"),
                                                     ("baseball_diamond/baseball_diamond_001", "baseball diamond"),
                                                     ("forest/forest_000", "forest")]
    out = tmp_path / "sft" / "nwpu.json"
    assert cli_data.main(["scene", str(tmp_path / "NWPU"), str(out), "--source", "nwpu"]) == 0
    records = read_conversations(out)
    assert len(records) == 3 and records[0].source == "nwpu"
    assert _texts(records[0]) == [("user", "<img>" + CLASSIFICATION_PROMPT), ("assistant", "baseball diamond")]
    assert cli_data.main(["scene", str(tmp_path / "NWPU"), str(tmp_path / "cls.jsonl"), "--eval"]) == 0
    assert [s.answers for s in load_eval_set("cls", tmp_path / "cls.jsonl")][-1] == ("forest",)
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        read_scene(tmp_path / "sft")


def test_caption_sets(tmp_path):
    for name in ("airport_1.jpg", "beach_2.jpg"):
        _image(tmp_path / "RSICD_images" / name)
    data = {"dataset": "rsicd", "images": [
        {"filename": "airport_1.jpg", "imgid": 0, "split": "train",
         "sentences": [{"raw": "many planes are parked near a terminal .", "tokens": []},
                       {"raw": "an airport with planes .", "tokens": []}]},
        {"filename": "beach_2.jpg", "imgid": 1, "split": "test",
         "sentences": [{"raw": "yellow beach and blue sea ."}, {"raw": "a beach ."}]}]}
    file = tmp_path / "dataset_rsicd.json"
    file.write_text(json.dumps(data))
    train = read_captions(file, tmp_path / "RSICD_images", "train")
    conversations = qa_conversations(train, "rsicd")
    assert [c.id for c in conversations] == ["0-0", "0-1"]  # one conversation per reference caption
    assert _texts(conversations[1]) == [("user", "<img>" + CAPTION_PROMPT), ("assistant", "an airport with planes .")]
    out = tmp_path / "rsicd_test.jsonl"
    assert cli_data.main(["captions", str(file), str(out), "--images", str(tmp_path / "RSICD_images"),
                          "--split", "test", "--eval"]) == 0
    (sample,) = load_eval_set("cap", out)
    assert sample.answers == ("yellow beach and blue sea .", "a beach .") and sample.question == CAPTION_PROMPT
    data["images"][1]["sentences"] = []
    file.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"record images\[1\]: field 'sentences'"):
        read_captions(file, tmp_path / "RSICD_images")


def test_lrs_vqa_zoom_chain_records(tmp_path, tiny):
    big = _image(tmp_path / "imgs" / "big.png", 1000, 800)
    records = [
        {"image": "big.png", "image_ori_width": 1000, "image_ori_height": 800, "question": "What color is the car?",
         "answer": "red", "bbox_info": {"crop_hbox": [[100, 200, 300, 400]], "rbox": []}},
        {"image": "big.png", "image_ori_width": 1000, "image_ori_height": 800,
         "Text": "Which object is in the image? Answer with a single word or phrase.",
         "Answer choices": ["(A) ship", "(B) plane"], "Ground truth": "B",
         "bbox_info": {"crop_hbox": [[0, 0, 10, 10], [20, 20, 40, 40]], "rbox": []}},
    ]
    file = tmp_path / "lrs.json"
    file.write_text(json.dumps(records))
    zoom, mcq = lrs_zoom_conversations(file, tmp_path / "imgs", tmp_path / "crops")  # paper pixels: 1008×812
    assert _texts(zoom) == [
        ("system", TOOL_SYSTEM_PROMPT),
        ("user", "<img>What color is the car?\nFirst zoom in on the region of interest with the image_zoom_in tool, "
                 "then answer the question."),
        ("assistant", '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [100, 203, 302, 406]}}\n'
                      "</tool_call>"),  # P4: the box in the resized 1008×812 frame
        ("user", "<img>" + ZOOMED_IMAGE_NOTE), ("assistant", "red")]
    assert zoom.images[0] == big and zoom.coords is None
    assert zoom.messages[1].content[0].options == {"resized_width": 1008, "resized_height": 812}
    with Image.open(zoom.images[1]) as crop:
        assert crop.size == (200, 200)  # cut from the original image at the un-rescaled box
    # the MCQ suffix is removed exactly ("image" keeps its letters, unlike the official rstrip, pitfall §9.5)
    assert _texts(mcq)[0][1] == "<img>" + mcq_prompt("Which object is in the image?", ["(A) ship", "(B) plane"])
    assert len(mcq.messages) == 2 and _texts(mcq)[1][1] == "B"

    settings = tiny.image_settings  # convert for the tiny run's pixel bounds, then render both turns
    out = tmp_path / "lrs_tiny.jsonl"
    assert cli_data.main(["lrs-vqa-zoom", str(file), str(out), "--images", str(tmp_path / "imgs"),
                          "--min-pixels", str(settings.min_pixels), "--max-pixels", str(settings.max_pixels)]) == 0
    dataset = SFTDataset(read_conversations(out), tiny.renderer(), random_resize_prob=1.0)
    messages = dataset.messages(0)
    frame = settings.frame(1000, 800)
    assert (messages[1]["content"][0]["resized_width"], messages[1]["content"][0]["resized_height"]) == frame.resized
    assert str(frame.to_resized([100, 200, 300, 400])) in messages[2]["content"][0]["text"]
    sample = dataset[0]
    assert sample.image_grid_thw.shape[0] == 2 and (sample.labels != -100).sum() > 0
    assert cli_data.main(["lrs-vqa-zoom", str(file), str(tmp_path / "x.json"), "--images", str(tmp_path)]) == 2
