"""Contrastive losses (pure functions over embeddings), pooling, and the module the engine calls.

Every loss returns a *sum over anchors* (or pairs); the engine divides by the
number of anchors of the whole accumulated batch. In-batch negatives are those
of one micro-batch (use ``loss.gradient_cache`` for bigger batches, not
gradient accumulation).

- InfoNCE / multiple-negatives ranking (van den Oord et al. 2018; Henderson et
  al. 2017): ``S_ij = s·cos(a_i, c_j)`` over candidates c = every positive of the
  batch, then every hard negative; ``ℓ_i = CE(S_i, i)``. Symmetric: the mean of
  that and the positive→anchor direction. All similarities equal → ln(#candidates).
- Triplet (Schroff et al. 2015) on cosine distance: ``max(0, d(a,p) − d(a,n) + m)``.
- CoSENT (Su 2022): ``log(1 + Σ_{s_i > s_j} exp(s·(cos_j − cos_i)))`` over the
  pairs of one batch. It ranks pairs *against each other*, so it is one value per
  batch: returned multiplied by the batch's pair count, so that the engine's
  division gives it back (micro-batches are then weighted by their size).
- Cosine MSE: ``Σ (cos(a, b) − score)²``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def info_nce_sum(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    scale: float = 20.0,
    symmetric: bool = False,
) -> torch.Tensor:
    """anchors (B, d), positives (B, d), negatives (N, d) or None; unit-normalised or not."""
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    candidates = p if negatives is None or negatives.numel() == 0 else torch.cat([p, F.normalize(negatives, dim=-1)])
    scores = scale * a @ candidates.T  # (B, B + N)
    target = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(scores, target, reduction="sum")
    if symmetric:
        backward = F.cross_entropy(scale * p @ a.T, target, reduction="sum")  # (B, B): positive → anchor
        loss = (loss + backward) / 2
    return loss


def triplet_sum(
    anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, *, margin: float = 0.3
) -> torch.Tensor:
    """anchors, positives, negatives (B, d): one negative per anchor."""
    d_pos = 1 - F.cosine_similarity(anchors, positives, dim=-1)
    d_neg = 1 - F.cosine_similarity(anchors, negatives, dim=-1)
    return F.relu(d_pos - d_neg + margin).sum()


def cosent_sum(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """a, b (B, d), gold similarity scores (B,)."""
    cos = scale * F.cosine_similarity(a, b, dim=-1)  # (B,)
    diff = cos[None, :] - cos[:, None]  # (B, B): cos_j − cos_i
    ranked = scores[:, None] > scores[None, :]  # pair i should score above pair j
    terms = torch.cat([torch.zeros(1, device=cos.device, dtype=cos.dtype), diff[ranked]])
    return torch.logsumexp(terms, dim=0) * a.shape[0]


def cosine_mse_sum(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    return ((F.cosine_similarity(a, b, dim=-1) - scores) ** 2).sum()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """hidden (B, T, H), attention_mask (B, T) right-padded → (B, H)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        last = attention_mask.sum(dim=1) - 1  # (B,): the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class _CachedEmbeddings(torch.autograd.Function):
    """GradCache (Gao et al. 2021): embeddings computed without a graph, chunk by chunk; in
    backward each chunk is embedded again with a graph and back-propagated with the cached
    gradient of the loss w.r.t. its embeddings, so only one chunk's activations live at a time.

    Like reentrant activation checkpointing it calls ``torch.autograd.backward`` inside
    backward and replays each chunk's RNG state (dropout masks stay the same).
    """

    @staticmethod
    def forward(ctx, anchor, embed, chunks, rng_states, embeddings, autocast_state):
        ctx.embed, ctx.chunks, ctx.rng_states, ctx.autocast_state = (embed, chunks, rng_states, autocast_state)
        return embeddings.clone()

    @staticmethod
    def backward(ctx, grad):
        start = 0
        for chunk, (cpu_state, cuda_state) in zip(ctx.chunks, ctx.rng_states):
            devices = [torch.cuda.current_device()] if cuda_state is not None else []
            device_type, dtype, enabled = ctx.autocast_state
            # The same RNG draws (dropout masks) and the same autocast as the forward pass.
            with (
                torch.random.fork_rng(devices=devices),
                torch.enable_grad(),
                torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=False),
            ):
                torch.set_rng_state(cpu_state)
                if cuda_state is not None:
                    torch.cuda.set_rng_state(cuda_state)
                out = ctx.embed(**chunk)  # (b, d), with a graph this time
            torch.autograd.backward(out, grad[start : start + out.shape[0]])
            start += out.shape[0]
        return None, None, None, None, None, None


