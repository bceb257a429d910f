"""transformer.files: the strict readers every file of a model folder goes through."""

import pytest

from transformer.files import ModelFileError, read_json


@pytest.mark.parametrize("content", [b"", b"  \n\t"])
def test_an_empty_json_file_is_called_empty(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"config file .*config\.json is empty; expected JSON$"):
        read_json(path, "config file")
