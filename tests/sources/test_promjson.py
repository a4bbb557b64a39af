"""The vectorised decoder against a plain json.loads reading of the same answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfanalytics.exceptions import SourceError
from vfanalytics.series import canonical_labels
from vfanalytics.sources.promjson import decode_query_response

label_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)


def _go_float(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


@st.composite
def matrices(draw):
    result = []
    for i in range(draw(st.integers(0, 5))):
        metric = {"__name__": "m", "i": str(i), "v": draw(label_value), "values": draw(label_value)}
        n = draw(st.integers(0, 6))
        ts = sorted(draw(st.sets(st.integers(0, 4_000_000_000_000), min_size=n, max_size=n)))
        vals = [[t / 1000, _go_float(draw(floats))] for t in ts]
        result.append({"metric": metric, "values": vals})
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _reference(doc: dict) -> list[tuple[str, int, float]]:
    out = []
    for r in doc["data"]["result"]:
        pairs = r["values"] if "values" in r else [r["value"]]
        out += [(canonical_labels(r["metric"]), round(float(t) * 1000), float(v)) for t, v in pairs]
    return out


def _ours(body: bytes) -> list[tuple[str, int, float]]:
    res = decode_query_response(body)
    labels = dict(zip(res.series["series_id"].to_list(), res.series["labels"].to_list(), strict=True))
    return [(labels[s], t, v) for s, t, v in res.samples.iter_rows()]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[:2] == y[:2] and (x[2] == y[2] or (np.isnan(x[2]) and np.isnan(y[2]))) for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=150, deadline=None)
@given(matrices(), st.booleans())
def test_matrix_equals_json_loads(doc, pretty):
    # Prometheus' compact form, and a re-indented one (takes the slow path)
    body = json.dumps(doc, ensure_ascii=False, indent=1 if pretty else None, separators=None if pretty else (",", ":"))
    assert _same(_ours(body.encode()), _reference(json.loads(body)))


def test_vector_scalar_and_errors():
    vec = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"x"},"value":[1.5,"2"]},' \
          b'{"metric":{},"value":[1.5,"-Inf"]}]}}'
    assert _same(_ours(vec), _reference(json.loads(vec)))
    res = decode_query_response(b'{"status":"success","data":{"resultType":"scalar","result":[10.25,"3"]}}')
    assert res.samples.rows()[0][1:] == (10250, 3.0)
    with pytest.raises(SourceError, match="query failed"):
        decode_query_response(b'{"status":"error","errorType":"bad_data","error":"boom"}')
    with pytest.raises(SourceError, match="not valid JSON"):
        decode_query_response(b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"2"]]}')
