"""Official ICIPNet/RMSIN checkpoints → IcipNetModel (icipnet.convert).

The official state dicts are written here from our model with an independent table of the official names and
shapes (Conv1d ``(O, I, 1)`` kernels, DyT ``(1, C, 1, 1)``, ARC ``(1, O, I, 3, 3)``, patch merging at the end of a
stage, persistent ``relative_position_index`` buffers), saved like the official training script and converted back.
"""

import argparse

import pytest
import torch
from rs_shared.data.errors import DataFormatError

from icipnet import IcipNetConfig, IcipNetModel
from icipnet.cli import convert_main
from icipnet.convert import convert_official_state_dict, from_official, load_official_checkpoint
from icipnet.tokenizer import build_synthetic_tokenizer
from transformers import BertTokenizer

CONFIGS = {
    "icipnet": IcipNetConfig.tiny(),
    "rmsin": IcipNetConfig.tiny(use_icip=False, use_bif=False, decoder_norm="batchnorm"),
}


class NotATensor:
    """A class instance a weights-only load must refuse."""


def conv1d(t):
    return t.unsqueeze(-1)  # Linear (O, I) → Conv1d (O, I, 1)


def dyt(t):
    return t.view(1, -1, 1, 1)  # (C,) → (1, C, 1, 1)


