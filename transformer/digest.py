"""What a file holds, by content: sha256 digests, remembered while the file is untouched.

Caches (the packed weights beside a checkpoint, the search cache's corpus embeddings) and
the download store must notice any change to the files they were made from. A file's size
and modification time do not: `touch -d`, `touch -r`, `cp -p`, archives and reproducible
builds set the time back, and new weights of the same size then pass for the old ones. So
a cache is keyed on the sha256 of the files' bytes.

Hashing costs ~0.6 ms per MB (a BERT-base checkpoint: ~0.25 s), too much for every start.
So each digest is kept with the file's *identity*: its device, inode, size, modification
time and status-change time (ctime). No program sets the ctime of a file: the kernel moves
it to "now" whenever the file's bytes or metadata change (`touch -d` included), and a copy
or an unpacked archive is a new inode with a new ctime. While the identity is the same, the
bytes are the ones that were hashed; when it differs, the file is hashed again.

    memo = {}                                        # kept by the caller (in its cache record)
    digests = file_digests(folder, ["config.json", "model.safetensors"], memo)
    # {"config.json": "953f9c...", "model.safetensors": "53aa51..."}; memo now holds both

A memo is a plain dict {name: {"identity": [...], "sha256": "..."}}, JSON-ready.
"""

import hashlib
import os


def identity(stat_result):
    """[device, inode, size, mtime_ns, ctime_ns]: what must stay equal for a file's bytes to
    be the ones hashed before (see the module docstring)."""
    return [stat_result.st_dev, stat_result.st_ino, stat_result.st_size,
            stat_result.st_mtime_ns, stat_result.st_ctime_ns]


def sha256_file(path):
    """The sha256 of a file's bytes, as a hex string."""
    with open(path, "rb") as file:
        if hasattr(hashlib, "file_digest"):  # Python 3.11+: reads in big blocks, no Python loop
            return hashlib.file_digest(file, "sha256").hexdigest()
        digest = hashlib.sha256()
        while block := file.read(1 << 20):
            digest.update(block)
        return digest.hexdigest()


def file_digests(folder, names, memo):
    """{name: sha256} for the files `names` (paths relative to `folder`), hashing only those
    whose identity differs from the one recorded in `memo`; `memo` is updated in place to
    the files as they are now. Raises OSError for a file that cannot be read."""
    digests = {}
    for name in names:
        path = os.path.join(folder, name)
        now = identity(os.stat(path))
        recorded = memo.get(name)
        if isinstance(recorded, dict) and recorded.get("identity") == now and isinstance(recorded.get("sha256"), str):
            digests[name] = recorded["sha256"]
            continue
        digests[name] = sha256_file(path)
        after = identity(os.stat(path))
        if after != now:  # written to while being hashed: what was hashed is not what is there
            raise OSError(f"{path} changed while it was being read; try again once it is written")
        memo[name] = {"identity": now, "sha256": digests[name]}
    for name in list(memo):
        if name not in digests:
            del memo[name]
    return digests


def combined(digests, *extra):
    """One sha256 over {name: sha256} (sorted by name) and any extra strings: the key of
    something made from those files."""
    key = hashlib.sha256()
    for part in extra:
        key.update(f"{part}\n".encode())
    for name in sorted(digests):
        key.update(f"{name} {digests[name]}\n".encode())
    return key.hexdigest()
