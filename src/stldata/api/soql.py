"""SoQL, the Socrata Query Language: a tokenizer and a Pratt parser into an AST.

Only the syntax lives here; :mod:`stldata.api.soql_compile` checks names and types against
the catalog and turns the AST into SQLAlchemy expressions with every value bound. Errors
carry the 1-based position of the offending character in the parameter's text.

Grammar (precedence from loosest to tightest)::

    expr     := expr OR expr | expr AND expr | NOT expr
              | expr (= | != | <> | < | <= | > | >=) expr
              | expr IS [NOT] NULL | expr [NOT] IN (expr, ...)
              | expr [NOT] BETWEEN expr AND expr | expr [NOT] LIKE expr
              | expr || expr | expr (+ | -) expr | expr (* | / | %) expr
              | (- | +) expr | primary
    primary  := literal | column | `quoted column` | name(args) | name(*) | (expr)
    literal  := 'text with '' escaped' | 12 | 1.5 | 1e3 | true | false | null
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

MAX_LENGTH = 10_000
MAX_DEPTH = 64
#: Digits a number literal may have: beyond this no column holds it anyway.
MAX_DIGITS = 60

KEYWORDS = {"and", "or", "not", "is", "null", "in", "between", "like", "as", "true",
            "false", "asc", "desc", "nulls", "first", "last"}
COMPARISONS = ("=", "!=", "<>", "<", "<=", ">", ">=")
#: Binding power of infix operators (higher binds tighter).
INFIX = {"or": 1, "and": 2, "=": 4, "!=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
         "is": 4, "in": 4, "between": 4, "like": 4, "not": 4, "||": 5, "+": 6, "-": 6,
         "*": 7, "/": 7, "%": 7}
NOT_POWER = 3
PREFIX_POWER = 8


class SoqlError(ValueError):
    """A query that does not parse or compile; ``position`` is 1-based, 0 when unknown."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} at position {self.position}" if self.position else self.message


# --- AST ------------------------------------------------------------------------------
# Positions do not take part in equality, so a $select term equals the same $group term.

@dataclass(frozen=True)
class Literal:
    value: str | int | Decimal | bool | None
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Column:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    star: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Unary:
    op: str  # "-", "+", "not"
    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IsNull:
    operand: Expr
    negated: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class InList:
    operand: Expr
    items: tuple[Expr, ...]
    negated: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Between:
    operand: Expr
    low: Expr
    high: Expr
    negated: bool
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Like:
    operand: Expr
    pattern: Expr
    negated: bool
    pos: int = field(default=0, compare=False)


Expr = Literal | Column | Call | Unary | Binary | IsNull | InList | Between | Like


@dataclass(frozen=True)
class SelectItem:
    expr: Expr | None  # None: *
    alias: str | None
    pos: int = 0


@dataclass(frozen=True)
class OrderItem:
    expr: Expr
    descending: bool
    nulls_first: bool | None
    pos: int = 0


# --- Tokens ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Token:
    kind: str  # name, quoted, string, number, op, eof
    text: str
    pos: int  # 1-based

    def is_word(self, *words: str) -> bool:
        return self.kind == "name" and self.text.lower() in words


_OPERATORS = ("<=", ">=", "!=", "<>", "||", "=", "<", ">", "+", "-", "*", "/", "%", "(",
              ")", ",")


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise SoqlError(f"query is longer than {MAX_LENGTH} characters")
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        start = i + 1
        if c == "'":
            out: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise SoqlError("string is not closed", start)
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        out.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                out.append(text[i])
                i += 1
            value = "".join(out)
            if "\x00" in value:
                raise SoqlError("string contains a NUL character", start)
            tokens.append(Token("string", value, start))
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise SoqlError("quoted column name is not closed", start)
            tokens.append(Token("quoted", text[i + 1:end], start))
            i = end + 1
        elif _digit(c) or (c == "." and i + 1 < n and _digit(text[i + 1])):
            j = i
            while j < n and (_digit(text[j]) or text[j] == "."):
                j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and _digit(text[k]):
                    j = k
                    while j < n and _digit(text[j]):
                        j += 1
            if j < n and (text[j].isalpha() or text[j] == "_"):
                raise SoqlError(f"unexpected {text[j]!r} after a number", j + 1)
            tokens.append(Token("number", text[i:j], start))
            i = j
        elif c.isalpha() or c == "_" or c == ":":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            if not text[i:j].isascii():
                raise SoqlError(f"unexpected character in name {text[i:j]!r}", start)
            tokens.append(Token("name", text[i:j], start))
            i = j
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    tokens.append(Token("op", op, start))
                    i += len(op)
                    break
            else:
                raise SoqlError(f"unexpected character {c!r}", start)
    tokens.append(Token("eof", "", n + 1))
    return tokens