def official_state_dict(model: IcipNetModel) -> dict[str, torch.Tensor]:
    """Our model's tensors under the official names (``LAVTOne.state_dict()`` of Ren-by/ICIPNet or RMSIN)."""
    config = model.config
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    out = {}

    def put(official, key, fn=lambda t: t):
        out[official] = fn(ours.pop(key))

    def put_bn(official, key, with_weights=True):
        names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        for name in names if with_weights else names[2:]:
            put(f"{official}.{name}", f"{key}.{name}")

    for key in [k for k in ours if k.startswith("text_encoder.")]:
        put(key, key)
    out["text_encoder.embeddings.position_ids"] = torch.arange(config.text_config.max_position_embeddings)[None]

    put("backbone.patch_embed.proj.weight", "swin.patch_embed.proj.weight")
    put("backbone.patch_embed.proj.bias", "swin.patch_embed.proj.bias")
    put("backbone.patch_embed.norm.weight", "swin.patch_embed.norm.weight")
    put("backbone.patch_embed.norm.bias", "swin.patch_embed.norm.bias")
    block_params = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight",
                    "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    for i, depth in enumerate(config.depths):
        layer, fusion = f"backbone.layers.{i}", f"fusion.{i}"
        for j in range(depth):
            for name in block_params:
                put(f"{layer}.blocks.{j}.{name}", f"swin.layers.{i}.blocks.{j}.{name}")
            index = model.swin.layers[i].blocks[j].attn.relative_position_index
            out[f"{layer}.blocks.{j}.attn.relative_position_index"] = index.clone()
        if i < 3:  # the official PatchMerging ends stage i; timm's starts stage i + 1
            put(f"{layer}.downsample.norm.weight", f"swin.layers.{i + 1}.downsample.norm.weight")
            put(f"{layer}.downsample.norm.bias", f"swin.layers.{i + 1}.downsample.norm.bias")
            put(f"{layer}.downsample.reduction.weight", f"swin.layers.{i + 1}.downsample.reduction.weight")

        put(f"backbone.norm{i}.weight", f"{fusion}.norm.weight")
        put(f"backbone.norm{i}.bias", f"{fusion}.norm.bias")
        for gate, ours_gate in (("res_gate", "fusion_gate"), ("visual_gate", "visual_gate")):
            put(f"{layer}.{gate}.0.weight", f"{fusion}.{ours_gate}.fc1.weight")
            put(f"{layer}.{gate}.2.weight", f"{fusion}.{ours_gate}.fc2.weight")
        rep = f"{layer}.visual_residual.repblock"
        for suffix, unit in (("", "unit1"), ("_2", "unit2")):
            iim = f"{fusion}.iim.{unit}"
            put(f"{rep}.brb_1x1{suffix}.conv.weight", f"{iim}.branch_1x1.0.weight")
            put_bn(f"{rep}.brb_1x1{suffix}.bn", f"{iim}.branch_1x1.1")
            put(f"{rep}.brb_3x3{suffix}.conv1.weight", f"{iim}.branch_3x3.0.weight")
            put_bn(f"{rep}.brb_3x3{suffix}.bn1", f"{iim}.branch_3x3.1")
            put(f"{rep}.brb_3x3{suffix}.conv2.weight", f"{iim}.branch_3x3.2.weight")
            put_bn(f"{rep}.brb_3x3{suffix}.bn2", f"{iim}.branch_3x3.3")
            put_bn(f"{rep}.brb_identity{suffix}", f"{iim}.identity")

        pwam, att = f"{fusion}.pwam", f"{layer}.fusion.image_lang_att"
        for name in ("vis_project", "project_mm"):
            put(f"{layer}.fusion.{name}.0.weight", f"{pwam}.{name}.weight", conv1d)
            put(f"{layer}.fusion.{name}.0.bias", f"{pwam}.{name}.bias")
        inner = f"{pwam}.attention.attention" if config.use_bif else f"{pwam}.attention"
        for official, name in (("f_query", "query"), ("f_key", "key"), ("f_value", "value")):
            put(f"{att}.{official}.0.weight", f"{inner}.{name}.weight", conv1d)
            put(f"{att}.{official}.0.bias", f"{inner}.{name}.bias")
        put(f"{att}.W.0.weight", f"{pwam}.attention.out_proj.weight", conv1d)
        put(f"{att}.W.0.bias", f"{pwam}.attention.out_proj.bias")
        if config.use_icip:
            put(f"{att}.trainable_tokens", f"{pwam}.prompt.prompts")
            for official, index in (("linear1", 0), ("linear2", 2)):  # CoCoOp's meta-net [RECON]
                put(f"{att}.meta_net.{official}.weight", f"{pwam}.prompt.meta_net.{index}.weight")
                put(f"{att}.meta_net.{official}.bias", f"{pwam}.prompt.meta_net.{index}.bias")
        if config.use_bif:
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                put(f"{att}.{name}", f"{inner}.{name}")
            put(f"{att}.rms_scale", f"{inner}.norm.weight")
            mixer = f"{pwam}.attention.reconstruction"
            for official, name in (("token_mlp", "token_mixer"), ("channel_mlp", "channel_mixer")):
                for fc, index in (("fc1", 0), ("fc2", 2)):
                    put(f"{att}.mlp_mixer.{official}.{fc}.weight", f"{mixer}.{name}.{index}.weight")
                    put(f"{att}.mlp_mixer.{official}.{fc}.bias", f"{mixer}.{name}.{index}.bias")

    cim = "backbone.cim"
    for name in ("down_channel", "up_channel"):
        put(f"{cim}.{name}.weight", f"cim.{name}.weight")
        put(f"{cim}.{name}.bias", f"cim.{name}.bias")
    put_bn(f"{cim}.bn", "cim.norm")
    for k in range(4):
        for conv in ("local_embedding", "global_embedding", "global_act"):
            put(f"{cim}.fusion.{k}.{conv}.weight", f"cim.gates.{k}.{conv}.weight")
            put(f"{cim}.fusion.{k}.{conv}.bias", f"cim.gates.{k}.{conv}.bias")
        for bn in ("bn1", "bn2", "bn3"):
            put_bn(f"{cim}.fusion.{k}.{bn}", f"cim.gates.{k}.{bn}")

    def feed_forward(official, key):
        put_bn(f"{official}.bn1", f"{key}.bn1")
        put_bn(f"{official}.bn2", f"{key}.bn2")
        for conv in ("conv1", "conv2", "conv3"):
            put(f"{official}.{conv}.weight", f"{key}.{conv}.weight")
            put(f"{official}.{conv}.bias", f"{key}.{conv}.bias")

    for csa in ("csa1", "csa2"):
        m, c = f"{cim}.block.0.{csa}.m", f"cim.block.{csa}"
        put_bn(f"{m}.bn1", f"{c}.norm_in")
        put(f"{m}.DWConv1.0.weight", f"{c}.dwconv_s2.0.weight")
        put(f"{m}.DWConv1.0.bias", f"{c}.dwconv_s2.0.bias")
        put_bn(f"{m}.DWConv1.1", f"{c}.dwconv_s2.1")
        put(f"{m}.DWConv2.0.weight", f"{c}.dwconv_s3.0.weight")
        put(f"{m}.DWConv2.0.bias", f"{c}.dwconv_s3.0.bias")
        put_bn(f"{m}.DWConv2.1", f"{c}.dwconv_s3.1")
        put(f"{m}.attention.qkv.c.weight", f"{c}.attention.qkv.weight")
        put_bn(f"{m}.attention.qkv.bn", f"{c}.attention.qkv_norm")
        put(f"{m}.attention.parallel_conv.1.weight", f"{c}.attention.value_conv.weight")
        put(f"{m}.attention.parallel_conv.1.bias", f"{c}.attention.value_conv.bias")
        put(f"{m}.attention.proj.weight", f"{c}.attention.token_proj.weight")
        put(f"{m}.attention.proj.bias", f"{c}.attention.token_proj.bias")
        put(f"{m}.attention.to_out.weight", f"{c}.attention.out_proj.weight")
        put(f"{m}.attention.to_out.bias", f"{c}.attention.out_proj.bias")
        put_bn(f"{m}.bn4", f"{c}.norm_out")
        put(f"{m}.conv.weight", f"{c}.conv_out.weight")
        put(f"{m}.conv.bias", f"{c}.conv_out.bias")
    for k in range(4):
        feed_forward(f"{cim}.block.0.intra_ff.m.ff{k + 1}.m", f"cim.block.intra_ff.branches.{k}")
    feed_forward(f"{cim}.block.0.ff.m", "cim.block.ff")

    for k, index in ((4, 0), (3, 1), (2, 2)):  # conv1_4 fuses c4 ‖ c3, conv1_3 · ‖ c2, conv1_2 · ‖ c1
        fuse = f"decoder.fuse.{index}"
        put(f"classifier.conv1_{k}.weight", f"{fuse}.conv.weight")
        put(f"classifier.conv2_{k}.weight", f"{fuse}.arc.weight", lambda t: t.unsqueeze(0))
        routing = f"classifier.conv2_{k}.rounting_func"
        put(f"{routing}.dwc.weight", f"{fuse}.arc.routing.dwconv.weight")
        put(f"{routing}.norm.norm.weight", f"{fuse}.arc.routing.norm.weight")
        put(f"{routing}.norm.norm.bias", f"{fuse}.arc.routing.norm.bias")
        put(f"{routing}.fc_alpha.weight", f"{fuse}.arc.routing.fc_alpha.weight")
        put(f"{routing}.fc_alpha.bias", f"{fuse}.arc.routing.fc_alpha.bias")
        put(f"{routing}.fc_theta.weight", f"{fuse}.arc.routing.fc_theta.weight")
        for n in (1, 2):
            if config.decoder_norm == "dyt":
                put(f"classifier.bn{n}_{k}.alpha", f"{fuse}.norm{n}.alpha")
                put(f"classifier.bn{n}_{k}.beta", f"{fuse}.norm{n}.weight", dyt)
                put(f"classifier.bn{n}_{k}.gamma", f"{fuse}.norm{n}.bias", dyt)
            else:
                put_bn(f"classifier.bn{n}_{k}", f"{fuse}.norm{n}")
    put("classifier.conv1_1.weight", "decoder.classifier.weight")
    put("classifier.conv1_1.bias", "decoder.classifier.bias")

    assert not ours, f"the test's official table misses {sorted(ours)}"
    return out


