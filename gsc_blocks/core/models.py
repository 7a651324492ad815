"""The model store: find a model folder by name, read its card, open its ONNX files.

The boundary with the training side is models/<name>/card.json plus the ONNX
files it names. A card that lacks a key its kind needs, or a file whose SHA-256
differs from the card, is refused with a message that names the file and what
to do.
"""
import contextlib
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
# Installed: <prefix>/lib/pythonX.Y/site-packages/gsc_blocks/core/models.py -> <prefix>/share/gsc/models
INSTALLED_MODELS = Path(__file__).resolve().parents[5] / "share" / "gsc" / "models" \
    if len(Path(__file__).resolve().parents) > 5 else None

# The keys each kind of card must hold (dotted paths), checked when a model is opened.
_FILE_KEYS = lambda role: (f"files.{role}.path", f"files.{role}.sha256")   # noqa: E731
REQUIRED_KEYS = {
    "codec": ("codec_id", "downsample", "latent_complex_per_block", "cbr", *_FILE_KEYS("encoder"),
              *_FILE_KEYS("decoder")),
    "refiner": ("codecs", "diffusion.cosine_offset", "diffusion.residual_scale", "diffusion.max_steps",
                "diffusion.size_multiple", *_FILE_KEYS("denoiser")),
    "classifier": ("classes", *_FILE_KEYS("classifier")),
    "segmenter": ("classes", "void_label", "size_multiple", *_FILE_KEYS("segmenter")),
    "superres": ("classes", "segmenter", "diffusion.cosine_offset", "diffusion.residual_scale",
                 "diffusion.max_steps", "diffusion.size_multiple", *_FILE_KEYS("denoiser")),
    "sqgan": ("classes", "segmenter", "downsample", "index_bits", "map_index_bits", *_FILE_KEYS("tx"),
              *_FILE_KEYS("rx"), *_FILE_KEYS("map_prior")),
}


class CodecError(RuntimeError):
    """A model or codec cannot be used; the message says which file and what to do."""


def model_search_path() -> list[Path]:
    """$GSC_MODELS, the source tree's models/ (when running from it), then the install prefix's
    share/gsc/models (next to this package, and under sys.prefix)."""
    paths = []
    if os.environ.get("GSC_MODELS"):
        paths.append(Path(os.environ["GSC_MODELS"]))
    if REPO_MODELS.is_dir():
        paths.append(REPO_MODELS)
    for candidate in (INSTALLED_MODELS, Path(sys.prefix) / "share" / "gsc" / "models"):
        if candidate is not None and candidate not in paths:
            paths.append(candidate)
    return paths


def find_model(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    candidates = [Path(models_dir)] if models_dir else model_search_path()
    for base in candidates:
        if (base / name / "card.json").is_file():
            return base / name
    raise CodecError(f"model '{name}' not found: no {name}/card.json under "
                     f"{', '.join(str(c) for c in candidates)}. Available: {available_models(models_dir) or 'none'}. "
                     "Restore the models/ folder from git, or export one with scripts/gsc export.")


def available_models(models_dir=None) -> list[str]:
    names = set()
    for base in ([Path(models_dir)] if models_dir else model_search_path()):
        if base.is_dir():
            names.update(p.parent.name for p in base.glob("*/card.json"))
    return sorted(names)


def card_kind(card: dict) -> str | None:
    """'codec' (a card with a header codec id), or the card's own 'kind'."""
    return "codec" if "codec_id" in card else card.get("kind")


def load_card(name: str, models_dir=None) -> dict:
    """The card as a dict (with '_folder'); bad JSON is refused, keys are checked by check_card."""
    folder = find_model(name, models_dir)
    try:
        card = json.loads((folder / "card.json").read_text())
    except json.JSONDecodeError as err:
        raise CodecError(f"{folder / 'card.json'} is not valid JSON ({err}); restore it from git") from None
    if not isinstance(card, dict):
        raise CodecError(f"{folder / 'card.json'} is not a JSON object; restore it from git")
    card["_folder"] = str(folder)
    return card


def check_card(card: dict, kind: str) -> dict:
    """The card itself, once every key its kind needs is there."""
    where = Path(card["_folder"]) / "card.json"
    if card_kind(card) != kind:
        raise CodecError(f"model '{Path(card['_folder']).name}' is a {card_kind(card) or 'model'}, not a {kind} "
                         f"({where})")
    for dotted in REQUIRED_KEYS[kind]:
        node = card
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise CodecError(f"{where} lacks the key {dotted} that a {kind} card needs: restore the card "
                                 "from git, or re-export the model with scripts/gsc export")
            node = node[part]
    return card


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verified_path(card: dict, role: str) -> Path:
    """The card's file for role, once it exists and its SHA-256 matches the card."""
    folder, entry = Path(card["_folder"]), card["files"][role]
    path = folder / entry["path"]
    if not path.is_file():
        raise CodecError(f"{path} is missing: restore it with git (git checkout -- {path.name}) "
                         f"or re-export the model with scripts/gsc export")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise CodecError(f"{path} has SHA-256 {digest[:16]}..., but {folder / 'card.json'} says "
                         f"{entry['sha256'][:16]}...: the file is corrupted or was replaced. Restore it "
                         "from git, or re-export the model so file and card match.")
    return path


_local = threading.local()


@contextlib.contextmanager
def session_threads(count: int | None):
    """ONNX Runtime sessions opened in this thread inside the block run `count` threads each (None:
    the cores). A service sizes them to what runs at once; GSC_ORT_THREADS, set, wins."""
    previous = getattr(_local, "count", None)
    _local.count = count
    try:
        yield
    finally:
        _local.count = previous


def _session_thread_count() -> int:
    return int(os.environ.get("GSC_ORT_THREADS") or 0) or getattr(_local, "count", None) or os.cpu_count() or 1


def verified_session(card: dict, role: str, providers=None):
    """An ONNX Runtime session on the card's file for role, once its SHA-256 matches the card."""
    import onnxruntime as ort
    path = verified_path(card, role)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Explicit threads, and no spinning: ONNX Runtime's threads otherwise spin after each run
    # waiting for the next, which on a receiver decoding one small image per frame keeps a core
    # busy that GNU Radio's own threads need. GSC_ORT_THREADS sets the count; else session_threads'
    # block, else the cores.
    options.intra_op_num_threads = _session_thread_count()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Batches come in every size from 1 up: a memory plan kept per input shape made a receiver's
    # memory grow in steps over a 10,000-image run (+6 %); without them it levels off (+2.5 %), and
    # the arena still reuses the tensors' memory.
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or default_providers())


def model_files(card: dict) -> dict:
    """{role: SHA-256} of the card's files (each checked when its session opened): what a
    benchmark records of the models it ran."""
    return {role: entry["sha256"] for role, entry in card.get("files", {}).items()}


class OnnxModel:
    """A model folder of one kind opened for inference: its card, checked for the keys the kind
    needs, and one ONNX Runtime session on its file for `role` (SHA-256 checked)."""

    kind = ""
    role = ""

    def __init__(self, name: str, models_dir=None, providers=None):
        self.card = check_card(load_card(name, models_dir), self.kind)
        self.name = name
        self.session = verified_session(self.card, self.role, providers)

    def model_files(self) -> dict:
        """{model name: {role: SHA-256}}: what a benchmark records of the model it ran."""
        return {self.name: {self.role: self.card["files"][self.role]["sha256"]}}


def default_providers() -> list[str]:
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
