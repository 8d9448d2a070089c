"""The memory encoder's settings and its per-user states: plain dataclasses and numpy, no torch.

They live apart from :mod:`recsys.models.memory_net` (the torch modules) and :mod:`recsys.models.memory_encoder`
(the training and encoding stage) so that loading a saved model and serving users from their stored states never
imports torch (about 0.8 s of every batch job's start-up); those modules re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from safetensors.numpy import save_file

from recsys._persist import load_arrays
from recsys.data import Histories
from recsys.errors import ConfigError
from recsys.schema import USER_ID

__all__ = ["MemoryEncoderConfig", "MemoryNetConfig", "MemoryStates"]


@dataclass(frozen=True)
class MemoryNetConfig:
    """Architecture of :class:`MemoryNet`.

    Parameters
    ----------
    text_dim: width of the item text embeddings (384 for all-MiniLM-L6-v2).
    dim: width of the model and of the user/item embeddings (what FAISS indexes).
    n_layers, n_heads: transformer layers and attention heads per layer.
    segment_len: events per segment ``L``.
    n_memory: memory slots ``M``.
    dropout: dropout inside the transformer and on the inputs (training only).
    id_residual: learn a residual embedding per item seen in training.
    use_weights: feed the (standardised) interaction weight, e.g. the rating, as an input.
    """

    text_dim: int = 384
    dim: int = 128
    n_layers: int = 2
    n_heads: int = 4
    segment_len: int = 32
    n_memory: int = 8
    dropout: float = 0.3
    id_residual: bool = True
    use_weights: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}.")
        for name in ("text_dim", "dim", "n_layers", "n_heads", "segment_len", "n_memory"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """Training and inference settings of :class:`MemoryEncoder`.

    Parameters
    ----------
    net: the architecture (embedding size ``net.dim``, segment length, memory slots, ...).
    temperature: softmax temperature of the contrastive loss over cosine scores.
    n_negatives: uniformly sampled negatives per batch, shared by all positions (plus the in-batch targets);
        when it reaches the catalogue size, the loss is a full softmax.
    mask_seen: drop the items already in a user's history from the training softmax (they are excluded from the
        ranking at evaluation).
    batch_users, batch_events: at most this many users and padded events per training batch (users of similar
        length are batched together).
    max_train_events: train on the last ``max_train_events`` events of each user (bounds an epoch); encoding
        always reads the whole history.
    max_epoch_users: each epoch (and refit pass) trains on a fresh seeded sample of at most this many users
        (None: every user), so an epoch stays bounded at 10^6 users; encoding still covers every user.
    epochs, patience: at most ``epochs`` passes; stop after ``patience`` epochs without a better validation
        NDCG@10 and keep the best weights.
    refit_epochs, refit_lr_scale: after early stopping, train ``refit_epochs`` more passes over the training
        events *plus* the validation events, at ``learning_rate * refit_lr_scale``. The validation events are
        every user's most recent ones; without this pass the model never learns from them (0 turns it off).
    learning_rate, weight_decay: AdamW settings.
    ema_decay: keep an exponential moving average of the weights (this decay per optimizer step, bias-corrected:
        about the last ``1 / (1 - ema_decay)`` steps); validation, early stopping and the kept weights use the
        average instead of the last step's weights. The refit passes train those weights on as usual. None: off.
    max_valid_users: validation users scored per epoch (a fixed random subset when there are more).
    n_threads: torch threads (None keeps torch's default).
    seed: seeds torch and numpy (training is deterministic for a fixed seed and thread count).
    encode_batch_users: users encoded together at inference.
    """

    net: MemoryNetConfig = field(default_factory=MemoryNetConfig)
    temperature: float = 0.1
    n_negatives: int = 4096
    mask_seen: bool = True
    batch_users: int = 128
    batch_events: int = 8192
    max_train_events: int | None = 512
    max_epoch_users: int | None = None
    epochs: int = 40
    patience: int = 5
    refit_epochs: int = 2
    refit_lr_scale: float = 0.3
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    ema_decay: float | None = None
    max_valid_users: int = 5000
    n_threads: int | None = None
    seed: int = 0
    encode_batch_users: int = 256
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in (
            "n_negatives",
            "batch_users",
            "batch_events",
            "epochs",
            "patience",
            "max_valid_users",
            "encode_batch_users",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"MemoryEncoderConfig.{name}={getattr(self, name)} must be >= 1.")
        if self.refit_epochs < 0:
            raise ConfigError(f"MemoryEncoderConfig.refit_epochs={self.refit_epochs} must be >= 0.")
        if not 0 < self.refit_lr_scale <= 1:
            raise ConfigError(f"MemoryEncoderConfig.refit_lr_scale={self.refit_lr_scale} must be in (0, 1].")
        if not self.temperature > 0:
            raise ConfigError(f"MemoryEncoderConfig.temperature={self.temperature} must be > 0.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"MemoryEncoderConfig.ema_decay={self.ema_decay} must be in (0, 1) or None.")
        if self.max_epoch_users is not None and self.max_epoch_users < 1:
            raise ConfigError(f"MemoryEncoderConfig.max_epoch_users={self.max_epoch_users} must be >= 1 or None.")
        if self.max_train_events is not None and self.max_train_events < 2:
            raise ConfigError(f"MemoryEncoderConfig.max_train_events={self.max_train_events} must be >= 2 or None.")


@dataclass(frozen=True)
class MemoryStates:
    """Per-user memory after the last complete segment, plus the events since (the tail).

    Attributes
    ----------
    user_ids: Series of length ``n``.
    memory: float32 ``(n, n_memory, dim)``.
    committed: int64 ``(n,)``: events folded into ``memory`` (a multiple of ``segment_len``).
    prev_time: int64 ``(n,)``: time of the last committed event (``NO_TIME`` when none).
    tail: :class:`Histories` of the uncommitted events (1 to ``segment_len`` per user with events).
    embeddings: float32 ``(n, dim)``: the L2-normalised user vectors for the whole history.
    """

    user_ids: pl.Series
    memory: np.ndarray
    committed: np.ndarray
    prev_time: np.ndarray
    tail: Histories
    embeddings: np.ndarray

    def save(self, directory: str | Path) -> None:
        """Write ``memory_states.safetensors`` (arrays) and ``memory_users.parquet`` (ids) to ``directory``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "memory": self.memory,
            "committed": self.committed,
            "prev_time": self.prev_time,
            "embeddings": self.embeddings,
            "tail.indptr": self.tail.indptr,
            "tail.item_idx": self.tail.item_idx,
            "tail.timestamps": self.tail.timestamps,
            "tail.weights": self.tail.weights if self.tail.weights is not None else np.zeros(0, np.float32),
        }
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / "memory_states.safetensors"))
        pl.DataFrame({USER_ID: self.user_ids}).write_parquet(folder / "memory_users.parquet")

    @classmethod
    def load(cls, directory: str | Path) -> MemoryStates:
        """Read states written by :meth:`save` (safetensors and Parquet; no pickle)."""
        folder = Path(directory)
        a = load_arrays(folder / "memory_states.safetensors")  # one copy of the file (not load_file's two)
        users = pl.read_parquet(folder / "memory_users.parquet")[USER_ID]
        weights = a["tail.weights"] if len(a["tail.weights"]) == len(a["tail.item_idx"]) else None
        tail = Histories(users, a["tail.indptr"], a["tail.item_idx"], a["tail.timestamps"], weights)
        return cls(users, a["memory"], a["committed"], a["prev_time"], tail, a["embeddings"])
