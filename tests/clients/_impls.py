"""Public RoPE and attention implementations, as shipped and with injected bugs, each run on
fixed inputs and judged by rope_ref.testing.compare / assert_attention_close.

Shared by the conformance tests (tests/clients/test_clients.py) and the page generator
(scripts/make_conformance.py). Nothing is installed here: each implementation imports
its library when it runs, and ``Missing`` (raised when the import fails) turns into a skip.

An implementation ``Impl`` describes what it claims to compute (a ``rope_ref.Rope`` and the
dtype under test), and ``run()`` returns the outputs it produced for fixed inputs, as NumPy
float64 arrays, together with the input and positions of each. ``bug`` variants are the same
code with one mistake injected; ``expect`` names the diagnosis family that must come first.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import rope_ref as rr
from rope_ref import scaling as S
from rope_ref.testing import compare

os.environ.setdefault("KERAS_BACKEND", "torch")  # keras-hub on PyTorch

#: rows of every RoPE run start at these positions (position ranges of the page's table)
OFFSETS = (0, 3_000, 60_000, 1_000_000, 16_000_000)
SEQ = 32
HEADS = 2
SEED = 20_240_601


class Missing(Exception):
    """The implementation's library is not installed (the reason is the message)."""


def need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a library failing to load (no shared object)
        raise Missing(
            f"{module} is not installed or does not load ({type(e).__name__}: {e})"
        ) from None


@dataclass
class Output:
    """One output of an implementation: ``actual`` (float64 values of the output), the input
    ``x`` (float64 values of what the implementation received), the positions (broadcasting
    against ``x.shape[:-1]``) and the role (xPos only)."""

    label: str
    actual: np.ndarray
    x: np.ndarray
    positions: np.ndarray
    role: str = "query"


@dataclass
class Impl:
    name: str  #: row name
    library: str  #: distribution name
    module: str  #: import name
    rope: rr.Rope | None  #: what it claims to compute (None for attention rows)
    dtype: str  #: dtype under test
    run: Callable[[], list[Output]] = field(repr=False)
    bug: str | None = None  #: injected bug (None: as shipped)
    expect: str | None = None  #: diagnosis family that must explain a bug
    expect_label: str | None = None  #: the output that must fail (e.g. "k" for a bug in k)
    note: str = ""
    attention: Callable[[bool], Any] | None = field(default=None, repr=False)


def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def token_positions(offsets: tuple[int, ...] = OFFSETS, seq: int = SEQ) -> np.ndarray:
    """(batch, seq) int64 positions: row b runs offsets[b] .. offsets[b] + seq - 1."""
    return np.asarray(offsets, dtype=np.int64)[:, None] + np.arange(seq, dtype=np.int64)


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        from rope_ref.testing._diagnose import bf16

        return bf16(np.asarray(a, dtype=np.float32)).astype(np.float64)
    return np.asarray(a).astype(dtype).astype(np.float64)


