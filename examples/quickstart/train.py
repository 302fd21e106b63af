"""Quickstart experiment: a small MLP on scikit-learn's bundled digits (no download).

Every run trains for the same wall-clock budget (`train_seconds`), as in Karpathy's
autoresearch, so configurations are compared at equal compute.

Reads top to bottom: defaults, data, model, training loop, one metrics line per epoch.
Run it by hand with `python train.py`; in a campaign, hpc-agent sets the parameters.
"""

import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import hpc_agent

# --------------------------------------------------------------------------- defaults
cfg = hpc_agent.params(
    {
        "lr": 1e-3,  # Adam learning rate
        "hidden": 64,  # width of the two hidden layers
        "weight_decay": 1e-4,  # AdamW weight decay
        "activation": "relu",  # relu | tanh | gelu
        "train_seconds": 6.0,  # fixed compute budget per run (autoresearch-style)
        "max_epochs": 500,
        "batch_size": 32,
        "seed": 0,
    }
)
torch.manual_seed(cfg["seed"])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cpu":
    torch.set_num_threads(1)  # trials run side by side: one core each
print(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

# --------------------------------------------------------------------------- data
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target, dtype=torch.long)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
x_train, x_val, y_train, y_val = (t.to(device) for t in (x_train, x_val, y_train, y_val))

# --------------------------------------------------------------------------- model
act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}[cfg["activation"]]
model = nn.Sequential(
    nn.Linear(64, cfg["hidden"]),
    act(),
    nn.Linear(cfg["hidden"], cfg["hidden"]),
    act(),
    nn.Linear(cfg["hidden"], 10),
).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
loss_fn = nn.CrossEntropyLoss()

# --------------------------------------------------------------------------- training
t0 = time.time()
for epoch in range(cfg["max_epochs"]):
    model.train()
    perm = torch.randperm(len(x_train), device=device)
    for i in range(0, len(x_train), cfg["batch_size"]):
        idx = perm[i : i + cfg["batch_size"]]
        opt.zero_grad()
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x_val)
        val_loss = loss_fn(logits, y_val).item()
        val_acc = (logits.argmax(1) == y_val).float().mean().item()
    hpc_agent.log(step=epoch, val_loss=val_loss, val_acc=val_acc, train_loss=loss.item())
    # a confirmation run ([confirm] budget_multiplier) trains fidelity() times longer
    if time.time() - t0 > cfg["train_seconds"] * hpc_agent.fidelity() or hpc_agent.time_left() < 2:
        break  # same wall-clock budget for every configuration; never outlive the runner's
print(f"done: val_loss {val_loss:.4f} val_acc {val_acc:.4f} in {time.time() - t0:.1f}s")
