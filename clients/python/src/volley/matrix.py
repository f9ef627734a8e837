"""``foreach:`` on an op of a batch — one op written once and run over a
list, a range or a glob of files — expanded here, on the client, into
ordinary named ops before anything is sent, exactly as the Rust client's
``client/src/matrix.rs`` does (same ids, limits, errors and quoting).

Expanding before the server sees the batch means every expansion is
checked like a hand-written op (ids, references, hazards, the batch's
limits) by the code that checks every other op, and the coordinator and
the workers need not know ``foreach`` exists.

An item is data, never code or a template: in the ``cmd`` of a program
(``shell``, ``agent``) ``${item}`` becomes a quoted reference to an
environment variable holding the value (the Rust
``volley_kinds::template::quote_variables``, ported below), so
``$(touch pwned)`` as an item is printed, not run; in every other string
the value is pasted with its ``${`` escaped as ``$${``, so an item spelling
``${memory.K}`` or ``${secret.S}`` stays that text.
"""

from __future__ import annotations

import decimal
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import yaml

from ._proto.volley.v1 import volley_pb2 as pb

__all__ = [
    "MAX_EXPANDED_OPS",
    "MAX_EXPANSION",
    "ForeachError",
    "Item",
    "expand",
    "foreach_values_as_rust_reads_them",
    "quote_variables",
]

#: The most ops one ``foreach`` may expand into.
MAX_EXPANSION = 10_000

#: The most ops all the ``foreach``s of a batch may expand into together.
MAX_EXPANDED_OPS = 100_000

# The longest item text used in an expanded op's id (`test-unit`); longer
# items are numbered instead.
_MAX_ID_ITEM_LEN = 48

# The kinds whose `cmd` a shell runs (volley_kinds::HOST_PROGRAM_KINDS).
_HOST_PROGRAM_KINDS = ("shell", "agent")

_EXPECTED = 'expected a list (`[a, b]`), `{range: [FIRST, LAST]}` or `{glob: "PATTERN"}`'
_RANGE_TAKES = "`range` takes two integers, `[FIRST, LAST]`"

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1

#: One item: a scalar (``${item}``) or a mapping of scalars (``${item.F}``).
Item = Union[str, Dict[str, str]]


class ForeachError(Exception):
    """Why a ``foreach`` could not be expanded. Names the op, the line of
    its ``foreach`` (when known), the item (1-based, with its text) and the
    field; ``str()`` is the Rust client's wording."""

    def __init__(
        self,
        op_id: str,
        line: Optional[int],
        item: Optional[Tuple[int, str]],
        field: str,
        message: str,
    ) -> None:
        super().__init__(message)
        self.op_id = op_id
        self.line = line
        self.item = item
        self.field = field
        self.message = message

    def __str__(self) -> str:
        text = f"op `{self.op_id}`"
        if self.line is not None:
            text += f" (line {self.line})"
        if self.item is not None:
            number, item_text = self.item
            text += f" item {number} (`{_shorten(item_text)}`)"
        return f"{text}: field `{self.field}`: {self.message}"


class _Refused(Exception):
    """A bad source or item: the message, completed by `expand` with the op."""


