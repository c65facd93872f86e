# Copyright 2026 The slowfast_hf Authors. Licensed under the Apache License, Version 2.0.
"""
Hybrid decoder layers: chosen layers of an unmodified Transformers decoder also cross-attend to the slow tokens.

A hybrid layer keeps every parameter of the base layer and gains one submodule, `self_attn.cross_attn`
([`SlowFastCrossAttention`]). The cross term is added through the `AttentionInterface` seam: a Transformers attention
module picks its attention function by `self.config._attn_implementation`, so a hybrid layer's attention module holds
a [`HybridAttentionConfig`], a view of the decoder's config that names the registered wrapper (`"slowfast_sdpa"` for
`"sdpa"`, and so on). The wrapper runs the base implementation unchanged and adds the gated cross-attention to its
output before `o_proj`. Everything users see (the decoder's config, `set_attn_implementation`, per-sub-config
`attn_implementation`, the attention masks) keeps Transformers' own names. The slow keys/values live in the decoder
cache (`slow_key_values.py`) and reach the wrapper, with the positions that receive the cross term, through the
`**kwargs` that Transformers forwards from the model to every attention call.
"""

import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import is_torchdynamo_compiling

from .configuration_slowfast import GATE_KINDS
from .slow_key_values import SlowKeyValues

ATTENTION_PREFIX = "slowfast_"
WRAPPED_IMPLEMENTATIONS = (
    "eager",
    "sdpa",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "flex_attention",
)
SLOW_FAST_CONTEXT_KWARG = "slow_fast_context"
SLOW_TOKEN_CHUNK_SIZE = 8192  # slow tokens normed and projected at a time by `project_slow_tokens`


