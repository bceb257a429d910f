"""The local model store (`weights/`) and name resolution for every `from_pretrained`.

`resolve("all-MiniLM-L6-v2")` -> Path of the model folder. Order: an existing directory or
file -> `weights/NAME` -> the Hugging Face cache -> download (see issue 4; this first
version knows the first two).
"""

import os
from pathlib import Path


def weights_dir() -> Path:
    """Where checkpoints are stored: $TRANSFORMER_WEIGHTS, else the checkout's `weights/`,
    else ~/.cache/transformer/weights for an installed copy."""
    if os.environ.get("TRANSFORMER_WEIGHTS"):
        return Path(os.environ["TRANSFORMER_WEIGHTS"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return Path.home() / ".cache" / "transformer" / "weights"


def resolve(name_or_path) -> Path:
    """A model name or path -> the existing file or folder that holds it.

    Raises FileNotFoundError naming every place it looked.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path).split("/")[-1]
    looked = [str(path)]
    local = weights_dir() / name
    if local.is_dir():
        return local
    looked.append(str(local))
    raise FileNotFoundError(
        f"model {name_or_path!r} not found; looked in: {', '.join(looked)}. "
        f"Fetch it with: transformer download {name}"
    )
