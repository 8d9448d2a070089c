"""The text-memory user encoder as torch modules: readable in one file, with shapes on every reshape.

A user's history is read in fixed-size segments of ``L`` events. A small set of ``M`` memory slots is carried
from segment to segment. Attention runs both ways between memory and segment:

- *read*: the transformer blocks run over ``[memory (M), events (L)]``; events attend to every memory slot and
  causally to the earlier events of the segment, memory slots attend to memory only. So the output at event
  ``t`` summarises the whole history up to ``t`` and nothing after it (no future event leaks in through the
  memory);
- *write*: after the blocks, the memory slots attend to the memory and to every event output of the segment
  (cross-attention plus MLP, then LayerNorm so that the memory stays bounded over thousands of segments); the
  result is the memory of the next segment (only for complete segments).

The user embedding after event ``t`` is read out from that event's output and the memory it read. Time and
memory per user are linear in the history and constant per segment: nothing grows with the history length.

Items are scored through a learned projection of their (frozen) text embeddings plus, optionally, a learned
residual per item seen in training (zero for new items, so a new item needs only its text).

The architecture's settings, :class:`MemoryNetConfig`, live in :mod:`recsys.models.memory_config` (no torch
there, so loading a saved model does not import it) and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from recsys.models.memory_config import MemoryNetConfig

__all__ = ["EventBatch", "ItemTower", "MemoryNet", "MemoryNetConfig"]

N_GAP_BUCKETS = 32
N_POSITION_BUCKETS = 32


@dataclass
class EventBatch:
    """Padded events of ``B`` users, ``T`` a multiple of the segment length.

    items: long (B, T) catalogue rows (0 where padded); gaps: long (B, T) time-gap buckets; positions: long (B, T)
    absolute-position buckets; weights: float (B, T) standardised weights; valid: bool (B, T).
    """

    items: torch.Tensor
    gaps: torch.Tensor
    positions: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor

    def segment(self, s: int, length: int) -> EventBatch:
        cut = slice(s * length, (s + 1) * length)
        return EventBatch(
            self.items[:, cut], self.gaps[:, cut], self.positions[:, cut], self.weights[:, cut], self.valid[:, cut]
        )


class ItemTower(nn.Module):
    """Item embeddings: ``W text + residual`` (the residual only for items seen in training)."""

    text: torch.Tensor
    known: torch.Tensor

    def __init__(self, text: torch.Tensor, config: MemoryNetConfig) -> None:
        super().__init__()
        self.register_buffer("text", text.float(), persistent=False)  # (n_items, text_dim), frozen
        self.register_buffer("known", torch.zeros(len(text), dtype=torch.bool), persistent=False)
        self.proj = nn.Sequential(nn.Linear(config.text_dim, config.dim), nn.GELU(), nn.Linear(config.dim, config.dim))
        self.skip = nn.Linear(config.text_dim, config.dim, bias=False)
        self.residual = nn.Embedding(len(text), config.dim) if config.id_residual else None
        if self.residual is not None:
            nn.init.zeros_(self.residual.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Unnormalised item vectors ``(*idx.shape, dim)``."""
        text = self.text[idx]  # (..., text_dim)
        out = self.skip(text) + self.proj(text)
        if self.residual is not None:
            out = out + self.residual(idx) * self.known[idx].unsqueeze(-1)
        return out

    def all_items(self) -> torch.Tensor:
        """``(n_items, dim)`` L2-normalised vectors of the whole catalogue."""
        return F.normalize(self(torch.arange(len(self.text), device=self.text.device)), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with a boolean ``allowed`` mask of shape (B, 1, S, S)."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # 3x (B, H, S, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, S, D))  # (B, S, D)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: MemoryNetConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.n_heads, config.dropout)
        self.mlp = nn.Sequential(
            nn.Linear(config.dim, 4 * config.dim),
            nn.GELU(),
            nn.Linear(4 * config.dim, config.dim),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), allowed)
        return x + self.mlp(self.norm2(x))


def segment_mask(valid: torch.Tensor, n_memory: int) -> torch.Tensor:
    """Boolean (B, 1, M + L, M + L) for the read pass: which key each query may attend to.

    Memory rows see the memory only; event rows see all memory and the earlier (or same) valid events. Every
    row sees the memory, so no row is fully masked.
    """
    B, L = valid.shape
    S = n_memory + L
    allowed = torch.ones(B, S, S, dtype=torch.bool, device=valid.device)
    allowed[:, :, n_memory:] = valid.unsqueeze(1)  # keys: padded events are invisible
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    allowed[:, n_memory:, n_memory:] &= causal  # (B, L, L)
    allowed[:, :n_memory, n_memory:] = False  # memory does not read the segment in the read pass
    return allowed.unsqueeze(1)


