"""docs/walkthrough.md cannot rot: its snippets run here against the real model.

Every ```python block of the walkthrough is a doctest session (`>>>` lines, then what they
print). The blocks run in order, in one namespace, and each printed output must equal what the
walkthrough shows. Numbers may differ only in the last digit they are printed with, by at most
one unit (a rounding boundary crossed by a BLAS summing in another order); the words and the
number of digits must match exactly. Then the prose is checked too: every decimal number and
every shape like (1, 12, 384) that the text quotes must be one that the run printed, and every
link to a function ([`embed`](../transformer/model.py)) must name a function or class that
exists in that file. Counts of exercises written as words ("ten exercises") and references to
them ("exercise 8") must match docs/exercises.md, and the learner's set-up must fetch every
model the walkthrough loads.

docs/exercises.md is checked the same way (tests/test_exercises.py): its solutions are
doctest blocks too.

After changing the walkthrough's code, refresh its outputs from a run with

    python tests/test_walkthrough.py --update [docs/exercises.md]

and read the diff: the prose around the outputs may quote numbers that changed.
"""

import doctest
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"

FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w]|\.\d)")
SHAPE = re.compile(r"\(\d+(?:, \d+)+\)")
FUNCTION_LINK = re.compile(r"\[`([A-Za-z_][\w.]*)`\]\((\.\./[^)#]+\.py)\)")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def python_blocks(markdown):
    """[(first line number, code)] of the ```python blocks, in order."""
    return [(markdown.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in FENCE.finditer(markdown)]


def prose(markdown):
    """The walkthrough without its code blocks (any fence)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)


def within_last_digit(wanted, got):
    """'0.923' vs '0.924' -> True; '0.923' vs '0.93' (other digits) or '0.925' -> False."""
    decimals = len(wanted.split(".")[1])
    if len(got.split(".")[1]) != decimals:
        return False
    return round(abs(float(wanted) - float(got)) * 10 ** decimals) <= 1


class QuotedNumbersChecker(doctest.OutputChecker):
    """doctest's comparison, except that a number may be off by one unit in its last digit."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        wanted, found = DECIMAL.findall(want), DECIMAL.findall(got)
        if len(wanted) != len(found) or not all(map(within_last_digit, wanted, found)):
            return False
        numbers = iter(wanted)
        return super().check_output(want, DECIMAL.sub(lambda _: next(numbers), got), optionflags)


class RecordingRunner(doctest.DocTestRunner):
    """Runs the examples and keeps what each one printed."""

    def __init__(self):
        super().__init__(checker=QuotedNumbersChecker(), optionflags=OPTIONS, verbose=False)
        self.printed = []  # [(block number, example, got)]
        self.failures_text = []
        self.block = None

    def report_success(self, out, test, example, got):
        self.printed.append((self.block, example, got))

    def report_failure(self, out, test, example, got):
        self.printed.append((self.block, example, got))
        self.failures_text.append(f"{test.name}, line {test.lineno + example.lineno + 1}:\n"
                                  f"{example.source}expected:\n{example.want}got:\n{got}")

    def report_unexpected_exception(self, out, test, example, exc_info):
        import traceback

        self.printed.append((self.block, example, None))
        self.failures_text.append(f"{test.name}, line {test.lineno + example.lineno + 1}:\n{example.source}"
                                  + "".join(traceback.format_exception(*exc_info)))


def run_walkthrough(markdown, path=WALKTHROUGH):
    """Run every python block of the page at `path` in order in one namespace -> the runner
    (with what was printed)."""
    runner = RecordingRunner()
    namespace = {"__name__": "walkthrough"}
    parser = doctest.DocTestParser()
    for number, (line, code) in enumerate(python_blocks(markdown)):
        examples = parser.get_examples(code)
        if not examples:
            raise AssertionError(f"the python block at line {line} of {path.name} has no >>> example")
        runner.block = number
        test = doctest.DocTest(examples, namespace, f"{path.name} block {number + 1}",
                               str(path), line - 1, code)
        runner.run(test, clear_globs=False)
        namespace = test.globs  # DocTest copies the namespace it is given: carry the copy on
    return runner


def update(path=WALKTHROUGH):
    """Rewrite the walkthrough's outputs with what a fresh run prints."""
    markdown = path.read_text(encoding="utf-8")
    runner = run_walkthrough(markdown, path)
    if any(got is None for _, _, got in runner.printed):
        raise SystemExit("an example raised; fix it first:\n\n" + "\n\n".join(runner.failures_text))
    blocks = python_blocks(markdown)
    lines = markdown.split("\n")
    for block, example, got in reversed(runner.printed):
        first = blocks[block][0] - 1 + example.lineno + example.source.count("\n")  # 0-based line of the output
        old = example.want.count("\n")
        indent = " " * example.indent
        new = [indent + text if text else text for text in got.rstrip("\n").split("\n")] if got else []
        lines[first:first + old] = new
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"updated {path}: {len(runner.printed)} outputs")


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def markdown():
    return WALKTHROUGH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def walkthrough_run(markdown, minilm_dir):
    return run_walkthrough(markdown)


