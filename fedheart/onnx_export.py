"""The whole model as one ONNX graph: ``final_model.onnx`` (extra ``export``: onnx).

Input ``features``: float32 ``[N, 13]``, the 13 UCI fields in the schema's order (age, sex, cp,
trestbps, chol, fbs, restecg, thalach, exang, oldpeak, slope, ca, thal; no label), NaN for a
missing value. Output ``probability``: float32 ``[N]``, P(disease), NaN for a row that
``fedheart predict`` refuses (a value out of its range or not an allowed code, a missing required
field; for a protocol=flamby model, any missing value among the fields FLamby uses, or another value
in a field its standardisation saw constant).

Inside: the validity checks, impossible zeros as missing, mean imputation, missing indicators,
one-hot over the global categories, standardisation, the model's layers and any site
recalibration, computed in double precision with the features rounded to float32 as in
training: the arithmetic of :mod:`fedheart.predict`. Built with ``onnx.helper`` (no torch export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedheart.calibration import EPS, logit
from fedheart.predict import ModelError, NeedsStandardisation, SavedModel, load_model
from fedheart.preprocess import FLAMBY_DUMMIES, FLAMBY_NUMERIC
from fedheart.schema import FEATURES, FIELDS, IMPOSSIBLE_ZEROS
from fedheart.stats import NUMERIC
from fedheart.tables import REQUIRED

ONNX_FILE = "final_model.onnx"
OPSET = 17  # ONNX Runtime >= 1.14 and most serving stacks
IR_VERSION = 8
INSTALL_HINT = "pip install 'fedheart[export]'"


def _index(names: Any) -> np.ndarray:
    return np.array([FEATURES.index(n) for n in names], dtype=np.int64)


class _Graph:
    """Nodes and constants under generated names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self.count = 0

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        name = f"c{len(self.constants)}"
        self.constants.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        self.count += 1
        name = out or f"t{self.count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def cast(self, x: str, to: str) -> str:
        from onnx import TensorProto

        return self.op("Cast", x, to=getattr(TensorProto, to))

    def any(self, mask: str, axis: int) -> str:
        """Logical OR along ``axis`` (kept as a bool tensor without that axis)."""
        reduced = self.op("ReduceMax", self.cast(mask, "DOUBLE"), axes=[axis], keepdims=0)
        return self.op("Greater", reduced, self.const(0.0))


def _invalid_rows(g: _Graph, x: str, required: tuple[str, ...]) -> str:
    """Rows :func:`fedheart.predict.read_patients` refuses: bad values, missing required fields."""
    low = [float(FIELDS[f].low) for f in FEATURES]
    high = [float(FIELDS[f].high) for f in FEATURES]
    width = max(len(FIELDS[f].allowed or ()) for f in FEATURES)
    allowed = np.full((len(FEATURES), width), np.nan)
    for i, f in enumerate(FEATURES):
        codes = FIELDS[f].allowed or ()
        allowed[i, : len(codes)] = codes
    has_codes = np.array([FIELDS[f].allowed is not None for f in FEATURES])
    missing = g.op("IsNaN", x)
    outside = g.op("Or", g.op("Less", x, g.const(low)), g.op("Greater", x, g.const(high)))
    in_codes = g.any(g.op("Equal", g.op("Unsqueeze", x, g.const([2], np.int64)), g.const(allowed)), 2)
    not_a_code = g.op("And", g.const(has_codes, bool), g.op("Not", in_codes))
    bad = g.op("And", g.op("Not", missing), g.op("Or", outside, not_a_code))
    absent = g.op("And", missing, g.const([f in required for f in FEATURES], bool))
    return g.any(g.op("Or", bad, absent), 1)


def _project_features(g: _Graph, x: str, model: SavedModel) -> tuple[str, None]:
    """The features (every valid row can be scored: missing values are imputed)."""
    pre = model.preprocessor
    zeros = g.op("And", g.op("Equal", x, g.const(0.0)), g.const([f in IMPOSSIBLE_ZEROS for f in FEATURES], bool))
    clean = g.op("Where", zeros, g.const(np.nan), x)
    mean = g.const([pre.mean[c] for c in NUMERIC])
    numeric = g.op("Gather", clean, g.const(_index(NUMERIC), np.int64), axis=1)
    filled = g.op("Where", g.op("IsNaN", numeric), mean, numeric)
    parts = [g.op("Div", g.op("Sub", filled, mean), g.const([pre.std[c] for c in NUMERIC]))]
    cols = [col for col, cats in pre.categories.items() for _ in cats]
    codes = [c for cats in pre.categories.values() for c in cats]
    if cols:
        picked = g.op("Gather", clean, g.const(_index(cols), np.int64), axis=1)
        parts.append(g.cast(g.op("Equal", picked, g.const(codes)), "DOUBLE"))
    if pre.indicators:
        missing = g.cast(g.op("IsNaN", clean), "DOUBLE")
        parts.append(g.op("Gather", missing, g.const(_index(pre.indicators), np.int64), axis=1))
    return (g.op("Concat", *parts, axis=1) if len(parts) > 1 else parts[0]), None


