"""Prometheus API JSON -> long Polars frames without a Python object per sample.

A ``query_range`` answer is mostly ``"values":[[1793491200,"0.5"],[...],...]``
arrays. Decoding it with ``json.loads`` (as prometheus-api-client does) makes two
lists, a float and a string per sample before any DataFrame exists. Here the
bytes of the value arrays are cut out of the body, rewritten in place into CSV
(``ts,value`` lines) with a few ``bytes.replace`` calls, and handed to Polars'
multi-threaded CSV reader; only the small ``metric`` objects go through
``orjson``. Timestamps arrive as float seconds and become exact int64
milliseconds; values keep every bit (``NaN``, ``+Inf``, ``-Inf``).

This works because of the format's guarantees: a value is a JSON string holding a
number, so it never contains ``]``, and the text ``"values":[`` can only be a key
(inside a JSON string its quotes would be escaped).

Example
-------
>>> body = b'{"status":"success","data":{"resultType":"matrix","result":[' \\
...        b'{"metric":{"__name__":"up","job":"a"},"values":[[1.5,"1"],[16.5,"NaN"]]}]}}'
>>> res = decode_query_response(body)
>>> res.result_type, res.samples["ts"].to_list(), res.series["labels"].to_list()
('matrix', [1500, 16500], ['{"__name__":"up","job":"a"}'])
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import orjson
import polars as pl

from vfanalytics.exceptions import SourceError
from vfanalytics.series import SAMPLE_SCHEMA, SERIES_SCHEMA, labels_frame, series_id

__all__ = ["QueryResult", "decode_query_response", "SERIES_SCHEMA", "SAMPLE_SCHEMA", "labels_frame"]


_VALUES_KEY = re.compile(rb'"values?"\s*:\s*\[')


@dataclass
class QueryResult:
    """A decoded answer: ``series`` (series_id, metric, labels) and long ``samples``.

    ``result_type`` is Prometheus' ``resultType`` (``matrix``, ``vector``, ``scalar``,
    ``string``); ``warnings`` are the server's warnings, if any.
    """

    result_type: str
    series: pl.DataFrame
    samples: pl.DataFrame
    warnings: list[str]


def _csv_pairs(chunks: list[memoryview]) -> pl.DataFrame:
    """``[ts,"v"],[ts,"v"]`` byte chunks (outer brackets removed) -> ts (ms), value.

    Deleting ``[``, ``]`` and ``"`` in one ``bytes.translate`` pass leaves a flat list
    ``ts,v,ts,v,...``; read as one CSV column with ``,`` as the line end, it is parsed
    by Polars' multi-threaded float reader and split into pairs without a copy.
    """
    data = b",".join(chunks).translate(None, b'"[]')
    flat = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        new_columns=["x"],
        schema={"x": pl.Float64},
        eol_char=",",
        quote_char=None,
        null_values=[],
    )["x"].to_numpy()
    pairs = flat.reshape(-1, 2)
    # float seconds with at most millisecond digits -> exact int64 ms
    ts = np.round(pairs[:, 0] * 1000.0).astype(np.int64)
    return pl.DataFrame({"ts": ts, "value": pairs[:, 1]})


def _decode_generic(body: bytes) -> QueryResult:
    """The slow path for JSON not laid out as Prometheus writes it (whitespace between tokens)."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise SourceError("query failed: not a successful Prometheus API answer")
    data = doc["data"]
    result = data.get("result") or []
    pairs = [r["values"] if "values" in r else [r["value"]] for r in result]
    series = labels_frame([dict(r.get("metric") or {}) for r in result])
    counts = np.array([len(p) for p in pairs], dtype=np.int64)
    flat = [x for p in pairs for x in p]
    ts = np.round(np.array([float(t) for t, _ in flat]) * 1000.0).astype(np.int64)
    values = np.array([float(v) for _, v in flat], dtype=np.float64)
    samples = pl.DataFrame(
        {"series_id": np.repeat(series["series_id"].to_numpy(), counts), "ts": ts, "value": values},
        schema=SAMPLE_SCHEMA,
    )
    return QueryResult(str(data.get("resultType", "")), series, samples, [str(w) for w in doc.get("warnings") or []])


