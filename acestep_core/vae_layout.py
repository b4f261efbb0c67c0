"""The Oobleck VAE's convolutions in the channels-last layout (docs/performance.md).

diffusers' Oobleck runs 1-D convolutions on [B, C, L] tensors. On the CPU oneDNN computes them in a
channels-last layout, so every bfloat16 1-D convolution copies its input into that layout and back;
those copies took a third of a bfloat16 decode. The same product written as a 2-D convolution over
[B, C, 1, L] channels-last tensors, with the weight laid out channels-last once at load, needs no
copy, and a bfloat16 decode runs about four times faster than before. The activations stay
channels-last from one convolution to the next (the Snake activations and the residual sums keep the
layout). The products are the same, but other kernels sum them in another order, so `load_vae`
installs this for bfloat16 / float16 only and float32 keeps the official kernels bit for bit.

Weight norm is folded into a plain weight here, once: its weight never changes at inference, and the
official decode computes the same `g * v / |v|`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CL = torch.channels_last


class ChannelsLastConv1d(nn.Module):
    """A Conv1d / ConvTranspose1d run as its 2-D twin on channels-last [B, C, 1, L]."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d):
        super().__init__()
        try:
            torch.nn.utils.remove_weight_norm(conv)
        except ValueError:  # a conv without weight norm
            pass
        weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=CL)
        conv.weight = nn.Parameter(weight.squeeze(2), requires_grad=False)  # [O, I, K] with I innermost
        self.conv = conv
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        self.pointwise = (not self.transposed and conv.kernel_size == (1,) and conv.stride == (1,)
                          and conv.padding == (0,) and conv.groups == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if self.pointwise:
            # A 1x1 convolution is a product over channels; as a 2-D convolution its output would come
            # back channel-major (its weight reads as either layout), so it runs as that product.
            return F.linear(x.transpose(1, 2), conv.weight.squeeze(2), conv.bias).transpose(1, 2)
        x4 = x.unsqueeze(2)
        if not x4.is_contiguous(memory_format=CL):
            x4 = x4.contiguous(memory_format=CL)
        weight = conv.weight.unsqueeze(2)
        if not weight.is_contiguous(memory_format=CL):  # e.g. a weight replaced after the install
            weight = weight.contiguous(memory_format=CL)
        (stride,), (padding,), (dilation,) = conv.stride, conv.padding, conv.dilation
        if self.transposed:
            (output_padding,) = conv.output_padding
            y = F.conv_transpose2d(x4, weight, conv.bias, (1, stride), (0, padding), (0, output_padding),
                                   conv.groups, (1, dilation))
        else:
            y = F.conv2d(x4, weight, conv.bias, (1, stride), (0, padding), (1, dilation), conv.groups)
        return y.squeeze(2)


def _convertible(module: nn.Module) -> bool:
    return type(module) in (nn.Conv1d, nn.ConvTranspose1d) and module.padding_mode == "zeros" \
        and isinstance(module.padding, tuple)


def channels_last_convs(model: nn.Module) -> int:
    """Replace every plain 1-D convolution of `model` by its channels-last twin; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _convertible(child):
                setattr(parent, name, ChannelsLastConv1d(child))
                count += 1
    return count