def perturbed_model(config, seed=0) -> IcipNetModel:
    """A model whose every tensor differs from its initialisation (so swapped same-shape tensors are caught)."""
    torch.manual_seed(seed)
    model = IcipNetModel(config).eval()
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.mul_(torch.rand_like(t) + 0.5)
            elif key.endswith("num_batches_tracked"):
                t.fill_(seed + 7)
            elif t.is_floating_point():
                t.add_(0.05 * torch.randn_like(t))
    return model


def inputs(config, batch=2):
    g = torch.Generator().manual_seed(1)
    size, n = config.image_size, config.max_text_len
    ids = torch.randint(1, config.text_config.vocab_size, (batch, n), generator=g)
    mask = (torch.arange(n) < torch.tensor([[n], [5]])).long()
    return torch.randn(batch, 3, size, size, generator=g), ids * mask, mask


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request, tmp_path_factory):
    config = CONFIGS[request.param]
    model = perturbed_model(config)
    official = official_state_dict(model)
    path = tmp_path_factory.mktemp(request.param) / "model_best.pth"
    torch.save({"model": official, "optimizer": {"state": {}, "param_groups": []}, "epoch": 39,
                "args": argparse.Namespace(model="lavt_one", swin_type="base", lr=3e-5)}, path)
    return config, model, official, path


