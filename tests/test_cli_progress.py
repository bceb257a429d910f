"""The progress bar on stderr: drawn for terminals, silent otherwise, no dependency."""

import io

from transformer.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_quiet_when_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress(10, "embedding", stream=stream) as progress:
        progress.update(10)
    assert stream.getvalue() == ""


def test_progress_draws_on_a_terminal_and_ends_the_line():
    stream = FakeTerminal()
    with Progress(4, "embedding", unit="texts", stream=stream) as progress:
        progress.update(4)
    text = stream.getvalue()
    assert text.startswith("\rembedding  [########################]  4/4 texts")
    assert text.endswith("\n")


def test_progress_can_be_forced_on_or_off():
    forced = io.StringIO()
    with Progress(2, "x", enabled=True, stream=forced) as progress:
        progress.update(2)
    assert "2/2" in forced.getvalue()
    silenced = FakeTerminal()
    with Progress(2, "x", enabled=False, stream=silenced) as progress:
        progress.update(2)
    assert silenced.getvalue() == ""


def test_progress_line_shows_the_fraction_done():
    progress = Progress(8, "work", enabled=False)
    progress.update(2)
    assert progress.line().startswith("work  [######..................]  2/8")


def test_progress_counts_bytes_in_megabytes():
    progress = Progress(90_000_000, "model.safetensors", unit="B", enabled=False)
    progress.update(45_000_000)
    assert "45.0/90.0 MB" in progress.line() and "MB/s" in progress.line()


def test_progress_that_never_drew_writes_nothing_on_close():
    stream = FakeTerminal()
    Progress(5, "x", stream=stream).close()
    assert stream.getvalue() == ""
