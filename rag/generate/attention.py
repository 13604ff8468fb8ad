"""Attention that keeps only per-segment masses, and the segments it sums over.

`segment_attention` is registered with transformers as an attention implementation (`ATTENTION`).
Its output comes from SDPA; for the query rows an `AttentionReducer` keeps (the last prompt row in a
prefill, every row in a decoding step or teacher forcing) it also computes the softmax weights and
folds them over the keys into per-segment masses with one matmul, (heads, K) @ membership
(K, segments): only those masses are kept, never the attention maps. `eager_segment_attention`
(`EAGER_ATTENTION`) computes every row's weights, as transformers' eager does: the reference.
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

ATTENTION = "sightline"  # the attention implementation our models are loaded with (registered below)
EAGER_ATTENTION = "sightline-eager"  # the same masses, every row's weights computed: the reference


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
        """weights: (1, H, R, K), the softmax weights of the kept rows only."""
        assert self.out is not None and self.tokens is not None
        n_keys = weights.shape[-1]
        w = weights[0].float()  # (H, R, K)
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
    """Attention whose output comes from SDPA and whose softmax weights are computed only for the
    query rows the reducer keeps: a prefill of P tokens that keeps the last row never materialises
    the (heads, P, P) maps. Softcapped attention (SDPA has no softcap) runs eagerly."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    mask = None if attention_mask is None else attention_mask[..., : key.shape[2]]
    if softcap is not None:
        return eager_segment_attention(module, query, key, value, attention_mask, scaling, dropout, softcap,
                                       attention_reducer)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True
    )  # (B, H, Q, D)
    if attention_reducer is not None:
        rows = attention_reducer.rows
        kept_mask = None if mask is None else mask[:, :, rows]
        weights = _softmax_weights(query[:, :, rows], key, kept_mask, scaling, None)
        attention_reducer(module.layer_idx, weights)
    return out.transpose(1, 2), None  # (B, Q, H, D) as transformers expects


def eager_segment_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    attention_reducer: AttentionReducer | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Eager attention (identical to transformers' eager) that hands the kept rows' weights to the
    reducer: every row's weights are computed. The reference `segment_attention` is tested against,
    and the only path for softcapped attention."""
    B, H, Q, D = query.shape
    kvH, K = key.shape[1], key.shape[2]
    scaling = D**-0.5 if scaling is None else scaling
    mask = None if attention_mask is None else attention_mask[..., :K]
    weights = _softmax_weights(query, key, mask, scaling, softcap)  # (B, H, Q, K)
    if attention_reducer is not None:
        attention_reducer(module.layer_idx, weights[:, :, attention_reducer.rows])
    g = H // kvH
    out = torch.matmul(weights.view(B, kvH, g * Q, K), value)  # (B, kvH, g*Q, D)
    return out.view(B, H, Q, D).transpose(1, 2), None


def _softmax_weights(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float, softcap: float | None
) -> torch.Tensor:
    """softmax(q k^T * scaling + mask) as (B, H, Q, K). Grouped-query heads are handled by folding
    each KV head's query group into the query length, so keys are never repeated."""
    B, H, Q, D = query.shape
    kvH, K = key.shape[1], key.shape[2]
    g = H // kvH  # query heads per KV head; head h uses KV head h // g
    scores = torch.matmul(query.reshape(B, kvH, g * Q, D), key.transpose(2, 3)) * scaling  # (B, kvH, g*Q, K)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(B, kvH, g, Q, K)
    if mask is not None:
        scores = scores + mask[:, :, None]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return weights.view(B, H, Q, K)


AttentionInterface.register(ATTENTION, segment_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)
AttentionInterface.register(EAGER_ATTENTION, eager_segment_attention)
AttentionMaskInterface.register(EAGER_ATTENTION, eager_mask)


