"""Static-KV-cache decoder on the modules of a transformers `Qwen3ForCausalLM`.

Decoding a 5 Hz LM at batch 1 is memory-bound: every token streams all weights once. The decoder
therefore
- keeps K/V in preallocated tensors and prefills the prompt in one pass;
- runs the cond + uncond rows of CFG as one batch-2 forward (one weight stream for both);
- on CPU multiplies few-row float32 activations in whichever of `W @ x.T` / `F.linear` MKL streams
  the weight once with on this CPU's vendor (`few_rows_transposed`), and in bfloat16 runs long
  loops on a copy of the weights in oneDNN's blocked layout, q/k/v and gate/up each packed as one
  matrix (`packed_weights.py`);
- in eager mode attends only over the filled part of the cache, with the padding mask of the CFG
  batch computed once per prompt (on CPU through SDPA's flash kernel, which reads that slice of the
  cache in place);
- projects onto the 64 000 audio-code rows of the tied embedding only (of 217 204) while decoding codes;
- on CPU runs its one-token steps on the thread count measured fastest (`decode_threads.py`).

`step_static` is the same one-token step with fixed shapes (position as a device tensor, attention
over the whole cache under a mask): that is the form `torch.compile` / CUDA graphs can capture.
It is used when the decoder is built with `compile=True` or `ACESTEP_LM_COMPILE=1` (off by
default; it needs a working `torch.compile`, is meant for CUDA, and costs a compile up front).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..memory.dtypes import cpu_has_amx, cpu_vendor
from ..switches import env_flag
from .constants import AUDIO_CODE_BASE, IM_END_ID, NUM_VALID_CODES
from .decode_threads import DecodeThreads, requested_threads
from .packed_weights import MAX_ROWS, PackedWeights, eligible

_FEW_ROWS = 8  # up to this many activation rows the CPU float32 path may use `W @ x.T`
STATIC_CAPACITY = 4096  # the reference's max_model_len: one cache shape, so one compiled graph


@functools.lru_cache(maxsize=1)
def few_rows_transposed() -> bool:
    """Whether few-row float32 products on this CPU run as `W @ x.T` (else `F.linear`).

    Which one streams the weight once depends on MKL's code path for the vendor (2 rows, 0.6B LM
    shapes, one thread, weights from RAM): on AMD EPYC `F.linear` reads the weight about twice and
    `W @ x.T` is ~2x faster; on an Intel Xeon it is the other way round (13.3 vs 7.6 GB/s with
    AVX-512, 8.2 vs 7.4 GB/s with MKL held to AVX2). Unknown vendors keep `W @ x.T`.
    """
    return cpu_vendor() != "GenuineIntel"


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` for x [..., in]; weight [out, in]."""
    rows = x.numel() // x.shape[-1]
    if x.device.type == "cpu" and x.dtype == torch.float32 and rows <= _FEW_ROWS and few_rows_transposed():
        # MKL is fast for `W @ B` only when B = x.T is a transposed row-major x (a contiguous
        # [in, rows] B takes a path ~6x slower), hence the `contiguous()` on both sides.
        flat = x.reshape(rows, x.shape[-1]).contiguous()
        return torch.mm(weight, flat.t()).t().contiguous().view(*x.shape[:-1], weight.shape[0])
    # Not for bfloat16: there `W @ x.T` misses oneDNN and takes a generic kernel about 2x slower
    # than `F.linear` (0.6B LM shapes, 2 rows, AVX512-BF16).
    return F.linear(x, weight)


def compile_requested(flag: Optional[bool]) -> bool:
    if flag is not None:
        return bool(flag)
    return env_flag("ACESTEP_LM_COMPILE", False, "set 1 to decode through torch.compile, or 0 (or leave it "
                    "unset) to decode eagerly")


class KVCache(nn.Module):
    """K and V of every layer in two buffers [layers, batch, kv_heads, capacity, head_dim]."""

    def __init__(self, layers: int, batch: int, kv_heads: int, capacity: int, head_dim: int, device, dtype):
        super().__init__()
        shape = (layers, batch, kv_heads, capacity, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)