class _FieldRefused(Exception):
    """A bad expansion: the field (`args.cmd`) and the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "\u2026"


def _label(item: Item) -> str:
    if isinstance(item, str):
        return item
    return "{" + ", ".join(f"{name}: {value}" for name, value in item.items()) + "}"


# ------------------------------------------------------------------ sources


def _float_text(value: float) -> Optional[str]:
    """A float as serde_json prints it (zmij's shortest digits: fixed from
    1e-5 to below 1e16, `1.5e+20` and `1e-7` beyond), None for NaN and
    infinities (which a JSON value cannot hold)."""
    if math.isnan(value) or math.isinf(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    exact = decimal.Decimal(repr(abs(value))).normalize()
    _, digit_tuple, exponent = exact.as_tuple()
    assert isinstance(exponent, int), "a finite float has an integer exponent"
    digits = "".join(str(digit) for digit in digit_tuple)
    length = len(digits)
    magnitude = length + exponent  # 10^(magnitude-1) <= value < 10^magnitude
    if exponent >= 0 and magnitude <= 16:
        text = digits + "0" * exponent + ".0"
    elif 0 < magnitude <= 16:
        text = digits[:magnitude] + "." + digits[magnitude:]
    elif -5 < magnitude <= 0:
        text = "0." + "0" * -magnitude + digits
    elif length == 1:
        text = f"{digits}e{magnitude - 1:+d}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{magnitude - 1:+d}"
    return sign + text


def _scalar_text(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        if _I64_MIN <= value <= _U64_MAX:
            return str(value)
        return _float_text(float(value))
    if isinstance(value, float):
        return _float_text(value)
    return None


def _item_from_value(value: Any) -> Item:
    text = _scalar_text(value)
    if text is not None:
        if "\0" in text:
            raise _Refused("holds a NUL byte, which no command or file name can carry")
        return text
    if not isinstance(value, Mapping):
        raise _Refused(
            "an item is a string, a number, a boolean or a mapping of those (`{suite: api, n: 1}`)"
        )
    # A YAML key `1` or `true` reads as the text it spells, as in Rust.
    named = {
        name if isinstance(name, str) else _scalar_text(name) or str(name): field
        for name, field in value.items()
    }
    fields: Dict[str, str] = {}
    for name in sorted(named):
        if not name or not all(
            character.isascii() and (character.isalnum() or character == "_") for character in name
        ):
            raise _Refused(f"field `{name}`: a field's name is letters, digits and `_`")
        field_text = _scalar_text(named[name])
        if field_text is None:
            raise _Refused(
                f"field `{name}`: a field's value is a string, a number or a boolean, "
                "not a list or a mapping"
            )
        if "\0" in field_text:
            raise _Refused(f"field `{name}`: holds a NUL byte")
        fields[name] = field_text
    return fields


def _as_i64(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if _I64_MIN <= value <= _I64_MAX else None


class _Source:
    """Where the items of a ``foreach`` come from: a list, a range (both
    ends included) or a glob relative to the batch file's directory."""

    def __init__(
        self,
        items: Optional[List[Item]] = None,
        first_last: Optional[Tuple[int, int]] = None,
        glob: Optional[str] = None,
    ) -> None:
        self.list_items = items
        self.first_last = first_last
        self.glob = glob

    def items(self, base_dir: str) -> List[Item]:
        if self.list_items is not None:
            return list(self.list_items)
        if self.first_last is not None:
            first, last = self.first_last
            return [str(number) for number in range(first, last + 1)]
        assert self.glob is not None, "a source is a list, a range or a glob"
        return list(_glob_items(self.glob, base_dir))


