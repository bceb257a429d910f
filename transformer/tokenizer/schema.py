"""Reading tokenizer.json objects field by field, with the types the reference gives them.

Rust `tokenizers` reads tokenizer.json with serde: a `u32` field refuses -1, 1.5, "7" and
2**32; a `bool` refuses 0 and "true"; a field without a default must be present. We read
the same way, so a file that the reference refuses is refused here too, with one line naming
the field and what was expected:

    >>> Fields({"lowercase": "yes"}, "normalizer").boolean("lowercase")
    Traceback (most recent call last):
    ...
    ValueError: normalizer.lowercase is 'yes'; expected true or false
    >>> Fields({"max_length": 512}, "truncation").uint("max_length")
    512
    >>> Fields({}, "model").string("unk_token")
    Traceback (most recent call last):
    ...
    ValueError: model.unk_token is missing; expected a string

`where` is the path of the object inside the file ("pre_tokenizer.pretokenizers[2]"); the
loader puts the file's name in front of the message.
"""

REQUIRED = object()  # a field without a default: missing is an error
U32 = 2 ** 32
USIZE = 2 ** 64


def show(value, width=60):
    """A short repr of a JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(value):
    """The JSON type name of a parsed value ("a string", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class Fields:
    """One JSON object at path `where`; each accessor checks one field's type.

    A default (anything but REQUIRED) is returned when the field is absent. Fields the
    reference types as Option<...> take default=None and accept an explicit null too.
    """

    def __init__(self, value, where):
        if not isinstance(value, dict):
            raise ValueError(f"{where or 'the top level'} is {describe(value)} ({show(value)}); expected an object")
        self.value = value
        self.where = where

    def has(self, name):
        return name in self.value

    def path(self, name):
        return f"{self.where}.{name}" if self.where else name

    def _get(self, name, default, expected):
        """(value, done): done when the default answers (absent, or null for an Option field)."""
        if name not in self.value:
            if default is REQUIRED:
                raise ValueError(f"{self.path(name)} is missing; expected {expected}")
            return default, True
        value = self.value[name]
        if value is None and default is None:
            return None, True
        return value, False

    def _bad(self, name, value, expected):
        return ValueError(f"{self.path(name)} is {show(value)}; expected {expected}")

    def boolean(self, name, default=REQUIRED):
        value, done = self._get(name, default, "true or false")
        if done:
            return value
        if not isinstance(value, bool):
            raise self._bad(name, value, "true or false")
        return value

    def uint(self, name, default=REQUIRED, limit=U32):
        """A non-negative integer below `limit` (u32 by default; USIZE for usize fields)."""
        expected = f"an integer from 0 to {limit - 1}"
        value, done = self._get(name, default, expected)
        if done:
            return value
        return check_uint(value, self.path(name), limit)

    def string(self, name, default=REQUIRED):
        value, done = self._get(name, default, "a string")
        if done:
            return value
        if not isinstance(value, str):
            raise self._bad(name, value, "a string")
        return value

    def char(self, name, default=REQUIRED):
        """A string of exactly one character (Rust's `char`)."""
        value, done = self._get(name, default, "a one-character string")
        if done:
            return value
        if not isinstance(value, str) or len(value) != 1:
            raise self._bad(name, value, "a one-character string")
        return value

    def number(self, name, default=REQUIRED):
        value, done = self._get(name, default, "a number")
        if done:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(name, value, "a number")
        return float(value)

    def choice(self, name, options, default=REQUIRED):
        """One of the strings in `options` (a dict: spelling in the file -> our value)."""
        expected = "one of " + ", ".join(repr(o) for o in options)
        value, done = self._get(name, default, expected)
        if done:
            return value
        if not isinstance(value, str) or value not in options:
            raise self._bad(name, value, expected)
        return options[value]

    def array(self, name, default=REQUIRED):
        value, done = self._get(name, default, "a list")
        if done:
            return value
        if not isinstance(value, list):
            raise self._bad(name, value, "a list")
        return value

    def object(self, name, default=REQUIRED):
        value, done = self._get(name, default, "an object")
        if done:
            return value
        if not isinstance(value, dict):
            raise self._bad(name, value, "an object")
        return value

    def pattern(self, name):
        """A Split / Replace pattern: {"String": text} or {"Regex": text} -> (text, is_regex)."""
        expected = '{"String": text} or {"Regex": text}'
        value = self.object(name)
        if len(value) != 1 or not ({"String", "Regex"} & set(value)) or not isinstance(next(iter(value.values())), str):
            raise self._bad(name, value, expected)
        kind, text = next(iter(value.items()))
        return text, kind == "Regex"

    def fields(self, name):
        """The object in field `name`, as Fields."""
        return Fields(self.object(name), self.path(name))


def check_uint(value, where, limit=U32):
    """`value` if it is an int in [0, limit), else ValueError naming `where`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{where} is {show(value)}; expected an integer from 0 to {limit - 1}")
    return value


def type_of(config, where, kinds):
    """The "type" of a component object, checked against `kinds` (the names we support)."""
    fields = Fields(config, where)
    kind = fields.string("type")
    if kind not in kinds:
        raise ValueError(f"{where}.type {kind!r} is unsupported; supported: {', '.join(kinds)}")
    return fields, kind


def objects(fields, key):
    """The array `key` of a Sequence component, each item an object: a null or other value in
    a Sequence is refused (the reference reads each item as a component and refuses it too)."""
    items = fields.array(key)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            shown = "null" if item is None else type(item).__name__
            raise ValueError(f"{fields.path(key)}[{i}] must be an object, found {shown}")
    return items
