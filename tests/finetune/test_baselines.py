"""The baseline classifiers of 5.3.1: bag of words, logistic regression (L-BFGS), the CNN, and their stages."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from lm.data.loaders import EMBEDDED_DIR, load_emotion
from lm.errors import ConfigError, DataError
from lm.finetune.baselines import (BagOfWords, CNNClassifier, CNNConfig, LogisticRegression, label_ids,
                                 multinomial_objective)
from lm.finetune.cnn_data import (ClassificationExamples, WordVocab, classification_loss, lookup_words,
                                  predict_classes)
from lm.finetune.lbfgs import minimize_lbfgs
from lm.finetune.metrics import accuracy, confusion
from lm.stages import RunConfig, emotion_cnn, emotion_lr, run_stage
from lm.training.engine import TrainConfig, train
from lm.utils import torch_threads

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")


def dense(X):
    return X.to_dense()


# --------------------------------------------------------------------------------------------
# BagOfWords
# --------------------------------------------------------------------------------------------

def test_tokenisation_is_countvectorizers_default():
    bow = BagOfWords()
    # lowercase; runs of >= 2 word characters: "I", "m", "a" and punctuation go; unicode letters, digits, _ stay
    assert bow.analyze("I'm SO happy!! a b cd café naïve 42 snake_case") == \
        ["so", "happy", "cd", "café", "naïve", "42", "snake_case"]
    assert BagOfWords(lowercase=False).analyze("So HAPPY") == ["So", "HAPPY"]


def test_bigrams_are_formed_after_dropping_short_tokens():
    assert BagOfWords(ngram_range=(1, 2)).analyze("I feel so happy") == \
        ["feel", "so", "happy", "feel so", "so happy"]
    assert BagOfWords(ngram_range=(2, 2)).analyze("I feel so happy") == ["feel so", "so happy"]
    assert BagOfWords(ngram_range=(1, 2)).analyze("alone") == ["alone"]


def test_vocabulary_is_alphabetical_and_matrix_counts():
    bow = BagOfWords()
    X = bow.fit_transform(["bb aa bb", "cc", "aa zz zz zz"])
    assert X.layout == torch.sparse_csr and X.shape == (3, 4)
    assert bow.features_ == ["aa", "bb", "cc", "zz"]
    assert dense(X).tolist() == [[1, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 3]]
    binary = BagOfWords(binary=True).fit_transform(["bb aa bb", "cc", "aa zz zz zz"])
    assert dense(binary).tolist() == [[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    # features unseen in fit are dropped; a text may end up with an empty row
    assert dense(bow.transform(["qq bb", "qq"])).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]


def test_max_features_ranks_by_counts_or_document_frequency_ties_alphabetical():
    texts = ["xx xx xx", "yy", "yy zz"]          # counts xx 3, yy 2, zz 1; documents xx 1, yy 2, zz 1
    assert BagOfWords(max_features=1).fit(texts).features_ == ["xx"]
    assert BagOfWords(max_features=1, binary=True).fit(texts).features_ == ["yy"]
    # ties at the cut-off go to the alphabetically first feature, whatever the text order
    assert BagOfWords(max_features=2).fit(["dd cc", "bb aa", "cc"]).features_ == ["aa", "cc"]
    assert BagOfWords(max_features=3, binary=True).fit(["ee dd", "cc bb", "aa", "ee"]).features_ == ["aa", "bb", "ee"]


def test_bag_of_words_bad_input():
    with pytest.raises(ConfigError, match="text #1 is empty"):
        BagOfWords().fit(["fine text", "   "])
    with pytest.raises(ConfigError, match="not a string"):
        BagOfWords().fit(["fine", 3])
    with pytest.raises(ConfigError, match="before fit"):
        BagOfWords().transform(["x"])
    with pytest.raises(ConfigError, match="no words"):
        BagOfWords().fit(["a b c", "!"])
    with pytest.raises(ConfigError, match="ngram_range"):
        BagOfWords(ngram_range=(2, 1))


def test_bag_of_words_equals_countvectorizer_when_installed():
    sk = pytest.importorskip("sklearn.feature_extraction.text")   # optional: never a project dependency
    texts = [e.text for e in load_emotion(EMBEDDED_DIR / "emotion/train.jsonl")][:500]
    for kw in [dict(binary=True), dict(ngram_range=(1, 2))]:
        ours = BagOfWords(**kw).fit(texts)
        cv = sk.CountVectorizer(**kw).fit(texts)
        assert ours.features_ == sorted(cv.vocabulary_)
        assert (dense(ours.transform(texts)).numpy() == cv.transform(texts).toarray()).all()


# --------------------------------------------------------------------------------------------
# L-BFGS and logistic regression
# --------------------------------------------------------------------------------------------

def test_lbfgs_solves_a_quadratic_to_its_closed_form():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, generator=g, dtype=torch.float64)
    A = M @ M.T / 20 + torch.eye(20, dtype=torch.float64)     # SPD, well conditioned
    b = torch.randn(20, generator=g, dtype=torch.float64)

    def fun(x):
        return float(0.5 * x @ A @ x - b @ x), A @ x - b
    for history_dtype in (None, torch.float32):   # float32 pairs: rougher directions, same optimum
        res = minimize_lbfgs(fun, torch.zeros(20, dtype=torch.float64), tol=1e-7, history_dtype=history_dtype)
        assert res.converged and res.grad_norm <= 1e-7 and res.iterations < 60
        assert torch.allclose(res.x, torch.linalg.solve(A, b), atol=1e-7)
    # asked for more than float64 can give, it stops at the rounding floor instead of spinning
    floor = minimize_lbfgs(fun, torch.zeros(20, dtype=torch.float64), tol=1e-30)
    assert not floor.converged and "rounding floor" in floor.message and floor.iterations < 200


def test_lbfgs_stops_at_max_iter():
    res = minimize_lbfgs(lambda x: (float((x ** 4).sum()), 4 * x ** 3), torch.ones(3, dtype=torch.float64),
                         tol=1e-14, max_iter=3)
    assert res.iterations == 3 and not res.converged


def test_lbfgs_stops_on_the_largest_gradient_component():
    """scikit-learn's rule (scipy's gtol): max |g_i| <= tol, not the 2-norm. 100 components of
    tol/2 each: max |g_i| = tol/2, so no iteration is needed, though ||g|| = 5 tol."""
    tol, c = 1e-4, torch.linspace(-1, 1, 100, dtype=torch.float64)
    res = minimize_lbfgs(lambda x: (float(0.5 * ((x - c) ** 2).sum()), x - c), c - tol / 2, tol=tol)
    assert res.converged and res.iterations == 0 and res.grad_norm == pytest.approx(tol / 2, rel=1e-9)
    x0 = c.clone()
    x0[7] -= 2 * tol                                          # one component above tol: it iterates
    res = minimize_lbfgs(lambda x: (float(0.5 * ((x - c) ** 2).sum()), x - c), x0, tol=tol)
    assert res.converged and res.iterations >= 1 and res.grad_norm <= tol


def test_two_loop_recursion_is_the_bfgs_inverse_hessian_times_g():
    """The two-loop recursion equals -H g for the matrix H built by the BFGS update from
    H0 = (s.y / y.y) I over the stored pairs, oldest first (Nocedal & Wright, eq. 7.19)."""
    from lm.finetune.lbfgs import _two_loop
    g = torch.Generator().manual_seed(3)
    n = 12
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(n, dtype=torch.float64)          # y = A s: every pair has s.y > 0
    S = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(5)]
    Y = [A @ s for s in S]
    rho = [1.0 / float(s @ y) for s, y in zip(S, Y)]
    grad = torch.randn(n, generator=g, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    H = float(S[-1] @ Y[-1] / (Y[-1] @ Y[-1])) * eye
    for s, y, r in zip(S, Y, rho):
        V = eye - r * torch.outer(y, s)
        H = V.T @ H @ V + r * torch.outer(s, s)
    torch.testing.assert_close(_two_loop(grad, S, Y, rho), -H @ grad, rtol=1e-10, atol=1e-12)
    assert torch.equal(_two_loop(grad, [], [], []), -grad)


def test_lbfgs_iterations_on_an_ill_conditioned_quadratic():
    """Condition number 100 in 100 dimensions: 81 iterations to max |g_i| <= 1e-6 (a wrong
    two-loop recursion still descends, but needs about twice as many and stalls short of tol)."""
    g = torch.Generator().manual_seed(0)
    n = 100
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.logspace(0, 2, n, dtype=torch.float64)) @ Q.T
    b = torch.randn(n, generator=g, dtype=torch.float64)
    res = minimize_lbfgs(lambda x: (float(0.5 * x @ A @ x - b @ x), A @ x - b), torch.zeros(n, dtype=torch.float64),
                         tol=1e-6, max_iter=1000)
    assert res.converged and res.iterations <= 100
    torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=0, atol=1e-5)


def tiny_problem(n=40, d=5, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    Xd = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return Xd, y


def reference_objective(W, b, Xd, y, C):
    """scikit-learn's objective / N written plainly, for autograd."""
    logits = Xd @ W + b
    return F.cross_entropy(logits, y) + (W ** 2).sum() / (2 * C * len(y))


