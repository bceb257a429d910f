"""What every fuzz suite shares: how many inputs, hypothesis settings, and the count report.

    from fuzzing import BATCH, fuzz_settings, ran

    @fuzz_settings()
    @given(st.lists(inputs, min_size=BATCH, max_size=BATCH))
    def test_...(cases):
        for case in cases:
            ran("safetensors header")   # once per generated input
            ...

CI (CI=true, as `make test` runs there) draws FUZZ_EXAMPLES = 10,000 inputs per suite;
elsewhere 1,000, or $TRANSFORMER_FUZZ_EXAMPLES. The draws are derandomized: the same inputs on
every run, so a failure in CI is a failure on your machine. At the end of the run pytest prints
how many inputs each parser was given (tests/conftest.py, pytest_terminal_summary).
"""

import collections
import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("TRANSFORMER_FUZZ_EXAMPLES")
                    or (10_000 if os.environ.get("CI", "").lower() in ("1", "true", "yes") else 1_000))

COUNTS = collections.Counter()  # parser -> inputs given to it in this run


def ran(parser):
    """Count one generated input given to `parser` (reported at the end of the run)."""
    COUNTS[parser] += 1


# Inputs drawn per hypothesis example (a list of them): hypothesis' own work per example costs
# more than most parsers take per input; in batches, 10,000 inputs take seconds, not minutes.
BATCH = 20


def fuzz_settings(examples=None, batch=BATCH):
    """hypothesis settings for a fuzz suite that draws `batch` inputs per example (as a list):
    `examples` (default FUZZ_EXAMPLES) inputs in all, derandomized, no deadline (a shared
    machine is noisy), no example database."""
    return settings(max_examples=-(-(examples or FUZZ_EXAMPLES) // batch), deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