def _digit(c: str) -> bool:
    """0-9 only: str.isdigit() is also true for "１" and "²", which int() reads or fails on."""
    return "0" <= c <= "9"


def _number(token: Token) -> int | Decimal:
    digits = token.text.lower().split("e")[0].replace(".", "").lstrip("0")
    if len(digits) > MAX_DIGITS:
        raise SoqlError(f"number has more than {MAX_DIGITS} digits", token.pos)
    try:
        value = Decimal(token.text)
    except InvalidOperation:
        raise SoqlError(f"{token.text!r} is not a number", token.pos) from None
    if not value.is_finite() or abs(value.adjusted()) > 300:
        raise SoqlError(f"number {token.text} is out of range", token.pos)
    if value == value.to_integral_value() and "." not in token.text and "e" not in \
            token.text.lower():
        return int(value)
    return value


# --- Parser ---------------------------------------------------------------------------

class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.at = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def advance(self) -> Token:
        token = self.tokens[self.at]
        if token.kind != "eof":
            self.at += 1
        return token

    def accept_op(self, op: str) -> bool:
        if self.token.kind == "op" and self.token.text == op:
            self.at += 1
            return True
        return False

    def accept_word(self, *words: str) -> bool:
        if self.token.is_word(*words):
            self.at += 1
            return True
        return False

    def expect_op(self, op: str, what: str) -> Token:
        token = self.token
        if not self.accept_op(op):
            raise SoqlError(f"expected {op!r} {what}, found {describe(token)}", token.pos)
        return token

    def expect_word(self, word: str, what: str) -> None:
        token = self.token
        if not self.accept_word(word):
            raise SoqlError(f"expected {word.upper()} {what}, found {describe(token)}",
                            token.pos)

    def end(self) -> None:
        if self.token.kind != "eof":
            raise SoqlError(f"unexpected {describe(self.token)}", self.token.pos)

    # Pratt loop -----------------------------------------------------------------------
    def expression(self, power: int = 0) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SoqlError(f"expression is nested more than {MAX_DEPTH} levels deep",
                            self.token.pos)
        try:
            left = self.prefix()
            while True:
                op = self._infix_op()
                if op is None or INFIX[op] <= power:
                    return left
                left = self.infix(left, op)
        finally:
            self.depth -= 1

    def _infix_op(self) -> str | None:
        token = self.token
        if token.kind == "op" and token.text in INFIX:
            return token.text
        if token.kind == "name" and token.text.lower() in INFIX:
            word = token.text.lower()
            if word == "not":
                following = self.tokens[self.at + 1]
                if not following.is_word("in", "between", "like"):
                    return None
            return word
        return None

    def prefix(self) -> Expr:
        token = self.advance()
        if token.kind == "string":
            return Literal(token.text, token.pos)
        if token.kind == "number":
            return Literal(_number(token), token.pos)
        if token.kind == "quoted":
            return Column(token.text, token.pos)
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect_op(")", f"to close the '(' at position {token.pos}")
            return inner
        if token.kind == "op" and token.text in ("-", "+"):
            operand = self.expression(PREFIX_POWER)
            if token.text == "-" and isinstance(operand, Literal) and isinstance(
                    operand.value, (int, Decimal)) and not isinstance(operand.value, bool):
                return Literal(-operand.value, token.pos)
            return Unary(token.text, operand, token.pos)
        if token.kind == "name":
            word = token.text.lower()
            if word == "not":
                return Unary("not", self.expression(NOT_POWER), token.pos)
            if word in ("true", "false"):
                return Literal(word == "true", token.pos)
            if word == "null":
                return Literal(None, token.pos)
            if self.token.kind == "op" and self.token.text == "(":
                return self.call(token)
            if word in KEYWORDS:
                raise SoqlError(f"unexpected keyword {token.text.upper()}", token.pos)
            return Column(token.text, token.pos)
        if token.kind == "eof":
            raise SoqlError("expression ends too early", token.pos)
        raise SoqlError(f"unexpected {describe(token)}", token.pos)

    def call(self, name: Token) -> Call:
        self.expect_op("(", "after a function name")
        if self.accept_op("*"):
            self.expect_op(")", "after *")
            return Call(name.text.lower(), (), True, name.pos)
        args: list[Expr] = []
        if not self.accept_op(")"):
            args.append(self.expression())
            while self.accept_op(","):
                args.append(self.expression())
            self.expect_op(")", f"to close the arguments of {name.text}")
        return Call(name.text.lower(), tuple(args), False, name.pos)

    def infix(self, left: Expr, op: str) -> Expr:
        token = self.advance()
        if op in ("and", "or") or op in COMPARISONS or op in ("||", "+", "-", "*", "/", "%"):
            right = self.expression(INFIX[op])
            return Binary("!=" if op == "<>" else op, left, right, token.pos)
        negated = False
        if op == "not":
            negated = True
            op = self.advance().text.lower()
        if op == "is":
            negated = self.accept_word("not")
            self.expect_word("null", "after IS")
            return IsNull(left, negated, token.pos)
        if op == "in":
            self.expect_op("(", "after IN")
            items = [self.expression()]
            while self.accept_op(","):
                items.append(self.expression())
            self.expect_op(")", "to close the IN list")
            return InList(left, tuple(items), negated, token.pos)
        if op == "between":
            low = self.expression(INFIX["between"])
            self.expect_word("and", "between the bounds of BETWEEN")
            high = self.expression(INFIX["between"])
            return Between(left, low, high, negated, token.pos)
        # like
        pattern = self.expression(INFIX["like"])
        return Like(left, pattern, negated, token.pos)

    def alias(self) -> str | None:
        if not self.accept_word("as"):
            return None
        token = self.advance()
        if token.kind == "quoted" or (token.kind == "name" and token.text.lower() not in
                                      KEYWORDS and not token.text.startswith(":")):
            return token.text
        raise SoqlError(f"expected a name after AS, found {describe(token)}", token.pos)


