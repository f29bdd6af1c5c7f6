"""The VideoBERT encoder: BERT over one vocabulary of WordPiece tokens followed by visual words.

Plain PyTorch (no Lightning); the layout is BERT's, so a Hugging Face BERT checkpoint maps onto it tensor
by tensor (`pretrained.py` holds the name table). Attention is PyTorch SDPA; padding is removed outside attention; the LM head
scores masked positions only. With `feature_dim` > 0 (CBT) clips enter as projected features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


@dataclass
class VideoBertConfig:
    text_vocab_size: int  # WordPiece ids come first ...
    visual_vocab_size: int  # ... then visual words: id = text_vocab_size + word
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512  # the longest [CLS] text [>] visual [SEP] sequence
    type_vocab_size: int = 2  # segment 0: text, 1: video
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    checkpointing: bool = False  # activation checkpointing per layer: less memory, ~30% more compute
    feature_dim: int = 0  # CBT: > 0 feeds clip features (projected) at visual positions instead of words
    visual_groups: tuple[int, ...] = ()  # factorised visual words: each group's vocabulary size (see factorised.py)
    untie_visual_output: bool = False  # visual words scored by their own output matrix, not their input embeddings

    def __post_init__(self):
        self.visual_groups = tuple(int(n) for n in self.visual_groups)
        if self.visual_groups and (self.feature_dim or int(np.prod(self.visual_groups)) != self.visual_vocab_size):
            raise ValueError(f"visual_groups {self.visual_groups}: their product must be visual_vocab_size "
                             f"({self.visual_vocab_size}), and CBT (feature_dim > 0) has no visual words")
        if self.untie_visual_output and self.feature_dim:
            raise ValueError("untie_visual_output: CBT (feature_dim > 0) has no visual-word output to untie")

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.visual_vocab_size


class Embeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout (as in BERT)."""

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        groups = cfg.visual_groups  # factorised: a clip's embedding is the sum of its groups' code embeddings
        self.word_embeddings = nn.Embedding(cfg.text_vocab_size if groups else cfg.vocab_size, cfg.hidden_size)
        self.group_embeddings = nn.ModuleList(nn.Embedding(n, cfg.hidden_size) for n in groups) if groups else None
        if groups:
            from .factorised import product_strides

            self.register_buffer("group_strides", torch.as_tensor(product_strides(groups)), persistent=False)
            self.register_buffer("group_sizes", torch.tensor(groups, dtype=torch.long), persistent=False)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.text_vocab_size = cfg.text_vocab_size
        self.visual_proj = nn.Linear(cfg.feature_dim, cfg.hidden_size) if cfg.feature_dim else None

    def forward(self, input_ids, segment_ids, visual_features=None):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        tokens = self.word_embeddings(input_ids) if self.group_embeddings is None else self.factorised(input_ids)
        if visual_features is not None:  # CBT: a clip's projected features replace its placeholder token;
            clip = input_ids >= self.text_vocab_size  # a masked clip ([MASK]) keeps the [MASK] embedding
            tokens = torch.where(clip[..., None], self.visual_proj(visual_features.to(tokens.dtype)), tokens)
        x = tokens + self.position_embeddings(pos) + self.token_type_embeddings(segment_ids)
        return self.dropout(self.LayerNorm(x))

    def codes(self, words: torch.Tensor) -> torch.Tensor:
        """(...) product-space visual words -> (..., groups) each group's code."""
        return words[..., None] // self.group_strides % self.group_sizes

    def factorised(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text ids embedded as usual; a visual id as the sum of its groups' code embeddings."""
        visual = input_ids >= self.text_vocab_size
        tokens = self.word_embeddings(input_ids.masked_fill(visual, 0))
        codes = self.codes((input_ids - self.text_vocab_size).clamp_min(0))
        clips = sum(table(codes[..., g]) for g, table in enumerate(self.group_embeddings))
        return torch.where(visual[..., None], clips, tokens)


class SelfAttention(nn.Module):
    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.n_head, self.p = cfg.num_heads, cfg.dropout
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x, real, shape, attn_mask):
        """x: (N, C) states of the real tokens only; `real`: their flat indices in the padded (B, T) batch."""
        b, t = shape
        c = x.shape[-1]

        def padded(y):  # (N, C) -> (B, nh, T, hs), zeros at padding (in y's dtype: autocast may have changed it)
            return y.new_zeros(b * t, c).index_copy(0, real, y).view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

        q, k, v = (padded(proj(x)) for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.p if self.training else 0.0)
        return self.dense(y.transpose(1, 2).reshape(b * t, c)[real])


class Layer(nn.Module):
    """A post-LayerNorm BERT block: attention and MLP, each with residual, dropout and LayerNorm."""

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.output_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, real, shape, attn_mask):
        x = self.attention_norm(x + self.dropout(self.attention(x, real, shape, attn_mask)))
        return self.output_norm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))