def test_official_shapes_in_the_table(case):
    config, _, official, _ = case
    assert official["backbone.layers.0.fusion.vis_project.0.weight"].dim() == 3
    assert official["classifier.conv2_4.weight"].shape[0] == 1 and official["classifier.conv2_4.weight"].dim() == 5
    assert "backbone.layers.0.downsample.reduction.weight" in official
    assert "backbone.layers.3.downsample.reduction.weight" not in official
    if config.decoder_norm == "dyt":
        assert official["classifier.bn1_4.beta"].shape == (1, config.decoder_dim, 1, 1)


def test_round_trip_tensors_and_forward(case):
    config, model, official, path = case
    loaded = load_official_checkpoint(path)
    assert loaded.keys() == official.keys()
    converted = convert_official_state_dict(loaded, config)
    expected = model.state_dict()
    assert converted.keys() == expected.keys()
    for key, tensor in expected.items():
        assert torch.equal(converted[key], tensor), key

    restored = from_official(path, config)
    assert not restored.training
    for key, tensor in restored.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    with torch.no_grad():
        assert torch.equal(restored(*inputs(config)).logits, model(*inputs(config)).logits)


def test_module_prefix_and_separate_bert(case, tmp_path):
    config, model, official, _ = case
    backbone = {f"module.{k}": v for k, v in official.items() if not k.startswith("text_encoder.")}
    bert = {f"module.{k[len('text_encoder.'):]}": v for k, v in official.items() if k.startswith("text_encoder.")}
    path = tmp_path / "lavt.pth"
    torch.save({"model": backbone, "bert_model": bert}, path)
    assert load_official_checkpoint(path).keys() == official.keys()
    torch.save({"state_dict": official}, path)
    assert convert_official_state_dict(load_official_checkpoint(path), config).keys() == model.state_dict().keys()


def test_meta_net_as_plain_sequential():
    config = CONFIGS["icipnet"]
    official = official_state_dict(perturbed_model(config))
    renamed = {k.replace("meta_net.linear1.", "meta_net.0.").replace("meta_net.linear2.", "meta_net.2."): v
               for k, v in official.items()}
    converted = convert_official_state_dict(renamed, config)
    assert torch.equal(converted["fusion.2.pwam.prompt.meta_net.2.weight"],
                       official["backbone.layers.2.fusion.image_lang_att.meta_net.linear2.weight"])
    both = {**official, "backbone.layers.0.fusion.image_lang_att.meta_net.0.bias": renamed[
        "backbone.layers.0.fusion.image_lang_att.meta_net.0.bias"]}
    with pytest.raises(DataFormatError, match=r"conflicting official keys.*meta_net\.0\.bias"):
        convert_official_state_dict(both, config)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"", b"PK\x03\x04 broken zip"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="not a PyTorch checkpoint") as err:
        load_official_checkpoint(path)
    assert str(path) in str(err.value)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "x.pth"
    torch.save([torch.ones(2)], path)
    with pytest.raises(DataFormatError, match="expected a dict.*list"):
        load_official_checkpoint(path)
    torch.save({"model": {"a": torch.ones(1), "b": 3}}, path)
    with pytest.raises(DataFormatError, match=r"non-tensor entries \(1\): \[b\]"):
        load_official_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_official_checkpoint(tmp_path / "missing.pth")