def _source_from_value(value: Any) -> _Source:
    """Reads a ``foreach`` value, refusing one that could expand into more
    than MAX_EXPANSION ops."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise _Refused("an empty list: give at least one item")
        if len(value) > MAX_EXPANSION:
            raise _Refused(
                f"{len(value)} items: a `foreach` expands into at most {MAX_EXPANSION} ops"
            )
        items: List[Item] = []
        for index, item in enumerate(value):
            try:
                items.append(_item_from_value(item))
            except _Refused as refused:
                raise _Refused(f"item {index + 1}: {refused}") from None
        return _Source(items=items)
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "range":
            if not isinstance(inner, (list, tuple)) or len(inner) != 2:
                raise _Refused(_RANGE_TAKES)
            first, last = _as_i64(inner[0]), _as_i64(inner[1])
            if first is None or last is None:
                raise _Refused(_RANGE_TAKES)
            if last < first:
                raise _Refused(
                    f"`range: [{first}, {last}]` is empty: the last must not be below the first"
                )
            count = last - first + 1
            if count > MAX_EXPANSION:
                raise _Refused(
                    f"`range: [{first}, {last}]` has {count} items: "
                    f"a `foreach` expands into at most {MAX_EXPANSION} ops"
                )
            return _Source(first_last=(first, last))
        if key == "glob":
            if not isinstance(inner, str):
                raise _Refused('`glob` takes a pattern, like `"tests/*.py"`')
            _check_glob(inner)
            return _Source(glob=inner)
        raise _Refused(f"unknown source `{key}`: {_EXPECTED}")
    raise _Refused(_EXPECTED)


# ------------------------------------------------------- YAML as Rust reads it


class _SerdeYamlLoader(yaml.SafeLoader):
    """YAML read as serde_yaml 0.9 (the Rust client's reader) reads it: a
    plain scalar is null, a boolean, a number or a string by the YAML 1.2
    core rules, not PyYAML's 1.1 ones (where `yes`, `on`, `010`, `1_000`
    and `1:30` are a boolean and numbers, and `1e3` a string)."""

    yaml_implicit_resolvers: Dict[Any, Any] = {}


_PLAIN_TAG = "tag:volley,2026:plain"
_SerdeYamlLoader.add_implicit_resolver(_PLAIN_TAG, re.compile(r".*", re.DOTALL), None)

_RADIX_DIGITS = {
    16: re.compile(r"[0-9a-fA-F]+\Z"),
    8: re.compile(r"[0-7]+\Z"),
    2: re.compile(r"[01]+\Z"),
}
_DECIMAL = re.compile(r"[+-]?[0-9]+\Z")
_RUST_FLOAT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z|[+-]?(?:inf|infinity|nan)\Z",
    re.IGNORECASE,
)


def _digits_but_not_number(text: str) -> bool:
    """A leading zero before digits (`010`) is a string in YAML 1.2."""
    text = text[1:] if text[:1] in ("-", "+") else text
    return len(text) > 1 and text.startswith("0") and text[1:].isdigit() and text.isascii()


def _unsigned_int(text: str, largest: int) -> Optional[int]:
    unpositive = text[1:] if text.startswith("+") else text
    if text.startswith("+") and unpositive[:1] in ("+", "-"):
        return None
    for prefix, radix in (("0x", 16), ("0o", 8), ("0b", 2)):
        if unpositive.startswith(prefix):
            rest = unpositive[2:]
            if _RADIX_DIGITS[radix].match(rest) and int(rest, radix) <= largest:
                return int(rest, radix)
    if unpositive[:1] in ("+", "-") or _digits_but_not_number(text):
        return None
    if _DECIMAL.match(unpositive) and int(unpositive) <= largest:
        return int(unpositive)
    return None


def _negative_int(text: str, smallest: int) -> Optional[int]:
    for prefix, radix in (("-0x", 16), ("-0o", 8), ("-0b", 2)):
        if text.startswith(prefix):
            rest = text[3:]
            if _RADIX_DIGITS[radix].match(rest) and -int(rest, radix) >= smallest:
                return -int(rest, radix)
    if _digits_but_not_number(text) or not _DECIMAL.match(text) or text.startswith("+"):
        return None
    value = int(text)
    return value if smallest <= value <= 0 else None


def _rust_f64(text: str) -> Optional[float]:
    unpositive = text[1:] if text.startswith("+") else text
    if text.startswith("+") and unpositive[:1] in ("+", "-"):
        return None
    if unpositive in (".inf", ".Inf", ".INF"):
        return math.inf
    if text in ("-.inf", "-.Inf", "-.INF"):
        return -math.inf
    if text in (".nan", ".NaN", ".NAN"):
        return math.nan
    if _RUST_FLOAT.match(unpositive):
        value = float(unpositive)
        if math.isfinite(value):
            return value
    return None


def _construct_plain(loader: _SerdeYamlLoader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    for number in (
        _unsigned_int(text, _U64_MAX),
        _negative_int(text, _I64_MIN),
        _unsigned_int(text, 2**128 - 1),
        _negative_int(text, -(2**127)),
    ):
        if number is not None:
            return number
    if not _digits_but_not_number(text):
        value = _rust_f64(text)
        if value is not None:
            return value
    return text


_SerdeYamlLoader.add_constructor(_PLAIN_TAG, _construct_plain)


def foreach_values_as_rust_reads_them(text: str) -> Dict[int, Any]:
    """Each op's ``foreach`` (by the op's index) in a YAML batch file, read
    as the Rust client reads it; empty when the file cannot be read so."""
    try:
        document = yaml.load(text, Loader=_SerdeYamlLoader)
    except yaml.YAMLError:
        return {}
    ops = document.get("ops") if isinstance(document, Mapping) else None
    if not isinstance(ops, list):
        return {}
    return {
        index: op["foreach"]
        for index, op in enumerate(ops)
        if isinstance(op, Mapping) and op.get("foreach") is not None
    }


# -------------------------------------------------------------------- globs


class _GlobSyntax(Exception):
    pass


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """The pattern as globset (the Rust client's glob crate) reads it with
    `literal_separator`: `*` and `?` stop at `/`, `**` as a whole component
    crosses directories, `[…]`/`[!…]` classes, `{a,b}` alternates (nested
    too) and `\\`
    escapes; the whole path must match."""
    try:
        return re.compile(_GlobParser(pattern).parse(), re.DOTALL)
    except _GlobSyntax as error:
        raise _Refused(f"`glob: {pattern}`: error parsing glob '{pattern}': {error}") from None


# globset's tokens, with the regex each stands for.
_ZERO_OR_MORE = ("zero_or_more", "[^/]*")
_RECURSIVE_PREFIX = ("recursive_prefix", "(?:/?|.*/)")
_RECURSIVE_SUFFIX = ("recursive_suffix", "/.*")
_RECURSIVE_ZERO_OR_MORE = ("recursive_zero_or_more", "(?:/|/.*/)")
_Token = Tuple[str, str]


class _GlobParser:
    """A port of globset 0.4.21's parser (glob.rs), emitting a Python regex."""

    def __init__(self, pattern: str) -> None:
        self.chars = pattern
        self.position = 0
        self.previous: Optional[str] = None
        # The outer tokens, then one list per branch of each open `{…}`
        # (they nest), and where each open `{…}`'s branches start.
        self.stack: List[List[_Token]] = [[]]
        self.alternates_starts: List[int] = []

    def peek(self) -> Optional[str]:
        return self.chars[self.position] if self.position < len(self.chars) else None

    def bump(self) -> Optional[str]:
        character = self.peek()
        if character is not None:
            self.previous = self.chars[self.position - 1] if self.position > 0 else None
            self.position += 1
        else:
            self.previous = self.chars[-1] if self.chars else None
        return character

    def push(self, token: _Token) -> None:
        self.stack[-1].append(token)

    def parse(self) -> str:
        while True:
            character = self.bump()
            if character is None:
                break
            if character == "?":
                self.push(("any", "[^/]"))
            elif character == "*":
                self.star()
            elif character == "[":
                self.klass()
            elif character == "{":
                self.alternates_starts.append(len(self.stack))
                self.stack.append([])
            elif character == "}":
                if not self.alternates_starts:
                    raise _GlobSyntax(
                        "unopened alternate group; missing '{' (maybe escape '}' with '[}]'?)"
                    )
                start = self.alternates_starts.pop()
                branches = self.stack[start:]
                del self.stack[start:]
                parts = [_tokens_regex(branch) for branch in branches]
                parts = [part for part in parts if part]
                self.push(("alternates", f"(?:{'|'.join(parts)})" if parts else ""))
            elif character == "," and self.alternates_starts:
                self.stack.append([])
            elif character == "\\":
                escaped = self.bump()
                if escaped is None:
                    raise _GlobSyntax("dangling '\\'")
                self.push(("literal", re.escape(escaped)))
            else:
                self.push(("literal", re.escape(character)))
        if len(self.stack) > 1:
            raise _GlobSyntax(
                "unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?)"
            )
        tokens = self.stack[0]
        if tokens == [_RECURSIVE_PREFIX]:
            return r".*\Z"
        return _tokens_regex(tokens) + r"\Z"

    def star(self) -> None:
        previous = self.previous
        if self.peek() != "*":
            self.push(_ZERO_OR_MORE)
            return
        self.bump()
        if not self.stack[-1]:
            if self.peek() not in (None, "/"):
                self.push(_ZERO_OR_MORE)
                self.push(_ZERO_OR_MORE)
            else:
                self.push(_RECURSIVE_PREFIX)
                self.bump()
            return
        if previous != "/" and (len(self.stack) <= 1 or previous not in (",", "{")):
            self.push(_ZERO_OR_MORE)
            self.push(_ZERO_OR_MORE)
            return
        following = self.peek()
        if following is None or following in (",", "}") and len(self.stack) >= 2:
            is_suffix = True
        elif following == "/":
            self.bump()
            is_suffix = False
        else:
            self.push(_ZERO_OR_MORE)
            self.push(_ZERO_OR_MORE)
            return
        popped = self.stack[-1].pop()
        if popped in (_RECURSIVE_PREFIX, _RECURSIVE_SUFFIX):
            self.push(popped)
        elif is_suffix:
            self.push(_RECURSIVE_SUFFIX)
        else:
            self.push(_RECURSIVE_ZERO_OR_MORE)

    def klass(self) -> None:
        negated = False
        if self.peek() in ("!", "^"):
            self.bump()
            negated = True
        ranges: List[List[str]] = []
        first = True
        in_range = False
        while True:
            character = self.bump()
            if character is None:
                raise _GlobSyntax("unclosed character class; missing ']'")
            if character == "]":
                if not first:
                    break
                ranges.append(["]", "]"])
            elif character == "-":
                if first:
                    ranges.append(["-", "-"])
                elif in_range:
                    _extend_range(ranges[-1], "-")
                    in_range = False
                else:
                    in_range = True
            else:
                if in_range:
                    _extend_range(ranges[-1], character)
                else:
                    ranges.append([character, character])
                in_range = False
            first = False
        if in_range:
            ranges.append(["-", "-"])
        body = "".join(
            re.escape(start) if start == end else f"{re.escape(start)}-{re.escape(end)}"
            for start, end in ranges
        )
        self.push(("class", f"[{'^' if negated else ''}{body}]"))


def _extend_range(bounds: List[str], end: str) -> None:
    bounds[1] = end
    if bounds[1] < bounds[0]:
        raise _GlobSyntax(f"invalid range; '{bounds[0]}' > '{bounds[1]}'")


def _tokens_regex(tokens: Sequence[_Token]) -> str:
    return "".join(regex for _, regex in tokens)


def _check_glob(pattern: str) -> None:
    """A glob stays inside the batch file's directory."""
    if not pattern:
        raise _Refused("an empty `glob` pattern")
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise _Refused(
            f"`glob: {pattern}`: a glob is relative to the batch file's directory and stays "
            "inside it (no leading `/`, no `..`)"
        )
    _glob_regex(pattern)


def _glob_items(pattern: str, base_dir: str) -> List[str]:
    matcher = _glob_regex(pattern)
    # Walk only below the pattern's literal directory (`tests/` of
    # `tests/*.py`), and no deeper than it can match without `**`.
    components = [part for part in pattern.split("/") if part]
    literal: List[str] = []
    for part in components:
        if any(special in part for special in "*?[{"):
            break
        literal.append(part)
    literal_len = min(len(literal), max(len(components) - 1, 0))
    depth = math.inf if "**" in pattern else len(components) - literal_len
    # A path's `.` components vanish as Rust's `Path::strip_prefix` sees it.
    relative_root = [part for part in literal[:literal_len] if part != "."]
    found: List[str] = []

    def walk(directory: str, relative: List[str], level: int) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: os.fsencode(entry.name))
        except OSError:
            return
        for entry in entries:
            try:
                is_file = entry.is_file(follow_symlinks=False)
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            path = [*relative, entry.name]
            if is_file and not entry.name.isascii():
                try:
                    entry.name.encode("utf-8")
                except UnicodeEncodeError:
                    continue  # not UTF-8: no item (Rust skips it too)
            if is_file:
                text = "/".join(path)
                if matcher.match(text):
                    found.append(text)
                    if len(found) > MAX_EXPANSION:
                        raise _Refused(
                            f"`glob: {pattern}` matches more than {MAX_EXPANSION} files: "
                            f"a `foreach` expands into at most {MAX_EXPANSION} ops"
                        )
            elif is_dir and level < depth:
                walk(entry.path, path, level + 1)

    walk(os.path.join(base_dir, *literal[:literal_len]), relative_root, 1)
    if not found:
        raise _Refused(
            f"`glob: {pattern}` matches no file under {base_dir} "
            "(a glob is relative to the batch file's directory)"
        )
    return sorted(found)