def test_objective_and_gradient_match_autograd():
    Xd, y = tiny_problem()
    W = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    X = Xd.to_sparse_csr()
    f, dW, db = multinomial_objective(W.detach(), b.detach(), X, Xd.t().to_sparse_csr(), y, C=0.7)
    ref = reference_objective(W, b, Xd, y, 0.7)
    ref.backward()
    assert float(f) == pytest.approx(float(ref.detach()), abs=1e-14)
    assert torch.allclose(dW, W.grad, atol=1e-14) and torch.allclose(db, b.grad, atol=1e-14)
    # at W = 0, b = 0 every class has probability 1/k: the objective is log k
    f0, _, _ = multinomial_objective(torch.zeros(5, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                                     X, Xd.t().to_sparse_csr(), y, C=1.0)
    assert float(f0) == pytest.approx(math.log(3), abs=1e-15)


def newton_solution(Xd, y, C, k, steps=12):
    """The same optimum by Newton's method on the flat (W, b) with autograd's Hessian (pseudo-inverse:
    adding a constant to every intercept changes nothing, so the Hessian is singular along that line)."""
    d = Xd.shape[1]
    theta = torch.zeros(d * k + k, dtype=torch.float64)

    def f(t):
        return reference_objective(t[:d * k].view(d, k), t[d * k:], Xd, y, C)
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(f, theta)
        H = torch.autograd.functional.hessian(f, theta)
        theta = theta - torch.linalg.pinv(H, hermitian=True) @ g
    return theta[:d * k].view(d, k), theta[d * k:]


def test_logistic_regression_reaches_the_optimum():
    Xd, y = tiny_problem()
    names = ["anger", "fear", "joy"]
    labels = [names[i] for i in y.tolist()]
    clf = LogisticRegression(C=0.7, tol=1e-8).fit(Xd.to_sparse_csr(), labels)
    assert clf.converged_ and clf.grad_norm_ <= 1e-8
    assert clf.classes_ == names
    W, b = newton_solution(Xd, y, 0.7, 3)
    assert torch.allclose(clf.coef_, W.t(), atol=1e-6)
    assert torch.allclose(clf.intercept_ - clf.intercept_.mean(), b - b.mean(), atol=1e-6)
    # any small step away from the solution raises the objective
    base = reference_objective(clf.coef_.t(), clf.intercept_, Xd, y, 0.7)
    for _ in range(5):
        bumped = reference_objective(clf.coef_.t() + 1e-3 * torch.randn(5, 3, dtype=torch.float64),
                                     clf.intercept_, Xd, y, 0.7)
        assert bumped > base
    # predictions are the argmax of the logits, as labels
    logits = Xd @ clf.coef_.t() + clf.intercept_
    assert clf.predict(Xd) == [names[i] for i in logits.argmax(1).tolist()]
    assert torch.allclose(clf.predict_proba(Xd).sum(1), torch.ones(40, dtype=torch.float64))


def test_logistic_regression_separates_a_text_toy():
    texts = ["so happy today", "happy happy joy", "very sad now", "sad and low", "scared of the dark", "so scared"]
    labels = ["joy", "joy", "sadness", "sadness", "fear", "fear"]
    bow = BagOfWords()
    clf = LogisticRegression().fit(bow.fit_transform(texts), labels)
    assert clf.predict(bow.transform(["happy", "sad", "scared"])) == ["joy", "sadness", "fear"]


def test_logistic_regression_bad_input():
    X = torch.eye(3).to_sparse_csr()
    with pytest.raises(ConfigError, match="label 'surprise' .* not one of"):
        LogisticRegression().fit(X, ["joy", "fear", "surprise"], classes=["fear", "joy"])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        LogisticRegression().fit(X, ["joy"] * 3)
    with pytest.raises(ConfigError, match="3 rows but 2 labels"):
        LogisticRegression().fit(X, ["joy", "fear"])
    with pytest.raises(ConfigError, match="C must be > 0"):
        LogisticRegression(C=0)
    clf = LogisticRegression().fit(X, ["joy", "fear", "joy"])
    with pytest.raises(ConfigError, match="4 features, the model 3"):
        clf.predict(torch.eye(4))


def test_logistic_regression_warns_when_not_converged():
    Xd, y = tiny_problem()
    with pytest.warns(UserWarning, match="did not converge"):
        clf = LogisticRegression(tol=1e-12, max_iter=2).fit(Xd, y.tolist())
    assert not clf.converged_ and clf.n_iter_ == 2


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def test_accuracy_and_confusion():
    assert accuracy(["a", "b", "a"], ["a", "a", "a"]) == pytest.approx(2 / 3)
    c = confusion(["a", "b", "b"], ["b", "b", "other"], ["a", "b"])
    assert c == {"labels": ["a", "b", "(other)"], "matrix": [[0, 1, 0], [0, 1, 1]]}   # "other": its own column
    assert confusion(["a", "b"], ["b", "b"], ["a", "b"]) == {"labels": ["a", "b"], "matrix": [[0, 1], [0, 1]]}
    with pytest.raises(ConfigError):
        confusion(["z"], ["a"], ["a"])
    with pytest.raises(ConfigError):
        accuracy(["a"], [])


# --------------------------------------------------------------------------------------------
# CNN
# --------------------------------------------------------------------------------------------

def test_word_vocab_is_the_books_lookup():
    v = WordVocab(["Paris", "happy", "i"])
    assert v.encode("I am HAPPY in Paris paris", 8) == [3, 0, 2, 0, 1, 0, 0, 0]   # exact, then lowercase
    assert v.encode("i i i i", 2) == [3, 3]                                        # truncated
    assert len(v) == 4
    assert WordVocab.from_texts(["a b a", "c a b"], min_count=2).words == ["a", "b"]
    assert lookup_words(["I am Happy"]) == {"I", "i", "am", "Happy", "happy"}
    with pytest.raises(ConfigError, match="text #0 is empty"):
        v.encode_batch([""], 4)


def test_cnn_is_the_books_architecture():
    m = CNNClassifier(CNNConfig(vocab_size=50, num_classes=6))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"embed.weight": (50, 300), "conv1.weight": (512, 300, 3), "conv1.bias": (512,),
                      "conv2.weight": (256, 512, 3), "conv2.bias": (256,), "fc1.weight": (128, 25600),
                      "fc1.bias": (128,), "fc2.weight": (6, 128), "fc2.bias": (6,)}
    assert m.embed.weight[1:].std().item() == pytest.approx(0.1, abs=0.005)   # word2vec's scale, not 1
    assert m.embed.weight[0].abs().sum() == 0                                  # padding / unknown word
    x = torch.randint(0, 50, (2, 100))
    h = F.relu(F.conv1d(m.embed(x).transpose(1, 2), m.conv1.weight, m.conv1.bias, padding=1))
    h = F.relu(F.conv1d(h, m.conv2.weight, m.conv2.bias, padding=1))
    expected = (h.flatten(1) @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias  # no activation between
    assert torch.allclose(m(x), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="length 99, expected 100"):
        m(torch.zeros(1, 99, dtype=torch.long))


def small_cnn(vocab_size, classes, vectors=None, freeze=False):
    torch.manual_seed(0)
    cfg = CNNConfig(vocab_size=vocab_size, num_classes=classes, emb_dim=8, channels1=16, channels2=8, hidden=16,
                    seq_len=6, freeze_embeddings=freeze)
    return CNNClassifier(cfg, vectors)


def test_padding_and_unknown_words_stay_zero_vectors():
    m = small_cnn(10, 3)
    assert m.embed.weight[0].abs().sum() == 0
    loss, n = classification_loss(m, {"input_ids": torch.tensor([[1, 0, 2, 0, 0, 0]]), "targets": torch.tensor([2])})
    loss.backward()
    assert n == 1 and m.embed.weight.grad[0].abs().sum() == 0


def test_cnn_with_vectors_uses_them_frozen():
    table = torch.randn(10, 8)
    m = small_cnn(10, 3, vectors=table, freeze=True)
    assert torch.equal(m.embed.weight[1:], table[1:]) and m.embed.weight[0].abs().sum() == 0
    assert not m.embed.weight.requires_grad
    with pytest.raises(ConfigError, match="vectors of shape"):
        small_cnn(11, 3, vectors=table)


def test_cnn_overfits_a_tiny_set_through_the_engine():
    texts = ["happy sunny day", "sad rainy day", "angry loud noise", "calm quiet lake",
             "happy quiet day", "sad loud rain", "angry sunny noise", "calm sunny lake"]
    labels = [0, 1, 2, 3, 0, 1, 2, 3]
    vocab = WordVocab.from_texts(texts)
    ex = ClassificationExamples(vocab.encode_batch(texts, 6), torch.tensor(labels))
    assert ex.collate([1, 3])["targets"].tolist() == [1, 3]
    m = small_cnn(len(vocab), 4)
    cfg = TrainConfig(lr=3e-3, schedule="constant", batch_size=8, max_steps=60, grad_clip=0.0, device="cpu")
    res = train(m, ex, ex, cfg, None, loss_fn=classification_loss)
    assert res["val_loss"] < 0.05
    assert predict_classes(m, ex.input_ids).tolist() == labels


def test_label_ids_names_the_unknown_label():
    assert label_ids(["b", "a"], ["a", "b"]).tolist() == [1, 0]
    with pytest.raises(ConfigError, match="label 'c' \\(example #1\\)"):
        label_ids(["a", "c"], ["a", "b"], "train")


# --------------------------------------------------------------------------------------------
# Stages on a tiny data dir
# --------------------------------------------------------------------------------------------

def tiny_data_dir(tmp_path, n_train=96, n_valid=40, test=True):
    src = EMBEDDED_DIR / "emotion"
    d = tmp_path / "data"
    (d / "emotion").mkdir(parents=True)
    splits = {"train": n_train, "valid": n_valid}
    if test:
        splits["test"] = n_valid
    for split, n in splits.items():
        lines = (src / f"{split}.jsonl").read_text().splitlines()[:n]
        (d / "emotion" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_emotion_lr_stage(tmp_path):
    d = tiny_data_dir(tmp_path)
    m = run_stage("emotion_lr", RunConfig(quiet=True), d, tmp_path / "out")
    assert m["eval_split"] == "test" and m["eval_examples"] == 40
    for key in ["accuracy", "accuracy_valid", "accuracy_bigram", "accuracy_bigram_valid", "accuracy_train"]:
        assert 0 <= m[key] <= 1
    assert m["accuracy_train"] > 0.9 > m["majority_accuracy"]   # 96 texts, a few hundred features: fits train
    rows = m["confusion"]["matrix"]
    assert sum(map(sum, rows)) == 40
    assert sum(rows[i][i] for i in range(len(rows))) / 40 == pytest.approx(m["accuracy"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["accuracy"] == m["accuracy"]


def test_emotion_cnn_stage_without_test_split_reports_valid(tmp_path):
    d = tiny_data_dir(tmp_path, n_train=64, n_valid=32, test=False)
    m = run_stage("emotion_cnn", RunConfig(quiet=True, device="cpu"), d, tmp_path / "out")
    assert m["eval_split"] == "valid" and m["accuracy"] == m["accuracy_valid"]
    assert len(m["accuracy_per_epoch"]) == 3 and m["accuracy_per_epoch"][-1] == m["accuracy"]
    assert sum(map(sum, m["confusion"]["matrix"])) == 32
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in records if "val_loss" in r] == m["accuracy_per_epoch"]
    assert m["embeddings"].startswith("learned")


def test_emotion_cnn_stage_reads_word_vectors_from_the_data_dir(tmp_path):
    d = tiny_data_dir(tmp_path, n_train=32, n_valid=16)
    words = sorted({w for line in (d / "emotion/train.jsonl").read_text().splitlines()
                    for w in json.loads(line)["text"].split()})[:50]
    g = torch.Generator().manual_seed(0)
    rows = [f"{w} " + " ".join(f"{v:.3f}" for v in torch.randn(4, generator=g).tolist()) for w in words]
    (d / "emotion/vectors.dat").write_text(f"{len(rows)} 4\n" + "\n".join(rows) + "\n")
    m = run_stage("emotion_cnn", RunConfig(quiet=True, device="cpu"), d, tmp_path / "out")
    assert m["embeddings"].startswith("word2vec") and "50 of the words used" in m["embeddings"]
    assert m["parameters"] - m["trainable_parameters"] == 51 * 4     # the frozen table, with row 0


def test_emotion_stages_bad_data_are_clear_errors(tmp_path):
    d = tiny_data_dir(tmp_path, n_train=32, n_valid=16, test=False)
    train_file = d / "emotion/train.jsonl"
    good = train_file.read_text()
    train_file.write_text(good + '{"text": "   ", "label": "joy"}\n')
    with pytest.raises(DataError, match="line 33: empty text"):
        run_stage("emotion_lr", RunConfig(quiet=True), d, tmp_path / "out")
    train_file.write_text(good + '{"text": "so bored", "label": "boredom"}\n')
    with pytest.raises(DataError, match="line 33: unknown emotion label 'boredom'"):
        run_stage("emotion_cnn", RunConfig(quiet=True), d, tmp_path / "out")
    train_file.write_text(good)
    (d / "emotion/vectors.dat").write_text("2 3\nhappy 1 2\n")
    with pytest.raises(DataError, match="vectors.dat"):
        run_stage("emotion_cnn", RunConfig(quiet=True), d, tmp_path / "out")


def test_stage_module_conventions():
    for mod in (emotion_lr, emotion_cnn):
        assert mod.DATA_FILES == ["emotion/train.jsonl", "emotion/valid.jsonl"] and mod.NEEDS_GPT2 is False
        assert mod.KEY_METRICS[0] == "accuracy"


def test_torch_threads_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ZeroDivisionError), torch_threads(1):
        1 / 0
    assert torch.get_num_threads() == before
