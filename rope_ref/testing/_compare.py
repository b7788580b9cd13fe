"""compare / assert_close: the verdict on an implementation's output, with its accuracy class,
the phase error recovered from the data, the blind spots of the allowance, and (on failure,
given the input) the fitted diagnoses."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from .. import _compat
from .._apply import apply_rope
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope
from .._typing import Array
from .._validate import as_bool
from ._error_model import (
    BITS,
    K_OUT,
    Float8Format,
    dtype_name,
    float8_allowance,
    float8_format,
    float8_rounded_allowance,
    half_spacing,
    half_spacing_below,
    pair_channels,
    pair_model,
    scaling_error,
    shift_threshold,
    tiny,
    unit_roundoff,
)

__all__ = ["CLASSES", "Report", "RopeToleranceWarning", "assert_close", "compare", "to_numpy"]

#: the accuracy classes, best first ("fail" last)
CLASSES = ("exact", "lower-precision angles", "fail")
#: |position| ranges of the per-range reports
EDGES = (0, 2**8, 2**12, 2**16, 2**20, 2**24, 2**31, 2**53)


class RopeToleranceWarning(UserWarning):
    """A comparison passed, but its allowance cannot see some errors (a one-position error
    or more would pass there): the report names the pairs and positions; ``strict=True``
    judges them at the exact class."""


@dataclass(frozen=True)
class Report:
    """The verdict of :func:`compare` (returned by :func:`assert_close` on success).

    Each parameter is kept as the attribute of the same name.

    Parameters
    ----------
    passed : bool
        The verdict (``strict=True``: only the "exact" class passes).
    accuracy_class : str
        ``"exact"``, ``"lower-precision angles"`` or ``"fail"``.
    message : str
        The full text: the AssertionError's text on failure, a summary on success.
    max_abs_error, max_ulp : float
        The largest absolute error and the largest error in ulps of the dtype under test.
    worst_ratio : float
        The largest error / allowance over the elements (at most 1 when the values pass).
    atol : float
        The largest per-element allowance (a representative number for tables).
    diagnosis : tuple
        Fitted hypotheses, best first (on failure with ``x`` given): objects with ``name``,
        ``explained`` (fraction of the squared error it removes), ``params`` and ``text``.
    phase_error : tuple
        ``(lo, hi, radians)``: the largest angle between actual and desired pair vectors
        for ``|position|`` in [lo, hi) (RoPE outputs only).
    blind_spots : tuple
        Descriptions of the pairs and positions where the allowance cannot see a
        one-position error (or any error at all).
    vacuous : bool
        Whether some token's allowance hides a one-position error in every pair, or some
        pair's allowance reaches its magnitude (then :func:`assert_close` warns on success).
    failing_pairs : tuple of int
        On failure of a RoPE output (``rope`` and ``positions`` given): the rotary pairs
        ``j`` (``0 <= j < rope.n_pairs``, pair 0 the fastest in the default ladder) in which
        some element fails, ascending. Empty when it passes or without ``rope``.
    failing_channels : tuple of int
        Likewise, the channels (indices along the last axis) that hold a failing element,
        rotary and pass-through, ascending.
    failing_indices : dict of int to tuple of int
        Likewise, for each axis ``k`` of the output other than the last (``0 <= k <
        ndim - 1``, sizes 1 included), the indices along it that hold a failing element,
        ascending: e.g. ``{0: (1,), 1: (0, 1, ..., 63), 2: (3,)}`` for a failure in batch
        entry 1 and head 3 only. Empty when it passes or without ``rope``.
    """

    passed: bool
    accuracy_class: str
    message: str
    max_abs_error: float
    max_ulp: float
    worst_ratio: float
    atol: float
    diagnosis: tuple[Any, ...] = field(default=())
    phase_error: tuple[tuple[int, int, float], ...] = field(default=())
    blind_spots: tuple[str, ...] = field(default=())
    vacuous: bool = False
    failing_pairs: tuple[int, ...] = field(default=())
    failing_channels: tuple[int, ...] = field(default=())
    failing_indices: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed


def to_numpy(x: Array) -> np.ndarray:
    """A NumPy copy of any Array-API array, through the array's own means.

    bfloat16 is widened to float32 (exactly) in the array's own namespace first; arrays that
    track gradients are detached; device arrays move with ``to_device("cpu")``; then DLPack,
    or ``__array__`` (Dask computes here). No framework is imported.

    Parameters
    ----------
    x : array or scalar
        Any Array-API array (NumPy, PyTorch, JAX, CuPy, Dask, ...), or a Python value.

    Returns
    -------
    numpy.ndarray
        A new array (never a view of ``x``).
    """
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if not _compat.is_array(x):
        return np.asarray(x)
    if getattr(x, "requires_grad", False) and hasattr(x, "detach"):
        x = x.detach()
    xp = array_api_compat.array_namespace(x)
    widened = dtype_name(x.dtype) == "bfloat16" or float8_format(x.dtype) is not None
    if widened:
        x = xp.astype(x, xp.float32)  # exact; NumPy has none of these formats
    with contextlib.suppress(Exception):  # not every library names its host device "cpu"
        x = array_api_compat.to_device(x, "cpu")
    try:
        out = np.array(np.from_dlpack(x), copy=True)
    except Exception:
        out = np.array(x, copy=True)
    if widened:  # PyTorch widens the fnuz NaN to a signaling NaN (casts of it would warn)
        out = np.where(np.isnan(out), np.float32(np.nan), out)
    return out


def ulps(actual: np.ndarray, desired: np.ndarray, name: str) -> np.ndarray:
    """|actual - desired| in units of the last place of desired, in the dtype under test."""
    p = BITS.get(name, 53)
    d = np.asarray(desired, dtype=np.float64)
    mag = np.maximum(np.abs(np.where(np.isfinite(d), d, 0.0)), tiny(name))
    _, e = np.frexp(mag)  # mag = f * 2**e, f in [0.5, 1): one ulp is 2**(e - p)
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.abs(np.asarray(actual, dtype=np.float64) - d) / np.ldexp(1.0, e - p)
    return out


def _tolerance(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RopeTypeError(
            f"{name} must be a real number (or None for the error model), got "
            f"{type(value).__name__} {value!r}"
        )
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise RopeValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _pair_of(channel: int, rope: Rope) -> str:
    j = _pair_index(channel, rope)
    if j is None:
        return f"channel {channel} (pass-through)"
    return f"rotary pair {j} (channel {channel}, {rope.layout} layout)"


def _pair_index(channel: int, rope: Rope) -> int | None:
    """The rotary pair that holds ``channel`` (None for a pass-through channel)."""
    c = channel - getattr(rope, "rotary_offset", 0)  # MLA: the rotated channels trail
    if not 0 <= c < rope.rotary_dim:
        return None
    h = rope.rotary_dim // 2
    return c % h if rope.layout == "half" else c // 2


#: index lists in a failure message stop after this many ranges ("...")
MAX_RANGES = 10


def _ranges(values: Any, limit: int | None = None) -> str:
    """'0-5, 9, 12-15' for sorted distinct integers; with ``limit``, at most that many ranges
    and then '...'. Vectorized: an axis may hold a million indices."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size == 0:
        return ""
    cut = np.flatnonzero(np.diff(v) != 1) + 1
    starts = v[np.concatenate([[0], cut])]
    ends = v[np.concatenate([cut - 1, [v.size - 1]])]
    n = starts.size if limit is None else min(starts.size, limit)
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts[:n], ends[:n], strict=True)]
    return ", ".join(parts) + (", ..." if n < starts.size else "")