# ---------------------------------------------------------------- expansion


def expand(
    ops: List[pb.Op],
    foreach: Sequence[Tuple[int, Any]],
    base_dir: str = ".",
    text: Optional[str] = None,
) -> List[pb.Op]:
    """``ops`` with every ``foreach`` expanded: each such op (``foreach``
    holds its index in ``ops`` and its ``foreach`` value, in file order)
    becomes its expansions, in item order, and an ``after:`` naming it names
    them all. ``text`` (the file, when there is one) is only read to find
    the line of each ``foreach``. Raises :class:`ForeachError`."""
    if not foreach:
        return ops
    lines = _foreach_lines(text) if text is not None else []
    expansions: Dict[int, List[pb.Op]] = {}
    total = 0
    for number, (index, value) in enumerate(foreach):
        if index >= len(ops):
            continue
        template = ops[index]
        line = lines[number] if number < len(lines) else None
        try:
            items = _source_from_value(value).items(base_dir)
        except _Refused as refused:
            raise ForeachError(template.id, line, None, "foreach", str(refused)) from None
        total += len(items)
        if total > MAX_EXPANDED_OPS:
            raise ForeachError(
                template.id,
                line,
                None,
                "foreach",
                f"the batch's `foreach`s expand into more than {MAX_EXPANDED_OPS} ops together",
            )
        expanded: List[pb.Op] = []
        for position, (item, op_id) in enumerate(zip(items, _expanded_ids(template.id, items))):
            try:
                expanded.append(_expand_one(template, item, position + 1, op_id))
            except _FieldRefused as refused:
                raise ForeachError(
                    template.id, line, (position + 1, _label(item)), refused.field, refused.message
                ) from None
        expansions[index] = expanded
    # The group ids, for `after:`.
    groups: Dict[str, List[str]] = {
        ops[index].id: [op.id for op in expanded] for index, expanded in expansions.items()
    }
    group_of: Dict[str, str] = {
        op_id: group for group, op_ids in groups.items() for op_id in op_ids
    }
    result: List[pb.Op] = []
    seen: Set[str] = set()
    clash: Optional[ForeachError] = None
    for index, written in enumerate(ops):
        for op in expansions.get(index, [written]):
            if op.id in seen and op.id in group_of and clash is None:
                clash = ForeachError(
                    group_of[op.id],
                    None,
                    None,
                    "id",
                    f"its expansion `{op.id}` has the id of another op: rename one of them",
                )
            seen.add(op.id)
            if any(after in groups for after in op.after):
                after_ids = [
                    expanded_id for after in op.after for expanded_id in groups.get(after, [after])
                ]
                del op.after[:]
                op.after.extend(after_ids)
            result.append(op)
    if clash is not None:
        raise clash
    return result


