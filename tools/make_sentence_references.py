"""Write the committed sentence-embedding references: tests/references/sentence_<model>.npz.

    .venv/bin/python tools/make_sentence_references.py            # both models
    .venv/bin/python tools/make_sentence_references.py all-MiniLM-L6-v2
    .venv/bin/python tools/make_sentence_references.py --compare   # our distance to them

For each model, sentence-transformers (the reference implementation, pinned in the test extra)
encodes a fixed set of 206 varied texts: short sentences, questions, many languages and
scripts, punctuation- and symbol-heavy strings, whitespace oddities, paragraphs, and long texts
beyond the models' 256 / 384 token limits (so truncation is exercised). The file stores:

    texts_json   uint8 [n_bytes]  the texts, as UTF-8 JSON (compact; numpy string arrays pad)
    embeddings   float32 [n, dim] sentence-transformers' encode(texts), normalized like the model
    meta_json    uint8 [n_bytes]  versions and settings the reference was made with

tests/test_sentence_parity.py holds `SentenceEncoder.encode` to these (cosine >= 0.999999,
max |diff| <= 1e-5), and to a live sentence-transformers run when it is importable.
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "references"
MODELS = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
SEED = 20240611

SHORT = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The cat sits outside.",
    "The new movie is awesome.",
    "The new movie is so great.",
    "A man is playing guitar.",
    "The dog plays in the garden.",
    "A woman watches TV.",
    "I love pasta.",
    "Do you like pizza?",
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "She is reading a book in the library.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Monday.",
    "The committee approved the new budget after a long debate.",
    "Photosynthesis converts light energy into chemical energy.",
    "Water boils at 100 degrees Celsius at sea level.",
    "My phone battery dies too quickly.",
    "Please remember to lock the door.",
    "The train was delayed by twenty minutes.",
    "Neural networks learn representations from data.",
    "The museum opens at nine.",
    "They planted tomatoes and basil in the spring.",
    "Our flight to Lisbon was cancelled.",
    "The child laughed at the puppet show.",
    "Interest rates are expected to rise.",
    "He fixed the bug in the parser.",
    "The soup needs more salt.",
    "A red car is parked next to the blue house.",
    "Mount Everest is the highest mountain on Earth.",
    "The orchestra tuned their instruments.",
    "Hello world",
    "hello world",
    "HELLO WORLD",
    "Thanks!",
    "ok",
    "a",
    "Yes.",
    "No way.",
    "Good morning, everyone.",
    "Where is the nearest pharmacy?",
]

QUESTIONS = [
    "How do I reset my password?",
    "What is the capital of Australia?",
    "Why is the sky blue?",
    "Can you recommend a good book about history?",
    "How many legs does a spider have?",
    "Who wrote Pride and Prejudice?",
    "What time does the store close on Sundays?",
    "Is it safe to eat raw cookie dough?",
    "How does a transformer encoder work?",
    "Which programming language should I learn first?",
    "What are the symptoms of the flu?",
    "How far is the Moon from the Earth?",
    "Where can I buy train tickets?",
    "What's the difference between a virus and a bacterium?",
    "When was the printing press invented?",
    "how to cook rice without a rice cooker",
    "best laptop for students 2023",
    "python list comprehension example",
    "symptoms of dehydration in children",
    "cheap flights from Berlin to Rome",
]

MULTILINGUAL = [
    "Le chat est assis sur le tapis.",
    "Où se trouve la gare, s'il vous plaît ?",
    "Ich habe heute keine Zeit, aber morgen vielleicht.",
    "Die Straßenbahn fährt über die Brücke.",
    "El perro corre en el parque con su pelota.",
    "¿Cuántos años tienes?",
    "La pizza napoletana è la migliore del mondo.",
    "Eu gosto muito de café com leite.",
    "De fiets staat naast de deur.",
    "Кошка спит на диване.",
    "Москва — столица России.",
    "Η Ακρόπολη βρίσκεται στην Αθήνα.",
    "القطة تجلس على السجادة.",
    "שלום עולם",
    "मुझे हिंदी बोलना पसंद है।",
    "我喜欢吃北京烤鸭。",
    "今天天气很好，我们去公园吧。",
    "東京は日本の首都です。",
    "ラーメンが大好きです！",
    "안녕하세요, 만나서 반갑습니다.",
    "ฉันชอบกินข้าวผัด",
    "Tôi yêu Việt Nam.",
    "Bugün hava çok güzel.",
    "Zażółć gęślą jaźń.",
    "Jag älskar kanelbullar.",
    "Hyvää huomenta kaikille.",
    "Ελληνικά και English mixed μαζί.",
    "Café, naïve, façade, jalapeño, Zürich, Ångström.",
    "Emoji test 😀🎉👍🏽 and hearts ❤️💙",
    "🍕🍔🍟",
]

PUNCTUATION = [
    "!!!???",
    "...",
    "Wait... what?!",
    "(a) [b] {c} <d>",
    "\"Quoted\" and 'single-quoted' and «guillemets» and „Anführungszeichen“.",
    "e-mail: someone@example.com, url: https://example.com/path?q=1&r=two#frag",
    "C:\\Users\\name\\Documents\\file.txt",
    "def f(x): return x ** 2 + 3 * x - 1  # square it",
    "if (a && b || !c) { return arr[i++]; }",
    "SELECT * FROM users WHERE id = 42;",
    "E = mc^2, a² + b² = c², ∑ x_i ≤ ∞, π ≈ 3.14159",
    "Prices: $12.99, €8,50, £3, ¥1000, 50% off!!!",
    "#hashtag @mention $CASH &amp; <b>bold</b>",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "2024-01-15T08:30:00Z",
    "+1 (555) 123-4567",
    "---===***===---",
    "well-known, state-of-the-art, mother-in-law",
    "don't can't won't shouldn't y'all'd've",
    "U.S.A. vs. U.K. -- e.g., i.e., etc.",
    "   leading and trailing spaces   ",
    "tabs\tbetween\twords",
    "line one\nline two\nline three",
    "multiple     spaces     between     words",
    "",
    " ",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "zero\u200bwidth\u200bspaces and soft\u00adhyphen",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed accents)",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and ① ② ③",
    "ALL CAPS SENTENCE WITH SHOUTING!!!",
]

# Sentences the paragraphs and long texts are built from.
POOL = SHORT[:40] + [
    "The history of the region stretches back thousands of years.",
    "Researchers collected samples from forty different sites.",
    "In the end, the results were surprisingly consistent.",
    "The software update introduced several new features and fixed many bugs.",
    "Local farmers rely on the river for irrigation during the dry season.",
    "After dinner, we walked along the beach and watched the sunset.",
    "The report recommends investing in public transport and cycling lanes.",
    "Each layer of the network refines the representation of every token.",
    "Attention lets every word look at every other word in the sentence.",
    "The old bridge was closed for repairs last winter.",
    "She studied mathematics before switching to medicine.",
    "Many species of birds migrate south in the autumn.",
    "The conference will take place in Montreal next year.",
    "He spent the afternoon repairing his grandmother's bicycle.",
    "Unemployment dropped to its lowest level in a decade.",
]


def make_texts():
    """The reference texts, the same on every run (a seeded generator builds the long ones)."""
    rng = random.Random(SEED)
    texts = SHORT + QUESTIONS + MULTILINGUAL + PUNCTUATION
    for _ in range(60):  # paragraphs of 2-6 sentences, ~30-120 tokens
        texts.append(" ".join(rng.sample(POOL, rng.randint(2, 6))))
    for index in range(14):  # long texts: ~280-900 tokens, beyond both models' limits
        count = rng.randint(26, 70)
        sentences = [rng.choice(POOL) for _ in range(count)]
        if index % 4 == 1:
            sentences.insert(count // 2, rng.choice(MULTILINGUAL))
        if index % 4 == 3:
            sentences.append(rng.choice(PUNCTUATION))
        texts.append(" ".join(sentences))
    return texts


def reference_embeddings(model_dir, texts):
    """sentence-transformers' vectors for `texts` (float32 [n, dim])."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return model.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float32), model


