"""Training: each loss and its gradient against sentence-transformers' loss + torch autograd;
whole-model gradients of each loss on every family's random checkpoint; AdamW and its
schedule against torch; saved folders that sentence-transformers and transformers load;
resuming; the same loss curve as sentence-transformers' modules trained the same way."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")

from sentence_transformers.sentence_transformer import losses as st_losses  # noqa: E402

from transformer import losses, optim, train  # noqa: E402
from transformer.encoder import Encoder  # noqa: E402
from transformer.loading import checkpoint_names  # noqa: E402
from transformer.sentence import SentenceEncoder  # noqa: E402

FAMILIES = Path(__file__).parent / "references" / "families"
MINILM = Path(__file__).parent.parent / "weights" / "all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(not (MINILM / "model.safetensors").is_file(),
                                  reason="weights/all-MiniLM-L6-v2 not fetched (make weights-test)")


def relative_error(ours, reference):
    reference = reference.detach().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    return float(np.linalg.norm(ours - reference) / max(np.linalg.norm(reference), 1e-30))


class Embedded(torch.nn.Module):
    """A stand-in SentenceTransformer for sentence-transformers' losses: the 'features' of a
    column are its vectors already."""

    device = torch.device("cpu")

    def forward(self, features):
        return {"sentence_embedding": features["sentence_embedding"]}


def columns(rng, count, n=6, d=8):
    return [rng.standard_normal((n, d)).astype(np.float32) for _ in range(count)]


def reference_loss(loss_module, vectors, labels=None):
    """sentence-transformers' loss on `vectors` and its autograd gradients: (loss, grads)."""
    leaves = [torch.tensor(v, requires_grad=True) for v in vectors]
    value = loss_module([{"sentence_embedding": leaf} for leaf in leaves], labels)
    value.backward()
    return float(value.detach()), [leaf.grad for leaf in leaves]


def assert_loss_and_gradients_match(ours, reference):
    (loss, grads), (expected_loss, expected_grads) = ours[:2], reference
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert grad.dtype == np.float32
        assert relative_error(grad, expected) <= 1e-5


# --- each loss against sentence-transformers ----------------------------------------------
@pytest.mark.parametrize("negatives", [0, 1])
def test_multiple_negatives_ranking_loss_matches_sentence_transformers(negatives):
    vectors = columns(np.random.default_rng(0), 2 + negatives)
    reference = reference_loss(st_losses.MultipleNegativesRankingLoss(Embedded()), vectors)
    assert_loss_and_gradients_match(losses.multiple_negatives_ranking_loss(*vectors), reference)


def test_symmetric_ranking_loss_matches_sentence_transformers():
    vectors = columns(np.random.default_rng(1), 2)
    module = st_losses.MultipleNegativesRankingLoss(Embedded(), directions=("query_to_doc", "doc_to_query"),
                                                    partition_mode="per_direction")
    reference = reference_loss(module, vectors)
    assert_loss_and_gradients_match(losses.multiple_negatives_ranking_loss(*vectors, symmetric=True), reference)


def test_cosent_loss_matches_sentence_transformers():
    rng = np.random.default_rng(2)
    vectors = columns(rng, 2)
    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.0, 1.0], dtype=np.float32)  # a tie counts no pair
    reference = reference_loss(st_losses.CoSENTLoss(Embedded()), vectors, torch.tensor(scores))
    assert_loss_and_gradients_match(losses.cosent_loss(*vectors, scores), reference)


def test_softmax_loss_matches_sentence_transformers():
    rng = np.random.default_rng(3)
    vectors, labels = columns(rng, 2), np.array([0, 2, 1, 1, 0, 2])
    module = st_losses.SoftmaxLoss(Embedded(), embedding_dimension=8, num_labels=3)
    classifier = {"weight": module.classifier.weight.detach().numpy().T.copy(),
                  "bias": module.classifier.bias.detach().numpy().copy()}
    reference = reference_loss(module, vectors, torch.tensor(labels))
    ours = losses.softmax_loss(*vectors, labels, classifier)
    assert_loss_and_gradients_match(ours, reference)
    assert relative_error(ours[2]["weight"], module.classifier.weight.grad.T) <= 1e-5
    assert relative_error(ours[2]["bias"], module.classifier.bias.grad) <= 1e-5