def _foreach_lines(text: str) -> List[int]:
    """The line (from 1) of each ``foreach`` key in the file, in order."""
    lines: List[int] = []
    for number, line in enumerate(text.split("\n")):
        if line.endswith("\r"):
            line = line[:-1]
        # A YAML comment's `foreach:` is no key.
        rest = line.split(" #", 1)[0]
        if rest.lstrip().startswith("#"):
            continue
        while True:
            at = rest.find("foreach")
            if at < 0:
                break
            rest = rest[at + len("foreach") :]
            if rest.lstrip('"').lstrip().startswith(":"):
                lines.append(number + 1)
    return lines


def _is_id_character(character: str) -> bool:
    return character.isascii() and (character.isalnum() or character in "_.-")


def _expanded_ids(op_id: str, items: Sequence[Item]) -> List[str]:
    """``<id>-<item>`` when every item is a short scalar spelled with the
    characters of an id (and ``/``, written ``_``) and no two are alike;
    otherwise ``<id>-<n>``, counting from 1."""
    named: List[str] = []
    for item in items:
        if (
            isinstance(item, str)
            and item
            and len(item.encode()) <= _MAX_ID_ITEM_LEN
            and all(character == "/" or _is_id_character(character) for character in item)
        ):
            named.append(item.replace("/", "_"))
        else:
            break
    if len(named) == len(items) and len(set(named)) == len(named):
        return [f"{op_id}-{name}" for name in named]
    return [f"{op_id}-{number}" for number in range(1, len(items) + 1)]


