"""Write the measured tables of docs/conformance.md from the conformance suite's registry.

Run it in the clients environment (where the implementations are installed)::

    KERAS_BACKEND=torch .venv-clients/bin/python scripts/make_conformance.py

It rewrites the part of docs/conformance.md between the markers ``<!-- measured:begin -->``
and ``<!-- measured:end -->`` (or prints it with ``--print``). The numbers are measured on the
machine that runs it (its float32 sin/cos and the libraries' versions) and are labelled so.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
if str(CLIENTS) not in sys.path:
    sys.path.insert(0, str(CLIENTS))  # the implementations under test (tests/clients/_impls.py)

import _impls as I  # noqa: E402

import rope_ref  # noqa: E402

PAGE = ROOT / "docs" / "conformance.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
RANGES = ((0, 2**8), (2**8, 2**12), (2**12, 2**16), (2**16, 2**20), (2**20, 2**24))
RANGE_NAMES = ("< 2^8", "2^8..2^12", "2^12..2^16", "2^16..2^20", "2^20..2^24")
DISTS = (
    "torch",
    "transformers",
    "rotary-embedding-torch",
    "torchtune",
    "keras-hub",
    "keras",
    "mlx",
    "jax",
    "numpy",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _rope_text(rope: rope_ref.Rope) -> str:
    parts = [f"d={rope.head_dim}"]
    if rope.rotary_dim != rope.head_dim:
        parts.append(f"rotary {rope.rotary_dim}")
    parts.append(f"base {rope.base:g}")
    parts.append(rope.layout)
    if rope.scaling is not None:
        sc = rope.scaling
        name = type(sc).__name__
        if hasattr(sc, "factor"):
            name += f" {sc.factor:.4g}"
        if name.startswith("MRope"):
            name += f" {sc.sections}"
        parts.append(name)
    return ", ".join(parts)


def _phase_cells(reports: list) -> list[str]:
    cells = []
    for lo, hi in RANGES:
        vals = [rad for rep in reports for (a, b, rad) in rep.phase_error if a == lo and b == hi]
        cells.append(f"{max(vals):.1e}" if vals else "")
    return cells


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def measure() -> tuple[str, dict]:
    rows_ok, rows_bug, rows_att, missing = [], [], [], []
    worst_ok, least_bug = (0.0, ""), (float("inf"), "")
    false_alarms = 0
    t0 = time.time()
    for impl in I.registry():
        try:
            default = I.judge(impl)
            strict = I.judge(impl, strict=True)
        except I.Missing as e:
            missing.append(f"{impl.name}: {e}")
            continue
        reps = [v.report for v in default]
        ratio = max(r.worst_ratio for r in reps)
        if impl.bug is None:
            cls = max(
                (r.accuracy_class for r in reps),
                key=("exact", "lower-precision angles", "fail").index,
            )
            passed = all(r.passed for r in reps)
            false_alarms += not passed
            s_pass = all(v.report.passed for v in strict)
            warn = sum(len(v.warnings) for v in default)
            blind = max(len(r.blind_spots) for r in reps)
            if ratio > worst_ok[0]:
                worst_ok = (ratio, impl.name)
            rows_ok.append(
                [
                    impl.name,
                    impl.dtype,
                    _rope_text(impl.rope),
                    cls if passed else "FAIL",
                    "pass" if s_pass else "fail",
                    f"{ratio:.2f}",
                    *(_phase_cells(reps)),
                    ("yes" if blind else "") + (" (warned)" if warn else ""),
                ]
            )
        else:
            failing = [v for v in default if not v.report.passed]
            caught = bool(failing)
            s_caught = any(not v.report.passed for v in strict)
            fails = failing or default
            best = fails[0].report.diagnosis[0] if fails[0].report.diagnosis else None
            fam = best.params.get("family") if best is not None else None
            named = fam == impl.expect
            r_min = min(v.report.worst_ratio for v in failing) if failing else 0.0
            if r_min < least_bug[0]:
                least_bug = (r_min, impl.name)
            which = ", ".join(v.label for v in failing) or "-"
            rows_bug.append(
                [
                    impl.name,
                    impl.dtype,
                    "yes" if caught else "NO",
                    "yes" if s_caught else "NO",
                    which,
                    (best.name if best else "none"),
                    f"{100 * best.explained:.0f}%" if best else "",
                    "yes" if named else f"NO (expected {impl.expect})",
                    f"{r_min:.3g}",
                ]
            )
    for impl in I.attention_registry():
        try:
            d = I.judge_attention(impl)
            s = I.judge_attention(impl, strict=True)
        except I.Missing as e:
            missing.append(f"{impl.name}: {e}")
            continue
        r = d.report
        best = r.diagnosis[0] if r.diagnosis else None
        if impl.bug is None:
            false_alarms += not r.passed
            if r.worst_ratio > worst_ok[0]:
                worst_ok = (r.worst_ratio, impl.name)
        elif not r.passed and r.worst_ratio < least_bug[0]:
            least_bug = (r.worst_ratio, impl.name)
        verdict = (
            (r.accuracy_class if r.passed else "fail")
            if impl.bug is None
            else ("caught" if not r.passed else "NOT CAUGHT")
        )
        rows_att.append(
            [
                impl.name,
                impl.dtype,
                verdict,
                "pass" if s.report.passed else "fail",
                f"{r.worst_ratio:.3g}",
                "" if best is None else f"{best.name} ({100 * best.explained:.0f}%)",
            ]
        )
    elapsed = time.time() - t0
    lines = [
        BEGIN,
        "",
        "```{note}",
        f"Measured on this machine ({platform.machine()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}) on "
        f"{datetime.date.today().isoformat()} in {elapsed:.0f} s by "
        "`scripts/make_conformance.py`; rope_ref "
        f"{rope_ref.__version__}; "
        + ", ".join(f"{d} {_version(d)}" for d in DISTS)
        + ". Classes and phase errors of float32 kernels depend on the platform's float32 "
        "sin/cos; the tests assert only verdicts and diagnoses.",
        "```",
        "",
        "### Implementations as shipped",
        "",
        "Class at the default verdict (`compare(...)`) and verdict under `strict=True`; "
        "*error/allowance* is the worst element's error over its allowance (at most 1 to "
        "pass); the phase columns give the largest angle (radians) between an output pair and "
        "the exact one, per range of |position| (largest over q and k); *blind spots*: the "
        "report names pairs and positions where the allowance cannot see a one-position "
        "error (float32 angles at large positions; `strict=True` sees them).",
        "",
        _md_row(
            [
                "implementation",
                "dtype",
                "claims (rope_ref.Rope)",
                "class at default",
                "strict",
                "error/allowance",
                *(f"phase {n}" for n in RANGE_NAMES),
                "blind spots reported",
            ]
        ),
        _md_row(["---"] * (12)),
        *(_md_row(r) for r in rows_ok),
        "",
        f"False alarms on correct implementations: **{false_alarms}** (RoPE and attention "
        "rows together).",
        "",
        "### Injected bugs",
        "",
        "The same code with one mistake; *caught*: the default verdict fails; *diagnosis*: the "
        "fitted hypothesis ranked first, with the share of the squared error it explains.",
        "",
        _md_row(
            [
                "bug",
                "dtype",
                "caught",
                "caught (strict)",
                "failing outputs",
                "diagnosis ranked first",
                "explains",
                "right family",
                "error/allowance",
            ]
        ),
        _md_row(["---"] * 9),
        *(_md_row(r) for r in rows_bug),
        "",
        "### Attention (torch SDPA against `assert_attention_close`)",
        "",
        _md_row(["row", "dtype", "verdict", "strict", "error/allowance", "diagnosis"]),
        _md_row(["---"] * 6),
        *(_md_row(r) for r in rows_att),
        "",
        "### Margins of the error model",
        "",
        f"- Worst error/allowance among correct implementations: **{worst_ok[0]:.3g}** "
        f"({worst_ok[1]}).",
        f"- Smallest error/allowance among caught bugs: **{least_bug[0]:.3g}** ({least_bug[1]}).",
    ]
    if missing:
        lines += ["", "Not run here (library missing):", "", *(f"- {m}" for m in missing)]
    lines += ["", END]
    stats = {
        "false_alarms": false_alarms,
        "worst_ok": worst_ok,
        "least_bug": least_bug,
        "missing": missing,
        "elapsed": elapsed,
    }
    return "\n".join(lines), stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print the tables, write nothing")
    args = ap.parse_args(argv)
    text, stats = measure()
    if args.print:
        print(text)
    else:
        page = PAGE.read_text(encoding="utf-8")
        if BEGIN not in page or END not in page:
            print(f"{PAGE}: markers {BEGIN} / {END} not found", file=sys.stderr)
            return 2
        head, rest = page.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        PAGE.write_text(head + text + tail, encoding="utf-8")
        print(f"wrote {PAGE} ({stats['elapsed']:.0f} s)")
    print(
        f"false alarms {stats['false_alarms']}; worst correct {stats['worst_ok']}; "
        f"least bug {stats['least_bug']}; missing {len(stats['missing'])}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