def decode_query_response(body: bytes) -> QueryResult:
    """Decode a Prometheus ``/api/v1/query`` or ``/query_range`` body (also Loki's matrix answers).

    Raises
    ------
    SourceError
        When the body is not a successful Prometheus API answer.
    """
    starts: list[int] = []
    ends: list[int] = []
    is_matrix: list[bool] = []
    # bytes.find (memchr) is an order of magnitude faster than a regex scan over the samples
    key, plural = b'"values":[', True
    if body.find(key) < 0:
        key, plural = b'"value":[', False
        if body.find(key) < 0 and _VALUES_KEY.search(body):  # some proxy re-formatted the JSON
            return _decode_generic(body)
    pos = body.find(key)
    while pos >= 0:
        array_start = pos + len(key) - 1  # the '['
        if plural:
            if body[array_start + 1 : array_start + 2] == b"]":  # "values":[]
                end = array_start + 2
            else:
                close = body.find(b"]]", array_start)
                if close < 0:
                    raise SourceError("malformed query answer: unterminated values array")
                end = close + 2
        else:
            end = body.find(b"]", array_start) + 1
            if end <= 0:
                raise SourceError("malformed query answer: unterminated value pair")
        starts.append(array_start)
        ends.append(end)
        is_matrix.append(plural)
        pos = body.find(key, end)
    # the skeleton: the body with every values array emptied, small enough for orjson
    pieces = []
    prev = 0
    for s, e in zip(starts, ends, strict=True):
        pieces.append(body[prev:s])
        pieces.append(b"[]")
        prev = e
    pieces.append(body[prev:])
    try:
        doc = orjson.loads(b"".join(pieces))
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"the server's answer is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("status") != "success" or "data" not in doc:
        msg = doc.get("error") if isinstance(doc, dict) else None
        raise SourceError(f"query failed: {msg or 'not a Prometheus API answer'}")
    data = doc["data"]
    result_type = str(data.get("resultType", ""))
    warnings = [str(w) for w in doc.get("warnings") or []]
    result = data.get("result")
    if result_type in ("scalar", "string"):
        ts, value = orjson.loads(body[starts[0] : ends[0]]) if starts else result
        sample = pl.DataFrame(
            {"series_id": [series_id({})], "ts": [int(round(float(ts) * 1000))], "value": [float(value)]},
            schema=SAMPLE_SCHEMA,
        ) if result_type == "scalar" else pl.DataFrame(schema=SAMPLE_SCHEMA)
        return QueryResult(result_type, labels_frame([{}]) if result_type == "scalar" else labels_frame([]), sample, warnings)
    if not isinstance(result, list):
        raise SourceError("malformed query answer: data.result is not a list")
    # only arrays that belong to result entries (a "values" key elsewhere, e.g. in stats, is skipped)
    if len(starts) != len(result):
        raise SourceError(
            f"malformed query answer: {len(result)} series but {len(starts)} value arrays"
        )
    label_sets = [dict(r.get("metric") or {}) for r in result]
    series = labels_frame(label_sets)
    chunks: list[memoryview] = []
    view = memoryview(body)
    counts = np.zeros(len(starts), dtype=np.int64)
    for i, (s, e, plural) in enumerate(zip(starts, ends, is_matrix, strict=True)):
        a, b = (s + 1, e - 1) if plural else (s, e)
        if b <= a:
            continue
        counts[i] = body.count(b"],[", a, b) + 1 if plural else 1
        chunks.append(view[a:b])  # a view: no copy until the one join
    if not chunks:
        return QueryResult(result_type, series, pl.DataFrame(schema=SAMPLE_SCHEMA), warnings)
    pairs = _csv_pairs(chunks)
    if pairs.height != int(counts.sum()):
        raise SourceError(
            f"malformed query answer: expected {int(counts.sum())} samples, decoded {pairs.height}"
        )
    ids = np.repeat(series["series_id"].to_numpy(), counts)
    samples = pairs.select(pl.Series("series_id", ids, dtype=pl.UInt64), "ts", "value")
    return QueryResult(result_type, series, samples, warnings)

