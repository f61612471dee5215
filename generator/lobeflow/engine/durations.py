"""Parsing of the duration, flow-control, retry-delay and Retry-After formats QStash accepts."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import lru_cache

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> float | None:
    """Seconds in a QStash/Go duration (`10s`, `1d10h30m`, `6m5s`); a bare number is seconds.

    Args:
        text: The duration as sent in a header.

    Returns:
        The duration in seconds, or `None` when the text is not a finite duration (`nan`,
        `inf` and numbers too large for a float are not durations).
    """
    text = text.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds, pos = 0.0, 0
        for match in _PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            return None
    return seconds if math.isfinite(seconds) else None


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """Limits one message carries for its flow-control key (`None` = not limited)."""

    parallelism: int | None = None
    rate: int | None = None
    period: float = 1.0


def parse_flow_control(value: str) -> FlowSpec | None:
    """Parse `parallelism=N, rate=R, period=P` in any order, with or without spaces.

    Args:
        value: The `Upstash-Flow-Control-Value` header.

    Returns:
        The limits, or `None` when the value is malformed (ranges are checked by
        `lobeflow.engine.limits`).
    """
    parallelism: int | None = None
    rate: int | None = None
    period = 1.0
    for part in value.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if not sep:
            return None
        try:
            if name == "parallelism":
                parallelism = int(raw)
            elif name in ("rate", "ratepersecond"):
                rate = int(raw)
            elif name == "period":
                parsed = parse_duration(raw)
                if parsed is None:
                    return None
                period = parsed
            else:
                return None
        except ValueError:
            return None
    return FlowSpec(parallelism=parallelism, rate=rate, period=period)


_FUNCS: dict[str, Callable[..., float]] = {
    "pow": pow,
    "sqrt": math.sqrt,
    "abs": abs,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
    "min": min,
    "max": max,
}
_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


# Longer than any realistic backoff formula; bounds the parser's work and recursion.
MAX_RETRY_DELAY_EXPRESSION = 512


@lru_cache(maxsize=256)
def _compile_expression(expr: str) -> ast.Expression | None:
    if len(expr) > MAX_RETRY_DELAY_EXPRESSION:
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    return tree


def _eval_node(node: ast.AST, retried: int) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "retried":
        return float(retried)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](
            _eval_node(node.left, retried), _eval_node(node.right, retried)
        )
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_node(node.operand, retried)
        return -value if isinstance(node.op, ast.USub) else value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        args = [_eval_node(arg, retried) for arg in node.args]
        return float(_FUNCS[node.func.id](*args))
    raise ValueError("unsupported expression")


def eval_retry_delay(expr: str, retried: int) -> float | None:
    """Evaluate an `Upstash-Retry-Delay` expression.

    Args:
        expr: Arithmetic over `retried` with pow/sqrt/abs/exp/floor/ceil/round/min/max.
        retried: 0 on the first retry.

    Returns:
        The delay in seconds (the expression gives milliseconds), or `None` if invalid or
        not a finite number.
    """
    tree = _compile_expression(expr)
    if tree is None:
        return None
    try:
        millis = _eval_node(tree.body, retried)
    except (ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
        return None
    if not math.isfinite(millis):
        return None
    return max(0.0, millis / 1000.0)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` style value: seconds, an HTTP date or a duration.

    Args:
        value: The response header value.
        now: Current unix time, to turn a date into a delay.

    Returns:
        Seconds to wait, or `None` when the value is not understood.
    """
    seconds = parse_duration(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
