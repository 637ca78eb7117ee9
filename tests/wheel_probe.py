"""Exercise one model package installed from its wheel, from inside its fresh virtual environment.

``tests/test_wheels.py`` copies this file out of the repository and runs it with the environment's own python::

    <venv>/bin/python wheel_probe.py PREFIX WORKDIR     # PREFIX: bimors, clvnet, icipnet or rscovlm

It writes ``WORKDIR/report.json`` and exits 0; the test asserts on the report and on the files it names. The probe
only runs things and records what happened:

- the installed rs-* distributions: metadata version, ``__version__`` and where the module was imported from;
- every console script of those distributions with ``--help``;
- ``PREFIX-train`` with a preset that does not exist (the error lists the presets packaged in the wheel) and with a
  packaged paper-size preset (read from the wheel, then stopped because no local weights or data are given);
- the package's predict command (``rscovlm-chat`` for rscovlm) on a random-init tiny model saved with the package's
  own API and a synthetic scene from ``rs_shared``, writing into ``WORKDIR/prediction``.

Scripts run in this process: each installed script file is executed with ``runpy`` under its own ``sys.argv``, so
torch and transformers are imported once rather than once per command.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as metadata
import io
import json
import runpy
import sys
import traceback
from pathlib import Path

# the packaged preset that needs local weights or data: reading it must stop with an error naming what is missing
PAPER_PRESETS = {"bimors": "base2new", "clvnet": "paper", "icipnet": "rrsisd", "rscovlm": "paper"}
CAPTION = "An aerial view of an airport with a runway on bare soil. It contains two planes."


def run_script(name: str, argv: list[str]) -> dict:
    """Execute the installed console script ``name`` with ``argv``; its exit code, stdout and stderr."""
    path = Path(sys.prefix) / "bin" / name
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv = sys.argv, [str(path), *argv]
    code: int | str = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            err.write(e.code)
    except Exception:  # a crash is a result to report, not a reason to stop the probe
        code = "crash"
        err.write(traceback.format_exc())
    finally:
        sys.argv = saved
    return {"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def installed_distributions() -> dict[str, dict]:
    """``{name: {version, module, module_version, module_file, scripts}}`` of the installed rs-* distributions."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name.startswith("rs-"):
            continue
        packages = sorted({f.parts[0] for f in dist.files or [] if f.suffix == ".py" and len(f.parts) > 1})
        module = importlib.import_module(packages[0])  # hatchling writes no top_level.txt
        found[name] = {
            "version": dist.version, "module": module.__name__, "module_version": getattr(module, "__version__", None),
            "module_file": str(Path(module.__file__).resolve()),
            "scripts": sorted(ep.name for ep in dist.entry_points if ep.group == "console_scripts"),
        }
    return found


def scene_png(work: Path) -> Path:
    """A 96×64 synthetic airport scene from rs_shared's generator, as PNG."""
    from PIL import Image
    from rs_shared.data.synthetic import make_scene

    path = work / "scene.png"
    Image.fromarray(make_scene(0, (96, 64), "airport").image).save(path)
    return path


def bimors_predict(work: Path, image: Path, out: Path) -> tuple[str, list[str]]:
    import torch
    from bimors import BiMoRSConfig, BiMoRSModel
    from bimors.synthetic_captions import build_synthetic_bert
    from rs_shared.data.synthetic import SCENE_CLASSES

    torch.manual_seed(0)
    BiMoRSModel(BiMoRSConfig.tiny()).save_pretrained(work / "model")
    bert = build_synthetic_bert(work / "bert")
    return "bimors-predict", ["--model", str(work / "model"), "--image", str(image), "--classes",
                              ",".join(SCENE_CLASSES), "--bert", str(bert), "--caption", CAPTION, "--top-k", "3",
                              "--threads", "1", "--out", str(out)]


def clvnet_predict(work: Path, image: Path, out: Path) -> tuple[str, list[str]]:
    import torch
    from clvnet.configuration import CLVNetConfig
    from clvnet.modeling import CLVNetModel
    from clvnet.tokenizer import TokenIds, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(work / "model")  # clvnet-predict reads the tokenizer beside the weights
    config = CLVNetConfig.tiny(**TokenIds.of(tokenizer).config_kwargs())
    config.text_config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    CLVNetModel(config).save_pretrained(work / "model")
    return "clvnet-predict", ["--model", str(work / "model"), "--image", str(image), "--box", "8,4,72,60",
                              "--max-new-tokens", "8", "--name", "scene", "--out", str(out)]


def icipnet_predict(work: Path, image: Path, out: Path) -> tuple[str, list[str]]:
    import torch
    from icipnet import IcipNetConfig, IcipNetModel
    from icipnet.tokenizer import build_synthetic_tokenizer

    tokenizer = build_synthetic_tokenizer(work / "model")
    torch.manual_seed(0)
    IcipNetModel(IcipNetConfig.tiny(vocab_size=len(tokenizer))).save_pretrained(work / "model")
    return "icipnet-predict", ["--model", str(work / "model"), "--image", str(image), "--text", "the red plane",
                               "--text", "the largest building", "--out", str(out)]


def rscovlm_predict(work: Path, image: Path, out: Path) -> tuple[str, list[str]]:
    from rscovlm.model_factory import build_tiny

    build_tiny(work / "model")
    return "rscovlm-chat", ["--model", str(work / "model"), "--image", str(image), "--prompt",
                            "How many planes are there?", "--max-new-tokens", "6", "--out", str(out)]


PREDICTS = {"bimors": bimors_predict, "clvnet": clvnet_predict, "icipnet": icipnet_predict,
            "rscovlm": rscovlm_predict}


def main(prefix: str, work: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    distributions = installed_distributions()
    scripts = {}
    for dist in distributions.values():
        for name in dist["scripts"]:
            path = Path(sys.prefix) / "bin" / name
            shebang = path.read_text(encoding="utf-8").splitlines()[0] if path.is_file() else None
            scripts[name] = {"path": str(path), "shebang": shebang, "help": run_script(name, ["--help"])}
    train = f"{prefix}-train"
    presets = {
        "missing": run_script(train, ["--config", "no-such-preset"]),
        "paper": run_script(train, ["--config", PAPER_PRESETS[prefix], "--train.output_dir", str(work / "train")]),
    }
    out = work / "prediction"
    script, argv = PREDICTS[prefix](work, scene_png(work), out)
    predict = {"script": script, "out": str(out), **run_script(script, argv)}
    return {"python": sys.executable, "prefix": sys.prefix, "distributions": distributions, "scripts": scripts,
            "presets": presets, "predict": predict}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in PREDICTS:
        sys.exit(f"usage: python wheel_probe.py {{{','.join(PREDICTS)}}} WORKDIR")
    work_dir = Path(sys.argv[2]).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    report = main(sys.argv[1], work_dir)
    (work_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
