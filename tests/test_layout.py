"""The layout the folders promise: kernels are leaves, no module takes a sibling's private
names, the command line's modules import no cycle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted((ROOT / "kernels").glob("*.py"))
PACKAGE = sorted((ROOT / "transformer").rglob("*.py"))


def imports(path):
    """(module, names) of every import in `path`, relative imports written with their dots."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or ""), tuple(alias.name for alias in node.names)


@pytest.mark.parametrize("path", KERNELS, ids=lambda path: path.name)
def test_a_kernel_imports_nothing_from_the_package(path):
    # kernels/ is installed as transformer.kernels, but it is a leaf: arrays in, arrays out.
    for module, _ in imports(path):
        assert not module.startswith("transformer"), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", KERNELS + PACKAGE, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_imports_a_private_name_of_another(path):
    for module, names in imports(path):
        private = [name for name in names if name.startswith("_") and name != "__version__"]
        assert not private, f"{path.relative_to(ROOT)} imports {private} from {module}"


def test_the_learning_commands_do_not_import_the_command_line_module():
    # cli.py registers cli_learning's subcommands; what both need lives in cli_common.py.
    for module, _ in imports(ROOT / "transformer" / "cli_learning.py"):
        assert module != "transformer.cli", "transformer/cli_learning.py imports transformer.cli"
