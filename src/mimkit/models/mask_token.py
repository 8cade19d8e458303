"""Putting the mask token in place of the masked patch tokens, shared by every backbone."""

from __future__ import annotations

import torch
from torch import Tensor


def put_mask_token(tokens: Tensor, mask: Tensor, token: Tensor) -> Tensor:
    """``tokens [..., D]`` with the mask token ``token [1, D]`` where ``mask [...]`` (the
    tokens' shape without the last dimension).

    A floating ``mask`` holds exactly 0 or 1 and may carry a straight-through gradient (the
    adversarial policy's, ``mimkit/masking/straight_through.py``): the output's values are
    those of the hard mask, and ``(m - sg(m)) * sg(token - tokens)``, zero in value, gives
    the mask the gradient of the mixing ``e + m (token - e)`` without changing any other
    gradient."""
    token = token.to(tokens.dtype)
    if mask.dtype == torch.bool:
        return torch.where(mask.unsqueeze(-1), token, tokens)
    hard = mask.detach() > 0.5
    out = torch.where(hard.unsqueeze(-1), token, tokens)
    through = (mask - mask.detach()).unsqueeze(-1).to(tokens.dtype)
    return out + through * (token - tokens).detach()
