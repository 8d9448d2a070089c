"""The long-context text-memory user encoder as a stage: ``fit``, ``encode``, incremental memory states.

:class:`MemoryEncoder` trains :class:`~recsys.models.memory_net.MemoryNet` on next-item prediction (a
contrastive loss over in-batch and uniformly sampled negatives, early stopping on validation NDCG@10) and
encodes whole histories into user vectors in the space of its item vectors.

Encoding reads each history segment by segment and keeps only the memory and the current segment: time is
linear in the history and memory does not grow with it. :meth:`MemoryEncoder.states` and
:meth:`MemoryEncoder.update` expose that recurrence: a state holds the memory after the last *complete*
segment plus the events since (1 to ``segment_len`` of them), so adding events costs
O(new events + one segment) and gives the same vector as encoding everything again.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recsys._topk import mask_seen
from recsys.data import Histories
from recsys.errors import ConfigError, DataError, check_is_fitted
from recsys.models.memory_config import MemoryEncoderConfig, MemoryStates
from recsys.models.memory_net import EventBatch, MemoryNet, gap_bucket, init_weights, position_bucket

__all__ = ["MemoryEncoder", "MemoryEncoderConfig", "MemoryStates"]

logger = logging.getLogger(__name__)

NO_TIME = np.iinfo(np.int64).min


class WeightAverage:
    """An exponential moving average of a module's parameters, updated after each optimizer step.

    After ``t`` steps the average is ``sum_i (1 - decay) * decay ** (t - i) * w_i / (1 - decay ** t)``: the
    weights of about the last ``1 / (1 - decay)`` steps, bias-corrected (as Adam's moments are) so that it does
    not lean on the initial weights early on. Buffers are not averaged: :meth:`state_dict` takes them from the
    module.
    """

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self._sums = {name: torch.zeros_like(p, requires_grad=False) for name, p in net.named_parameters()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        for name, p in net.named_parameters():
            self._sums[name].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)
        self.steps += 1

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averaged parameters (after at least one :meth:`update`)."""
        if self.steps == 0:
            raise RuntimeError("WeightAverage.update has not been called yet.")
        correction = 1.0 - self.decay**self.steps
        return {name: total / correction for name, total in self._sums.items()}

    def state_dict(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``net``'s state with the averaged parameters (copies)."""
        shadow = self.shadow
        return {k: shadow.get(k, v).detach().clone() for k, v in net.state_dict().items()}

    @contextlib.contextmanager
    def applied(self, net: torch.nn.Module) -> Iterator[None]:
        """``net`` holds the averaged parameters inside the block and its own ones again after it."""
        own = {name: p.detach().clone() for name, p in net.named_parameters()}
        shadow = self.shadow
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in net.named_parameters():
                    p.copy_(own[name])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # weights and dropout; numpy sampling uses explicit generators


class MemoryEncoder:
    """Train the memory network and encode histories (CSR :class:`Histories`) into user vectors.

    Attributes (after ``fit``)
    --------------------------
    net_: the trained :class:`MemoryNet`; weight_stats_: (mean, std) of training weights;
    best_ndcg_: best validation NDCG@10; epochs_: epochs run; train_seconds_: wall time of ``fit``.
    """

    net_: MemoryNet | None = None
    weight_stats_: tuple[float, float] | None = None
    best_ndcg_: float | None = None
    epochs_: int | None = None
    train_seconds_: float | None = None

    def __init__(self, config: MemoryEncoderConfig | None = None) -> None:
        self.config = config or MemoryEncoderConfig()

    # ------------------------------------------------------------------------------- batching
    @property
    def segment_len(self) -> int:
        return self.config.net.segment_len

    def _segment(
        self,
        h: Histories,
        rows: np.ndarray,
        starts: np.ndarray,
        stops: np.ndarray,
        prev_time: np.ndarray,
        offset: np.ndarray,
    ) -> EventBatch:
        """Events ``starts:stops`` (CSR positions, at most one segment) of users ``rows`` as a padded batch.

        ``prev_time`` is the time before each user's first event in ``h`` (``NO_TIME`` if none) and
        ``offset`` the absolute index of that first event.
        """
        L = self.segment_len
        pos = starts[:, None] + np.arange(L)[None, :]  # (B, L) CSR positions
        valid = pos < stops[:, None]
        # padding reads a valid row (masked out below): a user shorter than the batch's longest can have
        # starts beyond the last event when it is the last user of ``h``
        pad = np.minimum(starts, max(len(h.item_idx) - 1, 0))
        flat = np.where(valid, pos, pad[:, None])
        first = h.indptr[rows][:, None]  # (B, 1)
        times = h.timestamps[flat]
        before = np.where(flat > first, h.timestamps[np.maximum(flat - 1, 0)], prev_time[:, None])
        gaps = np.where(before == NO_TIME, -1, times - np.where(before == NO_TIME, 0, before))
        weights: np.ndarray = np.zeros(valid.shape, np.float32)
        if h.weights is not None and self.weight_stats_ is not None:
            mean, std = self.weight_stats_
            weights = ((h.weights[flat] - mean) / std).astype(np.float32)
        return EventBatch(
            items=torch.from_numpy(np.where(valid, h.item_idx[flat], 0)),
            gaps=gap_bucket(torch.from_numpy(gaps)),
            positions=position_bucket(torch.from_numpy(offset[:, None] + flat - first)),
            weights=torch.from_numpy(np.where(valid, weights, 0).astype(np.float32)),
            valid=torch.from_numpy(valid),
        )

    def _padded(self, h: Histories, rows: np.ndarray, max_events: int | None) -> EventBatch:
        """Whole (or last ``max_events``) histories of ``rows`` as one batch ``(B, T)``, T a multiple of L."""
        stops = h.indptr[rows + 1]
        starts = h.indptr[rows] if max_events is None else np.maximum(h.indptr[rows], stops - max_events)
        L = self.segment_len
        n_seg = int(np.ceil((stops - starts).max() / L))
        none, zero = np.full(len(rows), NO_TIME), np.zeros(len(rows), np.int64)
        parts = [self._segment(h, rows, starts + s * L, stops, none, zero) for s in range(n_seg)]
        return EventBatch(
            *(
                torch.cat([getattr(p, f) for p in parts], dim=1)
                for f in ("items", "gaps", "positions", "weights", "valid")
            )
        )

    # ------------------------------------------------------------------------------------ fit
    def fit(self, histories: Histories, text_vectors: np.ndarray, valid: Histories | None = None) -> MemoryEncoder:
        """Train on ``histories`` (every next event is a target), early-stop on ``valid``, then refit on both.

        Parameters
        ----------
        histories: training events of every user (catalogue rows index ``text_vectors``).
        text_vectors: float32 ``(n_items, text_dim)`` item text embeddings.
        valid: each user's validation events (same users, same order; empty histories allowed), which come
            after their training events. The first is the target scored from the whole training history.
            ``None`` holds out each user's last event.
        """
        cfg = self.config
        started = time.perf_counter()
        if cfg.n_threads:
            torch.set_num_threads(cfg.n_threads)
        train, valid = self._train_valid(histories, valid)
        targets = np.full(valid.n_users, -1, np.int64)  # (n_users,): the first validation event, -1 for none
        has = valid.lengths > 0
        targets[has] = valid.item_idx[valid.indptr[:-1][has]]
        self.weight_stats_ = _weight_stats(train)
        self.initialize(text_vectors, known=np.unique(train.item_idx))
        net = cast(MemoryNet, self.net_)
        self._train(net, train, targets)
        if cfg.refit_epochs:
            # items first seen in validation get their residual now: it is still zero, as it was masked out
            # (had it been on, they would only ever have been pushed down as negatives)
            net.items.known[torch.from_numpy(np.unique(valid.item_idx))] = True
            self._refit(net, _concat(train, valid))
        self.train_seconds_ = time.perf_counter() - started
        logger.info(
            "memory encoder: best validation NDCG@10 %.4f after %d epochs (+%d refit), %.0f s",
            self.best_ndcg_,
            self.epochs_,
            cfg.refit_epochs,
            self.train_seconds_,
        )
        return self

    def initialize(self, text_vectors: np.ndarray, known: np.ndarray | None = None) -> MemoryEncoder:
        """Build an untrained net (the zero-shot starting point) without training: for timing, tests, and as
        the first step of :meth:`fit`. ``known`` marks catalogue rows that get a learned residual."""
        cfg = self.config
        if text_vectors.ndim != 2 or text_vectors.shape[1] != cfg.net.text_dim:
            raise ConfigError(
                f"text vectors have shape {text_vectors.shape}; expected (n_items, {cfg.net.text_dim}) "
                f"(set MemoryEncoderConfig.net.text_dim to the text encoder's width)."
            )
        _seed_everything(cfg.seed)
        net = MemoryNet(torch.from_numpy(np.ascontiguousarray(text_vectors, np.float32)), cfg.net)
        init_weights(net)
        if known is not None:
            net.items.known[torch.from_numpy(np.asarray(known, np.int64))] = True
        self.net_ = net.eval()
        self.weight_stats_ = self.weight_stats_ or (0.0, 1.0)
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the fitted encoder, as named arrays (for safetensors)."""
        check_is_fitted(self, ("net_",))
        net = cast(MemoryNet, self.net_)
        arrays = {f"net.{k}": v.detach().numpy() for k, v in net.state_dict().items()}
        arrays["text"] = net.items.text.numpy()
        arrays["known"] = np.flatnonzero(net.items.known.numpy()).astype(np.int64)
        arrays["weight_stats"] = np.asarray(self.weight_stats_ or (0.0, 1.0), np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, config: MemoryEncoderConfig, arrays: dict[str, np.ndarray]) -> MemoryEncoder:
        """Rebuild an encoder saved with :meth:`to_arrays`."""
        self = cls(config)
        mean, std = (float(x) for x in arrays["weight_stats"])
        self.weight_stats_ = (mean, std)
        self.initialize(arrays["text"], known=arrays["known"])
        state = {k[len("net.") :]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("net.")}
        cast(MemoryNet, self.net_).load_state_dict(state)
        return self

    def _train_valid(self, h: Histories, valid: Histories | None) -> tuple[Histories, Histories]:
        if valid is not None:
            if valid.n_users != h.n_users:
                raise DataError(f"valid has {valid.n_users} users for {h.n_users} training users; align them.")
            return h, valid
        has_two = h.lengths >= 2
        held = has_two.astype(np.int64)  # hold out each user's last event
        train = h.select(np.arange(h.n_users), h.indptr[:-1], h.lengths - held)
        return train, h.select(np.arange(h.n_users), h.indptr[1:] - held, held)

    def _batches(self, h: Histories, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Users with >= 2 events, in batches of similar length (bounded in users and padded events), batch
        order shuffled."""
        cfg = self.config
        users = np.flatnonzero(h.lengths >= 2)
        if cfg.max_epoch_users is not None and len(users) > cfg.max_epoch_users:
            users = np.sort(rng.choice(users, cfg.max_epoch_users, replace=False))
        users = users[np.argsort(h.lengths[users] + rng.random(len(users)), kind="stable")]
        L = self.segment_len
        cap = cfg.max_train_events or np.iinfo(np.int64).max
        padded = -(-np.minimum(h.lengths[users], cap) // L) * L  # ascending
        batches, start = [], 0
        while start < len(users):
            fits = max(
                1, min(cfg.batch_users, cfg.batch_events // int(padded[min(start + cfg.batch_users, len(users)) - 1]))
            )
            batches.append(users[start : start + fits])
            start += fits
        for b in rng.permutation(len(batches)):
            yield batches[b]

    def _loss(self, net: MemoryNet, batch: EventBatch, rng: np.random.Generator) -> torch.Tensor:
        """Next-item contrastive loss over in-batch targets and shared uniform negatives.

        With ``mask_seen`` the items already in a user's history are removed from that position's softmax
        (except the target itself), as they are removed from the ranking at evaluation.
        """
        users, _ = net(batch)  # (B, T, D)
        has_next = batch.valid[:, :-1] & batch.valid[:, 1:]  # (B, T - 1)
        queries = F.normalize(users[:, :-1][has_next], dim=-1)  # (P, D)
        targets = batch.items[:, 1:][has_next]  # (P,)
        n_items = len(net.items.text)
        if self.config.n_negatives >= n_items:
            candidates = torch.arange(n_items)
        else:
            sampled = torch.from_numpy(rng.integers(0, n_items, self.config.n_negatives))
            candidates = torch.unique(torch.cat([targets, sampled]))  # sorted, unique
        labels = torch.searchsorted(candidates, targets)  # (P,)
        item_vectors = F.normalize(net.items(candidates), dim=-1)  # (C, D)
        logits = queries @ item_vectors.T / self.config.temperature  # (P, C)
        if self.config.mask_seen:
            logits = logits.masked_fill(_seen_mask(batch, candidates, has_next, labels), float("-inf"))
        return F.cross_entropy(logits, labels)

    def _epoch(
        self,
        net: MemoryNet,
        h: Histories,
        optimizer: torch.optim.Optimizer,
        rng: np.random.Generator,
        average: WeightAverage | None = None,
    ) -> float:
        """One pass over ``h`` (``average`` follows every step); returns the mean loss."""
        net.train()
        losses = []
        for rows in self._batches(h, rng):
            loss = self._loss(net, self._padded(h, rows, self.config.max_train_events), rng)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            if average is not None:
                average.update(net)
            losses.append(loss.item())
        net.eval()
        return float(np.mean(losses)) if losses else 0.0

    def _refit(self, net: MemoryNet, h: Histories) -> None:
        """A few low learning-rate passes over training plus validation events, after early stopping."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + 1)
        lr = cfg.learning_rate * cfg.refit_lr_scale
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=cfg.weight_decay)
        for epoch in tqdm(range(cfg.refit_epochs), desc="refit on train+valid", disable=not cfg.show_progress):
            logger.info("refit epoch %d: loss %.4f", epoch, self._epoch(net, h, optimizer, rng))

    def _train(self, net: MemoryNet, train: Histories, valid_targets: np.ndarray) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        average = WeightAverage(net, cfg.ema_decay) if cfg.ema_decay is not None else None
        best, best_state, stale = -1.0, copy.deepcopy(net.state_dict()), 0
        epoch = 0
        bar = tqdm(range(cfg.epochs), desc="memory encoder", unit="epoch", disable=not cfg.show_progress)
        for epoch in bar:
            loss = self._epoch(net, train, optimizer, rng, average)
            use = average if average is not None and average.steps else None  # (no step: no user with a target)
            with use.applied(net) if use is not None else contextlib.nullcontext():
                ndcg = self._validate(train, valid_targets)
            bar.set_postfix(loss=f"{loss:.3f}", ndcg10=f"{ndcg:.4f}")
            logger.info("epoch %d: loss %.4f, validation NDCG@10 %.4f", epoch, loss, ndcg)
            if ndcg > best:
                state = copy.deepcopy(net.state_dict()) if use is None else use.state_dict(net)  # copies
                best, best_state, stale = ndcg, state, 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.best_ndcg_, self.epochs_ = best, epoch + 1

    def _validate(self, train: Histories, targets: np.ndarray) -> float:
        """NDCG@10 of the validation targets against the full catalogue, history items excluded."""
        users = np.flatnonzero((targets >= 0) & (train.lengths > 0))
        if len(users) > self.config.max_valid_users:
            users = np.sort(np.random.default_rng(self.config.seed).choice(users, self.config.max_valid_users, False))
        if len(users) == 0:
            return 0.0
        vectors = self.encode(train, users)  # (n, D)
        scores = vectors @ self.item_vectors().T  # (n, n_items)
        mask_seen(scores, train.select(users))
        target_scores = scores[np.arange(len(users)), targets[users]]
        rank = (scores > target_scores[:, None]).sum(axis=1)  # 0-based
        return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())

    # ------------------------------------------------------------------------------ inference
    def add_items(self, text_vectors: np.ndarray) -> MemoryEncoder:
        """A copy whose catalogue also holds items known by their text vectors only (appended rows, no learned
        residual), so that histories with these items can be encoded. Weights are unchanged, so every fitted
        item's vector and every memory state stay valid. Costs one copy of the encoder's arrays.

        Parameters
        ----------
        text_vectors: float32 ``(n_new, text_dim)`` text embeddings of the new items.
        """
        arrays = self.to_arrays()
        n_new = len(text_vectors)
        arrays["text"] = np.concatenate([arrays["text"], np.asarray(text_vectors, np.float32)])
        key = "net.items.residual.weight"
        if key in arrays:  # (n_items, dim): zero rows, and the new items are not "known", so the residual is off
            residual = arrays[key]
            arrays[key] = np.concatenate([residual, np.zeros((n_new, residual.shape[1]), residual.dtype)])
        return MemoryEncoder.from_arrays(self.config, arrays)

    def item_vectors(self) -> np.ndarray:
        """float32 ``(n_items, dim)``: L2-normalised vectors of the fitted catalogue."""
        check_is_fitted(self, ("net_",))
        with torch.inference_mode():
            return self.net_.eval().items.all_items().numpy()  # type: ignore[union-attr]

    def project_texts(self, text_vectors: np.ndarray) -> np.ndarray:
        """float32 ``(n, dim)``: vectors of items known only by their text (no learned residual): cold start."""
        check_is_fitted(self, ("net_",))
        with torch.inference_mode():
            text = torch.from_numpy(np.ascontiguousarray(text_vectors, np.float32))
            tower = self.net_.items  # type: ignore[union-attr]
            return F.normalize(tower.skip(text) + tower.proj(text), dim=-1).numpy()

    def encode(self, histories: Histories, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 ``(n, dim)`` L2-normalised user vectors of ``rows`` (default: all users) from their whole
        histories; zero vectors for empty histories."""
        return self.states(histories, rows).embeddings

    def states(self, histories: Histories, rows: np.ndarray | None = None) -> MemoryStates:
        """Read whole histories into :class:`MemoryStates` (memory after complete segments, tail, vectors)."""
        check_is_fitted(self, ("net_",))
        rows = np.arange(histories.n_users) if rows is None else np.asarray(rows, np.int64)
        none = np.full(len(rows), NO_TIME)
        return self._read(histories, rows, None, np.zeros(len(rows), np.int64), none)

    def _read(
        self, h: Histories, rows: np.ndarray, memory0: np.ndarray | None, committed0: np.ndarray, prev_time0: np.ndarray
    ) -> MemoryStates:
        """Fold the events of ``rows`` into memory, starting from ``memory0`` (None: the initial memory)."""
        net, cfg = cast(MemoryNet, self.net_), self.config.net
        n = len(rows)
        memory = np.empty((n, cfg.n_memory, cfg.dim), np.float32)
        embeddings = np.zeros((n, cfg.dim), np.float32)
        committed, prev_time = committed0.copy(), prev_time0.copy()
        tail_len = np.zeros(n, np.int64)
        order = np.argsort(-h.lengths[rows], kind="stable")  # longest first: active users are a prefix
        step = self.config.encode_batch_users
        with torch.inference_mode():
            net.eval()
            for b in range(0, n, step):
                idx = order[b : b + step]
                m0 = None if memory0 is None else torch.from_numpy(memory0[idx])
                out = self._read_batch(net, h, rows[idx], m0, committed0[idx], prev_time0[idx])
                memory[idx], embeddings[idx], n_commit, prev_time[idx], tail_len[idx] = out
                committed[idx] += n_commit
        return MemoryStates(h.user_ids[rows], memory, committed, prev_time, _tail(h, rows, tail_len), embeddings)

    def _read_batch(
        self,
        net: MemoryNet,
        h: Histories,
        rows: np.ndarray,
        memory0: torch.Tensor | None,
        committed0: np.ndarray,
        prev_time0: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """One batch of users sorted by length (longest first); see :meth:`_read`."""
        L = self.segment_len
        lengths = h.lengths[rows]
        n_full = np.where(lengths > 0, (lengths - 1) // L, 0)  # segments committed; the rest is the tail
        memory = net.initial_memory(len(rows)).clone() if memory0 is None else memory0.clone()  # (B, M, D)
        users = torch.zeros(len(rows), net.config.dim)
        starts = h.indptr[rows]
        for s in range(int(n_full.max(initial=0)) + 1):
            active = int((n_full >= s).sum() if s else (lengths > 0).sum())  # a prefix, lengths are sorted
            if active == 0:
                break
            r, seg_start = rows[:active], starts[:active] + s * L
            batch = self._segment(h, r, seg_start, h.indptr[r + 1], prev_time0[:active], committed0[:active])
            new_memory, out = net.step(memory[:active], batch)
            commit = torch.from_numpy(n_full[:active] > s)  # (active,)
            memory[:active] = torch.where(commit.view(-1, 1, 1), new_memory, memory[:active])
            last = torch.from_numpy(np.minimum(h.indptr[r + 1] - seg_start, L) - 1)  # (active,)
            final = ~commit
            users[:active][final] = out[final, last[final]]
        prev_time = np.where(n_full > 0, h.timestamps[np.maximum(starts + n_full * L - 1, 0)], prev_time0)
        embeddings = F.normalize(users, dim=-1).numpy()
        embeddings[lengths == 0] = 0.0
        return memory.numpy(), embeddings, n_full * L, prev_time, lengths - n_full * L

    def update(self, states: MemoryStates, new_events: Histories) -> MemoryStates:
        """Fold new events into saved states: O(new events + one segment) per user.

        ``new_events`` holds each user's new events, oldest first, for the users of ``states`` in the same
        order (empty histories allowed). Equals :meth:`states` on the concatenated histories.
        """
        check_is_fitted(self, ("net_",))
        if new_events.n_users != len(states.user_ids):
            raise DataError(f"new_events has {new_events.n_users} users but states has {len(states.user_ids)}.")
        combined = _concat(states.tail, new_events)
        return self._read(combined, np.arange(combined.n_users), states.memory, states.committed, states.prev_time)


# ---------------------------------------------------------------------------------- helpers
def _seen_mask(
    batch: EventBatch, candidates: torch.Tensor, has_next: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Boolean (P, C): candidate ``c`` was already read by position ``p``'s user (its target excluded)."""
    B, T = batch.items.shape
    C = len(candidates)
    where = torch.searchsorted(candidates, batch.items).clamp(max=C - 1)  # (B, T)
    present = batch.valid & (candidates[where] == batch.items)
    steps = torch.arange(T).expand(B, T)
    first = torch.full((B, C), T, dtype=torch.long)  # first position of each candidate in each history
    first.scatter_reduce_(1, torch.where(present, where, 0), torch.where(present, steps, T), reduce="amin")
    rows, cols = has_next.nonzero(as_tuple=True)  # (P,), (P,): user and position of each query
    seen = first[rows] <= cols.unsqueeze(1)  # (P, C)
    seen[torch.arange(len(labels)), labels] = False
    return seen


def _weight_stats(h: Histories) -> tuple[float, float]:
    if h.weights is None or len(h.weights) == 0:
        return 0.0, 1.0
    std = float(h.weights.std())
    return float(h.weights.mean()), std if std > 0 else 1.0


def _tail(h: Histories, rows: np.ndarray, tail_len: np.ndarray) -> Histories:
    """The last ``tail_len`` events of each of ``rows``."""
    return h.select(rows, h.indptr[rows + 1] - tail_len, tail_len)


def _concat(a: Histories, b: Histories) -> Histories:
    """Per user, ``a``'s events then ``b``'s (same users, same order)."""
    lengths = a.lengths + b.lengths
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dest_a = np.repeat(indptr[:-1], a.lengths) + (np.arange(len(a.item_idx)) - np.repeat(a.indptr[:-1], a.lengths))
    dest_b = np.repeat(indptr[:-1] + a.lengths, b.lengths) + (
        np.arange(len(b.item_idx)) - np.repeat(b.indptr[:-1], b.lengths)
    )
    out = {}
    for name in ("item_idx", "timestamps"):
        arr = np.empty(int(indptr[-1]), np.int64)
        arr[dest_a], arr[dest_b] = getattr(a, name), getattr(b, name)
        out[name] = arr
    weights = None
    if a.weights is not None or b.weights is not None:
        weights = np.zeros(int(indptr[-1]), np.float32)
        if a.weights is not None:
            weights[dest_a] = a.weights
        if b.weights is not None:
            weights[dest_b] = b.weights
    return Histories(a.user_ids, indptr, out["item_idx"], out["timestamps"], weights)
