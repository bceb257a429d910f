"""docs/exercises.md cannot rot: its solutions run here against the real model, as the
walkthrough's snippets do (tests/test_walkthrough.py has the runner and the number checks)."""

import re

import pytest

from test_walkthrough import (
    DECIMAL,
    FUNCTION_LINK,
    ROOT,
    prose,
    python_blocks,
    run_walkthrough,
    unprinted_numbers,
)

EXERCISES = ROOT / "docs" / "exercises.md"


@pytest.fixture(scope="module")
def markdown():
    return EXERCISES.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def exercises_run(markdown, minilm_dir, gpt2_tokenizer_dir):
    return run_walkthrough(markdown, EXERCISES)


def test_exercise_solutions_print_what_the_page_shows(exercises_run):
    assert exercises_run.printed, "no example ran"
    assert not exercises_run.failures_text, "\n\n".join(exercises_run.failures_text)


def test_every_number_the_exercises_quote_was_printed_by_the_run(markdown, exercises_run):
    assert DECIMAL.findall(prose(markdown)), "the exercises quote no numbers: nothing to check"
    missing = unprinted_numbers(prose(markdown), exercises_run)
    assert not missing, f"the exercises' text quotes numbers no solution printed: {missing}"


def test_each_exercise_asks_for_a_prediction_and_has_a_solution_that_runs(markdown):
    sections = re.split(r"^## \d+\. ", markdown, flags=re.MULTILINE)[1:]
    assert 6 <= len(sections) <= 10, f"{len(sections)} exercises"
    for section in sections:
        title = section.splitlines()[0]
        assert "**Predict**" in section and "**Check**" in section, title
        solution = section.split("<details><summary>Solution</summary>", 1)
        assert len(solution) == 2 and "</details>" in solution[1], f"{title}: no solution"
        assert python_blocks(solution[1]), f"{title}: the solution has no code the tests run"


def test_every_function_link_of_the_exercises_names_a_function(markdown):
    for name, target in FUNCTION_LINK.findall(markdown):
        source = (EXERCISES.parent / target).resolve()
        assert source.is_file(), target
        last = name.split(".")[-1]
        assert re.search(rf"^\s*(def|class) {re.escape(last)}\b", source.read_text(encoding="utf-8"),
                         flags=re.MULTILINE), f"{name} in {target}"