def _phase_errors(
    a: np.ndarray, d: np.ndarray, m: np.ndarray, rope: Rope
) -> tuple[tuple[int, int, float], ...]:
    """Per |position| range, the largest angle between actual and desired pair vectors."""
    ia, ib = pair_channels(rope)
    aa, ab, da, db = a[..., ia], a[..., ib], d[..., ia], d[..., ib]
    with np.errstate(invalid="ignore"):
        cross = aa * db - ab * da
        dot = aa * da + ab * db
        ang = np.abs(np.arctan2(cross, dot))
    rho = np.hypot(da, db)
    good = np.isfinite(ang) & (rho > 0) & np.isfinite(rho)
    am = np.abs(m)
    out = []
    for lo, hi in itertools.pairwise(EDGES):
        sel = good & (am >= lo) & (am < hi)
        if np.any(sel):
            out.append((lo, hi, float(np.max(ang[sel]))))
    return tuple(out)


def _blind_spots(model: Any) -> tuple[tuple[str, ...], bool]:
    """Where the angle budget hides a one-position error (in every pair of a token: the
    whole shift would pass; or in some pairs only), and where it reaches the pair's
    magnitude (any output would pass). Returns the texts and whether any of them is serious
    (a token blind to a one-position error, or a vacuous allowance): assert_close warns."""
    n = model.theta.size
    am = np.abs(model.m).reshape(-1, n)
    if am.size == 0:
        return (), False
    thr = shift_threshold(model)
    out = []
    fmt = _angle_format(model)
    seen = am < thr  # pair j of this token sees a one-position error
    blind_tokens = ~np.any(seen, axis=1)
    if np.any(blind_tokens):
        first = float(np.min(np.max(am[blind_tokens], axis=1)))
        out.append(
            f"a one-position error passes at {int(np.sum(blind_tokens))} of {am.shape[0]} "
            f"tokens (|position| from {first:.4g}): the phase budget of {fmt} angles there "
            "exceeds the move of one position in every pair; strict=True sees it"
        )
    partial = [j for j in range(n) if np.any(~seen[:, j] & ~blind_tokens) and thr[j] < np.inf]
    if partial:
        lo = float(np.min(thr[partial]))
        out.append(
            f"pairs {_ranges(partial)} cannot see a one-position error from |position| "
            f"{lo:.4g} on (other pairs of the same tokens still do); strict=True sees it"
        )
    vac = np.reshape(model.phase >= 1.0, (-1, n))
    vacuous = [j for j in range(n) if np.any(vac[:, j])]
    if vacuous:
        first = float(np.min(np.where(vac[:, vacuous], am[:, vacuous], np.inf)))
        out.append(
            f"the allowance reaches the pair's own magnitude (any output passes) in pairs "
            f"{_ranges(vacuous)} from |position| {first:.4g} on; strict=True judges them"
        )
    return tuple(out), bool(np.any(blind_tokens)) or bool(vacuous)


def _angle_format(model: Any) -> str:
    return {2.0**-53: "float64", 2.0**-24: "float32"}.get(model.u_angle, "low-precision")


def _check_structure(
    actual: Array,
    desired: Array,
    head: str,
    check_dtype: bool,
    check_device: bool,
    check_namespace: bool,
    dtype_want: str | None = None,
) -> str | None:
    """The first structural difference, as a message, or None (``dtype_want``: the dtype
    ``actual`` must have, whatever ``desired``'s: a float8 output against its unquantized
    reference)."""
    if check_namespace:
        xa = array_api_compat.array_namespace(actual)
        xd = array_api_compat.array_namespace(desired)
        if xa is not xd:
            return f"{head}namespaces differ: actual is {xa.__name__}, desired is {xd.__name__}"
    sa, sd = _known_shape(actual), _known_shape(desired)
    if sa != sd:
        return f"{head}shapes differ: actual {sa}, desired {sd}"
    if check_dtype and dtype_want is not None:
        if dtype_name(actual.dtype) != dtype_want:
            return f"{head}dtypes differ: actual {actual.dtype}, expected {dtype_want}"
    elif check_dtype and dtype_name(actual.dtype) != dtype_name(desired.dtype):
        hint = ""
        if float8_format(actual.dtype) is not None and float8_format(desired.dtype) is None:
            hint = (
                " (a float8 output against its unquantized reference: give scale=, the "
                "quantization scale, and compare the dequantized values)"
            )
        return f"{head}dtypes differ: actual {actual.dtype}, desired {desired.dtype}{hint}"
    if check_device:
        da, dd = _compat.device_of(actual), _compat.device_of(desired)
        same_lib = array_api_compat.array_namespace(actual) is array_api_compat.array_namespace(
            desired
        )
        if da is not None and dd is not None:
            differ = da != dd if same_lib else _device_kind(da) != _device_kind(dd)
            if differ:
                return f"{head}devices differ: actual on {da!r}, desired on {dd!r}"
    return None


def _known_shape(x: Array) -> tuple[int, ...]:
    """The shape, with unknown extents (Dask after boolean indexing: NaN) computed."""
    shape = tuple(x.shape)
    if all(isinstance(n, int | np.integer) for n in shape):
        return tuple(int(n) for n in shape)
    return tuple(to_numpy(x).shape)


def _device_kind(dev: Any) -> str:
    """A device as a library-neutral name: 'cpu', 'gpu:N' or its text (libraries differ in how
    they spell the same device: NumPy's 'cpu', torch's device('cpu'), JAX's CpuDevice(id=0))."""
    text = str(dev).lower()
    if "cpu" in text:
        return "cpu"
    if any(k in text for k in ("cuda", "gpu", "rocm")):
        digits = "".join(ch for ch in text if ch.isdigit())
        return f"gpu:{digits or 0}"
    return text


def _fail_report(message: str) -> Report:
    return Report(False, "fail", message, math.inf, math.inf, math.inf, 0.0)


def _token_positions_text(
    rope: Rope, pos: np.ndarray, lead: tuple[int, ...], idx: tuple[Any, ...]
) -> str:
    from ._error_model import _scheme

    scheme = _scheme(rope)
    if scheme is None:
        p = np.broadcast_to(pos, lead)[idx]
        return f"position {float(p):g}"
    per_token = np.moveaxis(pos, 0, -1) if scheme.axis_position == "leading" else pos
    p = np.broadcast_to(per_token, (*lead, per_token.shape[-1]))[idx]
    return "positions (" + ", ".join(f"{float(v):g}" for v in p) + ") per axis"