# A placeholder: ("item", ""), ("index", "") or ("field", NAME), with its span.
_Placeholder = Tuple[int, int, str, str]


def _placeholders(text: str) -> List[_Placeholder]:
    """The ``${item}``, ``${item.F}`` and ``${index}`` of ``text`` with
    their spans; ``$${`` escapes and other templates are skipped."""
    found: List[_Placeholder] = []
    index = 0
    while index < len(text):
        if text.startswith("$${", index):
            index += 3
            continue
        if text.startswith("${", index):
            body_start = index + 2
            close = text.find("}", body_start)
            if close < 0:
                break
            body = text[body_start:close]
            end = close + 1
            if body == "item":
                found.append((index, end, "item", ""))
            elif body == "index":
                found.append((index, end, "index", ""))
            elif body.startswith("item."):
                found.append((index, end, "field", body[len("item.") :]))
            index = end
            continue
        index += 1
    return found


def _value_of(what: str, name: str, item: Item, number: int) -> str:
    if what == "index":
        return str(number)
    if what == "item":
        if isinstance(item, str):
            return item
        raise _Refused(
            "`${item}` of a mapping item: name a field, `${item.FIELD}` "
            f"(it has {', '.join(item)})"
        )
    if isinstance(item, str):
        raise _Refused(f"`${{item.{name}}}`: the item is not a mapping, write `${{item}}`")
    if name not in item:
        raise _Refused(
            f"`${{item.{name}}}`: the item has no field `{name}` (it has {', '.join(item)})"
        )
    return item[name]