def test_walkthrough_snippets_print_what_the_walkthrough_shows(walkthrough_run):
    assert walkthrough_run.printed, "no example ran"
    assert not walkthrough_run.failures_text, "\n\n".join(walkthrough_run.failures_text)


def unprinted_numbers(text, runner):
    """The decimal numbers quoted in `text` that no example of the run printed."""
    printed = DECIMAL.findall("\n".join(got for _, _, got in runner.printed if got))
    return [number for number in DECIMAL.findall(text)
            if not any(within_last_digit(number, found) for found in printed
                       if len(found.split(".")[1]) == len(number.split(".")[1]))]


def test_every_number_the_prose_quotes_was_printed_by_the_run(markdown, walkthrough_run):
    printed = "\n".join(got for _, _, got in walkthrough_run.printed if got)
    assert DECIMAL.findall(prose(markdown)), "the prose quotes no numbers: nothing to check"
    missing = unprinted_numbers(prose(markdown), walkthrough_run)
    assert not missing, f"the walkthrough's text quotes numbers no snippet printed: {missing}"
    shapes = SHAPE.findall(prose(markdown))
    assert shapes, "the prose quotes no shapes: nothing to check"
    missing_shapes = [shape for shape in shapes if shape not in printed]
    assert not missing_shapes, f"the walkthrough's text quotes shapes no snippet printed: {missing_shapes}"


def test_readme_how_it_works_quotes_only_numbers_the_walkthrough_printed(walkthrough_run):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- section:how -->(.*?)<!-- /section:how -->", readme, flags=re.DOTALL)
    assert section and "docs/walkthrough.md" in section.group(1)
    quoted = DECIMAL.findall(prose(section.group(1)))
    assert len(quoted) >= 4, quoted
    missing = unprinted_numbers(prose(section.group(1)), walkthrough_run)
    assert not missing, f"README's How it works quotes numbers the walkthrough run did not print: {missing}"


def test_every_function_link_names_a_function_in_that_file(markdown):
    links = FUNCTION_LINK.findall(markdown)
    assert len(links) >= 10, f"expected the walkthrough to link its steps to the code, found {links}"
    broken = []
    for name, target in links:
        source = (WALKTHROUGH.parent / target).resolve()
        if not source.is_file():
            broken.append(f"{target} (no such file)")
            continue
        text = source.read_text(encoding="utf-8")
        for part in name.split("."):
            if not re.search(rf"^\s*(def|class) {re.escape(part)}\b", text, flags=re.MULTILINE):
                broken.append(f"{name} in {target}")
                break
    assert not broken, f"links to functions that do not exist: {broken}"


def test_every_picture_the_walkthrough_shows_is_a_png_in_docs(markdown):
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert pictures, "the walkthrough shows no picture"
    for picture in pictures:
        path = WALKTHROUGH.parent / picture
        assert path.is_file(), f"{picture} is missing"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{picture} is not a PNG file"