def x_values(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Normal values exactly representable in ``dtype`` (float64 array)."""
    return _round(rng().standard_normal(shape), dtype)


# ------------------------------------------------------------------------------- verdicts
@dataclass
class Verdict:
    label: str
    report: Any
    warnings: list[str]


def judge(impl: Impl, *, strict: bool = False) -> list[Verdict]:
    """Compare every output of ``impl`` with rope_ref (the exact result rounded to the dtype
    under test) and return the reports (RopeToleranceWarnings recorded, not raised)."""
    assert impl.rope is not None
    out = []
    with warnings.catch_warnings():  # the libraries' own deprecation notes are not ours
        warnings.simplefilter("ignore")
        outputs = impl.run()
    for o in outputs:
        want = _round(rr.apply_rope(o.x, o.positions, impl.rope, role=o.role), impl.dtype)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rep = compare(
                o.actual,
                want,
                rope=impl.rope,
                positions=o.positions,
                x=o.x,
                role=o.role,
                dtype=impl.dtype,
                strict=strict,
            )
        out.append(Verdict(o.label, rep, [str(w.message) for w in caught]))
    return out


# ------------------------------------------------------------------------------- torch helpers
def _torch() -> Any:
    return need("torch")


def _t(a: np.ndarray, dtype: str) -> Any:
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, dtype))


def _np(t: Any) -> np.ndarray:
    return t.detach().to(_torch().float64).cpu().numpy()


# ------------------------------------------------------------------------------- HF transformers
def _hf_llama_config(head_dim: int, theta: float, rope_scaling: dict | None) -> Any:
    tf = need("transformers")
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    if rope_scaling:
        params.update(rope_scaling)
    return tf.LlamaConfig(
        hidden_size=HEADS * head_dim,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=head_dim,
        max_position_embeddings=131072,
        rope_parameters=params,
    )


def hf_llama_run(
    head_dim: int,
    theta: float,
    rope_scaling: dict | None,
    dtype: str,
    bug: str | None = None,
) -> Callable[[], list[Output]]:
    """LlamaRotaryEmbedding + apply_rotary_pos_emb (bhsd, unsqueeze_dim=1), q and k."""

    def run() -> list[Output]:
        torch = _torch()
        llama = need("transformers.models.llama.modeling_llama")
        impl_theta = 500_000.0 if bug == "base" else theta
        scaling = dict(rope_scaling or {})
        if bug == "yarn-beta":
            scaling["beta_fast"] = 16.0
        if bug == "llama3-low":
            scaling["low_freq_factor"] = 2.0
        emb = llama.LlamaRotaryEmbedding(_hf_llama_config(head_dim, impl_theta, scaling))
        pos = token_positions()
        b = pos.shape[0]
        q64 = x_values((b, HEADS, SEQ, head_dim), dtype)
        k64 = _round(rng().standard_normal((b, HEADS, SEQ, head_dim)) * 0.5 + 0.1, dtype)
        q, k = _t(q64, dtype), _t(k64, dtype)
        pid = torch.from_numpy(pos)
        if bug == "shift":
            pid = pid + 1
        if bug == "bf16-positions":
            pid = pid.to(torch.bfloat16)
        cos, sin = emb(q, pid)
        if bug == "attention-factor":
            cos, sin = cos / emb.attention_scaling, sin / emb.attention_scaling
        if bug == "layout":  # HF tables with GPT-J's rotate_every_two pairs
            h = head_dim // 2
            c = cos[..., :h].repeat_interleave(2, -1).unsqueeze(1)
            s = sin[..., :h].repeat_interleave(2, -1).unsqueeze(1)

            def every_two(t: Any) -> Any:
                return torch.stack((-t[..., 1::2], t[..., ::2]), -1).flatten(-2)

            q2, k2 = q * c + every_two(q) * s, k * c + every_two(k) * s
        else:
            q2, k2 = llama.apply_rotary_pos_emb(q, k, cos, sin)
        if bug == "k-only":
            cos_k, sin_k = emb(k, pid + 1)
            _, k2 = llama.apply_rotary_pos_emb(q, k, cos_k, sin_k)
        p = pos[:, None, :]
        return [Output("q", _np(q2), q64, p), Output("k", _np(k2), k64, p)]

    return run


def hf_neox_run(dtype: str, bug: str | None = None) -> Callable[[], list[Output]]:
    """GPT-NeoX: partial rotary (rotary_pct 0.25 of 96) with linear factor 3 (the rotary
    embedding class and apply_rotary_pos_emb of modeling_gpt_neox)."""
    head_dim = 96

    def run() -> list[Output]:
        torch = _torch()
        tf = need("transformers")
        neox = need("transformers.models.gpt_neox.modeling_gpt_neox")
        params: dict[str, Any] = {
            "rope_type": "linear",
            "factor": 3.0,
            "rope_theta": 10_000.0,
            "partial_rotary_factor": 0.25,
        }
        if bug == "no-scaling":
            params = {"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.25}
        cfg = tf.GPTNeoXConfig(
            hidden_size=HEADS * head_dim,
            num_attention_heads=HEADS,
            max_position_embeddings=131072,
            rope_parameters=params,
        )
        emb = neox.GPTNeoXRotaryEmbedding(cfg)
        pos = token_positions()
        b = pos.shape[0]
        q64 = x_values((b, HEADS, SEQ, head_dim), dtype)
        k64 = _round(rng().standard_normal((b, HEADS, SEQ, head_dim)) * 2.0, dtype)
        q, k = _t(q64, dtype), _t(k64, dtype)
        pid = torch.from_numpy(pos)
        if bug == "shift":
            pid = pid - 1
        cos, sin = emb(q, pid)
        if bug == "channels":  # the rotary block taken from channels 8.. instead of 0..
            r = cos.shape[-1]
            qs, ks = q[..., 8 : 8 + r], k[..., 8 : 8 + r]
            qr, kr = neox.apply_rotary_pos_emb(qs, ks, cos, sin)
            q2, k2 = q.clone(), k.clone()
            q2[..., 8 : 8 + r], k2[..., 8 : 8 + r] = qr, kr
        else:
            q2, k2 = neox.apply_rotary_pos_emb(q, k, cos, sin)
        p = pos[:, None, :]
        return [Output("q", _np(q2), q64, p), Output("k", _np(k2), k64, p)]

    return run


def hf_qwen2vl_run(dtype: str, bug: str | None = None) -> Callable[[], list[Output]]:
    """Qwen2-VL M-RoPE (sections 16/24/24 of head_dim 128): Qwen2VLRotaryEmbedding on
    (3, batch, seq) positions, then apply_rotary_pos_emb of the model."""
    head_dim = 128

    def run() -> list[Output]:
        torch = _torch()
        mod = need("transformers.models.qwen2_vl.modeling_qwen2_vl")
        cfgmod = need("transformers.models.qwen2_vl.configuration_qwen2_vl")
        cfg = cfgmod.Qwen2VLTextConfig(
            hidden_size=HEADS * head_dim,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS,
            max_position_embeddings=131072,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [16, 24, 24],
            },
        )
        emb = mod.Qwen2VLRotaryEmbedding(cfg)
        tok = token_positions(offsets=(0, 3_000, 60_000))
        g = np.random.default_rng(SEED + 7)
        h_w = [tok + g.integers(0, 40, tok.shape) for _ in range(2)]
        grid = np.stack([tok, *h_w])  # temporal, height, width
        b = tok.shape[0]
        q64 = x_values((b, HEADS, SEQ, head_dim), dtype)
        q = _t(q64, dtype)
        pid = torch.from_numpy(grid)
        if bug == "shift":
            pid = pid + 1
        cos, sin = emb(q, pid)
        q2, _ = (
            mod.apply_rotary_pos_emb(q, q, cos, sin)
            if hasattr(mod, "apply_rotary_pos_emb")
            else mod.apply_multimodal_rotary_pos_emb(q, q, cos, sin, [16, 24, 24])
        )
        return [Output("q", _np(q2), q64, grid[:, :, None, :])]

    return run


# ------------------------------------------------------------------------------- lucidrains
def lucidrains_run(
    dtype: str, offsets: tuple[int, ...], bug: str | None = None, theta: float = 10_000.0
) -> Callable[[], list[Output]]:
    """rotary-embedding-torch: RotaryEmbedding(dim=64).rotate_queries_or_keys on
    (batch, heads, seq, dim), one call per row with its offset (interleaved pairs)."""
    head_dim = 64

    def run() -> list[Output]:
        torch = _torch()
        ret = need("rotary_embedding_torch")
        emb = ret.RotaryEmbedding(dim=head_dim, theta=5e5 if bug == "base" else theta)
        pos = token_positions(offsets)
        x64 = x_values((len(offsets), HEADS, SEQ, head_dim), dtype)
        rows = []
        for i, off in enumerate(offsets):
            t = _t(x64[i : i + 1], dtype)
            rows.append(emb.rotate_queries_or_keys(t, offset=int(off) + (bug == "shift")))
        y = torch.cat(rows)
        return [Output("q", _np(y), x64, pos[:, None, :])]

    return run


# ------------------------------------------------------------------------------- torchtune
TT_OFFSETS = (0, 3_000, 60_000)


def torchtune_run(kind: str, dtype: str, bug: str | None = None) -> Callable[[], list[Output]]:
    """torchtune RotaryPositionalEmbeddings / Llama3ScaledRoPE on (batch, seq, heads, dim)
    with input_pos (batch, seq); max_seq_len 65536 (its cache), so positions below 2**16."""
    head_dim = 128

    def run() -> list[Output]:
        torch = _torch()
        pe = need("torchtune.modules")
        if kind == "plain":
            mod = pe.RotaryPositionalEmbeddings(dim=head_dim, max_seq_len=65536, base=10_000)
        else:
            mm = need("torchtune.models.llama3_1")
            mod = mm.Llama3ScaledRoPE(
                dim=head_dim,
                max_seq_len=65536,
                base=500_000,
                scale_factor=4 if bug == "scale-factor" else 8,
            )
        pos = token_positions(TT_OFFSETS)
        x64 = x_values((len(TT_OFFSETS), SEQ, HEADS, head_dim), dtype)
        ip = torch.from_numpy(pos + (1 if bug == "shift" else 0))
        y = mod(_t(x64, dtype), input_pos=ip)
        return [Output("q", _np(y), x64, pos[:, :, None])]

    return run


# ------------------------------------------------------------------------------- keras-hub
def keras_run(
    rope_type: str, factor: float, dtype: str, bug: str | None = None
) -> Callable[[], list[Output]]:
    """keras-hub RotaryEmbedding layer (PyTorch backend) on (batch, seq, heads, dim) with
    explicit positions."""
    head_dim = 64

    def run() -> list[Output]:
        torch = _torch()
        if os.environ.get("KERAS_BACKEND", "torch") != "torch":
            raise Missing("KERAS_BACKEND is not torch")
        layers = need("keras_hub.layers")
        kw: dict[str, Any] = {
            "max_wavelength": 10_000,
            "scaling_factor": factor,
            "rope_type": rope_type,
        }
        if rope_type == "yarn":
            kw.update(original_max_position_embeddings=4096, beta_fast=32.0, beta_slow=1.0)
        layer = layers.RotaryEmbedding(**kw)
        pos = token_positions()
        x64 = x_values((len(OFFSETS), SEQ, HEADS, head_dim), dtype)
        pt = torch.from_numpy((pos + (1 if bug == "shift" else 0)).astype(np.float32))
        y = layer(_t(x64, dtype), positions=pt)
        return [Output("q", _np(y), x64, pos[:, :, None])]

    return run


def keras_rope(rope_type: str, factor: float) -> rr.Rope:
    d = 64
    if rope_type == "linear":
        return rr.Rope(d, scaling=None if factor == 1.0 else S.Linear(factor))
    if rope_type == "dynamic":
        # keras-hub divides every frequency by factor ** (d / (d - 2)) (pair 0 included):
        # linear scaling by that factor (not HF's dynamic NTK)
        return rr.Rope(d, scaling=S.Linear(factor ** (d / (d - 2))))
    return rr.Rope(d, scaling=S.YaRN(factor, 4096, beta_fast=32.0, beta_slow=1.0))


# ------------------------------------------------------------------------------- MLX
def mlx_run(
    dtype: str, traditional: bool, scale: float, bug: str | None = None
) -> Callable[[], list[Output]]:
    """mx.fast.rope on the CPU, (batch, heads, seq, dim), one call per row with its offset."""
    head_dim = 64

    def run() -> list[Output]:
        mx = need("mlx.core")
        pos = token_positions()
        x64 = x_values((len(OFFSETS), HEADS, SEQ, head_dim), dtype)
        rows = []
        for i, off in enumerate(OFFSETS):
            a = mx.array(x64[i : i + 1].astype(np.float32)).astype(getattr(mx, dtype))
            y = mx.fast.rope(
                a,
                head_dim,
                traditional=(not traditional) if bug == "layout" else traditional,
                base=5e5 if bug == "base" else 10_000.0,
                scale=scale,
                offset=int(off) + (bug == "shift"),
            )
            rows.append(np.asarray(y.astype(mx.float32)).astype(np.float64))
        return [Output("q", np.concatenate(rows), x64, pos[:, None, :])]

    return run


# ------------------------------------------------------------------------------- JAX
def jax_run(dtype: str, bug: str | None = None) -> Callable[[], list[Output]]:
    """A jitted jnp RoPE as in Flax models (Gemma's apply_rope: timescale = base**fraction,
    sinusoid = positions / timescale, half layout), (batch, seq, heads, dim)."""
    head_dim = 128

    def run() -> list[Output]:
        jax = need("jax")
        jnp = need("jax.numpy")
        base = 5e5 if bug == "base" else 10_000.0

        @jax.jit
        def apply_rope(inputs: Any, positions: Any) -> Any:
            first_half, second_half = jnp.split(inputs, 2, axis=-1)
            fraction = 2 * jnp.arange(0, head_dim // 2) / head_dim
            timescale = base**fraction
            p = positions.astype(jnp.bfloat16) if bug == "bf16-positions" else positions
            sinusoid_inp = p[..., jnp.newaxis] / timescale[jnp.newaxis, jnp.newaxis, :]
            sinusoid_inp = sinusoid_inp[..., jnp.newaxis, :]
            sin, cos = jnp.sin(sinusoid_inp), jnp.cos(sinusoid_inp)
            first_part = first_half * cos - second_half * sin
            second_part = second_half * cos + first_half * sin
            return jnp.concatenate([first_part, second_part], axis=-1).astype(inputs.dtype)

        pos = token_positions()
        x64 = x_values((len(OFFSETS), SEQ, HEADS, head_dim), dtype)
        xj = jnp.asarray(x64.astype(np.float32)).astype(getattr(jnp, dtype))
        pj = jnp.asarray((pos + (1 if bug == "shift" else 0)).astype(np.int32))
        y = apply_rope(xj, pj)
        return [
            Output("q", np.asarray(y.astype(jnp.float32)).astype(np.float64), x64, pos[:, :, None])
        ]

    return run


# ------------------------------------------------------------------------------- SDPA
def sdpa_check(
    dtype: str,
    *,
    sq: int,
    sk: int,
    hq: int,
    hk: int,
    causal: bool,
    bug: str | None = None,
    with_rope: bool = False,
) -> Callable[[bool], Any]:
    """torch.nn.functional.scaled_dot_product_attention judged by assert_attention_close.
    Causal with Sq < Sk is bottom-right (decode-style: the last query sees every key), as
    rope_ref defines it by positions; SDPA's is_causal is top-left, so an explicit mask is
    what a correct caller passes. Returns a function of ``strict`` giving the report (or
    raising AttentionMismatch)."""

    def check(strict: bool) -> Any:
        torch = _torch()
        F = need("torch.nn.functional")
        from rope_ref.testing import assert_attention_close

        g = np.random.default_rng(SEED + sq + sk)
        d = 64
        q64 = _round(g.standard_normal((1, hq, sq, d)), dtype)
        k64 = _round(g.standard_normal((1, hk, sk, d)), dtype)
        v64 = _round(g.standard_normal((1, hk, sk, d)), dtype)
        q, k, v = _t(q64, dtype), _t(k64, dtype), _t(v64, dtype)
        rope = rr.Rope(d, base=10_000.0) if with_rope else None
        qpos = np.arange(sk - sq, sk)
        kpos = np.arange(sk)
        if rope is not None:  # the kernel rotates q and k with HF's tables (float32 angles)
            llama = need("transformers.models.llama.modeling_llama")
            emb = llama.LlamaRotaryEmbedding(_hf_llama_config(d, 10_000.0, None))
            cq, sq_ = emb(q, torch.from_numpy(qpos)[None])
            ck, sk_ = emb(k, torch.from_numpy(kpos)[None])
            q = q * cq.unsqueeze(1) + llama.rotate_half(q) * sq_.unsqueeze(1)
            if bug != "rope-q-only":
                k = k * ck.unsqueeze(1) + llama.rotate_half(k) * sk_.unsqueeze(1)
        kw: dict[str, Any] = {}
        if hq != hk:
            if bug == "gqa-tiled":
                k, v = k.repeat(1, hq // hk, 1, 1), v.repeat(1, hq // hk, 1, 1)
            else:
                kw["enable_gqa"] = True
        if causal:
            if bug == "causal-top-left":
                kw["is_causal"] = True
            else:
                keep = torch.from_numpy(kpos[None, :] <= qpos[:, None])
                kw["attn_mask"] = keep
        if bug == "scale-doubled":
            kw["scale"] = 2.0 / math.sqrt(d)
        out = F.scaled_dot_product_attention(q, k, v, **kw)
        return assert_attention_close(
            _np(out),
            q64,
            k64,
            v64,
            rope=rope,
            q_positions=qpos if rope is not None or causal else None,
            k_positions=kpos if rope is not None or causal else None,
            causal=causal,
            dtype=dtype,
            strict=strict,
        )

    return check


# ------------------------------------------------------------------------------- the registry
def registry() -> list[Impl]:
    """Every implementation row: as shipped first, then the injected bugs."""
    R = rr.Rope
    llama = R(128, base=10_000.0)
    yarn_cfg = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    yarn = R(128, base=1_000_000.0, scaling=S.YaRN(4.0, 32768))
    l3_cfg = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    l3 = R(128, base=500_000.0, scaling=S.Llama3(8.0, 1.0, 4.0, 8192))
    neox = R(96, rotary_dim=24, scaling=S.Linear(3.0))
    qwen = R(128, base=1_000_000.0, scaling=S.MRope((16, 24, 24)))
    luc = R(64, layout="interleaved")
    tt = R(128, layout="interleaved")
    tt3 = R(128, base=500_000.0, layout="interleaved", scaling=S.Llama3(8.0, 1.0, 4.0, 8192))
    mlx_half = R(64)
    mlx_lin = R(64, layout="interleaved", scaling=S.Linear(4.0))
    jx = R(128)

    def hf(
        name: str,
        rope: rr.Rope,
        theta: float,
        cfg: dict | None,
        dtype: str,
        bug: str | None = None,
        expect: str | None = None,
        label: str | None = None,
    ) -> Impl:
        return Impl(
            name,
            "transformers",
            "transformers",
            rope,
            dtype,
            hf_llama_run(rope.head_dim, theta, cfg, dtype, bug),
            bug,
            expect,
            label,
        )

    rows = [
        hf("HF Llama (LlamaRotaryEmbedding + apply_rotary_pos_emb)", llama, 1e4, None, "float32"),
        hf("HF Llama, bfloat16", llama, 1e4, None, "bfloat16"),
        hf("HF YaRN (factor 4, 32k)", yarn, 1e6, yarn_cfg, "float32"),
        hf("HF Llama 3.1 scaling", l3, 5e5, l3_cfg, "float32"),
        Impl(
            "HF GPT-NeoX (rotary_pct 0.25, linear 3)",
            "transformers",
            "transformers",
            neox,
            "float32",
            hf_neox_run("float32"),
        ),
        Impl(
            "HF Qwen2-VL M-RoPE (16/24/24)",
            "transformers",
            "transformers",
            qwen,
            "float32",
            hf_qwen2vl_run("float32"),
        ),
        Impl(
            "lucidrains rotate_queries_or_keys",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            luc,
            "float32",
            lucidrains_run("float32", OFFSETS),
        ),
        Impl(
            "lucidrains, bfloat16 (positions < 256)",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            luc,
            "bfloat16",
            lucidrains_run("bfloat16", (0, 100)),
        ),
        Impl(
            "torchtune RotaryPositionalEmbeddings",
            "torchtune",
            "torchtune",
            tt,
            "float32",
            torchtune_run("plain", "float32"),
        ),
        Impl(
            "torchtune Llama3ScaledRoPE",
            "torchtune",
            "torchtune",
            tt3,
            "float32",
            torchtune_run("llama3", "float32"),
        ),
        Impl(
            "keras-hub RotaryEmbedding (torch backend)",
            "keras-hub",
            "keras_hub",
            keras_rope("linear", 1.0),
            "float32",
            keras_run("linear", 1.0, "float32"),
        ),
        Impl(
            "keras-hub, scaling_factor 4",
            "keras-hub",
            "keras_hub",
            keras_rope("linear", 4.0),
            "float32",
            keras_run("linear", 4.0, "float32"),
        ),
        Impl(
            "keras-hub, rope_type='dynamic' 4",
            "keras-hub",
            "keras_hub",
            keras_rope("dynamic", 4.0),
            "float32",
            keras_run("dynamic", 4.0, "float32"),
            note="keras-hub's 'dynamic' divides every frequency by factor**(d/(d-2)); "
            "judged as that linear scaling",
        ),
        Impl(
            "keras-hub, rope_type='yarn' 4",
            "keras-hub",
            "keras_hub",
            keras_rope("yarn", 4.0),
            "float32",
            keras_run("yarn", 4.0, "float32"),
        ),
        Impl(
            "MLX mx.fast.rope (CPU)",
            "mlx",
            "mlx.core",
            mlx_half,
            "float32",
            mlx_run("float32", False, 1.0),
        ),
        Impl(
            "MLX, traditional, scale 1/4",
            "mlx",
            "mlx.core",
            mlx_lin,
            "float32",
            mlx_run("float32", True, 0.25),
        ),
        Impl(
            "MLX, bfloat16",
            "mlx",
            "mlx.core",
            mlx_half,
            "bfloat16",
            mlx_run("bfloat16", False, 1.0),
        ),
        Impl(
            "JAX jnp RoPE (Flax/Gemma style, jit)", "jax", "jax", jx, "float32", jax_run("float32")
        ),
        Impl("JAX, bfloat16", "jax", "jax", jx, "bfloat16", jax_run("bfloat16")),
    ]
    bugs = [
        hf(
            "HF Llama on float64 input (as shipped: float32 tables)",
            llama,
            1e4,
            None,
            "float64",
            "float32 tables (shipped)",
            "float32-angles",
        ),
        hf("HF Llama: positions +1", llama, 1e4, None, "float32", "shift", "shift"),
        hf(
            "HF Llama: bug in k only (k at position +1)",
            llama,
            1e4,
            None,
            "float32",
            "k-only",
            "shift",
            "k",
        ),
        hf("HF Llama: base 500000 instead of 10000", llama, 1e4, None, "float32", "base", "base"),
        hf(
            "HF Llama: interleaved pairs (wrong layout)",
            llama,
            1e4,
            None,
            "float32",
            "layout",
            "layout",
        ),
        hf(
            "HF Llama: bfloat16 position_ids",
            llama,
            1e4,
            None,
            "float32",
            "bf16-positions",
            "half-positions",
        ),
        hf(
            "HF YaRN: attention factor missing",
            yarn,
            1e6,
            yarn_cfg,
            "float32",
            "attention-factor",
            "factor",
        ),
        hf(
            "HF YaRN: beta_fast 16 instead of 32",
            yarn,
            1e6,
            yarn_cfg,
            "float32",
            "yarn-beta",
            "schedule",
        ),
        hf(
            "HF Llama 3.1: low_freq_factor 2 instead of 1",
            l3,
            5e5,
            l3_cfg,
            "float32",
            "llama3-low",
            "schedule",
        ),
        Impl(
            "HF GPT-NeoX: linear factor missing",
            "transformers",
            "transformers",
            neox,
            "float32",
            hf_neox_run("float32", "no-scaling"),
            "no-scaling",
            "no-scaling",
        ),
        Impl(
            "HF GPT-NeoX: positions -1",
            "transformers",
            "transformers",
            neox,
            "float32",
            hf_neox_run("float32", "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "HF GPT-NeoX: rotary on channels 8..31",
            "transformers",
            "transformers",
            neox,
            "float32",
            hf_neox_run("float32", "channels"),
            "channels",
            "channels",
        ),
        Impl(
            "HF Qwen2-VL: positions +1",
            "transformers",
            "transformers",
            qwen,
            "float32",
            hf_qwen2vl_run("float32", "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "lucidrains: offset +1",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            luc,
            "float32",
            lucidrains_run("float32", OFFSETS, "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "lucidrains: theta 500000 instead of 10000",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            luc,
            "float32",
            lucidrains_run("float32", OFFSETS, "base"),
            "base",
            "base",
        ),
        Impl(
            "lucidrains used for a half-layout model",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            R(64),
            "float32",
            lucidrains_run("float32", OFFSETS),
            "layout",
            "layout",
        ),
        Impl(
            "lucidrains at bfloat16, offsets >= 256 (as shipped)",
            "rotary-embedding-torch",
            "rotary_embedding_torch",
            luc,
            "bfloat16",
            lucidrains_run("bfloat16", (3_000, 60_000)),
            "bf16 positions (shipped)",
            "half-positions",
        ),
        Impl(
            "torchtune: input_pos +1",
            "torchtune",
            "torchtune",
            tt,
            "float32",
            torchtune_run("plain", "float32", "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "torchtune Llama3: scale_factor 4 instead of 8",
            "torchtune",
            "torchtune",
            tt3,
            "float32",
            torchtune_run("llama3", "float32", "scale-factor"),
            "scale-factor",
            "schedule",
        ),
        Impl(
            "keras-hub: positions +1",
            "keras-hub",
            "keras_hub",
            keras_rope("linear", 1.0),
            "float32",
            keras_run("linear", 1.0, "float32", "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "keras-hub: scaling_factor 4 missing",
            "keras-hub",
            "keras_hub",
            keras_rope("linear", 4.0),
            "float32",
            keras_run("linear", 1.0, "float32"),
            "no-scaling",
            "no-scaling",
        ),
        Impl(
            "MLX: offset +1",
            "mlx",
            "mlx.core",
            mlx_half,
            "float32",
            mlx_run("float32", False, 1.0, "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "MLX: base 500000",
            "mlx",
            "mlx.core",
            mlx_half,
            "float32",
            mlx_run("float32", False, 1.0, "base"),
            "base",
            "base",
        ),
        Impl(
            "MLX: traditional=True for a half-layout model",
            "mlx",
            "mlx.core",
            mlx_half,
            "float32",
            mlx_run("float32", False, 1.0, "layout"),
            "layout",
            "layout",
        ),
        Impl(
            "JAX: positions +1",
            "jax",
            "jax",
            jx,
            "float32",
            jax_run("float32", "shift"),
            "shift",
            "shift",
        ),
        Impl(
            "JAX: base 500000",
            "jax",
            "jax",
            jx,
            "float32",
            jax_run("float32", "base"),
            "base",
            "base",
        ),
        Impl(
            "JAX: positions cast to bfloat16",
            "jax",
            "jax",
            jx,
            "float32",
            jax_run("float32", "bf16-positions"),
            "bf16-positions",
            "half-positions",
        ),
    ]
    return rows + bugs


def attention_registry() -> list[Impl]:
    """torch SDPA rows (as shipped and with injected bugs)."""

    def a(
        name: str, dtype: str, bug: str | None = None, expect: str | None = None, **kw: Any
    ) -> Impl:
        return Impl(
            name,
            "torch",
            "torch",
            None,
            dtype,
            run=lambda: [],
            bug=bug,
            expect=expect,
            attention=sdpa_check(dtype, bug=bug, **kw),
        )

    return [
        a(
            "torch SDPA float32, 2048 keys, causal",
            "float32",
            sq=256,
            sk=2048,
            hq=4,
            hk=4,
            causal=True,
        ),
        a("torch SDPA float64, 8192 keys", "float64", sq=64, sk=8192, hq=2, hk=2, causal=False),
        a(
            "torch SDPA float32 decode over 4096 keys, GQA 8/2",
            "float32",
            sq=1,
            sk=4096,
            hq=8,
            hk=2,
            causal=True,
        ),
        a(
            "torch SDPA float32 + HF RoPE, 1024 keys, causal",
            "float32",
            sq=256,
            sk=1024,
            hq=2,
            hk=2,
            causal=True,
            with_rope=True,
        ),
        a(
            "SDPA: scale doubled",
            "float32",
            "scale-doubled",
            "scale doubled",
            sq=64,
            sk=256,
            hq=2,
            hk=2,
            causal=False,
        ),
        a(
            "SDPA: GQA heads tiled (repeat, not repeat_interleave)",
            "float32",
            "gqa-tiled",
            "GQA heads tiled",
            sq=64,
            sk=256,
            hq=8,
            hk=2,
            causal=False,
        ),
        a(
            "SDPA: is_causal with Sq < Sk (top-left)",
            "float32",
            "causal-top-left",
            "causal mask aligned top-left",
            sq=64,
            sk=256,
            hq=2,
            hk=2,
            causal=True,
        ),
        a(
            "SDPA + RoPE: keys not rotated",
            "float32",
            "rope-q-only",
            "RoPE applied to q only",
            sq=64,
            sk=256,
            hq=2,
            hk=2,
            causal=True,
            with_rope=True,
        ),
    ]


def judge_attention(impl: Impl, *, strict: bool = False) -> Verdict:
    """Run an attention row; the report whether it passed or not (warnings recorded)."""
    from rope_ref.testing import AttentionMismatch

    assert impl.attention is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rep = impl.attention(strict)
        except AttentionMismatch as e:
            rep = e.report
    rope_warnings = [str(w.message) for w in caught if "Rope" in type(w.message).__name__]
    return Verdict("out", rep, rope_warnings)