def test_classification_loss_matches_torch_cross_entropy():
    rng = np.random.default_rng(4)
    (vectors,), labels = columns(rng, 1), np.array([0, 1, 1, 0, 1, 0])
    classifier = train.new_classifier(8, 2, seed=0)
    leaf, weight = torch.tensor(vectors, requires_grad=True), torch.tensor(classifier["weight"], requires_grad=True)
    value = torch.nn.functional.cross_entropy(leaf @ weight + torch.tensor(classifier["bias"]), torch.tensor(labels))
    value.backward()
    loss, (d_vectors,), d_classifier = losses.classification_loss(vectors, labels, classifier)
    assert loss == pytest.approx(float(value.detach()), rel=1e-6)
    assert relative_error(d_vectors, leaf.grad) <= 1e-5
    assert relative_error(d_classifier["weight"], weight.grad) <= 1e-5


def test_matryoshka_sums_the_loss_of_each_truncation():
    vectors = columns(np.random.default_rng(5), 2)
    module = st_losses.MultipleNegativesRankingLoss(Embedded())
    leaves = [torch.tensor(v, requires_grad=True) for v in vectors]
    total = sum(module([{"sentence_embedding": leaf[:, :dim]} for leaf in leaves], None) for dim in (8, 4, 2))
    total.backward()
    ours = losses.matryoshka(losses.multiple_negatives_ranking_loss, (8, 4, 2))(*vectors)
    assert_loss_and_gradients_match(ours, (float(total.detach()), [leaf.grad for leaf in leaves]))


# --- whole-model gradients of each loss, every family -------------------------------------
CASES = ["bert_gelu", "distilbert_gelu", "electra_projection", "mpnet_gelu", "roberta_gelu", "xlm_roberta_silu"]


def family_case(case):
    """(our SentenceEncoder without tokenizer, transformers' model, the reference batch)."""
    reference = dict(np.load(FAMILIES / case / "reference.npz"))
    encoder = Encoder.from_pretrained(FAMILIES / case, backend="numpy")
    model = SentenceEncoder(tokenizer=None, encoder=encoder, pooling_modes=("mean",), normalize=True)
    torch_model = transformers.AutoModel.from_pretrained(FAMILIES / case, attn_implementation="eager").eval()
    return model, torch_model, reference


def torch_vectors(torch_model, ids, mask, types, token_types):
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if token_types:
        kwargs["token_type_ids"] = torch.tensor(types)
    hidden = torch_model(**kwargs).last_hidden_state
    m = torch.tensor(mask)[..., None].float()
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


@pytest.mark.parametrize("loss", ["mnrl", "cosent", "softmax"])
@pytest.mark.parametrize("case", CASES)
def test_whole_model_gradient_of_each_loss_matches_autograd(case, loss):
    model, torch_model, reference = family_case(case)
    ids, mask, types = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    # two columns: the batch's rows, and other texts with the padding of the rows rolled by one
    vocab = model.encoder.config.vocab_size
    rolled_ids, rolled_mask, rolled_types = (np.roll(a, 1, axis=0) for a in (ids, mask, types))
    column_b = (np.where(rolled_mask == 1, 2 + (rolled_ids * 7 + 3) % (vocab - 2), rolled_ids), rolled_mask, rolled_types)
    token_types = model.encoder.config.recipe.embeddings.token_types
    rows = len(ids)
    labels = np.array([0.3, 0.9, 0.1, 0.6][:rows], dtype=np.float32) if loss == "cosent" else np.arange(rows) % 2
    classifier = train.new_classifier(model.dimension, 2, seed=0) if loss == "softmax" else None

    vectors_a = torch_vectors(torch_model, ids, mask, types, token_types)
    vectors_b = torch_vectors(torch_model, *column_b, token_types)
    if loss == "mnrl":
        value = st_losses.MultipleNegativesRankingLoss(Embedded()).compute_loss_from_embeddings([vectors_a, vectors_b], None)
    elif loss == "cosent":
        value = st_losses.CoSENTLoss(Embedded()).compute_loss_from_embeddings([vectors_a, vectors_b], torch.tensor(labels))
    else:
        logits = vectors_a @ torch.tensor(classifier["weight"]) + torch.tensor(classifier["bias"])
        value = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    value.backward()
    torch_grads = dict(torch_model.named_parameters())

    settings = train.Settings(loss=loss)
    cached = [train.vectors_with_cache(model, model.encoder.params, *column) for column in ((ids, mask, types), column_b)]
    vectors = [v for v, _ in cached][:1 if loss == "softmax" else 2]
    ours, d_vectors, *_ = train.sentence_loss(settings, labels, classifier)(*vectors)
    assert ours == pytest.approx(float(value.detach()), rel=1e-5)
    grads = None
    for d, (_, cache) in zip(d_vectors, cached):
        column_grads = train.embed_backward(model, model.encoder.params, d, cache)
        grads = column_grads if grads is None else train.add_trees(grads, column_grads)
    config = model.encoder.config
    tensors = train.checkpoint_tensors(config, grads)  # our gradients under torch's names
    key_biases = {checkpoint_names(config, f"layers.{i}.key.bias")[0]: checkpoint_names(config, f"layers.{i}.key.weight")[0]
                  for i in range(config.num_hidden_layers)}
    errors = {}
    for name, grad in tensors.items():
        expected = torch_grads[name].grad
        scale = np.linalg.norm(expected.numpy())
        if name in key_biases:  # 0 in exact arithmetic: see test_backward_model
            scale = np.linalg.norm(tensors[key_biases[name]])
        errors[name] = float(np.linalg.norm(grad - expected.numpy()) / max(scale, 1e-30))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{case} {loss}: {worst} relative error {errors[worst]:.2e}"


