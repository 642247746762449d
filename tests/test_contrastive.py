"""`method: contrastive` on tiny in-process encoders / decoders: losses, batching, GradCache, metrics, outputs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import write_jsonl

from tuneforge.config import load_config
from tuneforge.methods.contrastive.data import ContrastiveRow, arrange_without_duplicates
from tuneforge.methods.contrastive.losses import EmbeddingLoss, cosent_sum, cosine_mse_sum, info_nce_sum, triplet_sum
from tuneforge.methods.contrastive.metrics import ranks, retrieval_metrics, spearman
from tuneforge.runner import train_from_config

WORDS = [
    "the",
    "a",
    "battery",
    "inverter",
    "app",
    "error",
    "code",
    "reset",
    "charge",
    "grid",
    "solar",
    "panel",
    "how",
    "do",
    "i",
    "fix",
    "my",
]


def tiny_bert(tmp_path: Path, dropout: float = 0.1) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *[str(i) for i in range(100)]]
    folder = tmp_path / "tiny-bert"
    folder.mkdir(exist_ok=True)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    ).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


# How users ask about error code k: training queries use these phrasings (cycled through) ...
TRAIN_QUERIES = (
    "how do i fix error code {k}",
    "error code {k} my inverter",
    "my inverter app error code {k}",
    "the grid charge error {k}",
    "code {k} battery error how do i fix",
    "solar panel error code {k} a fix",
    "reset my app error {k}",
    "a battery charge code {k} the grid",
)
# ... and held-out queries use phrasings never trained on, so recall on them measures generalisation, not
# memorised query strings (issue #20: the eval queries used to be the training queries verbatim).
HELD_OUT_QUERIES = (
    "the battery app error code {k} how do i reset",
    "fix my solar panel code {k}",
    "my grid inverter error {k} how do i charge the battery",
)


def pair_rows(n: int, seed: int, negatives: bool = True, queries: tuple[str, ...] = TRAIN_QUERIES[:1]) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(0, 29)
        row = {"anchor": queries[i % len(queries)].format(k=k), "positive": f"reset the inverter {k} {k}"}
        if negatives:
            row["negative"] = f"reset the inverter {(k + 1) % 30} {(k + 1) % 30}"
        rows.append(row)
    return rows


def contrastive_config(tmp_path, model_dir, name="emb", **sections):
    raw = {
        "method": "contrastive",
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_jsonl(tmp_path / "train.jsonl", pair_rows(200, 1, queries=TRAIN_QUERIES))),
            "eval": str(
                write_jsonl(tmp_path / "eval.jsonl", pair_rows(30, 2, negatives=False, queries=HELD_OUT_QUERIES))
            ),
        },
        "training": {"max_steps": 30, "batch_size": 16, "learning_rate": 1e-3, "seed": 2},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(data=raw)


# ------------------------------------------------------------------ losses


def test_info_nce_is_ln_candidates_when_all_similarities_are_equal():
    same = torch.ones(4, 8)
    assert float(info_nce_sum(same, same)) / 4 == pytest.approx(math.log(4), abs=1e-6)
    assert float(info_nce_sum(same, same, torch.ones(3, 8))) / 4 == pytest.approx(math.log(7), abs=1e-6)
    assert float(info_nce_sum(same, same, symmetric=True)) / 4 == pytest.approx(math.log(4), abs=1e-6)


def test_info_nce_triplet_cosent_and_mse_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    n = torch.tensor([[-1.0, 0.0]])
    s = 2.0
    cos = lambda x, y: float(F.cosine_similarity(x, y, dim=0))  # noqa: E731
    rows = [[s * cos(a[i], p[0]), s * cos(a[i], p[1]), s * cos(a[i], n[0])] for i in range(2)]
    by_hand = sum(-math.log(math.exp(r[i]) / sum(math.exp(v) for v in r)) for i, r in enumerate(rows))
    assert float(info_nce_sum(a, p, n, scale=s)) == pytest.approx(by_hand, rel=1e-6)
    # symmetric: the mean with positive → anchor over the anchors
    back = [[s * cos(p[i], a[0]), s * cos(p[i], a[1])] for i in range(2)]
    back_loss = sum(-math.log(math.exp(r[i]) / sum(math.exp(v) for v in r)) for i, r in enumerate(back))
    no_neg = [[r[0], r[1]] for r in rows]
    fwd = sum(-math.log(math.exp(r[i]) / sum(math.exp(v) for v in r)) for i, r in enumerate(no_neg))
    assert float(info_nce_sum(a, p, scale=s, symmetric=True)) == pytest.approx((fwd + back_loss) / 2, rel=1e-6)
    # triplet on cosine distance, margin 0.3
    d = lambda x, y: 1 - cos(x, y)  # noqa: E731
    negs = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    expected = sum(max(0.0, d(a[i], p[i]) - d(a[i], negs[i]) + 0.3) for i in range(2))
    assert float(triplet_sum(a, p, negs, margin=0.3)) == pytest.approx(expected, rel=1e-6)
    # CoSENT: pair 0 is scored above pair 1, so exp(s·(cos_1 − cos_0)) enters; × 2 pairs
    scores = torch.tensor([0.9, 0.1])
    c0, c1 = cos(a[0], p[0]), cos(a[1], p[1])
    assert float(cosent_sum(a, p, scores, scale=s)) == pytest.approx(
        2 * math.log(1 + math.exp(s * (c1 - c0))), rel=1e-6
    )
    assert float(cosine_mse_sum(a, p, scores)) == pytest.approx((c0 - 0.9) ** 2 + (c1 - 0.1) ** 2, rel=1e-6)


# ------------------------------------------------------------------ batches without duplicates


def test_no_global_batch_holds_a_text_twice():
    from tuneforge.training.engine import RowOrder

    rng = random.Random(0)
    answers = [f"answer {i}" for i in range(40)]  # 300 questions over 40 answers: many duplicates
    rows = [ContrastiveRow((f"question {k}", rng.choice(answers)), ((), ()), (None, None)) for k in range(300)]
    group = 16

    def arrange(order, size, first):
        return arrange_without_duplicates(rows, order, size, first)[0]

    order = RowOrder(len(rows), seed=1, arrange=arrange, group=group)
    plain = RowOrder(len(rows), seed=1)
    n = len(rows)
    interior = tail = plain_clashes = 0
    for step in range(3 * n // group):  # three epochs; 300 is not a multiple of 16
        start = step * group
        batch = order.take(start, group)
        texts = [t for i in batch for t in rows[i].texts]
        ptexts = [t for i in plain.take(start, group) for t in rows[i].texts]
        plain_clashes += len(ptexts) - len(set(ptexts))
        # The last two batches of an epoch (and one that runs into the next epoch) hold what is
        # left over; duplicates there may be unavoidable. Everywhere else there must be none.
        near_end = (start % n) + group > n - 2 * group
        if near_end:
            tail += len(texts) - len(set(texts))
        else:
            interior += len(texts) - len(set(texts))
    assert plain_clashes > 100
    assert interior == 0 and tail < plain_clashes / 10, (interior, tail, plain_clashes)
    for epoch in range(3):  # each epoch is still a permutation of every row
        assert sorted(order._epoch(epoch)) == list(range(len(rows)))


# ------------------------------------------------------------------ GradCache and SimCSE


def _embedding_loss(model_dir, gradient_cache=None, loss="infonce"):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir)
    model.train()
    return EmbeddingLoss(model, loss=loss, pooling="mean", normalize=True, gradient_cache=gradient_cache)


def _batch(model_dir, rows):
    from tuneforge.methods import get_method
    from tuneforge.methods.contrastive.data import to_rows
    from tuneforge.models.load import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    items = [((r["anchor"], r["positive"], r["negative"]), None, "") for r in rows]
    return get_method("contrastive").collate(to_rows(items, tok, 32)[0], tok).inputs


def _grads(module, inputs, seed=123):
    torch.manual_seed(seed)
    loss, n = module(**inputs)
    loss.backward()
    assert int(n) == 12
    return {k: p.grad.clone() for k, p in module.model.named_parameters() if p.grad is not None}


def test_pieces_are_runs_of_one_role_trimmed_to_their_own_width(tmp_path):
    bert = tiny_bert(tmp_path, dropout=0.0)
    inputs = _batch(bert, pair_rows(4, 5))  # short anchors, longer positives and negatives
    tensors = {k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    pieces = EmbeddingLoss._pieces(tensors, inputs["role"], 3)
    assert [p["input_ids"].shape[0] for p in pieces] == [3, 1, 3, 1, 3, 1]
    assert all(int(p["attention_mask"][:, -1].max()) == 1 for p in pieces)  # no all-padding column left
    module = _embedding_loss(bert)
    module.model.eval()
    whole = module.embed(**tensors)  # one width for every text
    torch.testing.assert_close(module._embed_all(tensors, inputs["role"]), whole, atol=1e-6, rtol=1e-5)


def test_gradient_cache_gives_the_gradients_of_the_plain_large_batch(tmp_path):
    bert = tiny_bert(tmp_path, dropout=0.0)
    inputs = _batch(bert, pair_rows(12, 5))  # 36 texts: chunks of 5 do not divide it evenly
    plain = _grads(_embedding_loss(bert), inputs)
    cached = _grads(_embedding_loss(bert, gradient_cache=5), inputs)
    assert plain.keys() == cached.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(
            cached[name], plain[name], rtol=1e-4, atol=1e-4, msg=name
        )  # sums of 36 texts, other order


def test_gradient_cache_replays_each_chunks_dropout(tmp_path):
    """With dropout, the cached backward must see the masks of the cached forward: its gradients
    equal those of the same chunked forward kept whole in one graph (same RNG draws)."""
    bert = tiny_bert(tmp_path, dropout=0.2)
    inputs = _batch(bert, pair_rows(12, 5))
    cached = _grads(_embedding_loss(bert, gradient_cache=5), inputs)

    graph = _embedding_loss(bert, gradient_cache=5)
    torch.manual_seed(123)
    tensors = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    role = inputs["role"]
    emb = torch.cat([graph.embed(**piece) for piece in graph._pieces(tensors, role, 5)])  # the same chunks
    info_nce_sum(emb[role == 0], emb[role == 1], emb[role == 2], scale=graph.scale).backward()
    for name, param in graph.model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(cached[name], param.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_simcse_views_differ_only_by_dropout(tmp_path):
    bert = tiny_bert(tmp_path, dropout=0.1)
    module = _embedding_loss(bert)
    from tuneforge.models.load import load_tokenizer

    enc = load_tokenizer(str(bert))(["reset the inverter 3 3"] * 2, return_tensors="pt")
    module.model.train()
    two = module.embed(**enc)
    assert not torch.allclose(two[0], two[1])  # two dropout masks
    module.model.eval()
    two = module.embed(**enc)
    torch.testing.assert_close(two[0], two[1])  # same text, no dropout: same embedding


# ------------------------------------------------------------------ metrics


def test_retrieval_metrics_against_hand_ranks():
    docs = torch.eye(4)
    queries = F.normalize(torch.tensor([[1.0, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0.2, 1.0]]), dim=-1)
    relevant = [0, 1, 2]
    assert ranks(queries, docs, relevant) == [1, 2, 2]
    m = retrieval_metrics([1, 2, 2, 11])
    assert m["recall@1"] == 0.25 and m["recall@5"] == 0.75 and m["recall@10"] == 0.75
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0.5) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 2 / math.log2(3)) / 4, abs=1e-6)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)


# ------------------------------------------------------------------ whole runs and outputs


def test_encoder_run_improves_recall_and_loads_in_sentence_transformers(tmp_path, isolated_cache):
    from sentence_transformers import SentenceTransformer

    config = contrastive_config(tmp_path, tiny_bert(tmp_path), training={"max_steps": 90})
    train_texts = {text for row in _jsonl(config.data.train) for text in row.values()}
    held_out = [row["anchor"] for row in _jsonl(config.data.eval)]
    assert not set(held_out) & train_texts, "an eval query occurs in the training data: recall would be memorisation"
    result = train_from_config(config)
    before, after = result.summary["before"], result.summary["after"]
    assert set(after) == {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    # On unseen phrasings: 0.4 before, 0.8 to 0.9 after 90 steps over six training seeds. The 30 steps that
    # sufficed to memorise the old (leaked) queries gain only 0.03 to 0.17 here.
    assert after["recall@1"] > before["recall@1"] + 0.2, (before, after)
    # 200 rows over 30 answers, each row naming two (positive, hard negative): a batch of 16 rows
    # needs 32 answer slots, so some repeats are unavoidable; far fewer remain than when shuffled.
    data = result.summary["data"]
    assert data["duplicate_texts_in_batches"] < 0.75 * data["duplicate_texts_in_batches_if_shuffled"]
    assert "recall@k on held-out queries" in result.summary["curves"]
    texts = ["how do i fix error code 3", "reset the inverter 3 3", "solar panel"]
    plain = SentenceTransformer(str(result.output_dir), device="cpu").encode(texts, convert_to_tensor=True)
    from tuneforge.methods.contrastive.model import embed_texts

    ours = embed_texts(result.model, _tok(result.output_dir), texts, pooling="mean", normalize=True, max_length=128)
    torch.testing.assert_close(plain.cpu(), ours, atol=1e-5, rtol=1e-5)


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _tok(path):
    from tuneforge.models.load import load_tokenizer

    return load_tokenizer(str(path))


def test_decoder_with_lora_last_token_pooling_loads_in_sentence_transformers(tmp_path, tiny_model_dir, isolated_cache):
    from sentence_transformers import SentenceTransformer

    config = contrastive_config(
        tmp_path,
        tiny_model_dir,
        adapter={"type": "lora", "r": 4, "alpha": 8},
        training={"max_steps": 3},
        data={"max_length": 64},
    )
    result = train_from_config(config)
    assert result.output_dir.name == "adapter"
    pooling = json.loads((result.output_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] and not pooling["pooling_mode_mean_tokens"]
    texts = ["how do i fix error code 3", "reset the inverter"]
    plain = SentenceTransformer(str(result.output_dir), device="cpu").encode(texts, convert_to_tensor=True)
    from tuneforge.methods.contrastive.model import embed_texts

    ours = embed_texts(result.model, _tok(result.output_dir), texts, pooling="last", normalize=True, max_length=64)
    torch.testing.assert_close(plain.cpu(), ours, atol=1e-5, rtol=1e-5)


def test_scored_pairs_report_spearman_and_embed_cli(tmp_path, isolated_cache):
    from tuneforge.cli import main

    rng = random.Random(3)
    rows = []
    for _ in range(60):
        k, j = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"text_a": f"error code {k}", "text_b": f"error code {j}", "score": 1.0 if k == j else 0.0})
    data = {
        "format": "scored_pairs",
        "train": str(write_jsonl(tmp_path / "s.jsonl", rows[:48])),
        "eval": str(write_jsonl(tmp_path / "se.jsonl", rows[48:])),
    }
    result = train_from_config(
        contrastive_config(tmp_path, tiny_bert(tmp_path), data=data, training={"max_steps": 5, "batch_size": 8})
    )
    assert set(result.summary["after"]) == {"spearman"}
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"t": "error code 1"}, {"t": "reset"}])
    out = tmp_path / "emb.jsonl"
    assert (
        main(
            ["embed", "--model", str(result.run_dir), "--data", str(texts), "--text-column", "t", "--output", str(out)]
        )
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["text"] for x in lines] == ["error code 1", "reset"] and len(lines[0]["embedding"]) == 32
    assert sum(v * v for v in lines[0]["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_config_refuses_loss_that_does_not_fit_the_data():
    from tuneforge.config import ConfigError

    with pytest.raises(ConfigError, match="needs a similarity score"):
        load_config(data={"method": "contrastive", "data": {"train": "x"}, "loss": {"type": "cosent"}})
    with pytest.raises(ConfigError, match="scored_pairs train with"):
        load_config(
            data={
                "method": "contrastive",
                "data": {"format": "scored_pairs", "train": "x"},
                "loss": {"type": "infonce"},
            }
        )


def test_data_errors_name_the_row(tmp_path, isolated_cache):
    from tuneforge.checks import check_config

    bert = tiny_bert(tmp_path)
    write_jsonl(
        tmp_path / "bad.jsonl",
        [{"anchor": "a", "positive": "b"}, {"anchor": "a"}, {"anchor": "a", "positive": "b", "negative": 3}],
    )
    config = load_config(
        data={
            "method": "contrastive",
            "model": {"name": str(bert)},
            "data": {"train": str(tmp_path / "bad.jsonl")},
            "eval": None,
        }
    )
    errors = check_config(config, tokenizer=_tok(bert)).errors
    assert errors[0].startswith(f"{tmp_path / 'bad.jsonl'}:2: positive: missing")
    assert errors[1] == f"{tmp_path / 'bad.jsonl'}:3: negative: must be a string or a list of non-empty strings"


def test_triplet_pairs_each_anchor_with_its_own_first_negative(tmp_path):
    from tuneforge.methods import get_method
    from tuneforge.methods.contrastive.data import to_rows
    from tuneforge.models.load import load_tokenizer

    bert = tiny_bert(tmp_path, dropout=0.0)
    tok = load_tokenizer(str(bert))
    items = [
        (("how do i fix error code 1", "reset the inverter 1 1", "solar panel", "grid charge"), None, ""),
        (("how do i fix error code 2", "reset the inverter 2 2"), None, ""),  # no negative
        (("how do i fix error code 3", "reset the inverter 3 3", "battery app"), None, ""),
    ]
    inputs = get_method("contrastive").collate(to_rows(items, tok, 32)[0], tok).inputs
    assert inputs["negative_of"].tolist() == [0, 0, 2]
    module = _embedding_loss(bert, loss="triplet")
    module.model.eval()
    loss, n = module(**inputs)
    emb = module.embed(**{k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
    role = inputs["role"]
    a, p, neg = emb[role == 0], emb[role == 1], emb[role == 2]
    expected = triplet_sum(a[[0, 2]], p[[0, 2]], neg[[0, 2]], margin=0.3)  # row 0 → its first, row 2 → its own
    assert int(n) == 3 and float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_gradient_cache_under_bf16_autocast_matches_the_plain_batch(tmp_path):
    """Under mixed precision the recomputed chunks run in the same autocast as the cached pass:
    the gradients equal the plain large batch's up to bf16 rounding (relative norm), while
    recomputing in fp32 would not give every parameter a gradient of the same numerics."""
    bert = tiny_bert(tmp_path, dropout=0.0)
    inputs = _batch(bert, pair_rows(12, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = _grads(_embedding_loss(bert), inputs)
        cached = _grads(_embedding_loss(bert, gradient_cache=5), inputs)
    assert plain.keys() == cached.keys()
    for name in plain:
        error = (cached[name] - plain[name]).norm() / plain[name].norm().clamp(min=1e-6)
        assert error < 2e-2, (name, float(error))


def test_simcse_from_a_txt_file_with_periodic_eval(tmp_path, isolated_cache):
    lines = [f"reset the inverter {k} {k}" for k in range(40)] + [f"how do i fix error code {k}" for k in range(40)]
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(lines) + "\n")
    config = contrastive_config(
        tmp_path,
        tiny_bert(tmp_path, dropout=0.1),
        name="simcse",
        data={"format": "text", "train": str(raw)},
        training={"max_steps": 4, "eval_every": 2, "batch_size": 16},
    )
    result = train_from_config(config)
    assert result.summary["data"]["rows"] == 80  # one row per line of the .txt file
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4]
