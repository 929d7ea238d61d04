"""Task-specific adapters (paper 3.1.2, App. D): two layers that map the 32
Q-Former query outputs to the width a generative head reads.

- ``text_adapter`` (f_theta, Eq. 6): queries -> the LLM's token-embedding
  width, used as a soft prompt;
- ``image_adapter`` (f_zeta, Eq. 7): queries -> the U-Net's cross-attention width.
"""

from __future__ import annotations

import torch
from torch import nn


class QueryAdapter(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear, applied to each query: (B, Q, d) -> (B, Q, out)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or out_dim
        self.in_dim, self.out_dim = in_dim, out_dim
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(queries))))