class SlowFastCrossAttention(nn.Module):
    """
    The parameters a hybrid layer adds to its attention module, and the gated cross-attention they compute
    (DESIGN §2, steps 3-6). Queries are the layer's own post-rotary self-attention queries; keys and values come
    from the slow tokens (through the layer's own input norm) with no rotary embedding.
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        num_key_value_heads: int,
        head_dim: int,
        kv_bias: bool,
        gate_kind: str = "dynamic_tanh_warmup",
    ):
        super().__init__()
        if gate_kind not in GATE_KINDS:
            raise ValueError(f"`gate_kind` must be one of {GATE_KINDS}, got {gate_kind!r}.")
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.gate_kind = gate_kind
        # rows: [keys of every KV head ; values of every KV head], like `[Wk ; Wv]`
        self.kv_proj = nn.Linear(hidden_size, 2 * num_key_value_heads * head_dim, bias=kv_bias)
        if gate_kind == "dynamic_tanh_warmup":
            self.gate_proj = nn.Linear(num_attention_heads * head_dim, 1)
        self.gate_alpha = nn.Parameter(torch.zeros(1))

    def project_slow_tokens(self, normed_slow_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) normed slow tokens -> keys and values, each (B, Hkv, N, d) (strided views of one tensor)."""
        key_value = self.kv_proj(normed_slow_tokens)
        key, value = rearrange(key_value, "b n (kv h d) -> kv b h n d", kv=2, h=self.num_key_value_heads)
        return key, value

    def gate(self, attn_output: torch.Tensor) -> torch.Tensor:
        """(B, L, H, d) self-attention output -> (B, L, 1, 1) gate."""
        warm_up = torch.tanh(self.gate_alpha)
        if self.gate_kind == "tanh_warmup":
            return warm_up.view(1, 1, 1, 1)
        per_token = torch.tanh(self.gate_proj(rearrange(attn_output, "b l h d -> b l (h d)")))
        return (per_token * warm_up).unsqueeze(-1)

    def forward(
        self,
        query: torch.Tensor,
        attn_output: torch.Tensor,
        slow_key: torch.Tensor,
        slow_value: torch.Tensor,
        key_mask: torch.Tensor,
        query_mask: torch.Tensor,
        scaling: float,
        query_positions: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """
        With `query_positions`, only the positions that receive the cross term are computed: they are gathered,
        attend the slow tokens and are added back, so the cost follows the number of text tokens, not the sequence
        length (prefill). Without, every position is computed and masked: no shape depends on the data (decoding,
        `torch.compile`).

        Args:
            query: (B, H, L, d) post-rotary self-attention queries.
            attn_output: (B, L, H, d) self-attention output, before `o_proj`.
            slow_key, slow_value: (S, Hkv, N, d), S = B, or S = 1: one video's slow tokens shared by every row.
            key_mask: (S, N) bool, True for the slow tokens to attend; every row has at least one True.
            query_mask: (B, L) bool, the positions that receive the cross term.
            query_positions: `query_index` (B, Lq), the positions that receive the cross term, first
                `query_valid.sum(1)` of each row, and `query_valid` (B, Lq) bool, False for a row's padding entries.
        Returns:
            (B, L, H, d): `attn_output + gate * cross` at the query positions, `attn_output` elsewhere.
        """
        batch_size, num_heads, _, head_dim = query.shape
        num_slow_rows, num_key_value_heads = slow_key.shape[:2]
        if num_slow_rows not in (1, batch_size):
            raise ValueError(
                f"The slow keys/values have {num_slow_rows} rows for a batch of {batch_size}: expected one per row, "
                "or one shared by every row."
            )
        if query_positions is None:
            selected_query, selected_output, gate_mask = query, attn_output, query_mask
        else:
            query_index, gate_mask = query_positions
            selected_query = query.gather(2, query_index[:, None, :, None].expand(-1, num_heads, -1, head_dim))
            output_index = query_index[:, :, None, None].expand(-1, -1, num_heads, head_dim)
            selected_output = attn_output.gather(1, output_index)  # (B, Lq, H, d)
        num_queries = selected_query.shape[2]
        # Grouped-query attention with each KV head's query heads (and, for shared slow tokens, every row) folded
        # into the query axis (the queries are independent: no causal mask), so that SDPA reads every slow key/value
        # once per KV head rather than once per query head: up to 2x faster when decoding, where reading the slow
        # keys/values is the cost.
        cross = F.scaled_dot_product_attention(
            rearrange(selected_query, "(s b) (h g) q d -> s h (b g q) d", s=num_slow_rows, h=num_key_value_heads),
            slow_key.to(query.dtype),
            slow_value.to(query.dtype),
            attn_mask=key_mask[:, None, None, :],
            scale=scaling,
        )  # (S, Hkv, B/S·G·Lq, d)
        cross = rearrange(cross, "s h (b g q) d -> (s b) q (h g) d", b=batch_size // num_slow_rows, q=num_queries)
        gated = (self.gate(selected_output) * cross * gate_mask[:, :, None, None]).to(attn_output.dtype)
        if query_positions is None:
            return attn_output + gated
        return attn_output.scatter_add(1, output_index, gated)


@dataclass
class SlowFastAttentionContext:
    """
    What the attention wrapper needs in one forward pass; travels to it through the decoder's `**kwargs`.

    With `slow_tokens` (a prompt's forward pass), each hybrid layer projects them itself, inside its own forward, and
    stores its keys/values in `slow_key_values`: that is where FSDP has gathered the layer's sharded parameters,
    device maps have put them on the layer's device (or loaded them from the offload), and activation checkpointing
    recomputes the projection with the rest of the layer. Without them (later decoding steps), `slow_key_values`
    already holds every hybrid layer's keys/values.
    """

    slow_key_values: SlowKeyValues
    query_mask: torch.Tensor  # (B, L) bool, positions of this forward pass that receive the cross term
    slow_tokens: torch.Tensor | None = None  # (B, N, D), to project in each hybrid layer
    layers: nn.ModuleList | None = None  # the decoder layers, with `slow_tokens`
    layers_reached: set[int] = field(default_factory=set)  # hybrid layers whose attention received this context

    @cached_property
    def query_positions(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """
        The positions that receive the cross term, gathered when that saves work (several positions per row: a
        prefill); None (every position computed and masked) for one position per row (a decoding step).
        """
        if self.query_mask.shape[1] == 1:
            return None
        counts = self.query_mask.sum(dim=1)
        num_queries = int(counts.max()) if self.query_mask.numel() else 0
        # each row's query positions first, in order: (B, Lq) with Lq the largest count in the batch
        order = torch.argsort((~self.query_mask).to(torch.int8), dim=1, stable=True)
        query_valid = torch.arange(num_queries, device=counts.device)[None, :] < counts[:, None]
        return order[:, :num_queries], query_valid


class HybridAttentionConfig:
    """
    A hybrid attention module's view of the decoder's config: every attribute is the decoder config's own (reads and
    writes go through to it, so the two never drift apart), except `_attn_implementation`, which names the registered
    hybrid wrapper of the decoder's implementation (`"sdpa"` -> `"slowfast_sdpa"`). Only that module's attention
    dispatch reads it; the wrapper shows the base name again while the base implementation runs (flash attention reads
    it from the module to pick its kernel).
    """

    def __init__(self, decoder_config):
        object.__setattr__(self, "decoder_config", decoder_config)
        object.__setattr__(self, "_showing_base_name", False)

    @property
    def _attn_implementation(self) -> str:
        base = self.decoder_config._attn_implementation
        return base if self._showing_base_name else hybrid_attention_implementation(base)

    @contextmanager
    def showing_base_name(self):
        object.__setattr__(self, "_showing_base_name", True)
        try:
            yield
        finally:
            object.__setattr__(self, "_showing_base_name", False)

    def __getattr__(self, name):
        if name in ("decoder_config", "_showing_base_name"):  # not set yet (copy/pickle build the object bare)
            raise AttributeError(name)
        return getattr(self.decoder_config, name)

    def __setattr__(self, name, value):
        setattr(self.decoder_config, name, value)

    def __repr__(self):
        return f"HybridAttentionConfig({self._attn_implementation!r}, decoder_config={self.decoder_config!r})"


def _base_attention_function(module: nn.Module, implementation: str):
    if implementation != "eager":
        return ALL_ATTENTION_FUNCTIONS[implementation]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise ValueError(f"{type(module).__name__} has no module-level `eager_attention_forward` to wrap.")
    return eager


def _make_hybrid_attention(implementation: str):
    def hybrid_attention(module, query, key, value, attention_mask, **kwargs):
        context: SlowFastAttentionContext | None = kwargs.pop(SLOW_FAST_CONTEXT_KWARG, None)
        base_attention = _base_attention_function(module, implementation)
        if isinstance(module.config, HybridAttentionConfig):
            with module.config.showing_base_name():
                attn_output, attn_weights = base_attention(module, query, key, value, attention_mask, **kwargs)
        else:
            attn_output, attn_weights = base_attention(module, query, key, value, attention_mask, **kwargs)
        cross_attn = getattr(module, "cross_attn", None)
        if cross_attn is None or context is None:
            return attn_output, attn_weights
        # under `torch.compile` every position is computed and masked: no shape depends on the data
        query_positions = None if is_torchdynamo_compiling() else context.query_positions
        if not is_torchdynamo_compiling():
            context.layers_reached.add(module.layer_idx)
        slow_key_values = context.slow_key_values
        if context.slow_tokens is not None:
            layer = context.layers[module.layer_idx]
            slow_key_values.key_values[module.layer_idx] = project_layer_slow_tokens(
                layer, context.slow_tokens, query.device
            )
        if query_positions is not None and query_positions[0].shape[1] == 0:
            return attn_output, attn_weights
        slow_key, slow_value = slow_key_values.key_values[module.layer_idx]
        attn_output = cross_attn(
            query,
            attn_output,
            slow_key,
            slow_value,
            key_mask=slow_key_values.attention_key_mask.to(query.device),
            query_mask=context.query_mask.to(query.device),
            scaling=module.scaling,
            query_positions=None if query_positions is None else tuple(t.to(query.device) for t in query_positions),
        )
        return attn_output, attn_weights

    hybrid_attention.__name__ = f"{ATTENTION_PREFIX}{implementation}_attention"
    return hybrid_attention


for _implementation in WRAPPED_IMPLEMENTATIONS:
    AttentionInterface.register(ATTENTION_PREFIX + _implementation, _make_hybrid_attention(_implementation))


def hybrid_attention_implementation(implementation: str | None) -> str:
    """The registered wrapper name for a base attention implementation (`"sdpa"` -> `"slowfast_sdpa"`)."""
    base = (implementation or "sdpa").removeprefix(ATTENTION_PREFIX)
    if base not in WRAPPED_IMPLEMENTATIONS:
        raise ValueError(
            f"Hybrid layers support the attention implementations {WRAPPED_IMPLEMENTATIONS}, got {implementation!r}."
        )
    return ATTENTION_PREFIX + base


def decoder_layers(language_model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Transformers decoder (`XModel`) or causal LM (`XForCausalLM`)."""
    decoder = language_model
    if not hasattr(decoder, "layers") and hasattr(decoder, "get_decoder"):
        decoder = decoder.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(language_model).__name__} is not a Llama/Qwen-style decoder: it has no `layers` ModuleList."
        )
    return layers


def hybrid_layer_indices(language_model: nn.Module) -> list[int]:
    return [i for i, layer in enumerate(decoder_layers(language_model)) if hasattr(layer.self_attn, "cross_attn")]


def _check_supported(language_model: PreTrainedModel, layers: nn.ModuleList) -> None:
    name = type(language_model).__name__
    if not isinstance(language_model, PreTrainedModel) or not getattr(language_model, "_supports_attention_backend"):
        raise ValueError(
            f"{name} does not dispatch its attention through Transformers' `AttentionInterface`, which hybrid "
            "layers need; supported decoders are Llama/Qwen-style models such as Llama, Qwen2, Qwen3 and Mistral."
        )
    for index, layer in enumerate(layers):
        attention = getattr(layer, "self_attn", None)
        missing = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if not hasattr(attention, n)]
        missing += [n for n in ("input_layernorm",) if not hasattr(layer, n)]
        if attention is not None:
            missing += [n for n in ("layer_idx", "scaling", "head_dim") if not hasattr(attention, n)]
        if missing:
            raise ValueError(
                f"{name} layer {index} is not a Llama/Qwen-style decoder layer: it lacks {', '.join(missing)} "
                "(a `self_attn` with separate q/k/v/o projections and an `input_layernorm` are required)."
            )


def add_hybrid_layers(
    language_model: PreTrainedModel,
    hybrid_layers: Iterable[int],
    gate_kind: str = "dynamic_tanh_warmup",
    init_cross_kv_from_lm: bool = True,
) -> PreTrainedModel:
    """
    Turn layers of an already-built Transformers decoder into hybrid layers, in place.

    Each chosen layer's attention module gains `cross_attn` ([`SlowFastCrossAttention`]): a slow-token key/value
    projection (initialised from the layer's `[Wk ; Wv]` when `init_cross_kv_from_lm`), a gate and a warm-up scalar
    `α = 0`, so the model computes exactly what it computed before until `α` moves. Existing parameter names and
    values are untouched. The chosen layers' attention modules dispatch to the matching `slowfast_*` wrapper of
    the decoder's attention implementation; the decoder's config keeps its own name.

    Args:
        language_model: a Llama/Qwen-style `XModel` or `XForCausalLM` (Llama, Qwen2, Qwen3, Mistral, ...).
        hybrid_layers: indices of the layers to make hybrid.
        gate_kind: `"dynamic_tanh_warmup"` (released) or `"tanh_warmup"`.
        init_cross_kv_from_lm: initialise the slow K/V projection from the layer's own K/V projections.
    """
    layers = decoder_layers(language_model)
    _check_supported(language_model, layers)
    hybrid_layers = list(hybrid_layers)
    for index in hybrid_layers:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(layers):
            raise ValueError(f"`hybrid_layers` entries must be layer indices in [0, {len(layers)}), got {index!r}.")
        if hybrid_layers.count(index) > 1 or hasattr(layers[index].self_attn, "cross_attn"):
            raise ValueError(f"Layer {index} is already a hybrid layer (`hybrid_layers`={hybrid_layers}).")
    if gate_kind not in GATE_KINDS:
        raise ValueError(f"`gate_kind` must be one of {GATE_KINDS}, got {gate_kind!r}.")

    config = language_model.config
    for index in hybrid_layers:
        attention = layers[index].self_attn
        weight = attention.k_proj.weight
        cross_attn = SlowFastCrossAttention(
            hidden_size=attention.k_proj.in_features,
            num_attention_heads=attention.q_proj.out_features // attention.head_dim,
            num_key_value_heads=attention.k_proj.out_features // attention.head_dim,
            head_dim=attention.head_dim,
            kv_bias=attention.k_proj.bias is not None,
            gate_kind=gate_kind,
        ).to(device=weight.device, dtype=weight.dtype)
        init_cross_attention(cross_attn, attention, config, init_cross_kv_from_lm)
        attention.cross_attn = cross_attn
        attention.config = HybridAttentionConfig(config)
    hybrid_attention_implementation(config._attn_implementation)  # refuse an implementation the wrapper lacks
    return language_model


@torch.no_grad()
def init_cross_attention(
    cross_attn: SlowFastCrossAttention, attention: nn.Module, config, init_cross_kv_from_lm: bool
) -> None:
    """DESIGN §2 initialisation, through `transformers.initialization` so loaded parameters are left alone."""
    std = getattr(config, "initializer_range", 0.02)
    if init_cross_kv_from_lm:
        init.copy_(cross_attn.kv_proj.weight, torch.cat([attention.k_proj.weight, attention.v_proj.weight]))
        if cross_attn.kv_proj.bias is not None:
            init.copy_(cross_attn.kv_proj.bias, torch.cat([attention.k_proj.bias, attention.v_proj.bias]))
    else:
        init.normal_(cross_attn.kv_proj.weight, mean=0.0, std=std)
        if cross_attn.kv_proj.bias is not None:
            init.zeros_(cross_attn.kv_proj.bias)
    if cross_attn.gate_kind == "dynamic_tanh_warmup":
        init.normal_(cross_attn.gate_proj.weight, mean=0.0, std=std)
        init.zeros_(cross_attn.gate_proj.bias)
    init.zeros_(cross_attn.gate_alpha)


def project_slow_tokens(
    language_model: nn.Module, slow_tokens: torch.Tensor, slow_token_mask: torch.Tensor
) -> SlowKeyValues:
    """
    Project padded slow tokens (B, N, D) once for every hybrid layer: the layer's own `input_layernorm`, then its
    slow K/V projection. `slow_token_mask` (B, N) is True for real tokens.

    The tokens go through `SLOW_TOKEN_CHUNK_SIZE` at a time, so that the normed tokens and the projection's output
    never exist for all N tokens at once (long videos: N is T·h·w/4), and each layer's keys and values are
    concatenated into contiguous tensors: every decoding step reads them, and SDPA reads strided views about 3x slower
    on CPU.
    """
    key_values = {
        index: project_layer_slow_tokens(layer, slow_tokens, layer.self_attn.cross_attn.kv_proj.weight.device)
        for index, layer in enumerate(decoder_layers(language_model))
        if hasattr(layer.self_attn, "cross_attn")
    }
    return SlowKeyValues(key_values, slow_token_mask, slow_token_mask.any(dim=1))


def project_layer_slow_tokens(
    layer: nn.Module, slow_tokens: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    One hybrid layer's slow keys/values, on `device`: (B, N, D) slow tokens -> the layer's `input_layernorm`, its
    slow K/V projection -> key, value, each (B, Hkv, N, d) and contiguous (see `project_slow_tokens`).
    """
    cross_attn = layer.self_attn.cross_attn
    chunks = [
        cross_attn.project_slow_tokens(layer.input_layernorm(chunk))
        for chunk in slow_tokens.to(device).split(SLOW_TOKEN_CHUNK_SIZE, dim=1)
    ]
    key, value = (torch.cat(parts, dim=2) for parts in zip(*chunks))
    return key, value


__all__ = [
    "HybridAttentionConfig",
    "SlowFastCrossAttention",
    "SlowFastAttentionContext",
    "SlowKeyValues",
    "add_hybrid_layers",
    "hybrid_attention_implementation",
    "project_layer_slow_tokens",
    "project_slow_tokens",
]
