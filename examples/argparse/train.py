"""A script as you may already have one: argparse in, a metric printed out, nothing of hpc-agent.

hpc-agent runs it unchanged (campaign.toml): the parameters reach it as command-line options
(`{args}` in [experiment] command expands to `--lr 0.001 --hidden 64 ...`), and the metrics
are read from what it prints (`[experiment] parse`: one regular expression a metric; every
match is a step). A small MLP on scikit-learn's bundled 8x8 digits (no download), a few
seconds on one core. `python train.py --help` lists its options.
"""

import argparse
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

parser = argparse.ArgumentParser(description="An MLP on the 8x8 digits; prints val_loss per epoch.")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--hidden", type=int, default=64, help="width of the two hidden layers")
parser.add_argument("--alpha", type=float, default=1e-4, help="L2 penalty")
parser.add_argument("--activation", choices=["relu", "tanh", "logistic"], default="relu")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

digits = load_digits()
x_train, x_val, y_train, y_val = train_test_split(
    digits.data / 16.0, digits.target, test_size=0.25, random_state=0, stratify=digits.target
)
model = MLPClassifier(
    hidden_layer_sizes=(args.hidden, args.hidden),
    activation=args.activation,
    alpha=args.alpha,
    learning_rate_init=args.lr,
    batch_size=32,
    random_state=args.seed,
)
warnings.simplefilter("ignore", ConvergenceWarning)
for epoch in range(args.epochs):
    model.partial_fit(x_train, y_train, classes=list(range(10)))
    val_loss = log_loss(y_val, model.predict_proba(x_val), labels=list(range(10)))
    val_acc = accuracy_score(y_val, model.predict(x_val))
    print(f"epoch {epoch:3d} | val_loss {val_loss:.4f} | val_acc {val_acc:.4f}", flush=True)