def _fill(text: str, item: Item, number: int, escape: bool) -> str:
    """``text`` with its placeholders filled, each value's ``${`` escaped
    when ``escape`` (a string the template pass reads afterwards)."""
    found = _placeholders(text)
    if not found:
        return text
    pieces: List[str] = []
    done = 0
    for start, end, what, name in found:
        pieces.append(text[done:start])
        value = _value_of(what, name, item, number)
        pieces.append(value.replace("${", "$${") if escape else value)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def _variable_name(what: str, name: str) -> str:
    """The environment variable holding a placeholder's value in a ``cmd``."""
    if what == "item":
        return "VOLLEY_ITEM"
    if what == "index":
        return "VOLLEY_INDEX"
    return f"VOLLEY_ITEM_{name}"


def _fill_value(value: Any, path: str, item: Item, number: int) -> Any:
    if isinstance(value, str):
        try:
            return _fill(value, item, number, True)
        except _Refused as refused:
            raise _FieldRefused(path, str(refused)) from None
    if isinstance(value, list):
        return [
            _fill_value(inner, f"{path}[{index}]", item, number)
            for index, inner in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: _fill_value(value[key], f"{path}.{key}", item, number) for key in sorted(value)
        }
    return value


def _fill_args(kind: str, args: Any, item: Item, number: int) -> Any:
    """The args of one expansion. A program's ``cmd`` gets its values
    through the environment (see the module doc)."""
    if not isinstance(args, dict):
        return _fill_value(args, "args", item, number)
    program = kind in _HOST_PROGRAM_KINDS
    filled: Dict[str, Any] = {}
    variables: Dict[str, str] = {}
    for key in sorted(args):
        inner = args[key]
        path = f"args.{key}"
        if key == "cmd" and isinstance(inner, str) and program:
            spots: List[Tuple[int, int, str]] = []
            for start, end, what, name in _placeholders(inner):
                variable = _variable_name(what, name)
                try:
                    value = _value_of(what, name, item, number)
                except _Refused as refused:
                    raise _FieldRefused(path, str(refused)) from None
                variables.setdefault(variable, value)
                spots.append((start, end, variable))
            try:
                filled[key] = quote_variables(
                    inner,
                    [(start, end, variable, variables[variable]) for start, end, variable in spots],
                )
            except _Refused as refused:
                raise _FieldRefused(path, str(refused)) from None
        else:
            filled[key] = _fill_value(inner, path, item, number)
    if variables:
        env = filled.setdefault("env", {})
        if not isinstance(env, dict):
            raise _FieldRefused("args.env", "`env` is not a mapping")
        for variable, value in variables.items():
            if variable in env:
                raise _FieldRefused(
                    f"args.env.{variable}",
                    f"`{variable}` holds the item for `cmd`: rename this variable",
                )
            # The env pass at dispatch reads templates: the value's `${`
            # stays text.
            env[variable] = value.replace("${", "$${")
        filled["env"] = {key: env[key] for key in sorted(env)}
    return filled


