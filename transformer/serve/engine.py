"""The model as the server uses it: texts -> token ids, token ids -> sentence vectors; or,
for `--kind rerank` and `--kind sparse`, (query, text) pairs -> scores (RerankEngine) and
texts -> SPLADE weights (SparseEngine).

    engine = Engine(SentenceEncoder.from_pretrained("all-MiniLM-L6-v2"), name="all-MiniLM-L6-v2")
    sequences = engine.tokenize(["A man is eating food."], truncate=True)   # [[101, 1037, ...]]
    vectors = engine.embed(sequences)                                       # float32 [1, 384]

The server tokenizes each request on its own, then `embed` runs the token ids of several
requests as one padded batch. The steps are those of `SentenceEncoder.encode` (lower-casing
when the model says so, truncation at max_seq_length, the encoder, the model's pooling and
Dense modules, its Normalize), so a text's vector is the one `encode` gives it, whichever texts share its batch.
"""

import numpy as np

from transformer import pooling


class InputError(ValueError):
    """A request's input the model cannot take (too long, an unknown token id); `param`
    names the field, as `input[3]`."""

    def __init__(self, message, param):
        super().__init__(message)
        self.param = param


class Engine:
    """One loaded SentenceEncoder, served under `name`."""

    kind = "embed"

    def __init__(self, model, name):
        self.model = model
        self.name = name
        self.dimension = model.dimension
        self.max_tokens = model.max_seq_length  # special tokens included
        self.vocab_size = model.encoder.config.vocab_size
        self.pad_id = model.tokenizer.pad_token_id or 0

    def tokenize(self, texts, truncate, param="input"):
        """Texts -> [token ids], each at most max_tokens long (special tokens included).

        truncate=False: a text longer than that raises InputError naming it (`input[i]`)."""
        if self.model.do_lower_case:
            texts = [text.lower() for text in texts]
        # One token past the limit tells "too long" from "exactly fits" without tokenizing the
        # whole of a long text (the tokenizer stops early when it truncates).
        probe = self.max_tokens if truncate else self.max_tokens + 1
        sequences = [self._ids(text, probe) for text in texts]
        for index, ids in enumerate(sequences):
            if len(ids) > self.max_tokens:
                raise InputError(f"{param}[{index}] is longer than the model's limit of {self.max_tokens} tokens; "
                                 f"shorten it or send \"truncate\": true to cut it", f"{param}[{index}]")
        return sequences

    def warm_up_input(self):
        return self.tokenize(["warm up"], truncate=True)

    def _ids(self, text, max_length):
        batch = self.model.tokenizer([text], truncation=True, max_length=max_length)
        return batch["input_ids"][0].tolist()

    def check_ids(self, sequences, truncate, param="input"):
        """Token id lists sent by a client -> the same lists, cut at max_tokens when truncate,
        else InputError for one that is longer; InputError for an id outside the vocabulary.
        The ids are the model's input as they are: no special tokens are added."""
        checked = []
        for index, ids in enumerate(sequences):
            bad = next((i for i, token in enumerate(ids) if not 0 <= token < self.vocab_size), None)
            if bad is not None:
                raise InputError(f"{param}[{index}][{bad}] is {ids[bad]}: token ids of {self.name} are 0 to "
                                 f"{self.vocab_size - 1}", f"{param}[{index}]")
            if len(ids) > self.max_tokens:
                if not truncate:
                    raise InputError(f"{param}[{index}] has {len(ids)} token ids, more than the model's limit of "
                                     f"{self.max_tokens}; send fewer or \"truncate\": true", f"{param}[{index}]")
                ids = ids[: self.max_tokens]
            checked.append(list(ids))
        return checked

    def embed(self, sequences):
        """[token ids] -> sentence vectors float32 [len(sequences), dimension], normalized when
        the model normalizes. The rows are padded on the right to the longest."""
        length = max(len(ids) for ids in sequences)
        input_ids = np.full((len(sequences), length), self.pad_id, dtype=np.int64)  # [batch, seq]
        attention_mask = np.zeros((len(sequences), length), dtype=np.int64)  # [batch, seq]
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        token_type_ids = np.zeros_like(input_ids)  # [batch, seq]: one segment per text
        hidden = self.model.encoder.last_hidden_state(input_ids, attention_mask, token_type_ids)  # [batch, seq, hidden]
        vectors = self.model.pool(hidden, attention_mask)  # [batch, dim]: pooling, then any Dense modules
        if not np.isfinite(vectors).all():
            raise ValueError(f"the model {self.name} gave a vector that is not finite (NaN or inf)")
        return pooling.normalize(vectors) if self.model.normalize else vectors

    run = embed  # what the batcher calls


