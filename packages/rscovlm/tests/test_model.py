"""Tiny tokenizer and model presets (spec §8): save/load round trips, a training step, generation."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer, Qwen2TokenizerFast

from rscovlm import templates
from rscovlm.collate import collate
from rscovlm.model_factory import (
    PAPER_IMAGE_SETTINGS,
    TINY_IMAGE_SETTINGS,
    build_tiny,
    load_paper,
    load_pretrained,
    paper_config,
    tiny_config,
)
from rscovlm.tokenizer import SPECIAL_TOKENS, TOOL_TOKENS, TokenIds, build_tiny_tokenizer, load_tokenizer


def test_tiny_tokenizer_tokens(tiny_tokenizer):
    assert isinstance(tiny_tokenizer, Qwen2Tokenizer) and Qwen2TokenizerFast is Qwen2Tokenizer
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.pad_token == "<|endoftext|>"
    ids = TokenIds.of(tiny_tokenizer)
    call = templates.tool_call([100, 200, 300, 400])
    encoded = tiny_tokenizer.encode(call, add_special_tokens=False)
    assert encoded[0] == ids.tool_call_open and encoded[-1] == ids.tool_call_close
    # <tool_call> is not special: it survives skip_special_tokens; the Qwen tokens are special and vanish
    text = "<|im_start|>assistant\n" + call + "<|im_end|>"
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text), skip_special_tokens=True) == "assistant\n" + call
    assert not set(TOOL_TOKENS) & set(tiny_tokenizer.all_special_tokens)
    for token in SPECIAL_TOKENS:
        token_id = tiny_tokenizer.convert_tokens_to_ids(token)
        assert tiny_tokenizer.encode(token, add_special_tokens=False) == [token_id]
        assert tiny_tokenizer.decode([token_id], skip_special_tokens=True) == ""
    assert tiny_tokenizer.get_vocab() == build_tiny_tokenizer().get_vocab()  # deterministic
    with pytest.raises(ValueError, match="lacks the Qwen2.5-VL tokens"):
        TokenIds.of(Qwen2Tokenizer())


def test_tiny_tokenizer_save_load(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is Qwen2Tokenizer and len(loaded) == len(tiny_tokenizer)
        text = templates.TOOL_SYSTEM_PROMPT + "<|im_end|>\n" + templates.tool_call([1, 2, 3, 4]) + " 42 planes"
        assert loaded.encode(text) == tiny_tokenizer.encode(text)
        assert loaded.chat_template == tiny_tokenizer.chat_template
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "absent")


def test_configs(tiny_tokenizer):
    config = tiny_config(tiny_tokenizer)
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    ids = TokenIds.of(tiny_tokenizer)
    assert (config.image_token_id, config.video_token_id) == (ids.image, ids.video)
    assert (config.vision_start_token_id, config.vision_end_token_id) == (ids.vision_start, ids.vision_end)
    assert text.vocab_size == len(tiny_tokenizer) and config.vision_config.spatial_patch_size == 14
    paper = paper_config()
    assert sum(paper.text_config.rope_parameters["mrope_section"]) == 3584 // 28 // 2
    with torch.device("meta"):  # no weights: only the architecture
        model = Qwen2_5_VLForConditionalGeneration(paper)
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656  # Qwen2.5-VL-7B
    assert sum(p.numel() for p in model.model.visual.parameters()) == 676_550_144


def test_build_save_load_round_trip(tiny, tmp_path, rgb):
    assert sum(p.numel() for p in tiny.model.parameters()) < 250_000
    out = build_tiny(tmp_path / "tiny", seed=0)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= files
    loaded = load_pretrained(out, attn_implementation="eager")
    assert loaded.image_settings == TINY_IMAGE_SETTINGS
    assert loaded.model.config.vision_config.spatial_patch_size == 14
    reference = tiny.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.model.state_dict().items())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find the ship"}]}]
    sample = loaded.renderer().render(messages, [rgb(100, 80)], add_generation_prompt=True)
    assert sample.input_ids.tolist() == tiny.renderer().render(messages, [rgb(100, 80)], True).input_ids.tolist()
    batch = collate([sample], loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.equal(loaded.model(**batch).logits, tiny.model(**batch).logits)
    paper = load_paper(out, dtype=torch.float32)  # the paper loader reads any local Qwen2.5-VL directory
    assert paper.image_settings == PAPER_IMAGE_SETTINGS


def test_paper_preset_needs_a_local_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded") as error:
        load_paper(tmp_path / "Qwen2.5-VL-7B-Instruct")
    assert "Qwen2.5-VL-7B-Instruct" in str(error.value)
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_paper(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="expected 'qwen2_5_vl'"):
        load_paper(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_paper(tmp_path)


def _mixed_batch(tiny, rgb):
    renderer = tiny.renderer()
    grounding = renderer.render([
        {"role": "system", "content": templates.HBB_SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": templates.find_prompt("plane")}]},
        {"role": "assistant", "content": templates.grounding_answer([10, 20, 30, 40], "plane")}], [rgb(100, 80, 1)])
    zoom = renderer.render([
        {"role": "system", "content": templates.TOOL_SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": templates.zoom_question("Colour?")}]},
        {"role": "assistant", "content": templates.tool_call([5, 5, 50, 60])},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": templates.ZOOMED_IMAGE_NOTE}]},
        {"role": "assistant", "content": "red"}], [rgb(120, 120, 2), rgb(56, 45, 3)])
    text_only = renderer.render([{"role": "user", "content": templates.CLASSIFICATION_PROMPT},
                                 {"role": "assistant", "content": "harbor"}])
    return [grounding, zoom, text_only]


def test_training_step_has_finite_loss(tiny, rgb):
    model = copy.deepcopy(tiny.model).train()
    samples = _mixed_batch(tiny, rgb)
    batch = collate(samples, tiny.tokenizer.pad_token_id)
    output = model(**batch)
    assert torch.isfinite(output.loss)
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]  # the model shifts labels itself
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(p.grad.abs().sum() > 0 for p in model.model.visual.parameters())  # the ViT is trained too


def test_padding_does_not_change_logits(tiny, rgb):
    samples = _mixed_batch(tiny, rgb)
    pad = tiny.tokenizer.pad_token_id
    with torch.no_grad():
        together = tiny.model(**collate(samples, pad)).logits
        for row, sample in enumerate(samples):
            alone = tiny.model(**collate([sample], pad)).logits[0]
            torch.testing.assert_close(together[row, :len(sample)], alone, atol=1e-5, rtol=1e-4)


def test_generation_smoke(tiny, rgb):
    renderer = tiny.renderer()
    prompts = [renderer.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                               [rgb(100, 80, k)], add_generation_prompt=True)
               for k, q in enumerate(["find the plane", "How many ships are there in the image?"])]
    batch = collate(prompts, tiny.tokenizer.pad_token_id, padding_side="left")
    batch.pop("labels")
    with torch.no_grad():
        generated = tiny.model.generate(**batch, max_new_tokens=6, do_sample=False)
        first = tiny.model(**collate(prompts[1:], tiny.tokenizer.pad_token_id)).logits[0, -1].argmax()
    length = batch["input_ids"].shape[1]
    assert generated.shape[0] == 2 and length < generated.shape[1] <= length + 6
    assert generated[1, length] == first  # greedy step 1 = argmax of the full forward
    texts = tiny.tokenizer.batch_decode(generated[:, length:], skip_special_tokens=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