def describe(token: Token) -> str:
    if token.kind == "eof":
        return "the end of the query"
    if token.kind == "string":
        return "a string"
    return repr(token.text)


def parse_expression(text: str) -> Expr:
    parser = Parser(text)
    expr = parser.expression()
    parser.end()
    return expr


def parse_list(text: str) -> list[Expr]:
    """Comma-separated expressions ($group)."""
    parser = Parser(text)
    items = [parser.expression()]
    while parser.accept_op(","):
        items.append(parser.expression())
    parser.end()
    return items


def parse_select(text: str) -> list[SelectItem]:
    parser = Parser(text)
    items: list[SelectItem] = []
    while True:
        pos = parser.token.pos
        if parser.accept_op("*"):
            items.append(SelectItem(None, None, pos))
        else:
            expr = parser.expression()
            items.append(SelectItem(expr, parser.alias(), pos))
        if not parser.accept_op(","):
            break
    parser.end()
    return items


def parse_order(text: str) -> list[OrderItem]:
    parser = Parser(text)
    items: list[OrderItem] = []
    while True:
        pos = parser.token.pos
        expr = parser.expression()
        descending = False
        if parser.accept_word("desc"):
            descending = True
        else:
            parser.accept_word("asc")
        nulls_first: bool | None = None
        if parser.accept_word("nulls"):
            token = parser.advance()
            if not token.is_word("first", "last"):
                raise SoqlError(f"expected FIRST or LAST after NULLS, found "
                                f"{describe(token)}", token.pos)
            nulls_first = token.is_word("first")
        items.append(OrderItem(expr, descending, nulls_first, pos))
        if not parser.accept_op(","):
            break
    parser.end()
    return items