class StaticCacheDecoder:
    """Prefill / one-token decode over preallocated KV tensors, on the modules of a Qwen3ForCausalLM."""

    def __init__(self, model, compile: Optional[bool] = None):
        self.model = model
        cfg = model.config
        self.layers = list(model.model.layers)
        self.norm = model.model.norm
        self.embed = model.model.embed_tokens
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rope = getattr(cfg, "rope_parameters", None) or {}
        self.rope_theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 1e6)))
        weight = self.embed.weight
        self.device, self.dtype = weight.device, weight.dtype
        # The code rows are contiguous in the tied embedding: views, no copy.
        self.code_rows = weight[AUDIO_CODE_BASE:AUDIO_CODE_BASE + NUM_VALID_CODES]
        self.eos_row = weight[IM_END_ID:IM_END_ID + 1]
        self.cache: Optional[KVCache] = None
        self.capacity = (0, 0)
        self._cos = self._sin = None
        self.key_valid: Optional[torch.Tensor] = None  # [B, capacity] bool: False on left padding
        self.key_bias: Optional[torch.Tensor] = None   # [B, 1, 1, capacity] additive, or None
        self.has_padding = False
        self.threads = DecodeThreads(requested_threads()) if self.device.type == "cpu" else None
        self.packed: Optional[PackedWeights] = None  # set for the length of a `session` that packed
        self.use_static = compile_requested(compile)
        self._step = None
        if self.use_static:
            if not hasattr(torch, "compile"):
                raise RuntimeError("compile=True needs torch.compile (PyTorch >= 2.0)")
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._step = torch.compile(self.step_static, mode=mode, fullgraph=True, dynamic=False)

    @contextmanager
    def session(self, steps: int = 0):
        """Scope of one or more decoding loops (`steps` one-token steps expected in all).

        Where that is long enough and the CPU and free RAM allow (`packed_weights.py`), the weights
        are packed on entry and dropped when the outermost session that packed them ends."""
        packed_here = False
        if self.packed is None and eligible(self.embed.weight, steps):
            self.packed = PackedWeights.build(self._step_weight_groups())
            packed_here = self.packed is not None
        try:
            yield
        finally:
            if packed_here:
                self.packed = None

    @contextmanager
    def decoding(self, steps: int = 0):
        """Scope of a one-token-at-a-time loop of about `steps` steps: a `session`, and on CPU its
        steps pick their thread count (`decode_threads.py`); the caller's count is restored at the end."""
        with self.session(steps):
            if self.threads is None:
                yield
                return
            previous = self.threads.begin()
            try:
                yield
            finally:
                self.threads.end(previous)

    def _step_weight_groups(self) -> list[tuple[torch.Tensor, ...]]:
        """Every weight a one-token step multiplies by (the code head included), grouped by the
        activations they multiply: a layer's q/k/v and gate/up projections each form one group."""
        groups = []
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            groups += [(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight), (attn.o_proj.weight,),
                       (mlp.gate_proj.weight, mlp.up_proj.weight), (mlp.down_proj.weight,)]
        return groups + [(self.code_rows,)]

    def _project_each(self, x: torch.Tensor, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`x @ w.T` for each of `weights`: one product where they were packed as one group, else
        each through its own packed copy where it has one, else plain."""
        if len(weights) > 1 and self._packable(x):
            out = self.packed.linear(x, *weights)
            if out is not None:
                return out
        return tuple(self._project(x, w) for w in weights)

    def _project(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self._packable(x):
            out = self.packed.linear(x, weight)
            if out is not None:
                return out[0]
        return _project(x, weight)

    def _packable(self, x: torch.Tensor) -> bool:
        return self.packed is not None and x.numel() <= MAX_ROWS * x.shape[-1]

    # ---- cache ---------------------------------------------------------------------------------
    def reset(self, batch: int, length: int) -> None:
        """Make room for `batch` rows of `length` positions (reuses the buffers when they fit)."""
        cap_b, cap_l = self.capacity
        if self.use_static:
            length = max(length, STATIC_CAPACITY)
        if batch != cap_b or length > cap_l:
            length = max(length, cap_l if batch == cap_b else 0)
            length = (length + 255) // 256 * 256
            self.cache = None  # free the old buffers before allocating the new ones
            self.cache = KVCache(len(self.layers), batch, self.n_kv, length, self.head_dim, self.device, self.dtype)
            self.capacity = (batch, length)
            inv_freq = 1.0 / (self.rope_theta ** (
                torch.arange(0, self.head_dim, 2, dtype=torch.int64).to(device=self.device, dtype=torch.float)
                / self.head_dim))
            pos = torch.arange(length, device=self.device, dtype=torch.float)
            freqs = pos[:, None] * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            self._cos, self._sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
            self._key_pos = torch.arange(length, device=self.device)
            self.key_valid = torch.ones(batch, length, dtype=torch.bool, device=self.device)
            self.key_bias_full = torch.zeros(batch, 1, 1, length, device=self.device)
        else:
            self.key_valid.fill_(True)
            self.key_bias_full.zero_()
        self.key_bias = None
        self.has_padding = False

    def _mark_padding(self, start: int, attention_mask: torch.Tensor) -> None:
        end = start + attention_mask.shape[1]
        self.key_valid[:, start:end] = attention_mask.bool()
        self.key_bias_full.masked_fill_(~self.key_valid[:, None, None, :], float("-inf"))
        self.key_bias = self.key_bias_full
        self.has_padding = True

    # ---- one layer -----------------------------------------------------------------------------
    @staticmethod
    def _rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _qkv(self, layer, x, cos, sin):
        bsz, length, _ = x.shape
        attn = layer.self_attn
        q, k, v = self._project_each(x, attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
        q = q.view(bsz, length, self.n_heads, self.head_dim)
        k = k.view(bsz, length, self.n_kv, self.head_dim)
        v = v.view(bsz, length, self.n_kv, self.head_dim)
        q = attn.q_norm(q).transpose(1, 2)
        k = attn.k_norm(k).transpose(1, 2)
        q = q * cos + self._rotate_half(q) * sin
        k = k * cos + self._rotate_half(k) * sin
        return q, k, v.transpose(1, 2)

    def _attend_one(self, q, keys, values, bias, valid=None):
        """Attention of one query per row [B, H, 1, D] over keys / values [B, KV, S, D].

        `bias` [B, 1, 1, S] is additive (or None); `valid` the same mask as booleans (or None where
        nothing is hidden). On CPU the eager steps go through SDPA's flash kernel, which reads the
        `[:end]` slice of the cache in place (oneDNN's half-precision bmm copies such a slice first),
        in the query layout measured fastest for the dtype and CPU (one thread, 2 x 8 KV heads):
        - half precision on a CPU with AMX: the 16 one-query heads with `enable_gqa` (the kernel maps
          them onto their KV head without copying K/V): 1.2-1.5x faster than the folded layout over
          300-1300 keys on a Xeon;
        - otherwise the query heads sharing a KV head folded into that head's query rows. Without AMX
          (AVX512-BF16 EPYC) the kernel's bfloat16 `enable_gqa` path is 4.5-6.5x slower than the
          folded one (1.34 ms against 0.21 ms per layer at 181 keys, 9.6 against 2.1 ms at 1300);
          in float32 `enable_gqa` is no faster, and the folded layout is 1.2-1.3x faster than the
          two matmuls below.
        `step_static` passes an additive bias over the whole cache and no `valid`: it keeps the
        matmul form, the one its captured graph was built for.
        """
        bsz = q.shape[0]
        group = self.n_heads // self.n_kv
        eager_cpu = q.device.type == "cpu" and (bias is None or valid is not None)
        if eager_cpu and q.dtype != torch.float32 and cpu_has_amx():
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=valid, enable_gqa=group > 1)
        q = q.reshape(bsz, self.n_kv, group, self.head_dim).contiguous()
        if eager_cpu:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=valid)
            return out.reshape(bsz, self.n_heads, 1, self.head_dim)
        # K @ q.T rather than q @ K.T: the same numbers, in the layout MKL streams K fastest.
        scores = torch.matmul(keys, q.transpose(-1, -2)).transpose(-1, -2).float() * self.head_dim ** -0.5
        if bias is not None:
            scores = scores + bias
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        return torch.matmul(probs, values).reshape(bsz, self.n_heads, 1, self.head_dim)

    def _finish_layer(self, layer, h, out):
        bsz, length = h.shape[:2]
        h = h + self._project(out.transpose(1, 2).reshape(bsz, length, -1), layer.self_attn.o_proj.weight)
        mlp = layer.mlp
        x = layer.post_attention_layernorm(h)
        gate, up = self._project_each(x, mlp.gate_proj.weight, mlp.up_proj.weight)
        x = mlp.act_fn(gate) * up
        return h + self._project(x, mlp.down_proj.weight)

    # ---- eager forward (prefill and CPU decode) --------------------------------------------------
    def forward(self, input_ids: torch.Tensor, start: int, attention_mask: Optional[torch.Tensor] = None,
                last_only: bool = False):
        """Hidden states after the final norm for `input_ids` [B, T] at positions start..start+T-1.

        `attention_mask` [B, T] marks left padding of a prefill; like the reference, padded slots
        keep their positions (0..L-1 for every row) and are hidden from every later query.
        `last_only`: return the last position only ([B, 1, H]); the last layer then attends and runs
        its MLP for that one query (a prefill needs only the next token's logits, and every layer's
        keys and values are still cached for all positions).
        """
        bsz, length = input_ids.shape
        end = start + length
        if attention_mask is not None and not bool(attention_mask.all()):
            self._mark_padding(start, attention_mask)
        if length > 1:
            q_pos = self._key_pos[start:end]
            k_pos = self._key_pos[:end]
            mask = (k_pos[None, :] <= q_pos[:, None])[None] & self.key_valid[:, None, :end]
            mask |= (k_pos[None, :] == q_pos[:, None])[None]  # padded queries see themselves: no NaN
            mask, valid = mask[:, None], None
        else:  # one new token: every filled key is causal; only padding needs hiding
            mask = self.key_bias[..., :end] if self.has_padding else None
            valid = self.key_valid[:, None, None, :end] if self.has_padding else None
        cos = self._cos[start:end][None, None]
        sin = self._sin[start:end][None, None]
        h = self.embed(input_ids)
        k_all, v_all = self.cache.k, self.cache.v
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(h), cos, sin)
            k_all[i, :, :, start:end] = k
            v_all[i, :, :, start:end] = v
            if last_only and length > 1 and i == len(self.layers) - 1:
                q, h, mask = q[:, :, -1:], h[:, -1:], mask[:, :, -1:]
            if length == 1:
                out = self._attend_one(q, k_all[i, :, :, :end], v_all[i, :, :, :end], mask, valid)
            else:
                out = F.scaled_dot_product_attention(
                    q, k_all[i, :, :, :end], v_all[i, :, :, :end], attn_mask=mask,
                    enable_gqa=self.n_kv != self.n_heads,
                )
            h = self._finish_layer(layer, h, out)
        return self.norm(h)

    # ---- static-shape one-token step (torch.compile / CUDA graphs) -------------------------------
    def step_static(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Final hidden state [B, H] of `tokens` [B, 1] at position `pos` (long tensor [1])."""
        cos = self._cos.index_select(0, pos)[None, None]
        sin = self._sin.index_select(0, pos)[None, None]
        visible = (self._key_pos <= pos)[None, :] & self.key_valid  # [B, capacity]
        bias = torch.zeros(visible.shape, device=self.device).masked_fill(~visible, float("-inf"))
        bias = bias[:, None, None, :]
        h = self.embed(tokens)
        k_all, v_all = self.cache.k, self.cache.v
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(h), cos, sin)
            k_all[i].index_copy_(2, pos, k)
            v_all[i].index_copy_(2, pos, v)
            out = self._attend_one(q, k_all[i], v_all[i], bias)
            h = self._finish_layer(layer, h, out)
        return self.norm(h)[:, -1]

    def decode(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Final hidden state [B, H] of one new token per row at position `pos`."""
        if self.threads is not None:
            return self.threads.run(lambda: self._decode(tokens, pos))
        return self._decode(tokens, pos)

    def _decode(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        if self._step is None:
            return self.forward(tokens, pos)[:, -1]
        if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        pos_t = torch.full((1,), pos, dtype=torch.long, device=self.device)
        return self._step(tokens, pos_t).clone()

    # ---- heads ---------------------------------------------------------------------------------
    def full_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return _project(hidden, self.embed.weight).float()

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over codes 0..63999 only (while EOS is blocked)."""
        return self._project(hidden, self.code_rows).float()

    def codes_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over [code 0..63999, EOS]."""
        return torch.cat([self.code_logits(hidden), _project(hidden, self.eos_row).float()], dim=-1)
