"""Writes tests/golden/linear_regression.out: what examples/linear_regression must print, with
every number computed by real PyTorch running the lesson's workflow
(shared/seed/saving_and_loading_models.md, as in shared/reference/seed_workflow.py), including
its complete checkpoint saved with torch.save and read back with torch.load.

    /usr/bin/python3 scripts/golden_workflow.py     # Debian's python3-torch (1.13)
"""
import datetime, os, re, tempfile
import torch, torch.nn as nn, torch.optim as optim

root = os.path.join(os.path.dirname(__file__), "..")
# The C++ example prints ember's version where the lesson prints PyTorch's.
with open(os.path.join(root, "include", "ember", "version.hpp"), encoding="utf-8") as f:
    ember_version = re.search(r'version = "([^"]+)"', f.read()).group(1)

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
epochs = 100
train_losses, val_losses = [], []
for epoch in range(epochs):
    model.train()
    loss = criterion(model(X_train), y_train)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    train_losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        val_loss = criterion(model(X_val), y_val)
        val_losses.append(val_loss.item())
    if epoch % 20 == 0:
        out.append(f"Epoch {epoch:3d}: Train Loss = {loss.item():.4f}, Val Loss = {val_loss.item():.4f}")

# The lesson's "Saving Complete Checkpoints" and "Loading from Checkpoint", through a real file.
checkpoint = {
    'epoch': epochs,
    'model_state_dict': model.state_dict(),
    'optimizer_state_dict': optimizer.state_dict(),
    'train_loss': train_losses[-1],
    'val_loss': val_losses[-1],
    'hyperparameters': {'learning_rate': 0.01, 'weight': weight, 'bias': bias},
    'timestamp': datetime.datetime.now().isoformat(),
    'pytorch_version': torch.__version__,
}
with tempfile.TemporaryDirectory() as folder:
    torch.save(checkpoint, os.path.join(folder, 'checkpoint.tar'))
    loaded_checkpoint = torch.load(os.path.join(folder, 'checkpoint.tar'))
restored_model = LinearRegressionModel()
restored_model.load_state_dict(loaded_checkpoint['model_state_dict'])
restored_model.eval()
restored_optimizer = optim.SGD(restored_model.parameters(), lr=0.01)
restored_optimizer.load_state_dict(loaded_checkpoint['optimizer_state_dict'])
checkpoint_lines = [
    f"Checkpoint from epoch {loaded_checkpoint['epoch']}",
    f"Train loss: {loaded_checkpoint['train_loss']:.4f}",
    f"Val loss: {loaded_checkpoint['val_loss']:.4f}",
    # The timestamp differs run to run; tests/check_workflow.sh masks it on both sides.
    f"Saved: {loaded_checkpoint['timestamp']}",
    f"ember version: {ember_version}",
    "Model and optimizer restored!",
]
model.eval()
with torch.no_grad():
    test_loss = criterion(model(X_test), y_test).item()
    preds = model(torch.tensor([[0.25], [0.5], [0.75]]))
out += ["", "Model saved!", "Checkpoint saved to 'checkpoint.tar'", ""] + checkpoint_lines
out += ["", "Final Results:",
        f"  Learned weight: {model.weight.item():.4f} (true: {weight})",
        f"  Learned bias: {model.bias.item():.4f} (true: {bias})",
        f"  Test loss: {test_loss:.6f}", "", "Predictions for new data:"]
out += [f"  X = {x:.2f} -> y = {p.item():.4f}" for x, p in zip([0.25, 0.5, 0.75], preds)]
out += ["", "Figure saved to training.svg", "", "\u2713 Complete workflow finished!"]

path = os.path.join(root, "tests", "golden", "linear_regression.out")
with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
print(f"wrote {os.path.normpath(path)} (torch {torch.__version__})")
