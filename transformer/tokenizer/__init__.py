"""Tokenizers from scratch: normalizer -> pre-tokenizer -> model -> post-processor."""
