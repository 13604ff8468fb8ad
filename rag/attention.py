"""Attention that keeps only per-segment masses, and the segments it sums over.

`segment_attention` is registered with transformers as an attention implementation (`ATTENTION`).
It computes ordinary attention and folds each layer's weights over the keys into per-segment masses
with one matmul, (heads, K) @ membership (K, segments), handing them to an `AttentionReducer`: only
those masses are kept, never the attention maps.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

# Segments of the prompt (+ the answer) that attention is summed over. Chunks come last so that the
# other indices do not depend on how many chunks a prompt has: chunk i is segment FIRST_CHUNK + i.
SINK = 0  # the first token: attention parks there when it has nowhere better to go
INSTRUCTION = 1  # the system instruction (the cached prefix, less the sink)
QUESTION = 2  # the question and the template around it (role markers, "Sources:", "[n] title" glue)
GENERATED = 3  # the answer's own tokens so far
FIRST_CHUNK = 4
SEGMENT_NAMES = ("sink", "instruction", "question", "generated")

ATTENTION = "sightline"  # the attention implementation our models are loaded with (registered below)


class AttentionReducer:
    """Receives each layer's attention weights during one forward pass and keeps their sums over the
    prompt's segments for the query rows that predict answer tokens. One per forward pass: the
    REST service may decode several requests at once in threads."""

    def __init__(self, membership: torch.Tensor, n_layers: int, prompt_len: int) -> None:
        self.membership = membership  # (N, S) one-hot: position -> segment, N >= every key length
        self.token_layers = range(n_layers)[attribution_layers(n_layers)]
        self.prompt_len = prompt_len
        self.rows: slice = slice(None)  # which query rows of this forward pass to keep
        self.out: torch.Tensor | None = None  # (R, L, H, S) where the kept rows' masses go
        self.tokens: torch.Tensor | None = None  # (R, P) mass per prompt token, attribution layers
        self.layers_seen = 0

    def target(self, rows: slice, out: torch.Tensor, tokens: torch.Tensor) -> None:
        self.rows, self.out, self.tokens = rows, out, tokens

    def __call__(self, layer: int, weights: torch.Tensor) -> None:
        assert self.out is not None and self.tokens is not None
        n_keys = weights.shape[-1]
        w = weights[0, :, self.rows].float()  # (H, R, K)
        masses = w @ self.membership[:n_keys]  # (H, R, S)
        self.out[:, layer] = masses.transpose(0, 1)  # (R, H, S)
        if layer in self.token_layers:  # mean over heads and attribution layers, per prompt token
            self.tokens += w[..., : self.prompt_len].mean(0) / len(self.token_layers)  # (R, P)
        self.layers_seen += 1


def attribution_layers(n_layers: int) -> slice:
    """The layers whose attention says which source a token drew on: the upper half. The lower
    layers attend by position (the first and last chunk get most of their attention whatever they
    say), the upper ones by content: on SQuAD questions with the answer in one of three chunks the
    upper half picked the right chunk far more often."""
    return slice(n_layers // 2, n_layers)


def segment_attention(
    module: Any,  # the attention layer; its layer_idx says where the masses go
    query: torch.Tensor,  # (B, H, Q, D)
    key: torch.Tensor,  # (B, kvH, K, D)
    value: torch.Tensor,  # (B, kvH, K, D)
    attention_mask: torch.Tensor | None,  # (B, 1, Q, K) additive float, from eager_mask
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    attention_reducer: AttentionReducer | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Eager attention (identical to transformers' eager) that hands its weights to the reducer.

    Grouped-query heads are handled by folding each KV head's query group into the query length,
    so keys and values are never repeated: at Q=1 this costs about what sdpa does."""
    B, H, Q, D = query.shape
    kvH, K = key.shape[1], key.shape[2]
    g = H // kvH  # query heads per KV head; head h uses KV head h // g
    scaling = D**-0.5 if scaling is None else scaling
    q = query.reshape(B, kvH, g * Q, D)
    scores = torch.matmul(q, key.transpose(2, 3)) * scaling  # (B, kvH, g*Q, K)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(B, kvH, g, Q, K)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None, :, :K]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)  # (B, kvH, g, Q, K)
    if attention_reducer is not None:
        attention_reducer(module.layer_idx, weights.view(B, H, Q, K))
    out = torch.matmul(weights.view(B, kvH, g * Q, K), value)  # (B, kvH, g*Q, D)
    return out.view(B, H, Q, D).transpose(1, 2), None  # (B, Q, H, D) as transformers expects


AttentionInterface.register(ATTENTION, segment_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)