def _expand_one(template: pb.Op, item: Item, number: int, op_id: str) -> pb.Op:
    op = pb.Op()
    op.CopyFrom(template)
    op.id = op_id
    op.group = template.id
    if template.args_json:
        try:
            args = json.loads(template.args_json)
        except ValueError as error:
            raise _FieldRefused("args", str(error)) from None
        op.args_json = json.dumps(
            _fill_args(template.kind, args, item, number),
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def plain(field: str, text: str) -> str:
        try:
            return _fill(text, item, number, False)
        except _Refused as refused:
            raise _FieldRefused(field, str(refused)) from None

    op.store_as = plain("store_as", template.store_as)
    for field in ("after", "wait_for", "wait_for_any", "reads", "writes"):
        entries = getattr(op, field)
        for position, entry in enumerate(entries):
            entries[position] = plain(field, entry)
    return op


# ------------------------------------------------------------ shell quoting


class _ShellScan:
    """The shell's quoting at a spot of a command, followed character by
    character: the quotes, and each ``$(…)`` opened (inside which quoting
    starts afresh) with what it returns to."""

    def __init__(self) -> None:
        self.state = "bare"
        # Per open `$(`: the quoting it returns to, `(`s open inside it,
        # and whether it is an arithmetic expansion (`$((`).
        self.substitutions: List[List[Any]] = []
        # The last character opened a `$(` (a `(` right after it makes it
        # `$((`).
        self.opened = False
        self.escaped = False
        self.dollar = False

    def in_arithmetic(self) -> bool:
        """Whether the spot is inside `$((…))` (innermost), where a shell
        takes only a number: a quoted word there is a syntax error."""
        return bool(self.substitutions) and bool(self.substitutions[-1][2])

    def follow(self, text: str) -> None:
        for character in text:
            if self.escaped:
                self.escaped = False
                self.dollar = False
                continue
            dollar, self.dollar = self.dollar, False
            opened, self.opened = self.opened, False
            unquoted_or_double = self.state in ("bare", "double")
            if unquoted_or_double and character == "\\":
                self.escaped = True
            elif unquoted_or_double and character == "$":
                self.dollar = True
            elif unquoted_or_double and character == "(" and dollar:
                self.substitutions.append([self.state, 0, False])
                self.state = "bare"
                self.opened = True
            elif self.state == "bare" and character == "(":
                if self.substitutions:
                    self.substitutions[-1][1] += 1
                    if opened:
                        self.substitutions[-1][2] = True
            elif self.state == "bare" and character == ")":
                if self.substitutions:
                    if self.substitutions[-1][1] > 0:
                        self.substitutions[-1][1] -= 1
                    else:
                        self.state = self.substitutions.pop()[0]
            elif self.state == "bare" and character == "'":
                self.state = "single"
            elif self.state == "bare" and character == '"':
                self.state = "double"
            elif (self.state == "single" and character == "'") or (
                self.state == "double" and character == '"'
            ):
                self.state = "bare"


def _whole_number(value: str) -> Optional[str]:
    """``value`` as the digits of a whole number (surrounding whitespace
    dropped), or None when it is not one."""
    trimmed = value.strip()
    digits = trimmed[1:] if trimmed.startswith("-") else trimmed
    if not digits or len(digits) > 18 or not (digits.isascii() and digits.isdigit()):
        return None
    return trimmed


_ESCAPES = {
    "\t": "\\t",
    "\r": "\\r",
    "\n": "\\n",
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\0": "\\0",
}


def _escape_debug(text: str) -> str:
    """Rust's ``str::escape_debug``, near enough."""
    return "".join(
        _ESCAPES.get(character)
        or (character if character.isprintable() else f"\\u{{{ord(character):x}}}")
        for character in text
    )


def _arithmetic_refusal(spot: str, value: str) -> str:
    shown = _escape_debug(value.strip()[:40])
    return (
        f"`{spot}` stands inside `$((\u2026))`, where only a whole number can go, "
        f"and its value `{shown}` is not one"
    )


def quote_variables(cmd: str, spots: Sequence[Tuple[int, int, str, str]]) -> str:
    """``cmd`` with each of ``spots`` (``(start, end, NAME, VALUE)``, in
    order, none overlapping) replaced by a reference to the environment
    variable NAME, quoted for where it stands, so its value reaches the
    program as one word and is never parsed as shell syntax. Each reference
    is written with the ``$${`` escape (``"$${NAME}"``): the template pass
    at dispatch turns it into ``"${NAME}"`` for the shell. Inside
    ``$((…))``, where a shell takes only a number, VALUE is pasted when it
    is a whole number and refused otherwise. A spot right after a backslash
    is refused. (``volley_kinds::template::quote_variables``.)"""
    rendered: List[str] = []
    scan = _ShellScan()
    done = 0
    for start, end, name, value in spots:
        if start < done:
            raise _Refused(f"spot {start}..{end} is out of order")
        literal = cmd[done:start]
        rendered.append(literal)
        scan.follow(literal)
        if scan.escaped:
            raise _Refused(
                f"`{cmd[start:end]}` right after a backslash: remove the backslash "
                "(a filled value is always one quoted word)"
            )
        scan.dollar = False
        if scan.in_arithmetic():
            number = _whole_number(value)
            if number is None:
                raise _Refused(_arithmetic_refusal(cmd[start:end], value))
            rendered.append(number)
            done = end
            continue
        if scan.state == "bare":
            rendered.append(f'"$${{{name}}}"')
        elif scan.state == "double":
            rendered.append(f"$${{{name}}}")
        else:
            rendered.append(f"'\"$${{{name}}}\"'")
        done = end
    rendered.append(cmd[done:])
    return "".join(rendered)