def _flamby_features(g: _Graph, x: str, model: SavedModel) -> tuple[str, str | None]:
    """The features, and the rows with another value in a field the standardisation saw constant."""
    pre = model.preprocessor
    numeric = g.op("Gather", x, g.const(_index(FLAMBY_NUMERIC), np.int64), axis=1)
    cols = [col for col, cats in FLAMBY_DUMMIES.items() for _ in cats]
    codes = [c for cats in FLAMBY_DUMMIES.values() for c in cats]
    dummies = g.cast(g.op("Equal", g.op("Gather", x, g.const(_index(cols), np.int64), axis=1), g.const(codes)),
                     "DOUBLE")
    raw = g.op("Concat", numeric, dummies, axis=1)
    mean = np.array([pre.mean[f] for f in pre.feature_names])
    std = np.array([pre.std[f] for f in pre.feature_names])
    features = g.op("Div", g.op("Sub", raw, g.const(mean)), g.const(std + 1e-9))  # fedheart.preprocess's guard
    if not (std == 0).any():
        return features, None
    differs = g.op("And", g.op("Not", g.op("Equal", raw, g.const(mean))), g.const(std == 0, bool))
    return features, g.any(differs, 1)


def build_onnx(model: SavedModel) -> Any:
    """The ``onnx.ModelProto`` of a loaded model folder."""
    from onnx import TensorProto, checker, helper

    g = _Graph()
    x = g.cast("features", "DOUBLE")
    flamby = model.pipeline == "flamby"
    required = tuple(FLAMBY_NUMERIC) + tuple(FLAMBY_DUMMIES) if flamby else tuple(c for c in REQUIRED if c in FEATURES)
    invalid = _invalid_rows(g, x, required)
    features, unscorable = (_flamby_features if flamby else _project_features)(g, x, model)
    if unscorable is not None:
        invalid = g.op("Or", invalid, unscorable)
    h = g.cast(g.cast(features, "FLOAT"), "DOUBLE")  # float32 features, as the model was trained on
    for i, (weight, bias) in enumerate(model.layers):
        h = g.op("Add", g.op("MatMul", h, g.const(weight.astype(np.float64).T)), g.const(bias.astype(np.float64)))
        if i < len(model.layers) - 1:
            h = g.op("Relu", h)
    z = g.op("Squeeze", h, g.const([1], np.int64))
    if model.recalibration is not None:
        a, b = model.recalibration
        bound = float(logit(np.array([1 - EPS]))[0])  # fedheart.calibration clips p to [EPS, 1 - EPS]
        z = g.op("Max", g.op("Min", z, g.const(bound)), g.const(-bound))
        z = g.op("Add", g.op("Mul", z, g.const(b)), g.const(a))
    p = g.op("Where", invalid, g.const(np.nan), g.op("Sigmoid", z))
    g.op("Cast", p, out="probability", to=TensorProto.FLOAT)
    graph = helper.make_graph(
        g.nodes, "fedheart", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(FEATURES)])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"])], initializer=g.constants,
        doc_string=__doc__)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="fedheart", ir_version=IR_VERSION, doc_string=__doc__)
    props = {"input": f"features: float32 [N, {len(FEATURES)}] = {', '.join(FEATURES)}; NaN = missing",
             "output": "probability: float32 [N], P(disease); NaN = a row fedheart predict refuses",
             "pipeline": model.pipeline, "model": str(model.meta.get("model")), "threshold": repr(model.threshold),
             "recalibration": "none" if model.recalibration is None
             else "intercept {!r}, slope {!r}".format(*model.recalibration)}
    helper.set_model_props(onnx_model, props)
    checker.check_model(onnx_model, full_check=True)
    return onnx_model


def export_onnx(folder: str | Path, out: str | Path | None = None, *,
                standardise_from: str | Path | None = None) -> Path:
    """Write the ONNX file of a model folder (default ``<folder>/final_model.onnx``)."""
    if standardise_from is not None and out is None:
        raise ModelError("--standardise-from makes a model for your hospital only: pass --out FILE "
                         f"(the run folder's {ONNX_FILE} stays the run's)")
    model = load_model(folder, standardise_from=standardise_from)
    target = Path(out).expanduser() if out is not None else model.folder / ONNX_FILE
    from fedheart.runs import atomic_write_bytes

    atomic_write_bytes(target, build_onnx(model).SerializeToString())
    return target


def write_run_onnx(folder: str | Path) -> str:
    """At the end of a run: write ``final_model.onnx`` if possible; a sentence saying what happened."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return (f"{ONNX_FILE} not written: the export libraries are not installed ({INSTALL_HINT}); "
                f"then `fedheart export {folder}` writes it")
    try:
        return f"wrote {export_onnx(folder)}"
    except NeedsStandardisation as exc:
        return (f"{ONNX_FILE} not written: {exc}. A hospital writes its own with `fedheart export {folder} "
                "--standardise-from ITS_ROWS.csv --out FILE`")
    except ModelError as exc:
        return f"{ONNX_FILE} not written: {exc}"


def command(run_dir: str, *, out: str | None = None, standardise_from: str | None = None) -> int:
    """``fedheart export``: exit 0, or 2 with the reason on stderr."""
    import sys

    from fedheart.tables import DataFileError

    try:
        import onnx  # noqa: F401
    except ImportError:
        print(f"error: writing ONNX needs the export libraries: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        print(f"wrote {export_onnx(run_dir, out, standardise_from=standardise_from)}")
    except (ModelError, DataFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
