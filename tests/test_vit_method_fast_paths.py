"""The fast paths of the ViT methods (issue 14) equal the plain ones: iBOT's patch loss from the student's
logits at the masked patches only, and the math attention kernel ViT blocks train with on a CPU."""
from contextlib import nullcontext

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from selfsup.backbones import build_backbone
from selfsup.losses.distillation import masked_patch_distillation, masked_patch_distillation_at_masks
from selfsup.backbones import vit
from selfsup.methods import build_method


def test_patch_loss_at_masks_equals_the_plain_loss_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    b, n, k = 3, 6, 5  # per view; two views concatenated along the batch, as iBOT's global crops
    student = torch.randn(2 * b, n, k, generator=gen, requires_grad=True)
    teacher = torch.randn(2 * b, n, k, generator=gen)
    mask = torch.rand(2 * b, n, generator=gen) < 0.4
    mask[1] = False  # an image with no masked patch contributes 0
    mask[0, 0] = True
    center = torch.randn(1, k, generator=gen)
    plain = masked_patch_distillation(list(student.chunk(2)), list(teacher.chunk(2)), list(mask.chunk(2)), center,
                                      student_temp=0.2, teacher_temp=0.07)
    (plain_grad,) = torch.autograd.grad(plain, student)
    fast = masked_patch_distillation_at_masks(student[mask], teacher, mask, center, student_temp=0.2,
                                              teacher_temp=0.07)
    (fast_grad,) = torch.autograd.grad(fast, student)
    assert fast.item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(fast_grad, plain_grad, atol=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        masked_patch_distillation_at_masks(student[mask][1:], teacher, mask, center)


@pytest.mark.parametrize("name", ["lejepa", "ibot"])
def test_methods_loss_and_gradients_with_the_math_attention_equal_the_default_kernel(name, monkeypatch):
    torch.manual_seed(0)
    backbone = build_backbone("vit_micro_cpu", 3, img_size=16, embed_dim=32, depth=2, num_heads=2)
    options = {"lejepa": {"num_slices": 16, "projector_hidden_dim": 32, "num_local_crops": 2, "local_size": 8},
               "ibot": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2, "local_size": 8}}
    method = build_method(name, backbone, options[name]).eval()  # centres and BN statistics stay as they are
    gen = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, 16, 16, generator=gen) for _ in range(2)] + [torch.randn(4, 3, 8, 8, generator=gen)
                                                                          for _ in range(2)]
    mask = torch.rand(4, 2, 16, generator=gen) < 0.3
    batch = {"views": views, "masks": {"mask": mask}}
    assert not isinstance(vit.attention_kernel(views[0]), nullcontext)  # on a CPU, with gradients: the math kernel
    with torch.no_grad():  # teachers and evaluation keep torch's (faster) fused kernel
        assert isinstance(vit.attention_kernel(views[0]), nullcontext)

    def loss_and_grads():
        loss = method(batch).loss
        return loss, torch.autograd.grad(loss, [p for p in method.parameters() if p.requires_grad], allow_unused=True)

    math_loss, math_grads = loss_and_grads()
    monkeypatch.setattr(vit, "attention_kernel", lambda x: nullcontext())  # the backbone's blocks: torch's choice
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # the fused kernel torch picks on a CPU by default
        flash_loss, flash_grads = loss_and_grads()
    assert math_loss.item() == pytest.approx(flash_loss.item(), rel=1e-5)
    for a, b in zip(math_grads, flash_grads):
        assert (a is None) == (b is None)
        if a is not None:  # float rounding of two summation orders, relative to the gradient's size
            assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7
