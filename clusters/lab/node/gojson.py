"""Go ``encoding/json`` error texts, so a broken conflist fails with the words containerd logs.

containerd reports ``error parsing configuration list: <Go json error>``; people and the doctor
grep for those words (``invalid character 'b' looking for beginning of object key string``,
``unexpected end of JSON input``). This is a port of the Go scanner's state machine
(``encoding/json/scanner.go``), limited to producing its error messages.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

_SPACE = b" \t\r\n"
_OBJ_KEY, _OBJ_VALUE, _ARR_VALUE = 0, 1, 2
_GO_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


class GoSyntaxError(Exception):
    pass


def quote_char(c: int) -> str:
    """Go's ``quoteChar``: the byte as a rune, quoted like ``strconv.Quote`` without the quotes."""
    if c == ord("'"):
        return "'\\''"
    if c == ord('"'):
        return "'\"'"
    if c in _GO_ESCAPES:
        return f"'{_GO_ESCAPES[c]}'"
    ch = chr(c)
    if c < 0x20 or c == 0x7F:
        return f"'\\x{c:02x}'"
    if c >= 0x80 and (unicodedata.category(ch)[0] in "CZ"):
        return f"'\\u{c:04x}'"
    return f"'{ch}'"


State = Callable[[int], None]


class _Scanner:
    def __init__(self) -> None:
        self.stack: list[int] = []
        self.step: State = self.begin_value
        self.end_top = False

    def fail(self, c: int, context: str) -> None:
        raise GoSyntaxError(f"invalid character {quote_char(c)} {context}")

    def begin_value_or_empty(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == ord("]"):
            self.end_value(c)
            return
        self.begin_value(c)

    def begin_value(self, c: int) -> None:
        if c in _SPACE:
            return
        ch = chr(c)
        if ch == "{":
            self.step = self.begin_string_or_empty
            self.stack.append(_OBJ_KEY)
        elif ch == "[":
            self.step = self.begin_value_or_empty
            self.stack.append(_ARR_VALUE)
        elif ch == '"':
            self.step = self.in_string
        elif ch == "-":
            self.step = self.neg
        elif ch == "0":
            self.step = self.zero
        elif "1" <= ch <= "9":
            self.step = self.one
        elif ch in "tfn":
            word = {"t": "true", "f": "false", "n": "null"}[ch]
            self.step = self.literal(word, 1)
        else:
            self.fail(c, "looking for beginning of value")

    def begin_string_or_empty(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == ord("}"):
            self.stack[-1] = _OBJ_VALUE
            self.end_value(c)
            return
        self.begin_string(c)

    def begin_string(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == ord('"'):
            self.step = self.in_string
            return
        self.fail(c, "looking for beginning of object key string")

    def end_value(self, c: int) -> None:
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
            self.end_top_state(c)
            return
        if c in _SPACE:
            self.step = self.end_value
            return
        ps = self.stack[-1]
        ch = chr(c)
        if ps == _OBJ_KEY:
            if ch == ":":
                self.stack[-1] = _OBJ_VALUE
                self.step = self.begin_value
                return
            self.fail(c, "after object key")
        elif ps == _OBJ_VALUE:
            if ch == ",":
                self.stack[-1] = _OBJ_KEY
                self.step = self.begin_string
                return
            if ch == "}":
                self.pop()
                return
            self.fail(c, "after object key:value pair")
        else:
            if ch == ",":
                self.step = self.begin_value
                return
            if ch == "]":
                self.pop()
                return
            self.fail(c, "after array element")

    def pop(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
        else:
            self.step = self.end_value

    def end_top_state(self, c: int) -> None:
        if c not in _SPACE:
            self.fail(c, "after top-level value")

    def in_string(self, c: int) -> None:
        if c == ord('"'):
            self.step = self.end_value
        elif c == ord("\\"):
            self.step = self.in_string_esc
        elif c < 0x20:
            self.fail(c, "in string literal")

    def in_string_esc(self, c: int) -> None:
        if chr(c) in 'bfnrt\\/"':
            self.step = self.in_string
        elif c == ord("u"):
            self.step = self.esc_u(0)
        else:
            self.fail(c, "in string escape code")

    def esc_u(self, seen: int) -> State:
        def step(c: int) -> None:
            if chr(c) not in "0123456789abcdefABCDEF":
                self.fail(c, "in \\u hexadecimal character escape")
            self.step = self.in_string if seen == 3 else self.esc_u(seen + 1)

        return step

    def neg(self, c: int) -> None:
        if c == ord("0"):
            self.step = self.zero
        elif ord("1") <= c <= ord("9"):
            self.step = self.one
        else:
            self.fail(c, "in numeric literal")

    def one(self, c: int) -> None:
        if ord("0") <= c <= ord("9"):
            return
        self.zero(c)

    def zero(self, c: int) -> None:
        if c == ord("."):
            self.step = self.dot
        elif c in b"eE":
            self.step = self.exp
        else:
            self.end_value(c)

    def dot(self, c: int) -> None:
        if ord("0") <= c <= ord("9"):
            self.step = self.dot0
        else:
            self.fail(c, "after decimal point in numeric literal")

    def dot0(self, c: int) -> None:
        if ord("0") <= c <= ord("9"):
            return
        if c in b"eE":
            self.step = self.exp
        else:
            self.end_value(c)

    def exp(self, c: int) -> None:
        if c in b"+-":
            self.step = self.exp_sign
        else:
            self.exp_sign(c)

    def exp_sign(self, c: int) -> None:
        if ord("0") <= c <= ord("9"):
            self.step = self.exp0
        else:
            self.fail(c, "in exponent of numeric literal")

    def exp0(self, c: int) -> None:
        if ord("0") <= c <= ord("9"):
            return
        self.end_value(c)

    def literal(self, word: str, i: int) -> State:
        def step(c: int) -> None:
            if c != ord(word[i]):
                self.fail(c, f"in literal {word} (expecting '{word[i]}')")
            self.step = self.end_value if i + 1 == len(word) else self.literal(word, i + 1)

        return step


def syntax_error(data: bytes) -> str | None:
    """Go's ``json.Unmarshal`` syntax error text for ``data``, or None if Go would accept it."""
    scanner = _Scanner()
    try:
        for c in data:
            scanner.step(c)
        if not scanner.end_top:
            scanner.step(ord(" "))
        if not scanner.end_top:
            return "unexpected end of JSON input"
    except GoSyntaxError as exc:
        return str(exc)
    return None


def type_name(value: object) -> str:
    """Go's ``%T`` of a value decoded into ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def json_kind(value: object) -> str:
    """The JSON kind Go names in an UnmarshalTypeError (``array``, ``number``, …)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