# --- the optimizer ------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])  # NumPy's passes, or the Numba kernel's one
def test_adamw_with_schedule_and_clipping_matches_torch(fused):
    rng = np.random.default_rng(6)
    params = {"layer": {"weight": rng.standard_normal((4, 3)).astype(np.float32),
                        "bias": rng.standard_normal(3).astype(np.float32)}}
    gradients = [{"layer": {"weight": rng.standard_normal((4, 3)).astype(np.float32) * 3,
                            "bias": rng.standard_normal(3).astype(np.float32)}} for _ in range(6)]
    weight = torch.tensor(params["layer"]["weight"], requires_grad=True)
    bias = torch.tensor(params["layer"]["bias"], requires_grad=True)
    optimizer = torch.optim.AdamW([{"params": [weight], "weight_decay": 0.01},
                                   {"params": [bias], "weight_decay": 0.0}], lr=1e-2)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=6)
    ours = optim.AdamW(weight_decay=0.01, fused=fused)
    for step, grads in enumerate(gradients):
        weight.grad, bias.grad = torch.tensor(grads["layer"]["weight"]), torch.tensor(grads["layer"]["bias"])
        torch.nn.utils.clip_grad_norm_([weight, bias], 1.0)
        optimizer.step()
        schedule.step()
        optim.clip_by_global_norm(grads, 1.0, fused=fused)
        ours.step(params, grads, optim.linear_schedule(step, 1e-2, 2, 6), no_decay={"layer/bias"})
    assert np.abs(params["layer"]["weight"] - weight.detach().numpy()).max() <= 1e-6
    assert np.abs(params["layer"]["bias"] - bias.detach().numpy()).max() <= 1e-6


# --- on MiniLM: saved folders, resuming, the same loss curve as sentence-transformers --------
PAIRS = [("The cat is eating an apple.", "A kitten devours a piece of fruit."),
         ("The pilot is reading a newspaper.", "An aviator looks through the daily paper."),
         ("The farmer is building a fence.", "A grower puts together some railings."),
         ("The singer is carrying a heavy box.", "A vocalist hauls a weighty crate."),
         ("The doctor is washing the car.", "A physician cleans an automobile."),
         ("The child is buying fresh bread.", "A little kid purchases a warm loaf."),
         ("The sailor is selling a small boat.", "A seaman sells off a little dinghy."),
         ("The teacher is painting a chair.", "An instructor colours a seat.")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """MiniLM after 2 steps of MNRL on PAIRS (batch 4), saved: (trainer, folder)."""
    if not (MINILM / "model.safetensors").is_file():
        pytest.skip("weights/all-MiniLM-L6-v2 not fetched (make weights-test)")
    model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
    settings = train.Settings(loss="mnrl", batch_size=4, lr=1e-4, epochs=2, seed=3)
    trainer = train.Trainer(model, [(a, b, None) for a, b in PAIRS], settings)
    trainer.run(stop_after=2)
    folder = tmp_path_factory.mktemp("trained") / "minilm-mnrl"
    trainer.save(folder)
    return trainer, folder


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_saved_folder_loads_in_sentence_transformers_with_our_vectors(trained):
    trainer, folder = trained
    texts = [text for pair in PAIRS for text in pair]
    ours = SentenceEncoder.from_pretrained(folder, backend="numpy").encode(texts)
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    assert cosines(ours, theirs).min() >= 0.999999
    before = SentenceEncoder.from_pretrained(MINILM, backend="numpy").encode(texts)
    assert cosines(ours, before).min() < 0.9999, "the saved weights are the trained ones"
    assert np.array_equal(trainer.model.encode(texts), ours)


def test_saved_folder_loads_in_transformers_with_no_missing_weight(trained):
    _, folder = trained
    model, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]