class VideoBert(nn.Module):
    """Encoder + the three pretraining heads: token prediction (text and visual words) and alignment."""

    def __init__(self, cfg: VideoBertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)  # [CLS] -> tanh -> alignment
        self.align_head = nn.Linear(cfg.hidden_size, 2)  # 1: the text belongs to the video
        self.lm_transform = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.lm_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # decoder weights tied to the (text, then visual or each group's) embeddings
        self.lm_bias = nn.Parameter(torch.zeros(cfg.text_vocab_size + sum(cfg.visual_groups) if cfg.visual_groups
                                                else cfg.vocab_size))
        if cfg.feature_dim:  # CBT: a masked clip's state -> a prediction compared with projected clips (NCE)
            self.nce_head = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        if cfg.untie_visual_output:  # one output matrix per group of factorised words, else one for all words
            self.visual_decoders = nn.ParameterList(nn.Parameter(torch.randn(n, cfg.hidden_size) * 0.02)
                                                    for n in cfg.visual_groups or (cfg.visual_vocab_size,))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_visual_embeddings(self, centroids) -> None:
        """Initialize the visual-word embeddings from their k-means centroids (V, D), as the paper does:
        projected onto their top principal directions (D -> hidden) and scaled to the embedding std.
        Factorised words: a list of each group's centroids, one embedding table each."""
        if self.cfg.visual_groups:
            tables = [table.weight for table in self.embeddings.group_embeddings]
            projected = [self._project(torch.as_tensor(c)) for c in centroids]
        else:
            tables = [self.embeddings.word_embeddings.weight[self.cfg.text_vocab_size:]]
            projected = [self._project(torch.as_tensor(centroids))]
        for g, (table, p) in enumerate(zip(tables, projected)):
            table.copy_(p)
            if self.cfg.untie_visual_output:  # the output matrix starts where the input embeddings do
                self.visual_decoders[g].copy_(p)

    def _project(self, centroids: torch.Tensor) -> torch.Tensor:
        c = centroids.float() - centroids.float().mean(0)
        n = min(self.cfg.hidden_size, *c.shape)
        _, _, v = torch.linalg.svd(c, full_matrices=False)
        proj = torch.zeros(len(c), self.cfg.hidden_size)
        proj[:, :n] = c @ v[:n].T
        return proj * (0.02 / proj[:, :n].std().clamp_min(1e-8))

    def forward(self, input_ids, segment_ids, attention_mask, visual_features=None, separate_modalities=False):
        """(B, T) ids, segments and bool mask (True = real token) -> hidden states (B, T, C), zero at padding.
        `visual_features` (B, T, D): CBT's continuous clip inputs. `separate_modalities`: text and video
        positions do not attend to each other (two unimodal encodings in one pass).

        Padding is removed before the layers: projections, MLP and LayerNorms run on the real tokens only
        (VideoBERT batches mix text-only, video-only and paired sequences, so often ~40% is padding); only
        attention sees the padded (B, nh, T, hs) layout."""
        b, t = input_ids.shape
        x = self.embeddings(input_ids, segment_ids, visual_features).view(b * t, -1)
        real = attention_mask.reshape(-1).nonzero().squeeze(1)
        x = x[real]  # (N, C)
        attn_mask = attention_mask[:, None, None, :]  # (B, 1, 1, T): every query sees the real keys
        if separate_modalities:  # (B, 1, T, T): ... of its own segment only
            attn_mask = attn_mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
        for layer in self.layers:
            x = self.checkpointed(layer, x, real, (b, t), attn_mask)
        return x.new_zeros(b * t, x.shape[-1]).index_copy(0, real, x).view(b, t, -1)

    def checkpointed(self, layer: nn.Module, *args):
        """A layer, with activation checkpointing when `cfg.checkpointing` (less memory, one more forward)."""
        if self.cfg.checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def token_logits(self, hidden: torch.Tensor, vocab: slice | torch.Tensor | None = None) -> torch.Tensor:
        """(M, C) hidden states of selected positions -> (M, V) logits over `vocab` (a slice or index
        tensor of token ids; default: all)."""
        h = self.lm_norm(F.gelu(self.lm_transform(hidden)))
        vocab = slice(0, self.cfg.vocab_size) if vocab is None else vocab
        if self.cfg.visual_groups and isinstance(vocab, slice) and (vocab.start or 0) >= self.cfg.text_vocab_size:
            return self._group_logprobs(h, vocab)
        return h @ self._output_weights(vocab).T + self.lm_bias[vocab]

    def _output_weights(self, vocab: slice | torch.Tensor) -> torch.Tensor:
        """The output rows of the token ids `vocab`: tied to the input embeddings, except visual words with
        `untie_visual_output`."""
        table, n = self.embeddings.word_embeddings.weight, self.cfg.text_vocab_size
        if not self.cfg.untie_visual_output or self.cfg.visual_groups:  # (factorised: only text ids come here)
            return table[vocab]
        visual = self.visual_decoders[0]
        if isinstance(vocab, slice) and (vocab.start or 0) >= n:
            return visual[vocab.start - n:vocab.stop - n]
        if (vocab.stop if isinstance(vocab, slice) else int(vocab.max()) + 1) <= n:
            return table[vocab]
        return torch.cat([table[:n], visual])[vocab]

    def group_logits(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Factorised words: (M, C) hidden states -> each group's (M, size_g) logits (the pretraining loss's
        softmaxes, without the product space)."""
        return self._group_logits(self.lm_norm(F.gelu(self.lm_transform(hidden))))

    def _group_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], self.cfg.text_vocab_size
        untied = self.cfg.untie_visual_output
        for g, table in enumerate(self.embeddings.group_embeddings):
            weight = self.visual_decoders[g] if untied else table.weight
            out.append(h @ weight.T + self.lm_bias[offset:offset + table.num_embeddings])
            offset += table.num_embeddings
        return out

    def _group_logprobs(self, h: torch.Tensor, vocab: slice) -> torch.Tensor:
        """Factorised words: one softmax per group; a word's log-probability is the sum of its codes' (so
        cross-entropy over the words is the sum of the groups' cross-entropies)."""
        n = self.cfg.text_vocab_size
        codes = self.embeddings.codes(torch.arange(vocab.start - n, vocab.stop - n, device=h.device))  # (V, G)
        return sum(logits.float().log_softmax(-1)[:, codes[:, g]] for g, logits in enumerate(self._group_logits(h)))

    def align_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, 2) alignment logits from [CLS]."""
        return self.align_head(torch.tanh(self.pooler(hidden[:, 0])))
