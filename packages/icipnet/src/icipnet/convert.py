"""Load checkpoints of the official ICIPNet code (Ren-by/ICIPNet) and of RMSIN (Lsan2401/RMSIN) into IcipNetModel.

Both repositories save ``{"model": LAVTOne.state_dict(), "optimizer": …, "epoch": …, "args": argparse.Namespace,
"lr_scheduler": …}`` (the ``lavt`` variant adds ``"bert_model"``, a DDP-wrapped BertModel). The model has three parts:
``backbone`` (Swin + per-stage fusion + IIM + CIM), ``classifier`` (the decoder) and ``text_encoder`` (BERT).
:func:`load_official_checkpoint` reads such a file safely, :func:`convert_official_state_dict` renames and reshapes
its tensors to this package's names, :func:`from_official` builds the model and loads the result strictly.

Name mapping (``i`` = stage 0–3; "conv1d" = a ``Conv1d`` weight ``(O, I, 1)`` that becomes a ``Linear`` ``(O, I)``):

================================================================  ===================================================
official                                                          IcipNetModel
================================================================  ===================================================
``text_encoder.*`` (or ``bert_model.module.*``)                   ``text_encoder.*`` (``pooler.*`` and the
                                                                  ``embeddings.position_ids`` buffer dropped)
``backbone.patch_embed.{proj,norm}.*``                            ``swin.patch_embed.{proj,norm}.*``
``backbone.layers.i.blocks.j.*``                                  ``swin.layers.i.blocks.j.*`` (same timm 1.0 names;
                                                                  ``attn.relative_position_index`` dropped, rebuilt)
``backbone.layers.i.downsample.{norm,reduction}.*`` (i = 0–2)     ``swin.layers.{i+1}.downsample.*`` (timm merges at
                                                                  the start of the next stage)
``backbone.layers.i.fusion.vis_project.0`` / ``project_mm.0``     ``fusion.i.pwam.vis_project`` / ``project_mm``
                                                                  (conv1d)
``backbone.layers.i.res_gate.{0,2}`` / ``visual_gate.{0,2}``      ``fusion.i.fusion_gate.{fc1,fc2}`` /
                                                                  ``fusion.i.visual_gate.{fc1,fc2}``
``backbone.layers.i.visual_residual.repblock.``                   ``fusion.i.iim.``
  ``brb_1x1{,_2}.{conv,bn}``                                        ``unit{1,2}.branch_1x1.{0,1}``
  ``brb_3x3{,_2}.{conv1,bn1,conv2,bn2}``                            ``unit{1,2}.branch_3x3.{0,1,2,3}``
  ``brb_identity{,_2}``                                             ``unit{1,2}.identity``
``backbone.norm{i}``                                              ``fusion.i.norm``
``backbone.layers.i.fusion.image_lang_att.`` (RMSIN, no BIF)      ``fusion.i.pwam.attention.``
  ``f_query.0`` / ``f_key.0`` / ``f_value.0`` / ``W.0``             ``query`` / ``key`` / ``value`` / ``out_proj``
                                                                    (conv1d)
``backbone.layers.i.fusion.image_lang_att.`` (ICIPNet BIF)        ``fusion.i.pwam.attention.``
  ``f_query.0`` / ``f_key.0`` / ``f_value.0``                       ``attention.{query,key,value}`` (conv1d)
  ``W.0``                                                           ``out_proj`` (conv1d)
  ``lambda_{q1,k1,q2,k2}``                                          ``attention.lambda_{q1,k1,q2,k2}``
  ``rms_scale`` [RECON]                                             ``attention.norm.weight``
  ``mlp_mixer.token_mlp.{fc1,fc2}`` [RECON]                         ``reconstruction.token_mixer.{0,2}``
  ``mlp_mixer.channel_mlp.{fc1,fc2}`` [RECON]                       ``reconstruction.channel_mixer.{0,2}``
``backbone.layers.i.fusion.image_lang_att.`` (ICIPNet ICIP)       ``fusion.i.pwam.prompt.``
  ``trainable_tokens``                                              ``prompts``
  ``meta_net.linear{1,2}`` or ``meta_net.{0,2}`` [RECON]            ``meta_net.{0,2}``
``backbone.cim.{down_channel,up_channel}``                        ``cim.{down_channel,up_channel}``
``backbone.cim.bn``                                               ``cim.norm``
``backbone.cim.fusion.k.*``                                       ``cim.gates.k.*`` (same inner names)
``backbone.cim.block.0.csa{1,2}.m.``                              ``cim.block.csa{1,2}.``
  ``bn1`` / ``bn4`` / ``conv``                                      ``norm_in`` / ``norm_out`` / ``conv_out``
  ``DWConv1.{0,1}`` / ``DWConv2.{0,1}``                             ``dwconv_s2.{0,1}`` / ``dwconv_s3.{0,1}``
  ``attention.qkv.c`` / ``attention.qkv.bn``                        ``attention.qkv`` / ``attention.qkv_norm``
  ``attention.parallel_conv.1``                                     ``attention.value_conv``
  ``attention.proj`` / ``attention.to_out``                         ``attention.token_proj`` / ``attention.out_proj``
``backbone.cim.block.0.intra_ff.m.ff{1..4}.m.*``                  ``cim.block.intra_ff.branches.{0..3}.*``
``backbone.cim.block.0.ff.m.*``                                   ``cim.block.ff.*``
``classifier.conv1_k`` (k = 4, 3, 2: fuse c4‖c3, ·‖c2, ·‖c1)       ``decoder.fuse.{4-k}.conv``
``classifier.bn1_k`` / ``classifier.bn2_k``                       ``decoder.fuse.{4-k}.norm1`` / ``norm2``:
                                                                  DyT ``alpha`` → ``alpha``, ``beta`` ``(1, C, 1, 1)``
                                                                  → ``weight`` ``(C,)``, ``gamma`` → ``bias``;
                                                                  BatchNorm (RMSIN) keeps its names
``classifier.conv2_k.weight`` ``(1, O, I, 3, 3)``                 ``decoder.fuse.{4-k}.arc.weight`` ``(O, I, 3, 3)``
``classifier.conv2_k.rounting_func.`` (sic)                       ``decoder.fuse.{4-k}.arc.routing.``
  ``dwc`` / ``norm.norm`` / ``fc_alpha`` / ``fc_theta``             ``dwconv`` / ``norm`` / ``fc_alpha`` / ``fc_theta``
``classifier.conv1_1``                                            ``decoder.classifier``
================================================================  ===================================================

[RECON] names. The released ICIPNet code cannot build its model (spec §8.1): ``rms_scale``, ``trainable_tokens`` and
``meta_net`` are used but never defined, and the mixer comes from the missing ``lib/mixer.py``. The names above
follow the attributes the code uses: ``trainable_tokens`` ``(M, 768)``; ``rms_scale`` ``(2C/h,)``; ``meta_net`` as
CoCoOp's ``Sequential(OrderedDict(linear1, relu, linear2))`` (whose name the code borrows), also accepted as a plain
``Sequential`` (``meta_net.0``/``meta_net.2``); ``mlp_mixer`` (assigned in ``forward``, so registered and saved) as an
``MLPBlock`` with timm-style ``token_mlp``/``channel_mlp`` MLPs of ``fc1``/``fc2`` and no LayerNorm (spec §3.2).
Only the RMSIN layout and the parts ICIPNet shares with it (everything except ICIP/BIF) are certain.

Every tensor of the file must be used and every parameter/buffer of the model filled: unmapped official keys,
missing or unexpected keys and wrong shapes raise a :class:`~rs_shared.data.errors.DataFormatError` that lists them
(with hints when the file looks like another preset, e.g. an RMSIN checkpoint loaded with ``use_bif=True``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from rs_shared.data.errors import DataFormatError

from .configuration import IcipNetConfig
from .modeling import IcipNetModel

Transform = Callable[[torch.Tensor], torch.Tensor]
_BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_WB = r"(?:weight|bias)"
_SWIN_BLOCK = (r"(?:norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(?:weight|bias)"
               r"|attn\.relative_position_bias_table")
_LIST_LIMIT = 20  # keys shown per problem in error messages


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _conv1d_to_linear(t: torch.Tensor) -> torch.Tensor:
    """``Conv1d`` kernel ``(O, I, 1)`` → ``Linear`` weight ``(O, I)`` (other shapes go on to the shape check)."""
    return t[..., 0] if t.dim() == 3 and t.shape[-1] == 1 else t


def _dyt_channel(t: torch.Tensor) -> torch.Tensor:
    """Official DyT ``beta``/``gamma`` ``(1, C, 1, 1)`` → per-channel ``(C,)``."""
    return t.reshape(-1) if t.dim() == 4 and t.shape[0] == 1 and t.shape[2:] == (1, 1) else t


def _arc_kernel(t: torch.Tensor) -> torch.Tensor:
    """ARC weight ``(kernel_number=1, O, I, 3, 3)`` → ``(O, I, 3, 3)``."""
    return t[0] if t.dim() == 5 and t.shape[0] == 1 else t


class _Rules:
    """Ordered ``(official pattern, our template, transform)`` rules; the first full match wins.

    A template is expanded with the match's groups (``\\g<name>``); ``None`` drops the key.
    """

    def __init__(self):
        self.rules: list[tuple[re.Pattern, str | None, Transform]] = []

    def add(self, pattern: str, template: str | None, transform: Transform = _same) -> None:
        self.rules.append((re.compile(pattern), template, transform))

    def apply(self, key: str) -> tuple[str | None, Transform] | None:
        """``(our key or None to drop, transform)``, or ``None`` when no rule matches."""
        for pattern, template, transform in self.rules:
            match = pattern.fullmatch(key)
            if match:
                return (None if template is None else match.expand(template)), transform
        return None


def _stage_rules(rules: _Rules, config: IcipNetConfig) -> None:
    """Swin body, the per-stage fusion (PWAM, ICIP, BIF or RMSIN's attention), IIM, gates and output norms."""
    layer = r"backbone\.layers\.(?P<i>\d+)\."
    stage = r"fusion.\g<i>."
    rules.add(r"backbone\.patch_embed\.(?P<p>(?:proj|norm)\.(?:weight|bias))", r"swin.patch_embed.\g<p>")
    rules.add(layer + r"blocks\.\d+\.attn\.relative_position_index", None)
    rules.add(layer + rf"blocks\.(?P<j>\d+)\.(?P<p>{_SWIN_BLOCK})", r"swin.layers.\g<i>.blocks.\g<j>.\g<p>")
    for i in range(len(config.depths) - 1):
        rules.add(rf"backbone\.layers\.{i}\.downsample\.(?P<p>norm\.{_WB}|reduction\.weight)",
                  rf"swin.layers.{i + 1}.downsample.\g<p>")
    rules.add(rf"backbone\.norm(?P<i>\d+)\.(?P<p>{_WB})", stage + r"norm.\g<p>")
    for official, ours in (("res_gate", "fusion_gate"), ("visual_gate", "visual_gate")):
        for index, fc in (("0", "fc1"), ("2", "fc2")):
            rules.add(layer + rf"{official}\.{index}\.weight", stage + f"{ours}.{fc}.weight")

    iim = layer + r"visual_residual\.repblock\."
    for suffix, unit in (("", "unit1"), ("_2", "unit2")):
        for official, ours in ((f"brb_1x1{suffix}.conv", "branch_1x1.0"), (f"brb_1x1{suffix}.bn", "branch_1x1.1"),
                               (f"brb_3x3{suffix}.conv1", "branch_3x3.0"), (f"brb_3x3{suffix}.bn1", "branch_3x3.1"),
                               (f"brb_3x3{suffix}.conv2", "branch_3x3.2"), (f"brb_3x3{suffix}.bn2", "branch_3x3.3"),
                               (f"brb_identity{suffix}", "identity")):
            rules.add(iim + re.escape(official) + rf"\.(?P<p>{_BN})", stage + f"iim.{unit}.{ours}." + r"\g<p>")

    pwam = layer + r"fusion\."
    for name in ("vis_project", "project_mm"):
        rules.add(pwam + rf"{name}\.0\.(?P<p>{_WB})", stage + f"pwam.{name}." + r"\g<p>", _conv1d_to_linear)

    att = pwam + r"image_lang_att\."
    if config.use_icip:
        rules.add(att + r"trainable_tokens", stage + "pwam.prompt.prompts")
        if config.icip_condition:
            for official, ours in (("linear1", "0"), ("0", "0"), ("linear2", "2"), ("2", "2")):
                rules.add(att + rf"meta_net\.{official}\.(?P<p>{_WB})",
                          stage + f"pwam.prompt.meta_net.{ours}." + r"\g<p>")
    inner = "pwam.attention.attention." if config.use_bif else "pwam.attention."
    for official, ours in (("f_query", "query"), ("f_key", "key"), ("f_value", "value")):
        rules.add(att + rf"{official}\.0\.(?P<p>{_WB})", stage + inner + ours + r".\g<p>", _conv1d_to_linear)
    rules.add(att + rf"W\.0\.(?P<p>{_WB})", stage + r"pwam.attention.out_proj.\g<p>", _conv1d_to_linear)
    if config.use_bif:
        rules.add(att + r"(?P<p>lambda_[qk][12])", stage + inner + r"\g<p>")
        rules.add(att + r"rms_scale", stage + inner + "norm.weight")
        for official, ours in (("token_mlp", "token_mixer"), ("channel_mlp", "channel_mixer")):
            for fc, index in (("fc1", "0"), ("fc2", "2")):
                rules.add(att + rf"mlp_mixer\.{official}\.{fc}\.(?P<p>{_WB})",
                          stage + f"pwam.attention.reconstruction.{ours}.{index}." + r"\g<p>")


def _cim_rules(rules: _Rules) -> None:
    """RMSIN's cross-scale interaction module (one CIM block)."""
    cim = r"backbone\.cim\."
    rules.add(cim + rf"(?P<m>down_channel|up_channel)\.(?P<p>{_WB})", r"cim.\g<m>.\g<p>")
    rules.add(cim + rf"bn\.(?P<p>{_BN})", r"cim.norm.\g<p>")
    gate = rf"(?P<p>(?:local_embedding|global_embedding|global_act)\.{_WB}|bn[123]\.{_BN})"
    rules.add(cim + rf"fusion\.(?P<k>\d+)\.{gate}", r"cim.gates.\g<k>.\g<p>")
    csa = cim + r"block\.0\.(?P<csa>csa[12])\.m\."
    for official, ours in (("bn1", "norm_in"), ("bn4", "norm_out"), ("attention.qkv.bn", "attention.qkv_norm"),
                           ("DWConv1.1", "dwconv_s2.1"), ("DWConv2.1", "dwconv_s3.1")):
        rules.add(csa + re.escape(official) + rf"\.(?P<p>{_BN})", r"cim.block.\g<csa>." + ours + r".\g<p>")
    for official, ours in (("conv", "conv_out"), ("DWConv1.0", "dwconv_s2.0"), ("DWConv2.0", "dwconv_s3.0"),
                           ("attention.qkv.c", "attention.qkv"), ("attention.parallel_conv.1", "attention.value_conv"),
                           ("attention.proj", "attention.token_proj"), ("attention.to_out", "attention.out_proj")):
        rules.add(csa + re.escape(official) + rf"\.(?P<p>{_WB})", r"cim.block.\g<csa>." + ours + r".\g<p>")
    feed_forward = rf"(?P<p>(?:bn1|bn2)\.{_BN}|(?:conv1|conv2|conv3)\.{_WB})"
    for k in range(1, 5):
        rules.add(cim + rf"block\.0\.intra_ff\.m\.ff{k}\.m\.{feed_forward}",
                  f"cim.block.intra_ff.branches.{k - 1}." + r"\g<p>")
    rules.add(cim + rf"block\.0\.ff\.m\.{feed_forward}", r"cim.block.ff.\g<p>")


def _decoder_rules(rules: _Rules, config: IcipNetConfig) -> None:
    """``SimpleDecoding``: fuse steps ``conv1_k``/``conv2_k`` (ARC) for k = 4, 3, 2, then ``conv1_1``."""
    for k, index in ((4, 0), (3, 1), (2, 2)):
        fuse = f"decoder.fuse.{index}."
        rules.add(rf"classifier\.conv1_{k}\.weight", fuse + "conv.weight")
        rules.add(rf"classifier\.conv2_{k}\.weight", fuse + "arc.weight", _arc_kernel)
        routing = rf"classifier\.conv2_{k}\.rounting_func\."
        rules.add(routing + r"dwc\.weight", fuse + "arc.routing.dwconv.weight")
        rules.add(routing + rf"norm\.norm\.(?P<p>{_WB})", fuse + r"arc.routing.norm.\g<p>")
        rules.add(routing + rf"(?P<p>fc_alpha\.{_WB}|fc_theta\.weight)", fuse + r"arc.routing.\g<p>")
        for n in (1, 2):
            norm = rf"classifier\.bn{n}_{k}\."
            if config.decoder_norm == "dyt":
                rules.add(norm + "alpha", fuse + f"norm{n}.alpha")
                rules.add(norm + "beta", fuse + f"norm{n}.weight", _dyt_channel)
                rules.add(norm + "gamma", fuse + f"norm{n}.bias", _dyt_channel)
            else:
                rules.add(norm + rf"(?P<p>{_BN})", fuse + f"norm{n}." + r"\g<p>")
    rules.add(rf"classifier\.conv1_1\.(?P<p>{_WB})", r"decoder.classifier.\g<p>")


def _build_rules(config: IcipNetConfig) -> _Rules:
    rules = _Rules()
    rules.add(r"text_encoder\.(?:pooler\..+|embeddings\.(?:position_ids|token_type_ids))", None)
    rules.add(r"text_encoder\.(?P<p>.+)", r"text_encoder.\g<p>")
    _stage_rules(rules, config)
    _cim_rules(rules)
    _decoder_rules(rules, config)
    return rules


def _config_hints(official: Mapping[str, torch.Tensor], config: IcipNetConfig) -> list[str]:
    """Which preset switches the file suggests, where they differ from ``config``."""
    def has(fragment: str) -> bool:
        return any(fragment in key for key in official)

    hints = []
    if has("image_lang_att.lambda_q1") != config.use_bif:
        hints.append(f"the file {'has' if not config.use_bif else 'has no'} BIF parameters (image_lang_att.lambda_*): "
                     f"use use_bif={not config.use_bif}")
    if has("image_lang_att.trainable_tokens") != config.use_icip:
        hints.append(f"the file {'has' if not config.use_icip else 'has no'} ICIP prompts "
                     f"(image_lang_att.trainable_tokens): use use_icip={not config.use_icip}")
    elif config.use_icip and has("image_lang_att.meta_net.") != config.icip_condition:
        hints.append(f"the file {'has' if not config.icip_condition else 'has no'} ICIP meta-net: "
                     f"use icip_condition={not config.icip_condition}")
    file_norm = "dyt" if has("classifier.bn1_4.beta") else "batchnorm" if has("classifier.bn1_4.running_mean") else None
    if file_norm not in (None, config.decoder_norm):
        hints.append(f"the file's decoder norm is {file_norm}: use decoder_norm={file_norm!r}")
    return hints


def _listing(label: str, items: list[str]) -> str:
    items = sorted(items)
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f", … and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"{label} ({len(items)}): [{shown}{more}]"


def convert_official_state_dict(
    official: Mapping[str, torch.Tensor], config: IcipNetConfig, *, source: str | os.PathLike = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Rename and reshape an official ICIPNet/RMSIN state dict to the ``state_dict()`` of ``IcipNetModel(config)``.

    ``official``: the ``"model"`` entry of an official checkpoint (``backbone.*``, ``classifier.*``,
    ``text_encoder.*``), without a ``module.`` prefix (see :func:`load_official_checkpoint`). The result has exactly
    the model's keys and shapes; otherwise a :class:`DataFormatError` naming ``source`` lists every unmapped official
    key, every missing or unexpected key and every wrong shape (with the official key it came from).
    """
    not_tensors = [str(k) for k, v in official.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise DataFormatError(source, _listing("not a state dict of tensors; non-tensor entries", not_tensors))
    rules = _build_rules(config)
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmapped, conflicts = [], []
    for key, tensor in official.items():
        mapped = rules.apply(key)
        if mapped is None:
            unmapped.append(key)
            continue
        ours, transform = mapped
        if ours is None:
            continue
        if ours in converted:
            conflicts.append(f"{origin[ours]} and {key} → {ours}")
            continue
        converted[ours], origin[ours] = transform(tensor), key

    with torch.device("meta"):
        expected = {k: v.shape for k, v in IcipNetModel(config).state_dict().items()}
    shapes = [f"{origin[k]} → {k}: {tuple(converted[k].shape)} in the file, {tuple(expected[k])} expected"
              for k in expected.keys() & converted.keys() if converted[k].shape != expected[k]]
    problems = [
        _listing(label, items) for label, items in (
            ("unmapped official keys", unmapped),
            ("conflicting official keys", conflicts),
            ("missing keys", list(expected.keys() - converted.keys())),
            ("unexpected keys", [f"{k} (from {origin[k]})" for k in converted.keys() - expected.keys()]),
            ("wrong shapes", shapes),
        ) if items
    ]
    if problems:
        hints = _config_hints(official, config)  # first: a wrong preset explains the long lists that follow
        raise DataFormatError(
            source, f"not an ICIPNet/RMSIN checkpoint for this config: {'; '.join(hints + problems)}"
        )
    return converted


def _strip_module(state: Mapping) -> dict:
    """Drop the ``module.`` prefix that ``DistributedDataParallel`` puts on every key."""
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v for k, v in state.items()}


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official ICIPNet/RMSIN checkpoint into a flat ``{official key: tensor}`` dict.

    The file is unpickled with ``weights_only=True`` (only tensors, containers and primitive types; the
    ``argparse.Namespace`` the official training script stores under ``"args"`` is also allowed). The state dict is
    taken from a top-level ``"model"`` (or ``"state_dict"``) entry, or the file itself when it is one; a separate
    ``"bert_model"`` entry (the ``lavt`` variant) is added as ``text_encoder.*``. ``module.`` prefixes are removed.
    Anything else raises :class:`DataFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # safe: weights_only
    except Exception as err:  # torch.load raises many types (UnpicklingError, KeyError, EOFError, RuntimeError …)
        message = str(err)
        if "Weights only load failed" in message:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
            what = f" (it contains {found.group(1)})" if found else ""
            raise DataFormatError(path, f"refused: holds objects other than tensors and plain data{what}; "
                                        "checkpoints are only read with torch.load(weights_only=True)") from err
        raise DataFormatError(path, f"not a PyTorch checkpoint ({type(err).__name__}: {message[:200]})") from err

    if not isinstance(checkpoint, Mapping):
        raise DataFormatError(path, f"expected a dict (a checkpoint or a state dict), got {type(checkpoint).__name__}")
    state = next((checkpoint[k] for k in ("model", "state_dict") if k in checkpoint), checkpoint)
    if not isinstance(state, Mapping):
        raise DataFormatError(path, f"the model entry is a {type(state).__name__}, not a state dict")
    state = _strip_module(state)
    bert = checkpoint.get("bert_model")
    if isinstance(bert, Mapping):
        state.update({f"text_encoder.{k}": v for k, v in _strip_module(bert).items()})
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not state or bad:
        detail = _listing("non-tensor entries", bad) if bad else "it is empty"
        raise DataFormatError(path, f"not a state dict of tensors: {detail}")
    return state


def from_official(path: str | os.PathLike, config: IcipNetConfig) -> IcipNetModel:
    """An :class:`IcipNetModel` of ``config`` with the weights of an official ICIPNet/RMSIN checkpoint, in eval mode.

    ``config`` must describe the checkpoint's network (e.g. ``IcipNetConfig.rmsin()`` for an RMSIN checkpoint);
    every key and shape is checked strictly (see :func:`convert_official_state_dict`).
    """
    state = convert_official_state_dict(load_official_checkpoint(path), config, source=path)
    model = IcipNetModel(config)
    model.load_state_dict(state)
    return model.eval()


__all__ = ["convert_official_state_dict", "from_official", "load_official_checkpoint"]