def test_resumed_run_ends_where_an_uninterrupted_run_ends(trained):
    trainer, folder = trained
    resumed = train.Trainer.resume(folder, trainer.examples)
    assert resumed.state.step == 2 and resumed.state.epoch == 1
    resumed.run(stop_after=1)
    trainer.run(stop_after=1)
    assert resumed.state.losses == trainer.state.losses
    for (path, ours), (_, theirs) in zip(optim.leaves(resumed.params), optim.leaves(trainer.params)):
        assert np.array_equal(ours, theirs), path


def test_epochs_see_different_seeded_orders_and_the_same_seed_repeats_them(trained):
    trainer, _ = trained
    first, second = trainer.epoch_order(0), trainer.epoch_order(1)
    assert sorted(first) == list(range(len(PAIRS))) and not np.array_equal(first, second)
    assert np.array_equal(first, train.Trainer.epoch_order(trainer, 0))


def test_accumulating_two_batches_is_one_step_on_their_mean_gradient():
    model = SentenceEncoder(tokenizer=None, encoder=Encoder.from_pretrained(FAMILIES / "bert_gelu", backend="numpy"))
    reference = dict(np.load(FAMILIES / "bert_gelu" / "reference.npz"))
    ids, mask, types = reference["input_ids"], reference["attention_mask"], reference["token_type_ids"]
    settings = train.Settings(loss="mnrl")

    def gradient(rows):
        cached = [train.vectors_with_cache(model, model.encoder.params, ids[r], mask[r], types[r]) for r in rows]
        _, d_vectors = train.sentence_loss(settings, None, None)(*(v for v, _ in cached))
        return train.add_trees(*(train.embed_backward(model, model.encoder.params, d, c)
                                 for d, (_, c) in zip(d_vectors, cached)))
    first, second = gradient([[0, 1], [2, 3]]), gradient([[2, 3], [0, 1]])
    mean = train.scale_tree(train.add_trees(first, second), 0.5)
    for (_, g1), (_, g2), (_, m) in zip(optim.leaves(first), optim.leaves(second), optim.leaves(mean)):
        assert np.allclose(m, (g1 + g2) / 2, atol=1e-7)


@pytest.fixture
def torch_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared machine's other work makes torch's threads wait on each other
    yield
    torch.set_num_threads(threads)