class MemoryWriter(nn.Module):
    """Write a segment into memory: memory slots attend to ``[memory, event outputs]``, then an MLP."""

    def __init__(self, config: MemoryNetConfig) -> None:
        super().__init__()
        self.n_heads, D = config.n_heads, config.dim
        self.norm_q, self.norm_kv, self.norm_mlp, self.norm_out = (nn.LayerNorm(D) for _ in range(4))
        self.q, self.kv, self.out = nn.Linear(D, D), nn.Linear(D, 2 * D), nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, memory: torch.Tensor, events: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, M, D = memory.shape
        H = self.n_heads
        context = self.norm_kv(torch.cat([memory, events], dim=1))  # (B, M + L, D)
        q = self.q(self.norm_q(memory)).view(B, M, H, D // H).transpose(1, 2)  # (B, H, M, d)
        k, v = self.kv(context).view(B, -1, 2, H, D // H).permute(2, 0, 3, 1, 4)  # 2x (B, H, M + L, d)
        keys = torch.cat([torch.ones(B, M, dtype=torch.bool, device=valid.device), valid], dim=1)  # (B, M + L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keys.view(B, 1, 1, -1))  # (B, H, M, d)
        m = memory + self.out(y.transpose(1, 2).reshape(B, M, D))
        return self.norm_out(m + self.mlp(self.norm_mlp(m)))  # (B, M, D)


class MemoryNet(nn.Module):
    """Segment-recurrent transformer over event embeddings, with ``M`` memory slots carried across segments."""

    def __init__(self, text: torch.Tensor, config: MemoryNetConfig) -> None:
        super().__init__()
        self.config = config
        self.items = ItemTower(text, config)
        self.gap = nn.Embedding(N_GAP_BUCKETS, config.dim)
        self.position = nn.Embedding(N_POSITION_BUCKETS, config.dim)
        self.slot = nn.Embedding(config.segment_len, config.dim)  # position inside the segment
        self.weight = nn.Linear(1, config.dim, bias=False)
        self.memory_init = nn.Parameter(torch.randn(config.n_memory, config.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.writer = MemoryWriter(config)
        self.norm = nn.LayerNorm(config.dim)
        self.readout = nn.Linear(2 * config.dim, config.dim)
        self.input_dropout = nn.Dropout(config.dropout)

    def embed(self, events: EventBatch) -> torch.Tensor:
        """Event embeddings (B, L) -> (B, L, D) for one segment."""
        L = events.items.shape[1]
        x = self.items(events.items) + self.gap(events.gaps) + self.position(events.positions)
        x = x + self.slot(torch.arange(L, device=x.device))  # (B, L, D)
        if self.config.use_weights:
            x = x + self.weight(events.weights.unsqueeze(-1))
        return self.input_dropout(x * events.valid.unsqueeze(-1))

    def initial_memory(self, batch: int) -> torch.Tensor:
        return self.memory_init.unsqueeze(0).expand(batch, -1, -1)  # (B, M, D)

    def step(self, memory: torch.Tensor, events: EventBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """One segment. Returns (memory written by this segment (B, M, D), user vectors per event (B, L, D)).

        The caller keeps the old memory for users whose segment is not complete.
        """
        M = memory.shape[1]
        x = torch.cat([memory, self.embed(events)], dim=1)  # (B, M + L, D)
        allowed = segment_mask(events.valid, M)
        for block in self.blocks:
            x = block(x, allowed)
        h = self.norm(x[:, M:])  # (B, L, D)
        read = self.norm(x[:, :M]).mean(dim=1, keepdim=True).expand_as(h)  # (B, L, D) the memory as read
        users = self.readout(torch.cat([h, read], dim=-1))  # (B, L, D)
        return self.writer(memory, x[:, M:], events.valid), users

    def forward(self, events: EventBatch, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Read whole padded histories ``(B, T)``, ``T = n_segments * L``.

        Returns (user vectors after every event (B, T, D), unnormalised; the memory after the last complete
        segment of each user (B, M, D)).
        """
        B, T = events.items.shape
        L = self.config.segment_len
        if T % L:
            raise ValueError(f"padded length {T} is not a multiple of segment_len={L}.")
        memory = self.initial_memory(B) if memory is None else memory
        outputs = []
        for s in range(T // L):
            segment = events.segment(s, L)
            new_memory, users = self.step(memory, segment)
            complete = segment.valid.all(dim=1).view(B, 1, 1)  # (B, 1, 1)
            memory = torch.where(complete, new_memory, memory)
            outputs.append(users)
        return torch.cat(outputs, dim=1), memory  # (B, T, D), (B, M, D)


def gap_bucket(gaps: torch.Tensor) -> torch.Tensor:
    """Time gaps in seconds (long) -> buckets 0..31: 0 for the first event, then ~log2 of minutes."""
    minutes = gaps.clamp(min=0).float() / 60.0
    bucket = 1 + torch.floor(torch.log2(1.0 + minutes)).long()
    return torch.where(gaps < 0, torch.zeros_like(bucket), bucket).clamp(0, N_GAP_BUCKETS - 1)


def position_bucket(index: torch.Tensor) -> torch.Tensor:
    """Absolute event index (long) -> buckets 0..31 on a log2 scale (so 10^5 events still fit)."""
    return torch.floor(torch.log2(1.0 + index.float()) * 1.5).long().clamp(0, N_POSITION_BUCKETS - 1)


def init_weights(net: MemoryNet) -> None:
    """Start from the zero-shot text model, then learn corrections.

    Linear and embedding weights are small (std 0.02), except: the item tower's ``skip`` is a scaled orthogonal
    projection of the text space (cosines between item texts are kept, exactly when ``dim == text_dim``) and its
    MLP branch starts at zero; the readout starts as the identity on the event's own output. So an untrained
    net scores "items whose text is like the last item's", and training only has to improve on that.
    """
    for name, param in net.named_parameters():
        if param.dim() >= 2 and "residual" not in name:
            nn.init.normal_(param, std=0.02)
        elif name.endswith("bias"):
            nn.init.zeros_(param)
    text_dim, dim = net.config.text_dim, net.config.dim
    with torch.no_grad():
        nn.init.orthogonal_(net.items.skip.weight, gain=math.sqrt(max(text_dim / dim, 1.0)))
        nn.init.zeros_(cast(nn.Linear, net.items.proj[-1]).weight)
        for table in (net.gap, net.position, net.slot, net.weight):  # inputs start as the item vector alone
            table.weight.zero_()
        net.readout.weight.zero_()
        net.readout.weight[:, :dim].copy_(torch.eye(dim))