def test_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"a": torch.ones(1)}, "extra": NotATensor()}, path)
    with pytest.raises(DataFormatError, match=r"refused.*NotATensor.*weights_only=True") as err:
        load_official_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_key_and_shape_errors(name):
    config = CONFIGS[name]
    official = official_state_dict(perturbed_model(config))

    extra = {**official, "backbone.layers.1.fusion.image_lang_att.bogus": torch.zeros(3)}
    bogus = r"unmapped official keys \(1\): \[backbone\.layers\.1\.fusion\.image_lang_att\.bogus\]"
    with pytest.raises(DataFormatError, match=bogus):
        convert_official_state_dict(extra, config)

    missing = {k: v for k, v in official.items() if k != "classifier.conv1_1.bias"}
    with pytest.raises(DataFormatError, match=r"missing keys \(1\): \[decoder\.classifier\.bias\]"):
        convert_official_state_dict(missing, config)

    wrong = {**official, "classifier.conv1_4.weight": torch.zeros(3, 3, 3, 3)}
    with pytest.raises(DataFormatError, match=r"wrong shapes.*classifier\.conv1_4\.weight → decoder\.fuse\.0\.conv"):
        convert_official_state_dict(wrong, config, source="ckpt.pth")


def test_hints_for_the_other_preset():
    rmsin = official_state_dict(perturbed_model(CONFIGS["rmsin"]))
    with pytest.raises(DataFormatError, match=r"use use_bif=False.*use use_icip=False.*decoder_norm='batchnorm'"):
        convert_official_state_dict(rmsin, CONFIGS["icipnet"])
    icipnet = official_state_dict(perturbed_model(CONFIGS["icipnet"]))
    with pytest.raises(DataFormatError, match=r"use use_bif=True.*unmapped official keys.*lambda_"):
        convert_official_state_dict(icipnet, CONFIGS["rmsin"])


def test_convert_cli_writes_a_directory_that_predicts_like_the_checkpoint(case, tmp_path, capsys):
    config, _, _, path = case
    config.to_json_file(tmp_path / "config.json")
    tokenizer_dir = tmp_path / "tokenizer"
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "car"]))
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tokenizer_dir)
    out = tmp_path / "converted"
    assert convert_main(["--checkpoint", str(path), "--model-config", str(tmp_path / "config.json"),
                         "--tokenizer", str(tokenizer_dir), "--out", str(out)]) == 0
    converted, direct = IcipNetModel.from_pretrained(out).eval(), from_official(path, config)
    expected = direct.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in converted.state_dict().items())
    pixel_values, input_ids, attention_mask = inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values, input_ids, attention_mask).logits,
                                   direct(pixel_values, input_ids, attention_mask).logits, rtol=1e-5, atol=1e-6)
    assert (out / "tokenizer.json").exists()
    assert convert_main(["--checkpoint", str(tmp_path / "missing.pth"), "--tokenizer", str(tokenizer_dir),
                         "--out", str(out)]) == 1
    assert "missing.pth" in capsys.readouterr().err
    build_synthetic_tokenizer(tokenizer_dir)  # 351 ids for a 300-id BERT
    assert convert_main(["--checkpoint", str(path), "--model-config", str(tmp_path / "config.json"),
                         "--tokenizer", str(tokenizer_dir), "--out", str(out)]) == 1
    assert "351 ids" in capsys.readouterr().err
