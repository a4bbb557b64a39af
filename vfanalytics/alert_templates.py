"""Alert label and annotation templates, expanded as Prometheus does (template/template.go).

Go ``text/template`` actions over ``$labels``, ``$value``, ``$externalLabels`` (and
``.Labels`` / ``.Value`` / ``.ExternalLabels``), pipelines (``{{ $value | humanize }}``),
parenthesised calls, ``{{-``/``-}}`` trimming, and the functions of Prometheus'
template/template.go that do not query a server: ``humanize``, ``humanize1024``,
``humanizeDuration``, ``humanizePercentage``, ``humanizeTimestamp``, ``printf``, ``print``,
``toUpper``, ``toLower``, ``title``, ``reReplaceAll``, ``match``, ``stripPort``, ``safeHtml``,
``toTime``, ``index``. Control structures (``if``, ``range``, ``with``) and ``query`` are
outside the supported subset and reported as template errors. Numbers print as Go's
``%v`` does (:func:`go_float`: ``1e+06``, ``0.1``, ``+Inf``), which promtool compares
byte for byte.

Example
-------
>>> render_template("{{ $labels.pod }} at {{ $value | humanize }}", {"pod": "p1"}, 1234567.0)
'p1 at 1.235M'
>>> go_float(1e6), check_template("{{ $value | nosuch }}")
('1e+06', 'function "nosuch" not defined')
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from vfanalytics.exceptions import QueryError

__all__ = ["render_template", "check_template", "go_float", "humanize"]


def go_float(v: float) -> str:
    """Format a float as Go's ``%v`` / strconv 'g' shortest does (``1e+06``, ``0.1``, ``+Inf``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    r = repr(float(v))
    mant, _, exp_s = r.partition("e")
    digits = mant.lstrip("-").replace(".", "")
    if exp_s:
        exp = int(exp_s)
    else:
        ip = mant.lstrip("-").split(".")[0]
        exp = len(ip.lstrip("0")) - 1 if ip.strip("0") else -(len(digits) - len(digits.lstrip("0")))
    digits = digits.strip("0") or "0"
    sign = "-" if v < 0 else ""
    # strconv.FormatFloat(v, 'g', -1, 64): exponent form when exp < -4 or exp >= 6 (shortest)
    if exp < -4 or exp >= 6:
        return _go_exp(sign, digits, exp)
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return sign + digits + "0" * (exp + 1 - len(digits))
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def _go_exp(sign: str, digits: str, exp: int) -> str:
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


