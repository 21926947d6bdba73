"""Writes tests/golden/linear_regression.out: what examples/linear_regression must print, with
every number computed by real PyTorch running the lesson's workflow
(shared/seed/saving_and_loading_models.md, as in shared/reference/seed_workflow.py).

    /usr/bin/python3 scripts/golden_workflow.py     # Debian's python3-torch (1.13)
"""
import os
import torch, torch.nn as nn, torch.optim as optim

torch.manual_seed(42)
weight, bias = 0.7, 0.3
X = torch.arange(0, 1, 0.02).unsqueeze(dim=1)
y = weight * X + bias
tr, va = int(0.7 * len(X)), int(0.85 * len(X))
X_train, y_train = X[:tr], y[:tr]
X_val, y_val = X[tr:va], y[tr:va]
X_test, y_test = X[va:], y[va:]


class LinearRegressionModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1))
        self.bias = nn.Parameter(torch.randn(1))

    def forward(self, x):
        return self.weight * x + self.bias


model = LinearRegressionModel()
criterion = nn.MSELoss()
optimizer = optim.SGD(model.parameters(), lr=0.01)
out = ["Using device: cpu", f"Train: {len(X_train)}, Val: {len(X_val)}, Test: {len(X_test)}", "",
       "Training for 100 epochs..."]
for epoch in range(100):
    model.train()
    loss = criterion(model(X_train), y_train)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    model.eval()
    with torch.no_grad():
        val_loss = criterion(model(X_val), y_val)
    if epoch % 20 == 0:
        out.append(f"Epoch {epoch:3d}: Train Loss = {loss.item():.4f}, Val Loss = {val_loss.item():.4f}")
model.eval()
with torch.no_grad():
    test_loss = criterion(model(X_test), y_test).item()
    preds = model(torch.tensor([[0.25], [0.5], [0.75]]))
out += ["", "Model saved!", "", "Final Results:",
        f"  Learned weight: {model.weight.item():.4f} (true: {weight})",
        f"  Learned bias: {model.bias.item():.4f} (true: {bias})",
        f"  Test loss: {test_loss:.6f}", "", "Predictions for new data:"]
out += [f"  X = {x:.2f} -> y = {p.item():.4f}" for x, p in zip([0.25, 0.5, 0.75], preds)]
out += ["", "Figure saved to training.svg", "", "\u2713 Complete workflow finished!"]

path = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "linear_regression.out")
with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
print(f"wrote {os.path.normpath(path)} (torch {torch.__version__})")