@needs_minilm
def test_loss_curve_matches_sentence_transformers_trained_the_same_way(torch_one_thread):
    """6 steps here; benchmarks/train_parity.py runs 50 (benchmarks/results/train_parity.md)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.train_parity import compare

    figures = compare(6, batch_size=8, lr=2e-5, warmup_steps=2)
    assert figures["max_relative_difference"] <= 1e-3, figures
    assert figures["min_embedding_cosine"] >= 0.9999, figures


def test_binary_cross_entropy_matches_torch_bce_with_logits():
    logits = np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 40.0], dtype=np.float32)  # far ends: no overflow
    labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.3], dtype=np.float32)
    leaf = torch.tensor(logits, requires_grad=True)
    value = torch.nn.functional.binary_cross_entropy_with_logits(leaf, torch.tensor(labels))
    value.backward()
    loss, d_logits = losses.binary_cross_entropy(logits, labels)
    assert loss == pytest.approx(float(value.detach()), rel=1e-6)
    assert relative_error(d_logits, leaf.grad) <= 1e-6


def test_cross_entropy_ignores_rows_labelled_minus_100_as_torch():
    logits = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    labels = np.array([1, -100, 3, 0, -100])
    leaf = torch.tensor(logits, requires_grad=True)
    value = torch.nn.functional.cross_entropy(leaf, torch.tensor(labels))
    value.backward()
    loss, d_logits = losses.cross_entropy(logits, labels)
    assert loss == pytest.approx(float(value.detach()), rel=1e-6)
    assert relative_error(d_logits, leaf.grad) <= 1e-6 and not d_logits[[1, 4]].any()


# --- cross-encoder and masked-LM training: folders transformers loads -----------------------
@needs_minilm
@pytest.mark.parametrize("loss", ["cross-encoder", "mlm"])
def test_task_model_folder_loads_in_transformers_with_our_logits(tmp_path, loss):
    from transformer import backward

    model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
    if loss == "cross-encoder":
        examples, num_labels, names = train.cross_encoder_labels(
            [(a, b, "1") for a, b in PAIRS[:2]] + [(PAIRS[0][0], PAIRS[1][1], "0"), (PAIRS[1][0], PAIRS[0][1], "0")])
    else:
        examples, num_labels, names = [(a, None, None) for a, _ in PAIRS[:4]], 0, ()
    settings = train.Settings(loss=loss, batch_size=2, lr=1e-4, num_labels=num_labels, label_names=names)
    trainer = train.Trainer(model, examples, settings)
    trainer.run()
    assert all(np.isfinite(trainer.state.losses)) and len(trainer.state.losses) == 2
    trainer.save(tmp_path / "out")

    texts, pairs = [a for a, _, _ in examples], [b for _, b, _ in examples] if loss == "cross-encoder" else None
    tokens = trainer.model.tokenizer(texts, pairs, padding=True)
    ids, mask, types = tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"]
    encoder = trainer.model.encoder
    hidden, _ = backward.encoder_forward_with_cache(encoder.params, encoder.config, ids, mask, types)
    task = transformers.AutoModelForSequenceClassification if loss == "cross-encoder" else transformers.AutoModelForMaskedLM
    reference, info = task.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        expected = reference.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                    token_type_ids=torch.tensor(types)).logits.numpy()
    if loss == "cross-encoder":
        ours, _ = backward.sequence_classification_with_cache(trainer.head, encoder.params, hidden)
        assert reference.config.num_labels == 1
    else:
        ours, _ = backward.masked_lm_with_cache(trainer.head, encoder.config.layer_norm_eps, hidden)
    assert np.abs(ours - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_cross_encoder_labels_are_scores_in_0_1_or_class_names():
    scored, count, names = train.cross_encoder_labels([("a", "b", "0.25"), ("c", "d", "1")])
    assert scored == [("a", "b", 0.25), ("c", "d", 1.0)] and count == 1 and names == ()
    classes, count, names = train.cross_encoder_labels([("a", "b", "entailment"), ("c", "d", "contradiction")])
    assert classes == [("a", "b", 1), ("c", "d", 0)] and count == 2 and names == ("contradiction", "entailment")


def test_masking_picks_only_real_tokens_and_labels_them():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (8, 20))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -3:] = True
    masked, labels = train.mask_tokens(ids, special, 4, 100, rng)
    targets = labels != -100
    assert not (targets & special).any() and np.array_equal(labels[targets], ids[targets])
    assert np.array_equal(masked[~targets], ids[~targets])
    assert 0.05 < targets.sum() / (~special).sum() < 0.3 and (masked[targets] == 4).mean() > 0.5


# --- the softmax loss's classifier, saved where sentence-transformers' Dense reads it -----
@needs_minilm
def test_softmax_classifier_saves_as_a_dense_module_and_resumes(tmp_path):
    from sentence_transformers.sentence_transformer.modules import Dense

    rows = [("What a wonderful film.", "pos"), ("Dull and far too long.", "neg"), ("I loved every minute.", "pos"),
            ("A waste of an evening.", "neg")]
    examples, names = train.label_ids([(text, None, label) for text, label in rows])
    settings = train.Settings(loss="softmax", batch_size=4, lr=1e-4, num_labels=2, label_names=tuple(names))
    trainer = train.Trainer(SentenceEncoder.from_pretrained(MINILM, backend="numpy"), examples, settings)
    trainer.run(stop_after=1)
    folder = tmp_path / "minilm-softmax"
    trainer.save(folder)
    texts = [text for text, _ in rows]
    vectors = SentenceEncoder.from_pretrained(folder, backend="numpy").encode(texts)
    classifier = trainer.params["classifier"]
    ours = vectors @ classifier["weight"] + classifier["bias"]  # [4, 2] logits
    dense = Dense.load(str(folder / "classifier"))
    theirs = dense({"sentence_embedding": torch.tensor(vectors)})["sentence_embedding"].detach().numpy()
    assert np.allclose(theirs, ours, atol=1e-6)
    assert json.loads((folder / "classifier" / "labels.json").read_text()) == ["neg", "pos"]
    st_model = st.SentenceTransformer(str(folder), device="cpu")
    assert st_model.encode(texts, convert_to_numpy=True).shape == vectors.shape, "the folder still encodes vectors"
    resumed = train.Trainer.resume(folder, examples)
    assert np.array_equal(resumed.params["classifier"]["weight"], classifier["weight"])
    assert np.array_equal(resumed.params["classifier"]["bias"], classifier["bias"])
