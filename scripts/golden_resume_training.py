#!/usr/bin/python3
"""Writes tests/golden/resume_training.out: what examples/resume_training must print, every
number computed by real PyTorch running the lesson's exercise 2 with mini-batches (batch 8,
shuffled by DataLoader with generator=torch.Generator().manual_seed(42)): 100 epochs straight,
then 50 epochs, a checkpoint (with the loader's generator state), a fresh model, 50 more.

    /usr/bin/python3 scripts/golden_resume_training.py     # Debian's python3-torch (1.13)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)
out = []


def say(line=""):
    out.append(line)


weight, bias = 0.7, 0.3
X = torch.arange(0, 1, 0.02).unsqueeze(dim=1)
y = weight * X + bias
tr, va = int(0.7 * len(X)), int(0.85 * len(X))
X_train, y_train = X[:tr], y[:tr]
X_val, y_val = X[tr:va], y[tr:va]
X_test, y_test = X[va:], y[va:]
say("Train: %d, Val: %d, Test: %d (mini-batches of 8, shuffled)" % (len(X_train), len(X_val),
                                                                   len(X_test)))


class LinearRegressionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1))
        self.bias = nn.Parameter(torch.randn(1))

    def forward(self, x):
        return self.weight * x + self.bias


class Training:
    def __init__(self):
        self.model = LinearRegressionModel()
        self.criterion = nn.MSELoss()
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.01)
        self.loader = DataLoader(TensorDataset(X_train, y_train), batch_size=8, shuffle=True,
                                 generator=torch.Generator().manual_seed(42))
        self.epoch = 0
        self.train_losses, self.val_losses = [], []

    def run_to(self, last):
        while self.epoch < last:
            self.model.train()
            loss_sum, batches = 0.0, 0
            for xb, yb in self.loader:
                loss = self.criterion(self.model(xb), yb)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.item()
                batches += 1
            self.model.eval()
            with torch.no_grad():
                val_loss = self.criterion(self.model(X_val), y_val).item()
            self.train_losses.append(loss_sum / batches)
            self.val_losses.append(val_loss)
            if self.epoch % 20 == 0:
                say("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f"
                    % (self.epoch, self.train_losses[-1], val_loss))
            self.epoch += 1

    def report(self):
        self.model.eval()
        with torch.no_grad():
            test_loss = self.criterion(self.model(X_test), y_test).item()
        say("  Learned weight: %.4f, bias: %.4f, test loss: %.6f"
            % (self.model.weight.item(), self.model.bias.item(), test_loss))


say()
say("Straight run, 100 epochs:")
torch.manual_seed(42)
straight = Training()
straight.run_to(100)
straight.report()

say()
say("Interrupted run, 50 epochs:")
torch.manual_seed(42)
first = Training()
first.run_to(50)
checkpoint = {
    "epoch": first.epoch,
    "model_state_dict": first.model.state_dict(),
    "optimizer_state_dict": first.optimizer.state_dict(),
    "train_loss": first.train_losses[-1],
    "val_loss": first.val_losses[-1],
    "rng_state": torch.get_rng_state(),
    "loader_generator": first.loader.generator.get_state(),
    "train_losses": list(first.train_losses),
    "val_losses": list(first.val_losses),
}
say("Checkpoint saved to 'checkpoint.tar' (epoch %d, step %d)" % (first.epoch, first.epoch * 5))
del first

say()
say("Resumed from checkpoint.tar (epoch %d, train loss %.4f, val loss %.4f):"
    % (checkpoint["epoch"], checkpoint["train_loss"], checkpoint["val_loss"]))
resumed = Training()
resumed.model.load_state_dict(checkpoint["model_state_dict"])
resumed.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
torch.set_rng_state(checkpoint["rng_state"])
resumed.loader.generator.set_state(checkpoint["loader_generator"])
resumed.epoch = checkpoint["epoch"]
resumed.train_losses = checkpoint["train_losses"]
resumed.val_losses = checkpoint["val_losses"]
resumed.run_to(100)
resumed.report()

same = (all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(),
                                               straight.model.parameters()))
        and resumed.train_losses == straight.train_losses
        and resumed.val_losses == straight.val_losses)
if not same:
    sys.exit("PyTorch's own resume differs from its straight run")
say()
say("Resumed run vs straight run, bit for bit:")
say("  parameters:        identical")
say("  optimizer state:   identical")
say("  losses per epoch:  identical")
say("  data loader state: identical")
say("identical: yes")

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                    "resume_training.out")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", os.path.normpath(path))