def _g4(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def humanize(v: float) -> str:
    """template.go ``humanize``: SI prefixes, 4 significant digits."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def _humanize1024(v: float) -> str:
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def _humanize_duration(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return _g4(v) + "s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        d = int(v)
        s, m, h, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {h}h {m}m {s}s"
        if h:
            return f"{sign}{h}h {m}m {s}s"
        if m:
            return f"{sign}{m}m {s}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def _humanize_timestamp(v: float) -> str:
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    ns = int(v * 1e9)
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    frac = ns % 1_000_000_000
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + " +0000 UTC"


def _to_float(x: Any) -> float:
    if isinstance(x, bool):
        raise _TemplateError("cannot convert bool to float")
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(str(x))
    except ValueError:
        raise _TemplateError(f"strconv.ParseFloat: parsing {str(x)!r}: invalid syntax") from None


def _go_str(x: Any) -> str:
    if isinstance(x, float):
        return go_float(x)
    if isinstance(x, dict):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(x.items())) + "]"
    if x is None:
        return "<no value>"
    return str(x)


_PRINTF_RE = re.compile(r"%([-+ #0]*)(\d+)?(?:\.(\d+))?([vsdfgeqxXt%])")


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        spec = f"%{flags}{width or ''}{'.' + prec if prec is not None else ''}"
        if verb in "fgeE":
            return (spec + verb) % _to_float(a)
        if verb in "dxX":
            return (spec + verb) % int(_to_float(a))
        if verb == "q":
            return orjson.dumps(_go_str(a)).decode()
        return (spec + "s") % _go_str(a)

    return _PRINTF_RE.sub(sub, fmt)


def _title(s: str) -> str:
    return re.sub(r"(^|[^\w])(\w)", lambda m: m.group(1) + m.group(2).upper(), s)


_FUNCS: dict[str, Callable[..., Any]] = {
    "humanize": lambda v: humanize(_to_float(v)),
    "humanize1024": lambda v: _humanize1024(_to_float(v)),
    "humanizeDuration": lambda v: _humanize_duration(_to_float(v)),
    "humanizePercentage": lambda v: _g4(_to_float(v) * 100) + "%",
    "humanizeTimestamp": lambda v: _humanize_timestamp(_to_float(v)),
    "printf": _printf,
    "print": lambda *a: "".join(_go_str(x) for x in a),
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: _title(str(s)),
    "reReplaceAll": lambda pat, repl, text: re.sub(pat, re.sub(r"\$(\d+)", r"\\\1", repl), str(text)),
    "match": lambda pat, text: re.search(pat, str(text)) is not None,
    "stripPort": lambda s: str(s).rsplit(":", 1)[0] if ":" in str(s) else str(s),
    "safeHtml": lambda s: str(s),
    "toTime": lambda v: _humanize_timestamp(_to_float(v)),
    "index": lambda m, k: (m or {}).get(k, ""),
}


class _TemplateError(Exception):
    pass


_ACTION_RE = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)
_TOKEN_RE = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|[^\s|()]+|\||\(|\))')


def _tokens(src: str) -> list[str]:
    out: list[str] = []
    pos = 0
    src = src.strip()
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m:
            raise _TemplateError(f"unexpected {src[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return out


def _operand(tok: str, env: Mapping[str, Any]) -> Any:
    if tok.startswith('"'):
        return orjson.loads(tok)
    if tok.startswith("`"):
        return tok[1:-1]
    if tok.startswith("$") or tok.startswith("."):
        if tok == ".":
            return env["."]
        parts = tok.split(".")
        if tok.startswith("$"):
            root = parts[0]
            if root not in env:
                raise _TemplateError(f'undefined variable "{root}"')
            cur: Any = env[root]
            rest = parts[1:]
        else:
            cur, rest = env["."], parts[1:]
        for p in rest:
            if isinstance(cur, Mapping):
                cur = cur.get(p, None) if p in cur else ("<no value>" if root_is_map(cur) else None)
            else:
                raise _TemplateError(f"can't evaluate field {p}")
        return "<no value>" if cur is None else cur
    if re.fullmatch(r"[-+]?\d+", tok):
        return int(tok)
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", tok):
        return float(tok)
    if tok in ("true", "false"):
        return tok == "true"
    raise _TemplateError(f'function "{tok}" not defined')


def root_is_map(m: Any) -> bool:
    return isinstance(m, Mapping)


def _eval_pipeline(tokens: list[str], env: Mapping[str, Any]) -> Any:
    cmds: list[list[str]] = [[]]
    depth = 0
    for t in tokens:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if t == "|" and depth == 0:
            cmds.append([])
        else:
            cmds[-1].append(t)
    value: Any = None
    have_value = False
    for cmd in cmds:
        if not cmd:
            raise _TemplateError("missing command")
        args = _eval_args(cmd[1:], env) if cmd[0] in _FUNCS else None
        if cmd[0] in _FUNCS:
            assert args is not None
            if have_value:
                args.append(value)
            try:
                value = _FUNCS[cmd[0]](*args)
            except _TemplateError:
                raise
            except (TypeError, ValueError, re.error) as exc:
                raise _TemplateError(f"error calling {cmd[0]}: {exc}") from None
        else:
            if re.fullmatch(r"[A-Za-z_]\w*", cmd[0]) and cmd[0] not in ("true", "false", "nil"):
                raise _TemplateError(f'function "{cmd[0]}" not defined')
            if len(cmd) > 1 or have_value:
                raise _TemplateError(f"can't give argument to non-function {cmd[0]}")
            value = _operand(cmd[0], env)
        have_value = True
    return value


def _eval_args(tokens: list[str], env: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "(":
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                depth += {"(": 1, ")": -1}.get(tokens[j], 0)
                j += 1
            if depth:
                raise _TemplateError("unclosed left paren")
            out.append(_eval_pipeline(tokens[i + 1 : j - 1], env))
            i = j
        elif tokens[i] in _FUNCS:
            raise _TemplateError(f"function {tokens[i]} used as an argument needs parentheses")
        else:
            out.append(_operand(tokens[i], env))
            i += 1
    return out


_UNSUPPORTED = {"if", "else", "end", "range", "with", "define", "template", "block", "query", "first", "label",
                "value", "sortByLabel", "args", "tmpl", "pathPrefix", "externalURL", "parseDuration"}


def _render(text: str, env: Mapping[str, Any]) -> str:
    out: list[str] = []
    pos = 0
    for m in _ACTION_RE.finditer(text):
        lead = text[pos : m.start()]
        if m.group(1):
            lead = lead.rstrip()
        out.append(lead)
        body = m.group(2)
        if body.strip().startswith("/*"):
            pos = m.end()
            continue
        toks = _tokens(body)
        if not toks:
            raise _TemplateError("missing value for command")
        if toks[0] in _UNSUPPORTED or (len(toks) > 1 and toks[1] in (":=", "=")):
            raise _TemplateError(f"{toks[0]!r} is outside the supported template subset")
        out.append(_go_str(_eval_pipeline(toks, env)))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    tail = text[pos:]
    if "{{" in tail:
        raise _TemplateError("unclosed action")
    out.append(tail)
    return "".join(out)


def _env(labels: Mapping[str, str], value: float, external_labels: Mapping[str, str] | None) -> dict[str, Any]:
    lab = dict(labels)
    ext = dict(external_labels or {})
    dot = {"Labels": lab, "ExternalLabels": ext, "ExternalURL": "", "Value": value}
    return {"$labels": lab, "$value": value, "$externalLabels": ext, "$externalURL": "", "$": dot, ".": dot}


def render_template(
    text: str, labels: Mapping[str, str], value: float, external_labels: Mapping[str, str] | None = None
) -> str:
    """Expand one label or annotation template as Prometheus does for an alert.

    Raises
    ------
    QueryError
        When the template cannot be expanded (Prometheus then uses the error text).
    """
    if "{{" not in text:
        return text
    try:
        return _render(text, _env(labels, value, external_labels))
    except _TemplateError as exc:
        raise QueryError(f"error expanding template: {exc}") from None


def check_template(text: str) -> str | None:
    """The problem with a template (parse or unsupported construct), or None if it is fine."""
    if "{{" not in str(text):
        return None
    try:
        _render(str(text), _env({}, 1.0, {}))
    except _TemplateError as exc:
        return str(exc)
    return None
