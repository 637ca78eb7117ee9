"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) as COCO's caption evaluation computes them.

Protocol: pycocoevalcap ``COCOEvalCap.evaluate`` (Chen et al., "Microsoft COCO Captions", 2015), step for
step, without SPICE: predictions and references are tokenised by Stanford's ``PTBTokenizer`` (lower-cased,
then the punctuation tokens ``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;`` are dropped), then
scored with pycocoevalcap's own scorers:

* ``Bleu(4)``: corpus BLEU-1..4 (clipped n-gram precision, brevity penalty against the *closest*
  reference length);
* ``Meteor()``: METEOR 1.5 (``meteor-1.5.jar -l en -norm``), corpus score over the whole set;
* ``Rouge()``: ROUGE-L F-score with β = 1.2, best reference per image, averaged over images;
* ``Cider()``: CIDEr-D (n = 4, Gaussian length penalty σ = 6, clipped counts, × 10), with document
  frequencies computed from the *references of the evaluated set* (so CIDEr of a single image is 0).

Values are returned as pycocoevalcap returns them: fractions (CIDEr-D on its own 0–10 scale). Papers
report them × 100. SPICE is never run: it downloads Stanford CoreNLP at first use.

Java ≥ 8 must be on ``PATH`` for the PTB tokenizer and METEOR. ``tokenizer="simple"`` (see
:func:`simple_tokenize`) lets BLEU, ROUGE-L and CIDEr run without Java; its numbers are *not* the standard
ones and the returned dict says so (``"standard": False``).

One deliberate difference from calling pycocoevalcap by hand: every line-break character (``\\r``,
``\\v``, ``\\f``, ``\\u2028`` …, not only ``\\n``) is replaced by a space before PTB tokenisation, because
Java ends a line at each of them and the captions of all later images would shift by one. Each METEOR
process is stopped and reaped before :func:`caption_metrics` returns.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
from collections.abc import Hashable, Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")
"""Metric names accepted by :func:`caption_metrics`; ``"BLEU"`` yields ``BLEU-1`` … ``BLEU-4``."""

TOKENIZERS = ("ptb", "simple")

JAVA_HELP = (
    "Java >= 8 is needed by pycocoevalcap's PTB tokenizer and METEOR. Install a Java runtime and put `java` "
    "on PATH (Debian/Ubuntu: `apt install default-jre-headless`; conda: `conda install -c conda-forge "
    "openjdk`), or use tokenizer='simple' without METEOR (non-standard numbers)."
)

# Characters that Java's PTBTokenizer (-preserveLines) treats as line ends. pycocoevalcap only replaces
# "\n", so any of the others would shift every later caption onto another image's line.
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_SIMPLE_TOKEN = re.compile(r"\w+(?:-\w+)*|[^\w\s]")
_SIMPLE_DROPPED = frozenset(".,?!:;-'`\"()[]{}")
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


class JavaNotFoundError(RuntimeError):
    """No usable Java runtime (≥ 8) for the PTB tokenizer or METEOR."""


# --- Java ----------------------------------------------------------------------------------------------

@functools.cache
def _java_major_version(java: str) -> int:
    """Major version of the Java at path ``java`` (``1.8.0_392`` → 8, ``17.0.15`` → 17); cached per path."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise JavaNotFoundError(f"`{java} -version` failed ({e}). {JAVA_HELP}") from None
    match = _JAVA_VERSION.search(out.stderr + out.stdout)
    if out.returncode != 0 or match is None:
        raise JavaNotFoundError(f"`{java} -version` did not report a version "
                                f"(exit {out.returncode}: {out.stderr.strip()[:200]!r}). {JAVA_HELP}")
    major, minor = int(match[1]), int(match[2] or 0)
    return minor if major == 1 else major


def require_java() -> str:
    """Path of the ``java`` on ``PATH`` (the one pycocoevalcap runs); :class:`JavaNotFoundError` when it is
    missing or older than Java 8. The version check runs once per Java path."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(f"no `java` executable on PATH. {JAVA_HELP}")
    version = _java_major_version(java)
    if version < 8:
        raise JavaNotFoundError(f"{java} is Java {version}. {JAVA_HELP}")
    return java


# --- tokenisation --------------------------------------------------------------------------------------

def simple_tokenize(text: str) -> str:
    """Java-free stand-in for the PTB tokenisation (non-standard), returning space-joined tokens.

    Rule: lower-case; tokens are maximal runs of word characters (Unicode letters, digits, ``_``) that may
    be joined by inner hyphens (``tennis-court``, ``court-1``, kept whole as PTB keeps them), and every other
    non-space character on its own; then the tokens PTB evaluation drops are removed:
    ``. , ? ! : ; - ' ` " ( ) [ ] { }``. Other symbols (``/ % & $`` …) stay as tokens.
    Known differences from PTB: contractions and possessives (``don't`` → ``don t``, PTB ``do n't``;
    ``man's`` → ``man s``, PTB ``man 's``), dotted abbreviations and numbers (``3.5`` → ``3 5``).
    """
    tokens = _SIMPLE_TOKEN.findall(text.lower())
    return " ".join(t for t in tokens if t not in _SIMPLE_DROPPED)


