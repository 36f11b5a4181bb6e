"""Train a small CNN on scikit-learn's bundled handwritten digits (8x8, no download) and export
it to fixtures/ for the accuracy benchmark (tools/bench_digits.py) and the tests.

The network has residual (Add) and concat paths so that the channel groups matter:
    stem conv -> [conv-bn-relu, conv-bn] + stem -> relu      (residual)
    -> [conv 1x1 | conv 3x3] concat -> conv stride 2 -> GAP -> Gemm

Writes fixtures/digits_cnn.onnx, fixtures/digits_calibration.npz (64 training images) and
fixtures/digits_test.npz (held-out images and labels). Needs torch and scikit-learn (tools only).

    python tools/train_digits.py [--epochs 60]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

ROOT = Path(__file__).resolve().parent.parent


class DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.res = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
        )
        self.branch1 = nn.Sequential(nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.branch3 = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(48, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = torch.relu(s + self.res(s))
        y = torch.cat([self.branch1(y), self.branch3(y)], dim=1)
        y = self.down(y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "fixtures"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    x = (x - 0.3) / 0.4
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = DigitsNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    out = Path(args.out)
    torch.onnx.export(
        model,
        torch.from_numpy(x_test[:1]),
        str(out / "digits_cnn.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )
    np.savez(out / "digits_calibration.npz", input=x_train[:64])
    np.savez(out / "digits_test.npz", input=x_test, labels=y_test)
    print(f"held-out top-1 accuracy {acc:.4f} ({len(y_test)} images); wrote {out / 'digits_cnn.onnx'}")


if __name__ == "__main__":
    main()
