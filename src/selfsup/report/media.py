"""How the report shows a sample of the field kinds ``audio`` and ``video``: a sound as its evaluation log-mel
spectrogram (low frequencies at the bottom), a video as four evenly spaced frames in a 2 x 2 square (first frame
top left, reading order); any other sample as the evaluation transform's centre square."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.data.audio_frontend import audio_eval_view
from selfsup.fields import AUDIO, VIDEO
from selfsup.report.images import center_square
from selfsup.views.dataset import viewed_field

STRIP_FRAMES = 4  # a 2 x 2 square: report thumbnails are square


def frame_strip(video: torch.Tensor, size: int) -> torch.Tensor:
    """(C, T, H, W) -> (C, size, size): four evenly spaced frames, each size / 2 square, in reading order."""
    picks = torch.linspace(0, video.shape[1] - 1, STRIP_FRAMES).round().long()
    chosen = video[:, picks].float().transpose(0, 1)  # (frames, C, H, W)
    if video.dtype == torch.uint8:
        chosen = chosen / 255
    half = max(1, size // 2)
    chosen = F.interpolate(chosen, size=(half, half), mode="bilinear", align_corners=False, antialias=True)
    rows = [torch.cat(list(chosen[r:r + 2]), dim=-1) for r in (0, 2)]
    return torch.cat(rows, dim=-2).clamp(0, 1)


def shown_input(source, index: int, size: int) -> torch.Tensor:
    """Sample ``index`` of ``source`` as a picture (C, H, W) for the report."""
    value, kind = source.get_image(index), viewed_field(source)[1]
    if kind == AUDIO.name:
        return audio_eval_view(value, size).flip(-2)
    if kind == VIDEO.name:
        return frame_strip(value, size)
    return center_square(value, size)


__all__ = ["frame_strip", "shown_input"]