def _tokenize(captions: Mapping[Hashable, Sequence[str]], tokenizer: str) -> dict[Hashable, list[str]]:
    if tokenizer == "simple":
        return {key: [simple_tokenize(c) for c in texts] for key, texts in captions.items()}
    ptb_input = {key: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in texts] for key, texts in captions.items()}
    tokenized = PTBTokenizer().tokenize(ptb_input)
    if any(len(tokenized.get(key, ())) != len(texts) for key, texts in captions.items()):
        raise RuntimeError("the PTB tokenizer returned a different number of lines than captions it was given")
    return tokenized


# --- METEOR process lifecycle --------------------------------------------------------------------------

class _Meteor(Meteor):
    """pycocoevalcap's METEOR wrapper with an explicit :meth:`close`.

    The original only stops the Java process in ``__del__`` (whenever the object is collected), leaves its
    pipes open, and takes a lock there that stays held if scoring raised — which would hang the collector.
    """

    def close(self) -> None:
        proc = getattr(self, "meteor_p", None)
        if proc is None or proc.returncode is not None:
            return
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()

    __del__ = close


@contextlib.contextmanager
def _meteor():
    scorer = _Meteor()
    try:
        yield scorer
    finally:
        scorer.close()


# --- metrics -------------------------------------------------------------------------------------------

def check_caption_options(metrics: Sequence[str], tokenizer: str) -> tuple[str, ...]:
    """Validate metric names and the tokenizer, and check Java when they need it (the PTB tokenizer or
    METEOR); returns the metric names without repeats. Callers run it before any long computation."""
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        hint = " (SPICE is not supported: it downloads Stanford CoreNLP)" if "SPICE" in unknown else ""
        raise ValueError(f"unknown caption metric(s) {unknown}; choose from {list(METRICS)}{hint}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if metrics and (tokenizer == "ptb" or "METEOR" in metrics):
        require_java()
    return metrics


def caption_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = METRICS,
    *,
    tokenizer: str = "ptb",
) -> dict[str, float | int | str | bool]:
    """Corpus caption metrics by the COCO caption protocol (pycocoevalcap ``COCOEvalCap``, no SPICE).

    Args:
        predictions: one generated caption per image id.
        references: one or more reference captions per image id; the same ids as ``predictions``.
        metrics: any of ``"BLEU"`` (→ ``BLEU-1`` … ``BLEU-4``), ``"METEOR"``, ``"ROUGE_L"``, ``"CIDEr"``
            (CIDEr-D as pycocoevalcap computes it).
        tokenizer: ``"ptb"`` (the standard: Stanford PTBTokenizer, needs Java) or ``"simple"``
            (:func:`simple_tokenize`, no Java, non-standard numbers).

    Returns:
        ``{metric: value, …, "num_images": n, "tokenizer": tokenizer, "standard": tokenizer == "ptb"}`` with
        the values as fractions (× 100 for the usual paper tables; CIDEr on its 0–10 scale).

    Raises:
        ValueError: no or unknown metric, unknown tokenizer, mismatched ids, no images, an image without references,
            or a caption that is not a string.
        JavaNotFoundError: Java is needed (PTB tokenizer or METEOR) but missing or older than 8.
    """
    metrics = check_caption_options(metrics, tokenizer)
    if not metrics:
        raise ValueError("no caption metric requested")
    refs = _check_inputs(predictions, references)

    # COCOEvalCap tokenises references and predictions in two separate runs; so do we.
    gts = _tokenize(refs, tokenizer)
    res = _tokenize({key: [predictions[key]] for key in refs}, tokenizer)

    results: dict[str, float | int | str | bool] = {}
    for name in metrics:
        if name == "BLEU":
            scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
            results.update({f"BLEU-{n}": float(s) for n, s in enumerate(scores, 1)})
        elif name == "METEOR":
            with _meteor() as meteor:
                results["METEOR"] = float(meteor.compute_score(gts, res)[0])
        elif name == "ROUGE_L":
            results["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
        else:
            results["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    results.update(num_images=len(refs), tokenizer=tokenizer, standard=tokenizer == "ptb")
    return results


def _check_inputs(predictions: Mapping[Hashable, str],
                  references: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """References as lists, after checking ids and types."""
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(f"predictions and references must cover the same image ids; no prediction for "
                         f"{missing[:5]}{' …' if len(missing) > 5 else ''}, no reference for "
                         f"{extra[:5]}{' …' if len(extra) > 5 else ''}")
    if not references:
        raise ValueError("no images to evaluate")
    refs = {}
    for key, texts in references.items():
        if isinstance(texts, str):
            raise ValueError(f"image {key!r}: references must be a list of strings, got a single str")
        texts = list(texts)
        if not texts:
            raise ValueError(f"image {key!r}: no reference caption")
        if not all(isinstance(t, str) for t in texts) or not isinstance(predictions[key], str):
            raise ValueError(f"image {key!r}: captions must be strings")
        refs[key] = texts
    return refs
