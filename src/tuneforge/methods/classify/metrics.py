"""Classification metrics as pure functions over label indices.

Predictions may hold ``-1`` for "no label" (the zero-shot baseline's answers
that name no label): such an answer is wrong for its true class and is a
prediction of no class, so it lowers recall without adding to any precision.
Macro-F1 is the unweighted mean of per-class F1 over the classes that occur in
the gold labels or the predictions (as scikit-learn does): a class absent from
a small held-out set and never predicted says nothing, so it is not counted as
F1 = 0. A class that occurs but is never predicted has precision 0 by
convention (METHODS.md).
"""

from __future__ import annotations


def confusion_matrix(gold: list[int], predicted: list[int], num_labels: int) -> list[list[int]]:
    """``m[t][p]``: examples of true class t predicted as p (predictions of -1 are left out)."""
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for t, p in zip(gold, predicted, strict=True):
        if p >= 0:
            matrix[t][p] += 1
    return matrix


def per_class(gold: list[int], predicted: list[int], num_labels: int) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class."""
    matrix = confusion_matrix(gold, predicted, num_labels)
    rows = []
    for k in range(num_labels):
        true_positive = matrix[k][k]
        predicted_k = sum(matrix[t][k] for t in range(num_labels))
        support = sum(1 for t in gold if t == k)
        precision = true_positive / predicted_k if predicted_k else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": precision, "recall": recall, "f1": f1, "support": support})
    return rows


def classification_metrics(gold: list[int], predicted: list[int], labels: list[str]) -> dict[str, float]:
    """accuracy, macro_f1, and precision / recall per class (``precision/<label>``)."""
    if not gold:
        return {}
    k = len(labels)
    classes = per_class(gold, predicted, k)
    present = set(gold) | {p for p in predicted if p >= 0}
    out = {
        "accuracy": sum(1 for t, p in zip(gold, predicted) if t == p) / len(gold),
        "macro_f1": sum(classes[i]["f1"] for i in present) / len(present),
    }
    for name, c in zip(labels, classes):
        out[f"precision/{name}"] = c["precision"]
        out[f"recall/{name}"] = c["recall"]
    return {key: round(value, 6) for key, value in out.items()}
