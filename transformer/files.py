"""Reading the files of a model folder, which may come from anywhere: regular files only,
bounded in size, strict JSON.

    data = read_json(folder / "config.json", "config file")      # a dict, list, ...
    blob = read_bytes(folder / "vocab.txt", "vocabulary")

Every file this package reads from a model folder goes through here, so a folder cannot make
it read a device (`config.json -> /dev/urandom` would read until memory runs out), block on
a named pipe, or take a JSON document that no other reader of the format accepts:

  * the path may be a symbolic link (the Hugging Face cache is made of them), but what it
    points to must be a regular file;
  * at most `limit` bytes (a file claiming more is refused before it is read);
  * JSON as the standard defines it: `NaN`, `Infinity` and `-Infinity` (which Python's json
    module takes and Rust's serde_json refuses) are errors naming the file; with
    `unique_keys=True` so is an object that names a key twice (Python keeps the last one
    silently, other readers the first).

Errors are `ModelFileError` (a ValueError), one line naming the file and what is wrong.
"""

import json
import os
import stat

# Large enough for any real file of its kind (the biggest tokenizer.json known is ~35 MB),
# small enough that a wrong file is refused before it fills memory.
JSON_LIMIT = 256 << 20


class ModelFileError(ValueError):
    """A file of a model folder is not what it should be (not a regular file, too big, not
    valid JSON)."""


def open_regular(path, what="file"):
    """Open `path` for reading in binary mode, refusing anything but a regular file.

    A named pipe is opened without blocking (O_NONBLOCK) so that it can be refused rather
    than waited on. Raises FileNotFoundError when the path does not exist, ModelFileError
    when it is not a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(os.fspath(path), flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise ModelFileError(f"{what} {path} is {kind}; expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bytes(path, what="file", limit=JSON_LIMIT):
    """The bytes of the regular file `path`, at most `limit` of them (else ModelFileError)."""
    with open_regular(path, what) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise ModelFileError(f"{what} {path} is {size:,} bytes; more than the {limit:,} such a file may have")
        data = file.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise ModelFileError(f"{what} {path} is more than the {limit:,} bytes such a file may have")
    return data


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _unique_object(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"the key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def parse_json(data, source, unique_keys=False):
    """bytes or str -> the JSON value, strictly (see the module docstring); ModelFileError
    naming `source` when it is not valid JSON."""
    if not data.strip():  # (json's own words for it: "Expecting value: line 1 column 1 (char 0)")
        raise ModelFileError(f"{source} is empty; expected JSON")
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text, parse_constant=_refuse_constant,
                          object_pairs_hook=_unique_object if unique_keys else None)
    except UnicodeDecodeError as error:
        raise ModelFileError(f"{source} is not UTF-8 text (byte {error.start}); expected JSON") from None
    except RecursionError:
        raise ModelFileError(f"{source} is not valid JSON: nested too deeply") from None
    except ValueError as error:  # json.JSONDecodeError and the hooks' errors
        raise ModelFileError(f"{source} is not valid JSON: {error}") from None


def read_json(path, what="file", limit=JSON_LIMIT, unique_keys=False):
    """The JSON value in the regular file `path`, read and parsed strictly (see above)."""
    return parse_json(read_bytes(path, what, limit), f"{what} {path}", unique_keys)
