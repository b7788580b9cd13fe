"""Measure every schedule against an independent mpmath formula and against transformers.

For each schedule: the max ulp distance of ``Rope.inv_freq()`` (exact values rounded to
float64) from the same formula evaluated in mpmath at 300 bits and rounded by mpmath, and,
when transformers is installed, the max relative distance from Hugging Face's float32 tables.

    python scripts/compare_schedules.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import mpmath
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rope_ref as rr
from rope_ref import scaling as S

mpmath.mp.prec = 300
D, B = 128, 1e4


def theta(base, d, j):
    return mpmath.mpf(base) ** (mpmath.mpf(-2 * j) / d)


def ulp_dev(got, want_mp):
    want = np.array([float(w) for w in want_mp])
    unit = np.where(want == 0, np.spacing(0.0), np.spacing(np.abs(want)))
    return float(np.max(np.abs(got - want) / unit))


def yarn_mp(d, base, s, l0, truncate=True, ratio=False):
    out = []
    if ratio:
        for j in range(d // 2):
            t = theta(base, d, j)
            r = l0 * t / (2 * mpmath.pi)
            g = min(max((r - 1) / 31, 0), 1)
            out.append((1 - g) * t / s + g * t)
        return out
    c = lambda r: d * mpmath.log(l0 / (2 * mpmath.pi * r)) / (2 * mpmath.log(base))  # noqa: E731
    lo, hi = c(32), c(1)
    if truncate:
        lo, hi = mpmath.floor(lo), mpmath.ceil(hi)
    lo, hi = max(lo, 0), min(hi, d - 1)
    for j in range(d // 2):
        rho = min(max((j - lo) / (hi - lo), 0), 1)
        t = theta(base, d, j)
        out.append(t * (1 - rho) + t / s * rho)
    return out


def llama3_mp(d, base, s, lf, hf, big_l):
    out = []
    for j in range(d // 2):
        t = theta(base, d, j)
        w = 2 * mpmath.pi / t
        if w < big_l / hf:
            out.append(t)
        elif w > big_l / lf:
            out.append(t / s)
        else:
            g = (big_l / w - lf) / (hf - lf)
            out.append((1 - g) * t / s + g * t)
    return out


def main() -> None:
    lam = [1.0 + 0.37 * j for j in range(D // 2)]
    rows = [
        (
            "Linear(4)",
            rr.Rope(D, scaling=S.Linear(4.0)),
            None,
            [theta(B, D, j) / 4 for j in range(D // 2)],
        ),
        (
            "NTK(8)",
            rr.Rope(D, scaling=S.NTK(8.0)),
            None,
            [
                (mpmath.mpf(B) * mpmath.mpf(8) ** (mpmath.mpf(D) / (D - 2)))
                ** (mpmath.mpf(-2 * j) / D)
                for j in range(D // 2)
            ],
        ),
        (
            "DynamicNTK(2, 4096) at 10000",
            rr.Rope(D, scaling=S.DynamicNTK(2.0, 4096)),
            10000,
            [
                (mpmath.mpf(B) * (mpmath.mpf(2) * 10000 / 4096 - 1) ** (mpmath.mpf(D) / (D - 2)))
                ** (mpmath.mpf(-2 * j) / D)
                for j in range(D // 2)
            ],
        ),
        (
            "YaRN(16, 4096) index ramp",
            rr.Rope(D, scaling=S.YaRN(16.0, 4096)),
            None,
            yarn_mp(D, B, 16, 4096),
        ),
        (
            "YaRN(32, 4096, truncate=False)",
            rr.Rope(D, scaling=S.YaRN(32.0, 4096, truncate=False)),
            None,
            yarn_mp(D, B, 32, 4096, truncate=False),
        ),
        (
            "YaRN(16, 4096) ratio ramp",
            rr.Rope(D, scaling=S.YaRN(16.0, 4096, ramp="ratio")),
            None,
            yarn_mp(D, B, 16, 4096, ratio=True),
        ),
        (
            "Llama3(8, 1, 4, 8192)",
            rr.Rope(D, base=5e5, scaling=S.Llama3(8.0, 1.0, 4.0, 8192)),
            None,
            llama3_mp(D, 5e5, 8, 1, 4, 8192),
        ),
        (
            "LongRoPE long list",
            rr.Rope(D, scaling=S.LongRoPE(lam, lam[::-1], 4096, factor=32.0)),
            5000,
            [theta(B, D, j) / mpmath.mpf(lam[::-1][j]) for j in range(D // 2)],
        ),
        (
            "Proportional(0.25, 2)",
            rr.Rope(D, scaling=S.Proportional(0.25, 2.0)),
            None,
            [theta(B, D, j) / 2 if j < 16 else 0 for j in range(D // 2)],
        ),
    ]
    print(f"{'schedule':<34}{'max ulp vs mpmath':>18}")
    for name, rope, seq_len, want in rows:
        print(f"{name:<34}{ulp_dev(rope.inv_freq(seq_len=seq_len), want):>18.3f}")
    # attention factors
    af = [
        (
            "YaRN(16) 0.1 ln s + 1",
            rr.Rope(D, scaling=S.YaRN(16.0, 4096)).attention_factor,
            mpmath.mpf("0.1") * mpmath.log(16) + 1,
        ),
        (
            "YaRN DeepSeek mscale 0.707/1",
            rr.Rope(
                64, scaling=S.YaRN(40.0, 4096, mscale=0.707, mscale_all_dim=1.0)
            ).attention_factor,
            (mpmath.mpf("0.1") * mpmath.mpf(0.707) * mpmath.log(40) + 1)
            / (mpmath.mpf("0.1") * mpmath.log(40) + 1),
        ),
        (
            "LongRoPE sqrt(1 + ln s / ln L)",
            rr.Rope(D, scaling=S.LongRoPE(lam, lam, 4096, factor=32.0)).attention_factor,
            mpmath.sqrt(1 + mpmath.log(32) / mpmath.log(4096)),
        ),
    ]
    for name, got, want in af:
        print(f"{'factor ' + name:<34}{ulp_dev(np.array([got]), [want]):>18.3f}")
    # xPos magnitude
    rope = rr.Rope(64, layout="interleaved", scaling=S.XPos())
    pos = np.array([1, 777, 50_000, 200_000])
    cq, _ = rope.cos_sin(pos)
    c0, _ = rr.Rope(64, layout="interleaved").cos_sin(pos)
    worst = 0.0
    for i, m in enumerate(pos):
        for j in range(32):
            zeta = (mpmath.mpf(2 * j) / 64 + mpmath.mpf(0.4)) / (1 + mpmath.mpf(0.4))
            want = mpmath.mpf(float(c0[i, j])) * zeta ** (mpmath.mpf(int(m)) / 512)
            worst = max(worst, ulp_dev(np.array([cq[i, j]]), [want]))
    print(f"{'XPos cos * zeta^(m/512)':<34}{worst:>18.3f}")
    try:
        import torch  # noqa: F401
        from transformers import LlamaConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    except ImportError:
        print("transformers not installed: no HF comparison")
        return
    import transformers

    print(
        f"\nagainst transformers {transformers.__version__} (float32 tables): max relative "
        "difference of inv_freq, |attention factor difference|"
    )
    base = {"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 131072}
    hf_cases = [
        (
            "linear",
            {"rope_theta": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 4.0}},
            None,
        ),
        (
            "dynamic",
            {
                "rope_theta": 1e4,
                "max_position_embeddings": 4096,
                "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
            },
            10000,
        ),
        (
            "yarn",
            {
                "rope_theta": 1e6,
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": 4.0,
                    "original_max_position_embeddings": 32768,
                },
            },
            None,
        ),
        (
            "yarn (mscale)",
            {
                "rope_theta": 1e4,
                "head_dim": 64,
                "rope_scaling": {
                    "rope_type": "yarn",
                    "factor": 40.0,
                    "mscale": 0.707,
                    "mscale_all_dim": 1.0,
                    "original_max_position_embeddings": 4096,
                },
            },
            None,
        ),
        (
            "llama3",
            {
                "rope_theta": 5e5,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
            },
            None,
        ),
        (
            "longrope",
            {
                "rope_theta": 1e4,
                "original_max_position_embeddings": 4096,
                "rope_scaling": {
                    "rope_type": "longrope",
                    "short_factor": lam,
                    "long_factor": lam[::-1],
                },
            },
            5000,
        ),
    ]
    for name, extra, seq_len in hf_cases:
        cfg = {**base, **extra}
        hc = LlamaConfig(**cfg)
        inv, att = ROPE_INIT_FUNCTIONS[hc.rope_parameters["rope_type"]](hc, "cpu", seq_len=seq_len)
        rope = rr.Rope.from_hf_config(cfg)
        ours = rope.inv_freq(seq_len=seq_len)
        rel = float(np.max(np.abs(ours - inv.double().numpy()) / ours))
        print(
            f"{name:<34}{rel:>12.3g} ({rel / 2**-24:.2f} x 2^-24)   "
            f"{abs(rope._attention_factor(seq_len) - att):.3g}"
        )


if __name__ == "__main__":
    main()