class EmbeddingLoss(torch.nn.Module):
    """``forward(**batch.inputs) → (summed loss, anchors)`` for every contrastive loss.

    Batch layout: ``input_ids`` / ``attention_mask`` (N, T) hold every text of the batch,
    ``role`` (N,) says which is which (0 anchor, 1 positive, 2 negative), ``scores`` (B,)
    the gold similarity of scored pairs (role 0 = text a, 1 = text b).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        loss: str,
        pooling: str,
        normalize: bool,
        scale: float = 20.0,
        symmetric: bool = False,
        margin: float = 0.3,
        gradient_cache: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.loss, self.pooling, self.normalize = loss, pooling, normalize
        self.scale, self.symmetric, self.margin = scale, symmetric, margin
        self.gradient_cache = gradient_cache

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        emb = pool(hidden, attention_mask, self.pooling).float()
        return F.normalize(emb, dim=-1) if self.normalize else emb

    @staticmethod
    def _pieces(tensors: dict[str, torch.Tensor], role: torch.Tensor, size: int | None) -> list[dict]:
        """Rows cut into runs of one role (anchors, positives, negatives) and then into chunks of
        ``size``, each trimmed to its own longest text: questions are short and answers long, and
        padding them to one width would embed up to twice the tokens (right padding: exact)."""
        changes = (role[1:] != role[:-1]).nonzero().flatten().add(1).tolist()
        bounds = [0, *changes, role.shape[0]]
        pieces = []
        for lo, hi in itertools.pairwise(bounds):
            step = size or hi - lo
            for start in range(lo, hi, step):
                end = min(start + step, hi)
                width = int(tensors["attention_mask"][start:end].sum(dim=1).max())
                pieces.append({k: v[start:end, :width] for k, v in tensors.items()})
        return pieces

    def _embed_all(self, tensors: dict[str, torch.Tensor], role: torch.Tensor) -> torch.Tensor:
        n = tensors["input_ids"].shape[0]
        if not self.gradient_cache or not torch.is_grad_enabled() or n <= self.gradient_cache:
            return torch.cat([self.embed(**piece) for piece in self._pieces(tensors, role, None)])
        chunks, states, parts = [], [], []
        device_type = tensors["input_ids"].device.type
        autocast_state = (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))
        # No autocast weight cache here: casts made without a graph must not be reused by the
        # recomputation in backward (the weights would get no gradient through them).
        with (
            torch.no_grad(),
            torch.autocast(device_type, dtype=autocast_state[1], enabled=autocast_state[2], cache_enabled=False),
        ):
            for chunk in self._pieces(tensors, role, self.gradient_cache):
                on_cuda = chunk["input_ids"].is_cuda
                states.append((torch.get_rng_state(), torch.cuda.get_rng_state() if on_cuda else None))
                parts.append(self.embed(**chunk))
                chunks.append(chunk)
        anchor = torch.zeros((), requires_grad=True)  # gives autograd a reason to call backward
        return _CachedEmbeddings.apply(anchor, self.embed, chunks, states, torch.cat(parts), autocast_state)

    def forward(self, input_ids, attention_mask, role, scores=None, token_type_ids=None, negative_of=None):
        tensors = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            tensors["token_type_ids"] = token_type_ids
        emb = self._embed_all(tensors, role)  # (N, d), rows in the order of the batch
        a, p, n = emb[role == 0], emb[role == 1], emb[role == 2]
        # Similarities in fp32 even under autocast: at scale 20 bf16 logits are off by ~0.1.
        with torch.autocast(emb.device.type, enabled=False):
            a, p, n = a.float(), p.float(), n.float()
            if self.loss == "infonce":
                loss = info_nce_sum(a, p, n, scale=self.scale, symmetric=self.symmetric)
            elif self.loss == "triplet":
                # The first negative of each row (negative_of: the row each negative belongs to);
                # rows without a negative add nothing.
                first = {}
                for k, row in enumerate(negative_of.tolist() if negative_of is not None else []):
                    first.setdefault(row, k)
                rows = sorted(first)
                loss = (
                    triplet_sum(a[rows], p[rows], n[[first[r] for r in rows]], margin=self.margin)
                    if rows
                    else a.sum() * 0
                )
            elif self.loss == "cosent":
                loss = cosent_sum(a, p, scores, scale=self.scale)
            else:
                loss = cosine_mse_sum(a, p, scores)
        return loss, role.new_tensor(a.shape[0])