def compare(
    actual: Array,
    desired: Array,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    rope: Rope | None = None,
    positions: Array = None,
    x: Array = None,
    role: str = "query",
    seq_len: int | None = None,
    strict: bool = False,
    equal_nan: bool = False,
    check_dtype: bool = True,
    check_device: bool = True,
    check_namespace: bool = True,
    msg: str | None = None,
    scale: Any = None,
    saturate: bool | None = None,
    intermediate: Any = None,
) -> Report:
    """Judge ``actual`` against ``desired`` and return the :class:`Report` (never raises on
    a mismatch; :func:`assert_close` does).

    Parameters
    ----------
    actual, desired : array
        Arrays of any Array-API library, on any device (``desired``: the reference).
    rtol, atol : float, optional
        Explicit tolerances (both or neither): ``|actual - desired| <= atol + rtol *
        |desired|``; the class is then "exact" or "fail". Without them the error model of
        the dtype under test decides (see the accuracy page).
    dtype : dtype or str, optional
        The dtype under test (default: ``actual``'s).
    rope : Rope, optional
        With ``positions``: judge a RoPE output per element, with the phase budget of
        angles formed in float32 (or the dtype under test, if narrower in error).
    positions : array, optional
        The positions given to ``apply_rope`` (broadcasting against ``actual.shape[:-1]``).
    x : array, optional
        The input (needs ``rope`` and ``positions``); with it a failure is diagnosed
        (families fitted to the data). For two
        float8 arrays (no ``scale``) it also recovers the target from the reference (the
        scale bounded per row of the last axis), so one float8 step is allowed only near a
        rounding midpoint, and bounds the pairs with a saturated channel.
    role : {"query", "key"}
        xPos only: which magnitude the output carries.
    seq_len : int, optional
        The length a dynamic schedule used (default: max(positions) + 1).
    strict : bool
        Pass only the "exact" class.
    equal_nan : bool
        NaN in ``actual`` matches NaN in ``desired``.
    check_dtype, check_device, check_namespace : bool
        Structural checks made before the values.
    msg : str, optional
        Prefix of the message.
    scale : float or array, optional
        Float8 outputs only: the quantization scale (per tensor, or an array broadcasting
        to ``actual``'s shape, e.g. per head). Then ``desired`` is the unquantized reference
        (the rotation y in its own units, any float dtype) and the comparison is made on the
        dequantized values ``actual * scale`` against ``clamp(y, -fmax * scale, fmax *
        scale)``. Without it, two float8 arrays are compared (``desired`` the exactly
        rounded float8 reference, e.g. a quantized case's ``expected()``). The scale is the
        divisor (``actual ~ y / scale``); for a kernel that multiplies by its scale m
        (flashinfer's ``quant_scale``, TransformerEngine's ``scale``) pass ``1 / m``.
    saturate : bool, optional
        Float8 outputs only (default True): the kernel clamps to the format's range before
        the cast, so a NaN or inf where the reference saturates is a failure, named as an
        overflow. ``False``: the kernel does not clamp and the cast's overflow (NaN, or inf
        for e5m2) is the expected value where ``|y / scale|`` overflows.
    intermediate : dtype or str, optional
        Float8 outputs only (default float32): the dtype the kernel rounded the rotation to
        before quantizing (``"bfloat16"`` for a kernel that rotates in the model's dtype);
        its error model is part of the allowance.

    Returns
    -------
    Report
        The verdict, class, errors, phase errors, blind spots, diagnoses and, on failure of
        a RoPE output, where the failures lie (pairs, channels, indices per axis).

    Raises
    ------
    RopeTypeError, RopeValueError
        For invalid arguments (non-arrays, a tolerance that is not a finite number >= 0,
        one tolerance without the other, positions that do not broadcast, a role other
        than "query"/"key", ``scale``/``saturate``/``intermediate`` for an output that is
        not float8, a scale that is not finite and > 0 or does not broadcast, a float8
        ``desired`` with ``scale``, ``x`` without ``rope`` and ``positions``).

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> from rope_ref.testing import compare
    >>> rope = rr.Rope(head_dim=8)
    >>> x = np.random.default_rng(0).standard_normal((4, 8))
    >>> pos = np.arange(4)
    >>> r = compare(rr.apply_rope(x, pos, rope), rr.apply_rope(x, pos, rope), rope=rope,
    ...             positions=pos)
    >>> r.passed, r.accuracy_class
    (True, 'exact')
    """
    rtol_v, atol_v = _check_compare_args(actual, desired, rtol, atol, role, rope)
    strict, equal_nan = as_bool(strict, "strict"), as_bool(equal_nan, "equal_nan")
    check_dtype = as_bool(check_dtype, "check_dtype")
    check_device = as_bool(check_device, "check_device")
    check_namespace = as_bool(check_namespace, "check_namespace")
    if msg is not None and not isinstance(msg, str):
        raise RopeTypeError(f"msg must be a str or None, got {type(msg).__name__}")
    if x is not None and (rope is None or positions is None):
        raise RopeValueError(
            "x= (the input, for the diagnoses) needs rope= and positions= as well; without "
            "them it would be ignored"
        )
    head = f"{msg}: " if msg else ""
    name = dtype_name(dtype if dtype is not None else actual.dtype)
    q = _float8_spec(name, scale, saturate, intermediate, actual, desired)
    problem = _check_structure(
        actual,
        desired,
        head,
        check_dtype,
        check_device,
        check_namespace,
        name if (q is not None and q.scale is not None) else None,
    )
    if problem is not None:
        return _fail_report(problem)
    explicit = rtol_v is not None
    u = unit_roundoff(name) if (not explicit or name in BITS) else 2.0**-53
    a_np = to_numpy(actual).astype(np.float64)
    d_np = to_numpy(desired).astype(np.float64)
    pos_np = None if positions is None else to_numpy(positions).astype(np.float64)
    _check_rope_args(pos_np, seq_len, x, tuple(d_np.shape))
    use_rope = rope is not None and pos_np is not None and a_np.ndim >= 1
    x_np = None if (x is None or not use_rope) else to_numpy(x).astype(np.float64)
    ctx = _Context(rope if use_rope else None, pos_np, seq_len, role, rtol_v, atol_v, strict, x_np)
    v = _plain_values(a_np, d_np, name, u, ctx) if q is None else _float8_values(a_np, d_np, q, ctx)
    a_np, d_np, model, levels, allow_used = v.a, v.d, v.model, v.levels, v.allow_used
    fin_d = np.isfinite(d_np)
    d_fin = np.where(fin_d, d_np, 0.0)
    with np.errstate(invalid="ignore"):
        err = np.abs(a_np - d_np)
    both = fin_d & np.isfinite(a_np)
    same = (a_np == d_np) | (equal_nan & np.isnan(a_np) & np.isnan(d_np)) | v.accept
    err_fin = np.where(both, err, 0.0)
    # a rotation errs per pair: rotary elements are judged by their pair's error vector
    err_cmp = err_fin
    if v.pair_norm:
        assert rope is not None
        err_cmp = _pair_errors(err_fin, rope)

    def ok_under(allow: np.ndarray) -> np.ndarray:
        ok: np.ndarray = same | (both & (err_cmp <= allow))
        return ok

    cls = _accuracy_class(levels, ok_under)
    bad = ~ok_under(allow_used)
    passed = cls == "exact" if strict else cls != "fail"
    mismatch_nonfinite = bool(np.any(~both & ~same))
    max_abs = math.inf if mismatch_nonfinite else (float(np.max(err_fin)) if err.size else 0.0)
    ulp_all = v.ulp
    max_ulp = (
        math.inf
        if mismatch_nonfinite
        else (float(np.max(np.where(both, ulp_all, 0.0))) if err.size else 0.0)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(same, 0.0, np.where(both, err_cmp / allow_used, math.inf))
    worst_ratio = float(np.max(ratio)) if ratio.size else 0.0
    atol_rep = float(np.max(allow_used)) if allow_used.size else 0.0
    phase: tuple[tuple[int, int, float], ...] = ()
    blind: tuple[str, ...] = ()
    serious = False
    if use_rope:
        assert model is not None and rope is not None
        phase = _phase_errors(np.where(both, a_np, 0.0), d_fin, model.m, rope)
        if not strict and not explicit:
            blind, serious = _blind_spots(model)
    blind, serious = blind + v.blind, serious or bool(v.blind)
    if passed:
        text = (
            f"{head}arrays are close: accuracy class '{cls}'"
            + (" (strict)" if strict else "")
            + f", max abs error {max_abs:.3e}, {max_ulp:.3g} ulp of {name}, "
            f"worst error/allowance {worst_ratio:.3g}"
        )
        lines = [text, *v.notes, *_phase_lines(phase), *(f"  blind spot: {b}" for b in blind)]
        return Report(
            True,
            cls,
            "\n".join(lines),
            max_abs,
            max_ulp,
            worst_ratio,
            atol_rep,
            (),
            phase,
            blind,
            serious,
        )
    # ---------------------------------------------------------------- the failure report
    n_bad, total = int(np.sum(bad)), bad.size
    with np.errstate(invalid="ignore"):
        excess = np.where(both, err_fin - allow_used, math.inf)  # the element's own error
    score = np.where(bad, excess, -math.inf)
    worst = np.unravel_index(int(np.argmax(score)), bad.shape)
    a_w, d_w, e_w = a_np[worst], d_np[worst], err[worst]
    rel = e_w / abs(d_w) if d_w != 0 and np.isfinite(d_w) else math.inf
    ulp = float(ulp_all[worst])
    tol = _tolerance_text(
        name, u, rtol_v, atol_v, atol_rep, model is not None or q is not None, strict
    )
    lines = [
        f"{head}arrays are not close: {n_bad} of {total} elements exceed {tol}",
        *v.notes,
        f"  worst at index {tuple(int(i) for i in worst)}: actual {float(a_w)!r}, "
        f"desired {float(d_w)!r}",
        f"  abs error {e_w:.3e}, rel error {rel:.3e}, {ulp:.4g} ulp of {name}, "
        f"allowance {float(allow_used[worst]):.3e}",
    ]
    hyps: tuple[Any, ...] = ()
    where = _Breakdown()
    if use_rope:
        assert rope is not None and pos_np is not None and model is not None
        lines.append(
            f"  {_token_positions_text(rope, pos_np, a_np.shape[:-1], worst[:-1])}, "
            f"{_pair_of(int(worst[-1]), rope)}"
        )
        lines.append("  max abs error by |position|:")
        lines += _error_buckets(np.where(both, err, math.inf), model.m, phase)
        where = _breakdown(bad, rope, pos_np)
        lines += where.lines
        j = _pair_index(int(worst[-1]), rope)
        if j is not None:
            lines.append(
                f"  the model allows pair {j} a phase error of "
                f"{min(float(model.phase[(*worst[:-1], j)]), 2.0):.3e} rad at this position"
                + (" (not under strict)" if strict else "")
            )
        lines.append(_class_line(cls, levels, ok_under, strict))
        lines += [f"  blind spot: {b}" for b in blind]
        lines += _non_finite_lines(a_np, fin_d)
        if x is not None and v.diagnosable and not np.any(bad & both):
            # only non-finite elements fail: the families are fitted to the finite ones, whose
            # rounding noise any candidate "explains" a part of
            lines.append("  only non-finite elements fail: no usual mistake is fitted to them")
        elif x is not None and v.diagnosable:
            quant = None
            if q is not None and q.scale is not None:
                quant = (q.fmt, np.broadcast_to(q.scale, a_np.shape), q.saturate)
            hyps, diag_lines = _diagnosis(
                a_np, d_np, x, pos_np, rope, model.seq_len, role, name, quant
            )
            lines += diag_lines
    return Report(
        False,
        cls,
        "\n".join(lines),
        max_abs,
        max_ulp,
        worst_ratio,
        atol_rep,
        hyps,
        phase,
        blind,
        serious,
        where.pairs,
        where.channels,
        where.indices,
    )


@dataclass(frozen=True)
class _Context:
    """What the value paths need besides the arrays (rope None: not judged as RoPE)."""

    rope: Rope | None
    pos: np.ndarray | None
    seq_len: int | None
    role: str
    rtol: float | None
    atol: float | None
    strict: bool
    x: np.ndarray | None = None


@dataclass(frozen=True)
class _Values:
    """The arrays compared and their allowances: ``a``/``d`` as compared (a float8 output
    against its unquantized reference: dequantized and clamped), per class allowances,
    elements accepted outright (an expected overflow), and notes for the message."""

    a: np.ndarray
    d: np.ndarray
    levels: list[tuple[str, np.ndarray]]
    allow_used: np.ndarray
    model: Any
    ulp: np.ndarray
    pair_norm: bool
    accept: Any = False
    notes: tuple[str, ...] = ()
    diagnosable: bool = True
    blind: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Float8Spec:
    """A float8 output: its format, the scale (None: two float8 arrays), whether the kernel
    saturates and the dtype it rounded the rotation to before quantizing."""

    fmt: Float8Format
    scale: np.ndarray | None
    saturate: bool
    intermediate: str


def _float8_spec(
    name: str, scale: Any, saturate: Any, intermediate: Any, actual: Array, desired: Array
) -> _Float8Spec | None:
    """The float8 description of the output, validated; None for other dtypes (where giving
    ``scale``, ``saturate`` or ``intermediate`` is an error)."""
    fmt = float8_format(name)
    if fmt is None:
        given = [k for k, v in (("scale", scale), ("saturate", saturate)) if v is not None]
        given += ["intermediate"] if intermediate is not None else []
        if given:
            raise RopeValueError(
                f"{', '.join(given)} {'describes' if len(given) == 1 else 'describe'} a float8 "
                "output, but the dtype under test is "
                f"{name}; expected a float8 actual (float8_e4m3fn, float8_e5m2, ...) or dtype="
            )
        return None
    sat = True if saturate is None else as_bool(saturate, "saturate")
    inter = "float32" if intermediate is None else dtype_name(intermediate)
    if inter not in ("float64", "float32", "float16", "bfloat16"):
        raise RopeValueError(
            f"intermediate must be the dtype the kernel rotated in before quantizing: one of "
            f"float64, float32, float16, bfloat16, got {intermediate!r}"
        )
    if scale is None:
        return _Float8Spec(fmt, None, sat, inter)
    if float8_format(getattr(desired, "dtype", None)) is not None:
        raise RopeValueError(
            "with scale=, desired is the unquantized reference in its own units (y, not "
            f"y / scale), got a {dtype_name(desired.dtype)} array; compare two float8 arrays "
            "without scale="
        )
    return _Float8Spec(fmt, _scale_array(scale, actual), sat, inter)


def _scale_array(scale: Any, actual: Array) -> np.ndarray:
    """The scale as a float64 array broadcasting to actual's shape; finite and > 0."""
    if isinstance(scale, bool) or not (isinstance(scale, numbers.Real) or _compat.is_array(scale)):
        raise RopeTypeError(
            f"scale must be a real number or an array (per tensor, per head, ...), got "
            f"{type(scale).__name__} {scale!r}"
        )
    raw = np.asarray(to_numpy(scale))
    if raw.dtype.kind not in "iuf":
        raise RopeTypeError(
            f"scale must be a real number or an array of real numbers, got an array of dtype "
            f"{raw.dtype}"
        )
    s = raw.astype(np.float64)
    shape = _known_shape(actual)
    try:
        ok = np.broadcast_shapes(s.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise RopeValueError(
            f"scale of shape {s.shape} does not broadcast to actual's shape {shape}; expected "
            "a number or e.g. (heads, 1) for a per-head scale"
        )
    if s.size and not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise RopeValueError(f"scale must be finite and > 0, got {s.ravel()[np.argmin(s)]!r}")
    return s


def _plain_values(a_np: np.ndarray, d_np: np.ndarray, name: str, u: float, c: _Context) -> _Values:
    """The values of a comparison in a dtype that is not float8."""
    model = None
    if c.rope is not None:
        assert c.pos is not None
        model = pair_model(d_np, c.rope, c.pos, name, seq_len=c.seq_len, role=c.role)
    d_fin = np.where(np.isfinite(d_np), d_np, 0.0)
    levels, allow_used = _allowances(d_fin, name, u, c.rtol, c.atol, model, c.strict)
    pair_norm = model is not None and c.rtol is None
    return _Values(a_np, d_np, levels, allow_used, model, ulps(a_np, d_np, name), pair_norm)


def _intermediate_levels(
    y: np.ndarray, q: _Float8Spec, c: _Context
) -> tuple[list[tuple[str, np.ndarray]], Any]:
    """The intermediate's allowance per class (the rope model of ``q.intermediate`` at the
    magnitudes ``y``, or the generic one), and the rope model (None without a rope)."""
    w = q.intermediate
    u_w = unit_roundoff(w)
    if c.rope is not None:
        assert c.pos is not None
        pm = pair_model(y, c.rope, c.pos, w, seq_len=c.seq_len, role=c.role)
        return [("exact", pm.exact), ("lower-precision angles", pm.angles)], pm
    big = float(np.max(np.abs(y))) if y.size else 0.0
    return [("exact", K_OUT * u_w * np.abs(y) + K_OUT * u_w * big + tiny(w))], None


def _float8_values(a_np: np.ndarray, d_np: np.ndarray, q: _Float8Spec, c: _Context) -> _Values:
    """The values of a float8 comparison (see the float8 part of the error model's
    docstring): against the unquantized reference (``scale`` given) or against the exactly
    rounded float8 reference."""
    fmt = q.fmt
    u_w = unit_roundoff(q.intermediate)
    accept: Any = False
    notes: list[str] = []
    blind: tuple[str, ...] = ()
    if q.scale is None:  # two float8 arrays: a and d are float8 values
        levels, pm, accept, blind = _rounded_reference_levels(a_np, d_np, q, c)
        a_cmp, d_cmp, s = a_np, d_np, np.ones(())
        sat = np.abs(d_np) == fmt.fmax
        over_note = "where the reference saturates at ±fmax"
    else:
        s = np.broadcast_to(q.scale, d_np.shape)
        y = d_np
        y_fin = np.where(np.isfinite(y), y, 0.0)
        lim = fmt.fmax * s
        d_cmp = np.clip(y, -lim, lim) if q.saturate else y.copy()
        t_abs = np.abs(np.where(np.isfinite(d_cmp), d_cmp, 0.0))
        inter, pm = _intermediate_levels(y_fin, q, c)
        levels = [(k, float8_allowance(t_abs, aw, np.abs(y_fin), fmt, u_w, s)) for k, aw in inter]
        with np.errstate(invalid="ignore"):
            a_cmp = a_np * s
        sat = np.abs(y) > lim
        over_note = f"where |desired / scale| > fmax = {fmt.fmax:g}"
        if not q.saturate:
            d_cmp, accept, sure = _expected_overflow(y, s, a_np, levels[-1][1], fmt)
            sat = np.zeros(y.shape, dtype=bool)
            n_fin = int(np.sum(sure & np.isfinite(a_np)))
            if n_fin:
                notes.append(
                    f"  {n_fin} elements are finite where the cast overflows (|desired / "
                    f"scale| beyond {fmt.overflow:g}): the kernel saturates (saturate=True)"
                )
    if c.rtol is not None:
        assert c.atol is not None
        d_fin = np.where(np.isfinite(d_cmp), d_cmp, 0.0)
        levels = [("exact", c.atol + c.rtol * np.abs(d_fin))]
    allow_used = levels[0][1] if c.strict else levels[-1][1]
    n_sat = int(np.sum(sat))
    how = (
        f"dequantized (actual * scale) against clamp(desired, ±{fmt.fmax:g} * scale)"
        if q.scale is not None and q.saturate
        else (
            "dequantized (actual * scale) against desired, overflow expected beyond "
            f"{fmt.overflow:g} * scale"
            if q.scale is not None
            else "against the rounded float8 reference"
        )
    )
    notes.append(
        f"  {fmt.name} output, {how}; {n_sat} of {sat.size} elements saturated; rotation "
        f"rounded to {q.intermediate} before quantizing"
    )
    nonfin = ~np.isfinite(a_np) & sat
    if np.any(nonfin):
        notes.append(
            f"  {int(np.sum(nonfin))} elements are NaN or inf {over_note}: the kernel "
            "overflowed instead of saturating (clamp to ±fmax before the cast"
            + (", or pass saturate=False if overflow is intended)" if q.scale is not None else ")")
        )
    d_codes = d_cmp / s if q.scale is not None else d_cmp
    with np.errstate(invalid="ignore"):
        ulp = ulps(a_np, d_codes, fmt.name)
    model = None if pm is None else dataclasses.replace(pm, u_out=fmt.u)
    return _Values(
        a_cmp,
        d_cmp,
        levels,
        allow_used,
        model,
        ulp,
        False,
        accept,
        tuple(notes),
        diagnosable=q.scale is not None,
        blind=blind,
    )


def _saturated_pairs(sat: np.ndarray, rope: Rope) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (``lead + (n_pairs,)``), whether a channel saturates; per element, whether
    its pair partner does."""
    ia, ib = pair_channels(rope)
    pair_sat = sat[..., ia] | sat[..., ib]
    partner = np.zeros(sat.shape, dtype=bool)
    partner[..., ia] = sat[..., ib]
    partner[..., ib] = sat[..., ia]
    return pair_sat, partner


def _scale_bounds(
    y: np.ndarray, ref: np.ndarray, sat: np.ndarray, fmt: Float8Format
) -> tuple[np.ndarray, np.ndarray]:
    """Per row (the last axis: a per-tensor, per-head or per-token scale is constant along
    it), bounds on the scale the reference was rounded with: T = y / s lies in the rounding
    interval of d, so ``|y| / (|d| + h_up) <= s`` (unsaturated d) and ``s <= |y| / (|d| -
    h_down)`` (d not 0). 0 and inf where no element bounds it."""
    mag = np.abs(ref)
    ay = np.abs(y)
    fin = np.isfinite(y) & np.isfinite(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(~sat & fin, ay / (mag + half_spacing(mag, fmt)), 0.0)
        below = mag - half_spacing_below(mag, fmt)
        hi = np.where(fin & (mag > 0) & (below > 0), ay / np.where(below > 0, below, 1.0), np.inf)
    if not lo.size:
        return lo, hi
    return np.max(lo, axis=-1, keepdims=True), np.min(hi, axis=-1, keepdims=True)


def _known_target_sides(
    y: np.ndarray,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
    ref: np.ndarray,
    delta: np.ndarray,
    fmt: Float8Format,
) -> tuple[np.ndarray, np.ndarray]:
    """A_8,8 where x gives the target: T = clamp(y / s) with s in [s_lo, s_hi], the kernel's
    c within ``delta`` of T, its result between ``c_lo - h(c_lo)`` and ``c_hi + h(c_hi)``."""
    slack = 1.0 + 2.0**-40  # the float64 quotients
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = y / s_hi, y / s_lo
    t_min = np.clip(np.minimum(t1, t2) * np.where(y > 0, 1 / slack, slack), -fmt.fmax, fmt.fmax)
    t_max = np.clip(np.maximum(t1, t2) * np.where(y > 0, slack, 1 / slack), -fmt.fmax, fmt.fmax)
    c_hi = np.minimum(t_max + delta, fmt.fmax)
    c_lo = np.maximum(t_min - delta, -fmt.fmax)
    up: np.ndarray = c_hi + half_spacing(c_hi, fmt) - ref
    down: np.ndarray = ref - c_lo + half_spacing(c_lo, fmt)
    return up, down


def _rounded_reference_levels(
    a_np: np.ndarray, d_np: np.ndarray, q: _Float8Spec, c: _Context
) -> tuple[list[tuple[str, np.ndarray]], Any, Any, tuple[str, ...]]:
    """Two float8 arrays: A_8,8 per class (the side of the reference the result lies on),
    the rope model, the elements accepted unjudged and the blind spots (see the error
    model's docstring: a pair with a saturated channel has an unknown magnitude)."""
    fmt = q.fmt
    d_fin = np.where(np.isfinite(d_np), d_np, 0.0)
    mag = np.abs(d_fin)
    sat = mag == fmt.fmax
    t_bound = np.minimum(mag + half_spacing(mag, fmt), fmt.fmax)  # |T| <= |d| + h(|d|)
    eff = np.copysign(t_bound, d_fin)
    y_abs = t_bound
    unbounded = np.zeros(d_np.shape, dtype=bool)
    blind: list[str] = []
    y = s_lo = s_hi = None
    if c.x is not None and c.rope is not None:
        assert c.pos is not None
        y = np.asarray(
            apply_rope(c.x, c.pos, c.rope, seq_len=c.seq_len, role=c.role), dtype=np.float64
        )
        s_lo, s_hi = _scale_bounds(y, d_fin, sat, fmt)
    if c.rope is not None and np.any(sat):
        assert c.pos is not None
        ia, ib = pair_channels(c.rope)
        pair_sat, partner = _saturated_pairs(sat, c.rope)
        rho8 = np.full(pair_sat.shape, np.inf)
        if y is not None and s_lo is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                rho8 = np.where(s_lo > 0, np.hypot(y[..., ia], y[..., ib]) / s_lo, np.inf)
        known = pair_sat & np.isfinite(rho8)
        rho_c = np.hypot(eff[..., ia], eff[..., ib])
        rho_eff = np.where(known, np.maximum(rho_c, np.where(known, rho8, 0.0)), rho_c)
        f = np.where(known, rho_eff / np.where(rho_c > 0, rho_c, 1.0), 1.0)
        eff = eff.copy()
        eff[..., ia] *= f
        eff[..., ib] *= f
        y_abs = y_abs.copy()
        for ch in (ia, ib):
            y_abs[..., ch] = np.where(known, rho_eff, y_abs[..., ch])
        bad_pair = pair_sat & ~known
        unbounded[..., ia] = partner[..., ia] & bad_pair
        unbounded[..., ib] = partner[..., ib] & bad_pair
        n_un = int(np.sum(unbounded))
        if n_un:
            why = (
                "the input x gives no bound on the scale in their rows"
                if c.x is not None
                else "pass x= (the input) to bound it from the unsaturated elements"
            )
            blind.append(
                f"{n_un} elements whose rotary pair partner saturates are not judged (any "
                "finite value in range passes): against the rounded float8 reference the "
                "pair's unclamped magnitude, which the intermediate's error scales with, is "
                f"unknown there; {why}, or compare against the unquantized reference with "
                "scale="
            )
    elif c.rope is None and np.any(sat):
        blind.append(
            "the reference saturates and no rope was given: the intermediate's allowance is "
            "taken at the clamped magnitudes, which understates an error that scales with the "
            "unclamped ones; give rope= and positions= (and x=), or compare against the "
            "unquantized reference with scale="
        )
    inter, pm = _intermediate_levels(eff, q, c)
    u_w = unit_roundoff(q.intermediate)
    known_t: Any = False
    if y is not None and s_lo is not None and s_hi is not None:
        known_t = np.broadcast_to((s_lo > 0) & (s_lo <= s_hi) & np.isfinite(s_hi), d_np.shape)
    if not np.all(known_t):
        blind.append(
            (
                "against the rounded float8 reference without x= the target is known only to "
                "within its rounding interval"
                if y is None
                else f"in {int(np.sum(~np.all(np.broadcast_to(known_t, d_np.shape), axis=-1)))} "
                "rows x gives no consistent bound on the scale (none unsaturated, or a scale "
                "that varies along the last axis), so the target is known only to within its "
                "rounding interval there"
            )
            + ": one float8 spacing is allowed (a scale off by less than a spacing, or "
            "stochastic rounding, passes); pass x= (the input) to recover the target from the "
            "reference (a scale constant along the last axis), or compare against the "
            "unquantized reference with scale="
        )
    levels = []
    for k, aw in inter:
        delta = scaling_error(aw, y_abs, u_w)
        up, down = float8_rounded_allowance(d_fin, delta, fmt)
        if np.any(known_t):
            assert y is not None and s_lo is not None and s_hi is not None
            up_t, down_t = _known_target_sides(y, s_lo, s_hi, d_fin, delta, fmt)
            up, down = np.where(known_t, up_t, up), np.where(known_t, down_t, down)
        levels.append((k, np.where(a_np > d_np, up, down)))
    accept: Any = False
    if np.any(unbounded) and c.rtol is None:
        with np.errstate(invalid="ignore"):
            accept = unbounded & np.isfinite(a_np) & (np.abs(a_np) <= fmt.fmax)
    return levels, pm, accept, tuple(blind)


def _expected_overflow(
    y: np.ndarray, s: np.ndarray, a_codes: np.ndarray, allow: np.ndarray, fmt: Float8Format
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A kernel that does not saturate: where ``|y/s|`` is beyond the overflow by more than
    the intermediate's error (the mask returned last), the overflow value is expected (the
    desired array gets it); within that error of it, the overflow value is accepted as
    well."""
    with np.errstate(invalid="ignore", over="ignore"):
        yc = np.abs(y) / s
        slack = allow / s  # covers D/s, the error of the scaled intermediate
        sure = yc - slack > fmt.overflow
        maybe = (yc + slack >= fmt.overflow) & ~sure
    ov = np.copysign(fmt.overflow_value, y)
    d = np.where(sure, ov, y)
    a_is_ov = np.isnan(a_codes) if not fmt.has_inf else (a_codes == np.copysign(np.inf, y))
    accept: np.ndarray = (sure | maybe) & a_is_ov
    return d, accept, sure


def _check_compare_args(
    actual: Array,
    desired: Array,
    rtol: float | None,
    atol: float | None,
    role: str,
    rope: Rope | None,
) -> tuple[float | None, float | None]:
    """The tolerances, checked; raises on an invalid argument of :func:`compare`."""
    rtol_v, atol_v = _tolerance("rtol", rtol), _tolerance("atol", atol)
    if (rtol_v is None) != (atol_v is None):
        raise RopeValueError("give rtol and atol together, or neither (for the default model)")
    if role not in ("query", "key"):
        raise RopeValueError(f"role must be one of ('query', 'key'), got {role!r}")
    for name, arr in (("actual", actual), ("desired", desired)):
        if not _compat.is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    return rtol_v, atol_v


def _check_rope_args(
    pos_np: np.ndarray | None, seq_len: Any, x: Array, desired_shape: tuple[int, ...]
) -> None:
    """Typed errors for positions that are not finite, a seq_len that is not an integer and
    an ``x`` whose shape is not the outputs'."""
    if seq_len is not None and (
        isinstance(seq_len, bool) or not isinstance(seq_len, int | np.integer)
    ):
        raise RopeTypeError(f"seq_len must be an integer or None, got {seq_len!r}")
    if seq_len is not None and int(seq_len) < 1:
        raise RopeValueError(f"seq_len must be at least 1, got {int(seq_len)}")
    if pos_np is not None and not np.all(np.isfinite(pos_np)):
        bad = pos_np[~np.isfinite(pos_np)].ravel()[0]
        raise RopeValueError(f"positions must be finite, got {float(bad)!r} among them")
    if x is not None:
        if not _compat.is_array(x):
            raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
        if _known_shape(x) != tuple(desired_shape):
            raise RopeValueError(
                f"x must have the outputs' shape {tuple(desired_shape)} (the input that was "
                f"rotated), got {_known_shape(x)}"
            )


def _allowances(
    d_fin: np.ndarray,
    name: str,
    u: float,
    rtol_v: float | None,
    atol_v: float | None,
    model: Any,
    strict: bool,
) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """The per-element allowance of each accuracy class, best first, and the one judged."""
    if rtol_v is not None:
        assert atol_v is not None
        allow_used = atol_v + rtol_v * np.abs(d_fin)
        return [("exact", allow_used)], allow_used
    if model is not None:
        levels = [("exact", model.exact), ("lower-precision angles", model.angles)]
        return levels, (model.exact if strict else model.angles)
    scale = float(np.max(np.abs(d_fin))) if d_fin.size else 0.0
    allow_used = K_OUT * u * np.abs(d_fin) + K_OUT * u * scale + tiny(name)
    return [("exact", allow_used)], allow_used


def _pair_errors(err_fin: np.ndarray, rope: Rope) -> np.ndarray:
    """Each rotary element's error replaced by its pair's error vector's length."""
    ia, ib = pair_channels(rope)
    pe = np.hypot(err_fin[..., ia], err_fin[..., ib])
    err_cmp = err_fin.copy()
    err_cmp[..., ia] = pe
    err_cmp[..., ib] = pe
    return err_cmp


def _accuracy_class(
    levels: list[tuple[str, np.ndarray]], ok_under: Callable[[np.ndarray], np.ndarray]
) -> str:
    """The best class whose allowance every element meets ("fail" if none)."""
    for level, allow in levels:
        if bool(np.all(ok_under(allow))):
            return level
    return "fail"


def _tolerance_text(
    name: str,
    u: float,
    rtol_v: float | None,
    atol_v: float | None,
    atol_rep: float,
    modelled: bool,
    strict: bool,
) -> str:
    """The tolerances a failure message names."""
    if rtol_v is not None:
        assert atol_v is not None
        return f"atol={atol_v:.3e} + rtol={rtol_v:.3e} * |desired| (tolerances for {name})"
    if modelled:
        which = (
            "the exact class (strict)"
            if strict
            else ("the exact or the lower-precision angles class")
        )
        return (
            f"atol={atol_rep:.3e} (tolerances for {name}); atol is per element, the error "
            f"model's allowance for {which}, largest shown"
        )
    return f"atol={atol_rep:.3e} + rtol={K_OUT * u:.3e} * |desired| (tolerances for {name})"


def _non_finite_lines(a_np: np.ndarray, fin_d: np.ndarray) -> list[str]:
    """A line per kind of non-finite element of ``actual`` where ``desired`` is finite: how
    many and the index of the first."""
    lines = []
    for kind, mask in (("NaN", np.isnan(a_np) & fin_d), ("inf", np.isinf(a_np) & fin_d)):
        n = int(np.count_nonzero(mask))
        if n:
            at = tuple(int(i) for i in np.argwhere(mask)[0])
            plural = "s" if n > 1 else ""
            text = f"  {n} {kind} element{plural} where desired is finite"
            lines.append(f"{text} (the first at {at})")
    return lines


def _diagnosis(
    a_np: np.ndarray,
    d_np: np.ndarray,
    x: Array,
    pos_np: np.ndarray,
    rope: Rope,
    seq_len: int | None,
    role: str,
    name: str,
    quant: Any = None,
) -> tuple[tuple[Any, ...], list[str]]:
    """The hypotheses fitted to a failure, and the lines that report them."""
    from ._diagnose import EXPLAINED, fit_hypotheses

    hyps = fit_hypotheses(
        a_np,
        d_np,
        to_numpy(x).astype(np.float64),
        pos_np,
        rope,
        seq_len=seq_len,
        role=role,
        dtype=name,
        quant=quant,
    )
    lines = []
    partial = [h for h in hyps if h.explained < EXPLAINED and h.explained >= 0.05]
    if partial:
        lines.append(
            "  partly explained (fraction of the squared error removed): "
            + "; ".join(h.text for h in partial[:4])
        )
    full = [h for h in hyps if h.explained >= EXPLAINED]
    if full:
        lines.append("  the data is explained by: " + "; or ".join(h.text for h in full))
    else:
        lines.append("  none of the usual mistakes explains the data")
    return tuple(hyps), lines


def _class_line(
    cls: str,
    levels: list[tuple[str, np.ndarray]],
    ok_under: Callable[[np.ndarray], np.ndarray],
    strict: bool,
) -> str:
    parts = []
    for level, allow in levels:
        n = int(np.sum(~ok_under(allow)))
        parts.append(f"{n} elements outside '{level}'")
    return (
        f"  accuracy class: {cls}" + (" (strict)" if strict else "") + " (" + ", ".join(parts) + ")"
    )


@dataclass(frozen=True)
class _Breakdown:
    """Where a RoPE output fails: the rotary pairs, the channels, and per axis of the output
    other than the last the indices holding a failing element; with the message's lines."""

    pairs: tuple[int, ...] = ()
    channels: tuple[int, ...] = ()
    indices: dict[int, tuple[int, ...]] = field(default_factory=dict)
    lines: tuple[str, ...] = ()


def _count_text(idx: np.ndarray, size: int) -> str:
    """'3, 7 (2 of 8)', '0-7 (all 8)' or 'none (of 8)' (ranges capped at MAX_RANGES)."""
    if idx.size == 0:
        return f"none (of {size})"
    how = f"all {size}" if idx.size == size else f"{idx.size} of {size}"
    return f"{_ranges(idx, MAX_RANGES)} ({how})"


def _breakdown(bad: np.ndarray, rope: Rope, pos: np.ndarray) -> _Breakdown:
    """Which rotary pairs, pass-through channels and indices of each leading axis hold the
    failing elements ``bad`` (the output's shape). Vectorized: a few passes over ``bad``."""
    lead, width = bad.shape[:-1], bad.shape[-1]
    o, r = getattr(rope, "rotary_offset", 0), rope.rotary_dim
    row = np.any(bad, axis=-1)  # per token (vector along the last axis)
    chan = np.any(bad.reshape(-1, width), axis=0)
    ia, ib = pair_channels(rope)
    pairs = np.flatnonzero(chan[ia] | chan[ib])
    text = f"  failing rotary pairs: {_count_text(pairs, rope.n_pairs)}"
    if pairs.size:
        tokens = int(np.count_nonzero(np.any(bad[..., o : o + r], axis=-1)))
        text += f", in {tokens} of {math.prod(lead)} tokens"
    lines = [text]
    if r < width:
        through = np.flatnonzero(chan & ((np.arange(width) < o) | (np.arange(width) >= o + r)))
        lines.append(f"  failing pass-through channels: {_count_text(through, width - r)}")
    tok = rope.token_shape(tuple(pos.shape))
    tok = (1,) * (len(lead) - len(tok)) + tuple(tok)
    indices: dict[int, tuple[int, ...]] = {}
    for k, size in enumerate(lead):
        others = tuple(i for i in range(len(lead)) if i != k)
        idx = np.flatnonzero(np.any(row, axis=others))
        indices[k] = tuple(idx.tolist())
        if size > 1:
            how = "positions broadcast" if tok[k] == 1 else "positions per index"
            lines.append(
                f"  failing indices along axis {k} (size {size}, {how}): {_count_text(idx, size)}"
            )
    return _Breakdown(
        tuple(pairs.tolist()), tuple(np.flatnonzero(chan).tolist()), indices, tuple(lines)
    )


def _phase_lines(phase: tuple[tuple[int, int, float], ...]) -> list[str]:
    if not phase:
        return []
    return ["  max phase error by |position|:"] + [
        f"    |position| in [{lo}, {hi}): {p:.3e} rad" for lo, hi, p in phase
    ]


def _error_buckets(
    err: np.ndarray, m: np.ndarray, phase: tuple[tuple[int, int, float], ...]
) -> list[str]:
    """Max abs error per |position| range (by the token's largest per-pair position)."""
    tok_err = np.max(err, axis=-1)
    tok_pos = np.max(np.abs(m), axis=-1)
    ph = {(lo, hi): p for lo, hi, p in phase}
    out = []
    for lo, hi in itertools.pairwise(EDGES):
        sel = (tok_pos >= lo) & (tok_pos < hi)
        if np.any(sel):
            worst = float(np.max(tok_err[sel]))
            line = f"    |position| in [{lo}, {hi}): max abs error {worst:.3e}"
            if (lo, hi) in ph:
                line += f", max phase error {ph[(lo, hi)]:.3e} rad"
            out.append(line)
    return out


def assert_close(
    actual: Array,
    desired: Array,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    rope: Rope | None = None,
    positions: Array = None,
    x: Array = None,
    role: str = "query",
    seq_len: int | None = None,
    strict: bool = False,
    equal_nan: bool = False,
    check_dtype: bool = True,
    check_device: bool = True,
    check_namespace: bool = True,
    msg: str | None = None,
    scale: Any = None,
    saturate: bool | None = None,
    intermediate: Any = None,
) -> Report:
    """Assert that ``actual`` matches ``desired`` within the error model (or the given
    tolerances); return the :class:`Report`.

    ``actual`` and ``desired`` are arrays of any Array-API library on any device. Checked in
    order: namespace, shape, dtype, device, then values (``check_*`` turn the first checks
    off). Without ``rtol``/``atol`` the allowance comes from the error model of the dtype
    under test: a few ulp of the pair's magnitude ("exact" class), plus, for RoPE outputs
    (``rope`` and ``positions`` given), the phase budget of angles formed in float32
    ("lower-precision angles" class), per element: position times the frequency each pair
    actually uses. ``strict=True`` passes only the "exact" class. inf must match inf of the
    same sign; NaN matches NaN only with ``equal_nan=True``.

    On failure the message names the worst element (index, and for RoPE outputs its position
    and rotary pair), both values, the absolute and relative error, the error in ulps, how
    many elements fail, the error and the phase error per position range, which rotary pairs
    and which indices of each leading axis hold the failures (``Report.failing_pairs``,
    ``failing_indices``: a bug in one head or one batch entry shows there) and the accuracy
    class. Given the input ``x`` as well, families of the usual mistakes are fitted to the
    data and reported with the fraction of the error each explains.

    A passing comparison whose allowance is vacuous somewhere (a token where a one-position
    error passes in every pair, or a pair whose allowance reaches its magnitude: float32
    angles at ``|position|`` beyond about 2.7 million) warns with :class:`RopeToleranceWarning`;
    the report's ``blind_spots`` also list pairs that cannot see a one-position error while
    other pairs of the same tokens still do.

    Parameters
    ----------
    actual, desired, rtol, atol, dtype, rope, positions, x, role, seq_len, strict
        As for :func:`compare`.
    equal_nan, check_dtype, check_device, check_namespace, msg
        As for :func:`compare`.
    scale, saturate, intermediate
        Float8 outputs, as for :func:`compare`.

    Returns
    -------
    Report
        The passing verdict (its class, errors and phase errors).

    Raises
    ------
    AssertionError
        When the comparison fails (the report's message).
    RopeTypeError, RopeValueError
        For invalid arguments.

    Warns
    -----
    RopeToleranceWarning
        When it passes with a vacuous allowance somewhere (``Report.vacuous``).

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> from rope_ref.testing import assert_close
    >>> rope = rr.Rope(head_dim=8, layout="half")
    >>> x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    >>> pos = np.arange(16)
    >>> assert_close(rr.apply_rope(x, pos, rope), rr.apply_rope(x, pos, rope)).accuracy_class
    'exact'
    >>> other = rr.Rope(head_dim=8, layout="interleaved")       # a layout mix-up
    >>> try:
    ...     assert_close(rr.apply_rope(x, pos, other), rr.apply_rope(x, pos, rope),
    ...                  rope=rope, positions=pos, x=x)
    ... except AssertionError as e:
    ...     print("interleaved" in str(e))
    True
    """
    __tracebackhide__ = True
    report = compare(
        actual,
        desired,
        rtol=rtol,
        atol=atol,
        dtype=dtype,
        rope=rope,
        positions=positions,
        x=x,
        role=role,
        seq_len=seq_len,
        strict=strict,
        equal_nan=equal_nan,
        check_dtype=check_dtype,
        check_device=check_device,
        check_namespace=check_namespace,
        msg=msg,
        scale=scale,
        saturate=saturate,
        intermediate=intermediate,
    )
    if not report.passed:
        raise AssertionError(report.message)
    if report.vacuous:
        warnings.warn(
            "assert_close passed, but its allowance is blind in places: "
            + "; ".join(report.blind_spots),
            RopeToleranceWarning,
            stacklevel=2,
        )
    return report