LEARN = ROOT / "LEARN.md"
LEARNERS_PAGES = [LEARN, WALKTHROUGH, ROOT / "docs" / "exercises.md", ROOT / "README.md"]
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", LEARNERS_PAGES, ids=lambda page: page.name)
def test_learners_pages_link_only_to_files_that_exist(page):
    text = page.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in MARKDOWN_LINK.findall(text)
               if not t.startswith(("http://", "https://", "#", "mailto:"))]
    assert targets, f"{page.name} links to nothing"
    missing = [t for t in targets if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_the_path_names_only_functions_that_model_py_has():
    # LEARN.md tells a reader which functions of model.py to read and which to skip: a renamed
    # function must not leave the path pointing at nothing.
    text = LEARN.read_text(encoding="utf-8")
    section = text.split("### `transformer/model.py`", 1)[1].split("\n### ", 1)[0]
    names = [n for n in re.findall(r"`([A-Za-z_]\w*)`", section)]
    assert len(names) >= 15, names
    model_py = (ROOT / "transformer" / "model.py").read_text(encoding="utf-8")
    missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", model_py)]
    assert not missing, f"LEARN.md names what transformer/model.py does not have: {missing}"


EXERCISES = ROOT / "docs" / "exercises.md"
NUMBER_WORDS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
EXERCISE_COUNT = re.compile(rf"\b({'|'.join(NUMBER_WORDS)}|\d+) (?:[a-z-]+ )?(?:exercises|changes to make)\b",
                            re.IGNORECASE)
EXERCISE_REFERENCE = re.compile(r"\bexercises? (\d+(?:(?:, | and | to | or )\d+)*)", re.IGNORECASE)


def test_counts_of_exercises_and_references_to_them_match_the_exercises_page():
    # "eight changes" when there are nine, or "exercise 9" after the exercises were renumbered,
    # misleads a reader although no printed number is wrong.
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", EXERCISES.read_text(encoding="utf-8"), flags=re.MULTILINE)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    counts, references, wrong = 0, 0, []
    for page in LEARNERS_PAGES:
        text = prose(page.read_text(encoding="utf-8"))
        for word in EXERCISE_COUNT.findall(text):
            counts += 1
            if NUMBER_WORDS.get(word.lower(), int(word) if word.isdigit() else None) != len(numbers):
                wrong.append(f"{page.name}: {word} exercises, but there are {len(numbers)}")
        for group in EXERCISE_REFERENCE.findall(text):
            references += 1
            wrong += [f"{page.name}: exercise {n}, but the last is {len(numbers)}"
                      for n in map(int, re.findall(r"\d+", group)) if not 1 <= n <= len(numbers)]
    assert counts >= 2 and references >= 5, (counts, references)
    assert not wrong, wrong


def models_fetched_by(make_target):
    """The model names that `make TARGET` downloads, read from the Makefile."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(rf"^{make_target}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE).group(1)
    return set(re.search(r"transformer download (.+)", recipe).group(1).split())


def models_loaded_by(page):
    code = "\n".join(code for _, code in python_blocks(page.read_text(encoding="utf-8")))
    return set(re.findall(r'from_pretrained\("([^"]+)"', code))


@pytest.mark.parametrize("page", [LEARN, WALKTHROUGH], ids=lambda page: page.name)
def test_the_learners_set_up_fetches_every_model_the_walkthrough_loads(page):
    # The set-up without the test extras: `make demo`, then `transformer download ...`. A model
    # the walkthrough loads but the set-up does not fetch fails on the reader's first try.
    set_up = re.search(r"```sh\n(make demo\b.*?)```", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert set_up, f"{page.name} has no set-up block starting with make demo"
    downloads = re.findall(r"transformer download ([^#\n]+)", set_up.group(1))
    fetched = models_fetched_by("weights") | {name for line in downloads for name in line.split()}
    assert models_loaded_by(WALKTHROUGH) <= fetched, models_loaded_by(WALKTHROUGH) - fetched
    # The exercises may use more, if `make test` fetches it and their opening names it.
    extra = models_loaded_by(EXERCISES) - fetched
    assert extra <= models_fetched_by("weights-test"), extra
    opening = EXERCISES.read_text(encoding="utf-8").split("## Set-up", 1)[0]
    assert all(name in opening for name in extra), extra


def test_readme_points_learners_to_the_path_near_the_top():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    how = readme.index("## How it works")
    assert how < readme.index("## Python") and "(LEARN.md)" in readme[how:readme.index("## Python")]


def test_number_checker_accepts_one_unit_in_the_last_digit_only():
    checker = QuotedNumbersChecker()
    assert checker.check_output("cos 0.923 and 0.81\n", "cos 0.924 and 0.81\n", OPTIONS)
    assert not checker.check_output("cos 0.923\n", "cos 0.925\n", OPTIONS)
    assert not checker.check_output("cos 0.923\n", "cos 0.92\n", OPTIONS)
    assert not checker.check_output("cos 0.923\n", "sin 0.923\n", OPTIONS)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) <= 3:
        os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
        update(Path(sys.argv[2]).resolve() if len(sys.argv) == 3 else WALKTHROUGH)
    else:
        raise SystemExit(f"usage: python {sys.argv[0]} --update [PAGE.md]   (rewrite a page's outputs; "
                         f"default: the walkthrough)")
