"""lightly's SimCLR pipeline, run the way lightly's PyTorch example runs it, timed (side-by-side benchmark).

Runs in the separate benchmark environment made by ``benchmarks/lightly_side_by_side.py --setup`` (lightly
is never a dependency of selfsup). The pipeline is the one of lightly's ``examples/pytorch/simclr.py``:
a torchvision ResNet-18 without its classifier as backbone, ``SimCLRProjectionHead(512, 512, 128)``,
``SimCLRTransform(input_size=32, gaussian_blur=0.0)`` applied per image in DataLoader workers,
``NTXentLoss()``, SGD with lr 0.06, a plain PyTorch loop in fp32. The dataset is the CIFAR-10 JPEG folder read
with ``LightlyDataset`` (the example's folder variant; its CIFAR-10 variant downloads, which this machine
must not do). Batch size and workers come from the command line so both pipelines run the same batch.

Prints one JSON line: images/s over the measured steps (after warm-up) and the step-time split.

With ``--budget-s`` it trains instead for that many wall-clock seconds (epoch after epoch, as the example's
loop would with enough epochs; the clock starts before the first batch, so the DataLoader's start-up counts, as
it does for selfsup's budget) and ``--save`` writes the ResNet-18's weights without its classifier, in
torchvision's names, for ``selfsup eval --backbone resnet18 --weights`` (benchmarks/time_to_accuracy.py).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8)  # the example's value
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=None, help="train for this many seconds instead")
    parser.add_argument("--save", default=None, help="with --budget-s: write the backbone's weights here")
    args = parser.parse_args()

    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms.simclr_transform import SimCLRTransform

    torch.manual_seed(args.seed)

    class SimCLR(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(512, 512, 128)

        def forward(self, x):
            return self.projection_head(self.backbone(x).flatten(start_dim=1))

    resnet = torchvision.models.resnet18()
    model = SimCLR(nn.Sequential(*list(resnet.children())[:-1]))
    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    dataset = LightlyDataset(input_dir=args.data, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers)
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    if args.budget_s is not None:
        train_for_budget(model, resnet, loader, criterion, optimizer, args)
        return

    data_wait = compute = 0.0
    measured = 0
    start = None
    tick = time.perf_counter()
    for step, ((x0, x1), _, _) in enumerate(loader):
        got_batch = time.perf_counter()
        if step == args.warmup:
            start, data_wait, compute = tick, 0.0, 0.0
        z0, z1 = model(x0), model(x1)
        loss = criterion(z0, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        done = time.perf_counter()
        data_wait += got_batch - tick
        compute += done - got_batch
        tick = done
        if step >= args.warmup:
            measured += 1
        if measured == args.steps:
            break
    wall = time.perf_counter() - start
    print(json.dumps({"pipeline": "lightly", "lightly_version": __import__("lightly").__version__,
                      "images_per_s": measured * args.batch_size / wall, "steps": measured,
                      "step_time_s": wall / measured, "data_wait_percent": 100 * data_wait / wall,
                      "compute_percent": 100 * compute / wall, "loss": float(loss),
                      "torch_threads": torch.get_num_threads(), "workers": args.workers}))


def train_for_budget(model, resnet, loader, criterion, optimizer, args) -> None:
    from safetensors.torch import save_file

    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < args.budget_s:
        for (x0, x1), _, _ in loader:
            loss = criterion(model(x0), model(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps += 1
            if time.perf_counter() - start >= args.budget_s:
                break
    wall = time.perf_counter() - start
    if args.save:
        weights = {k: v.contiguous() for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        save_file(weights, args.save)
    images = steps * args.batch_size
    print(json.dumps({"pipeline": "lightly", "lightly_version": __import__("lightly").__version__,
                      "budget_s": args.budget_s, "wall_time_s": round(wall, 1), "steps": steps,
                      "epochs": round(images / len(loader.dataset), 2), "images_per_s": round(images / wall, 1),
                      "loss": float(loss.detach()), "torch_threads": torch.get_num_threads(), "workers": args.workers,
                      "batch_size": args.batch_size}))


if __name__ == "__main__":
    main()