def write_reference(name, texts):
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    from transformer.store import resolve

    model_dir = resolve(name)
    embeddings, model = reference_embeddings(model_dir, texts)
    meta = {
        "model": name,
        "max_seq_length": model.max_seq_length,
        "count": len(texts),
        "made_with": {
            "sentence-transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
        },
        "command": "python tools/make_sentence_references.py",
    }
    path = OUT_DIR / f"sentence_{name}.npz"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        texts_json=np.frombuffer(json.dumps(texts, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
        embeddings=embeddings,
        meta_json=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
    )
    print(f"wrote {path.relative_to(ROOT)}: {embeddings.shape[0]} texts x {embeddings.shape[1]}, "
          f"{path.stat().st_size / 1e3:.0f} kB")


def load_reference(path):
    """(texts, embeddings float32 [n, dim], meta) from a reference file."""
    with np.load(path, allow_pickle=False) as data:
        texts = json.loads(data["texts_json"].tobytes().decode("utf-8"))
        meta = json.loads(data["meta_json"].tobytes().decode("utf-8"))
        return texts, data["embeddings"], meta


def compare(name, backend):
    """Print how far SentenceEncoder.encode is from the committed reference (the parity numbers)."""
    from transformer.sentence import SentenceEncoder

    texts, expected, meta = load_reference(OUT_DIR / f"sentence_{name}.npz")
    model = SentenceEncoder.from_pretrained(name, backend=backend)
    ours = model.encode(texts)
    cosine = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
    print(f"{name} ({model.backend}, {len(texts)} texts vs sentence-transformers "
          f"{meta['made_with']['sentence-transformers']}): worst cosine {cosine.min():.9f}, "
          f"max |diff| {np.abs(ours - expected).max():.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS, help=f"default: {' '.join(MODELS)}")
    parser.add_argument("--compare", action="store_true",
                        help="do not write: print SentenceEncoder's distance to the committed references")
    parser.add_argument("--backend", choices=["numpy", "numba"], default=None, help="with --compare")
    args = parser.parse_args(argv)
    if args.compare:
        for name in args.models:
            compare(name, args.backend)
        return 0
    texts = make_texts()
    for name in args.models:
        write_reference(name, texts)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
