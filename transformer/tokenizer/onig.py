"""Oniguruma patterns (as tokenizer.json files write them) -> compiled Python `re` patterns."""

import re

from .unicode import char_class


def compile(pattern, where="pattern"):
    """An Oniguruma pattern -> a compiled `re` pattern; ValueError naming `where` if invalid."""
    translated = (pattern.replace("\\p{L}", f"[{char_class('ONIG_LETTER')}]")
                  .replace("\\p{N}", f"[{char_class('ONIG_NUMBER')}]")
                  .replace("\\s", f"[{char_class('ONIG_SPACE')}]")
                  .replace("\\S", f"[^{char_class('ONIG_SPACE')}]"))
    try:
        return re.compile(translated)
    except re.error as error:
        raise ValueError(f"{where} is not a valid regular expression ({error}): {pattern!r:.80}") from None
