#!/usr/bin/python3
"""Writes tests/golden/{multiple_models,compare_optimizers,minibatch_training}.out: what the
examples of the lesson's exercises 1, 3 and 5 must print, every number computed by real PyTorch
running the same exercise on the lesson's data and seed (shared/seed/saving_and_loading_models.md),
with each model saved by torch.save and loaded back by torch.load as the examples do.

    /usr/bin/python3 scripts/golden_examples.py     # Debian's python3-torch (1.13)
"""
import os
import tempfile

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
folder = tempfile.mkdtemp()

weight, bias = 0.7, 0.3
X = torch.arange(0, 1, 0.02).unsqueeze(dim=1)
y = weight * X + bias
tr, va = int(0.7 * len(X)), int(0.85 * len(X))
X_train, y_train = X[:tr], y[:tr]
X_val, y_val = X[tr:va], y[tr:va]
X_test, y_test = X[va:], y[va:]
new_data = torch.tensor([[0.25], [0.5], [0.75]])
criterion = nn.MSELoss()


class LinearRegressionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1))
        self.bias = nn.Parameter(torch.randn(1))

    def forward(self, x):
        return self.weight * x + self.bias


def full_batch(model, optimizer, epochs, out):
    """The lesson's loop; prints every 20th epoch into `out`."""
    for epoch in range(epochs):
        model.train()
        loss = criterion(model(X_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = criterion(model(X_val), y_val)
        if epoch % 20 == 0 and out is not None:
            out.append("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f"
                       % (epoch, loss.item(), val_loss.item()))
    return val_loss.item()


def save_and_load(model, name):
    path = os.path.join(folder, name)
    torch.save(model.state_dict(), path)
    loaded = LinearRegressionModel()
    loaded.load_state_dict(torch.load(path))
    loaded.eval()
    return loaded


def table_row(name, width, model):
    with torch.no_grad():
        p = model(new_data)
        test_loss = criterion(model(X_test), y_test).item()
    line = ("  %-" + str(width) + "s %8.4f %8.4f %10.4f %10.4f %10.4f %11.6f") % (
        name, model.weight.item(), model.bias.item(), p[0].item(), p[1].item(), p[2].item(),
        test_loss)
    return line, test_loss


def true_row(name, width):
    # The examples compute these in float (multiple_models) or double (compare_optimizers); both
    # print the same four decimals.
    return ("  %-" + str(width) + "s %8.4f %8.4f %10.4f %10.4f %10.4f") % (
        name, weight, bias, weight * 0.25 + bias, weight * 0.5 + bias, weight * 0.75 + bias)


def header(first, width):
    return ("  %-" + str(width) + "s %8s %8s %10s %10s %10s %11s") % (
        first, "weight", "bias", "X = 0.25", "X = 0.50", "X = 0.75", "test loss")


def write(name, out):
    path = os.path.join(root, "tests", "golden", name + ".out")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", os.path.normpath(path), "(torch %s)" % torch.__version__)


# Exercise 1: examples/multiple_models.cpp
out = ["Train: %d, Val: %d, Test: %d" % (len(X_train), len(X_val), len(X_test))]
learning_rates = [0.001, 0.01, 0.1]
for lr in learning_rates:
    torch.manual_seed(42)
    model = LinearRegressionModel()
    optimizer = optim.SGD(model.parameters(), lr=lr)
    out += ["", "Training with lr = %g for 100 epochs..." % lr]
    full_batch(model, optimizer, 100, out)
    torch.save(model.state_dict(), os.path.join(folder, "model_lr_%g.pth" % lr))
    out.append("Model saved to 'model_lr_%g.pth'" % lr)
torch.manual_seed(0)
out += ["", "Loaded models, predictions for new data and test loss:", header("lr", 7)]
best = None
for lr in learning_rates:
    loaded = LinearRegressionModel()
    loaded.load_state_dict(torch.load(os.path.join(folder, "model_lr_%g.pth" % lr)))
    loaded.eval()
    line, test_loss = table_row("%g" % lr, 7, loaded)
    out.append(line)
    if best is None or test_loss < best[1]:
        best = (lr, test_loss)
out.append(true_row("true", 7))
out += ["", "Lowest test loss: lr = %g (%.6f)" % best, "",
        "Figure saved to multiple_models.svg, losses to multiple_models.csv"]
write("multiple_models", out)

# Exercise 3: examples/compare_optimizers.cpp
out = ["Train: %d, Val: %d, Test: %d" % (len(X_train), len(X_val), len(X_test))]
loaded = {}
for name, title, make in [("sgd", "SGD", optim.SGD), ("adam", "Adam", optim.Adam)]:
    torch.manual_seed(42)
    model = LinearRegressionModel()
    optimizer = make(model.parameters(), lr=0.01)
    out += ["", "Training with %s (lr = 0.01) for 100 epochs..." % title]
    full_batch(model, optimizer, 100, out)
    out.append("Model saved to 'model_%s.pth'" % name)
    loaded[title] = save_and_load(model, "model_%s.pth" % name)
out += ["", "Loaded models, predictions for new data and test loss:", header("optimizer", 9)]
losses = {}
for title, model in loaded.items():
    line, losses[title] = table_row(title, 9, model)
    out.append(line)
out.append(true_row("true", 9))
better = "Adam" if losses["Adam"] < losses["SGD"] else "SGD"
out += ["", "Lower test loss: %s (%.6f)" % (better, losses[better]), "",
        "Figure saved to compare_optimizers.svg, losses to compare_optimizers.csv"]
write("compare_optimizers", out)

# Exercise 5: examples/minibatch_training.cpp
loader = DataLoader(TensorDataset(X_train, y_train), batch_size=8, shuffle=True,
                    generator=torch.Generator().manual_seed(42))
out = ["Train: %d, Val: %d, Test: %d" % (len(X_train), len(X_val), len(X_test)),
       "Mini-batches of 8, shuffled: %d batches per epoch" % len(loader), "",
       "Training for 100 epochs..."]
torch.manual_seed(42)
model = LinearRegressionModel()
optimizer = optim.SGD(model.parameters(), lr=0.01)
steps = 0
for epoch in range(100):
    model.train()
    loss_sum, samples = 0.0, 0
    for xb, yb in loader:
        loss = criterion(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        # The epoch's loss is the mean over its samples: batches weighted by their size.
        loss_sum += loss.item() * len(xb)
        samples += len(xb)
    model.eval()
    with torch.no_grad():
        val_loss = criterion(model(X_val), y_val).item()
    if epoch % 20 == 0:
        out.append("Epoch %3d: Train Loss = %.4f, Val Loss = %.4f"
                   % (epoch, loss_sum / samples, val_loss))
out += ["History saved to 'minibatch_training.csv'", "Model saved to 'minibatch_model.pth'"]
loaded = save_and_load(model, "minibatch_model.pth")
torch.manual_seed(42)
lesson = LinearRegressionModel()
full_batch(lesson, optim.SGD(lesson.parameters(), lr=0.01), 100, None)
lesson.eval()
with torch.no_grad():
    test_loss = criterion(loaded(X_test), y_test).item()
    lesson_test_loss = criterion(lesson(X_test), y_test).item()
    predictions = loaded(new_data)
out += ["", "Final Results (true: weight %g, bias %g):" % (weight, bias),
        "  %-22s %8s %8s %11s %6s" % ("", "weight", "bias", "test loss", "steps"),
        "  %-22s %8.4f %8.4f %11.6f %6d" % ("mini-batch (loaded)", loaded.weight.item(),
                                             loaded.bias.item(), test_loss, steps),
        "  %-22s %8.4f %8.4f %11.6f %6d" % ("full-batch (lesson)", lesson.weight.item(),
                                             lesson.bias.item(), lesson_test_loss, 100),
        "", "Predictions for new data:"]
out += ["  X = %.2f -> y = %.4f" % (x.item(), p.item()) for x, p in zip(new_data, predictions)]
out += ["", "Figure saved to minibatch_training.svg"]
write("minibatch_training", out)