class Tokenized:
    """A request's text (or query-text pair) and its number of tokens, which the batcher
    budgets by (len). The rerank and sparse models tokenize again when they run: the
    first count only checks the limit and sizes the batch."""

    def __init__(self, text, length):
        self.text = text
        self.length = length

    def __len__(self):
        return self.length


class RerankEngine:
    """One loaded CrossEncoder with one label (a relevance score), served under `name`:
    (query, text) pairs -> raw scores (logits) float32 [n]."""

    kind = "rerank"

    def __init__(self, model, name):
        if model.num_labels != 1:
            raise ValueError(f"{name} has {model.num_labels} labels; /rerank needs a cross-encoder with one "
                             f"(a relevance score)")
        self.model = model
        self.name = name
        self.max_tokens = model.max_length  # the pair's tokens, special tokens included

    def pairs(self, query, texts, truncate, param="texts"):
        """(query, text) pairs -> [Tokenized]; with truncate=False a pair longer than
        max_tokens raises InputError naming the text (`texts[i]`)."""
        probe = self.max_tokens if truncate else self.max_tokens + 1  # one past the limit: "too long"
        found = []
        for index, text in enumerate(texts):
            batch = self.model.tokenizer([query], [text], truncation="longest_first", max_length=probe)
            length = len(batch["input_ids"][0])
            if length > self.max_tokens:
                raise InputError(f"the query and {param}[{index}] together are longer than the model's limit of "
                                 f"{self.max_tokens} tokens; shorten them or send \"truncate\": true to cut them",
                                 f"{param}[{index}]")
            found.append(Tokenized((query, text), length))
        return found

    def warm_up_input(self):
        return self.pairs("warm up", ["warm up"], truncate=True)

    def run(self, items):
        """[Tokenized pairs] -> logits float32 [n] (before the model's activation)."""
        scores = self.model.predict([item.text for item in items], batch_size=len(items), activation="identity")
        if not np.isfinite(scores).all():
            raise ValueError(f"the model {self.name} gave a score that is not finite (NaN or inf)")
        return scores

    def scores(self, logits, raw):
        """The model's activation (sigmoid for one label unless its config says otherwise), or
        the logits as they are when raw."""
        from transformer.cross_encoder import apply_activation

        return logits if raw else apply_activation(logits[:, None], self.model.activation)[:, 0]


class SparseEngine:
    """One loaded SparseEncoder (SPLADE), served under `name`: texts -> weights float32
    [n, vocab], most of them zero."""

    kind = "sparse"

    def __init__(self, model, name):
        self.model = model
        self.name = name
        self.max_tokens = model.max_seq_length

    def texts(self, texts, truncate, param="inputs"):
        """Texts -> [Tokenized]; with truncate=False one longer than max_tokens raises
        InputError naming it (`inputs[i]`)."""
        probe = self.max_tokens if truncate else self.max_tokens + 1
        found = []
        for index, text in enumerate(texts):
            length = len(self.model.tokenizer([text], truncation=True, max_length=probe)["input_ids"][0])
            if length > self.max_tokens:
                raise InputError(f"{param}[{index}] is longer than the model's limit of {self.max_tokens} tokens; "
                                 f"shorten it or send \"truncate\": true to cut it", f"{param}[{index}]")
            found.append(Tokenized(text, length))
        return found

    def warm_up_input(self):
        return self.texts(["warm up"], truncate=True)

    def run(self, items):
        """[Tokenized texts] -> SPLADE weights float32 [n, vocab]."""
        weights = self.model.encode([item.text for item in items], batch_size=len(items))
        if not np.isfinite(weights).all():
            raise ValueError(f"the model {self.name} gave a weight that is not finite (NaN or inf)")
        return weights


def shorten(vectors, dimensions):
    """OpenAI's `dimensions`: the first `dimensions` numbers of each vector, scaled back to
    unit length. float32 [n, dim] -> [n, dimensions]."""
    return pooling.normalize(vectors[:, :dimensions])
