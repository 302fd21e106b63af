"""charlm: a tiny character-level GPT (nanoGPT-style, one file) learns to add numbers.

The data is text generated in-process from a seed: "123+458=0581" with the answer's digits
reversed (as in minGPT's adder: the model writes the sum from its lowest digit, the way
carries flow). No download. The model sees the whole problem and is scored on the answer:
`val_loss` is the cross-entropy of the answer characters, `val_acc` the share of validation
problems whose whole answer is right (teacher-forced argmax; equal to greedy decoding's exact
match, since a fully right prefix makes both the same).

Every run trains for the same wall-clock budget (`train_seconds`), as in Karpathy's
autoresearch, checkpoints to hpc_agent.checkpoint_dir() and resumes from it after a requeue.
An LLM planner may edit this file (architecture, optimizer, schedule); the evaluation below
the "evaluation: do not change" line is the campaign's yardstick.
"""

import math
import os
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

import hpc_agent

# --------------------------------------------------------------------------- defaults
cfg = hpc_agent.params(
    {
        "digits": 3,  # operand length: "123+458=0581"
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 64,
        "dropout": 0.0,
        "lr": 3e-3,  # AdamW peak learning rate
        "weight_decay": 0.01,
        "warmup_steps": 100,
        "batch_size": 64,
        "train_seconds": 20.0,  # fixed compute budget per run
        "eval_every": 100,  # steps between evaluations (and checkpoints)
        "seed": 0,
    }
)
torch.manual_seed(cfg["seed"])
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cpu":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

# --------------------------------------------------------------------------- data
VOCAB = "0123456789+="
STOI = {c: i for i, c in enumerate(VOCAB)}
D = cfg["digits"]
SEQ = 2 * D + 2 + D + 1  # "a+b=" then D+1 answer digits
ANSWER_AT = 2 * D + 2  # index of the first answer character


def problem(rng: random.Random) -> list[int]:
    a, b = rng.randrange(10**D), rng.randrange(10**D)
    text = f"{a:0{D}d}+{b:0{D}d}=" + f"{a + b:0{D + 1}d}"[::-1]
    return [STOI[c] for c in text]


def batch(rng: random.Random, n: int) -> torch.Tensor:
    return torch.tensor([problem(rng) for _ in range(n)], dtype=torch.long, device=device)


val_data = batch(random.Random(1_000_003), 2000)  # fixed: the same yardstick for every trial
train_rng = random.Random(cfg["seed"])


# --------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        e = cfg["n_embd"]
        self.tok = nn.Embedding(len(VOCAB), e)
        self.pos = nn.Embedding(SEQ, e)
        self.blocks = nn.Sequential(*[Block(e, cfg["n_head"], cfg["dropout"]) for _ in range(cfg["n_layer"])])
        self.ln = nn.LayerNorm(e)
        self.head = nn.Linear(e, len(VOCAB), bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))


def answer_loss(model: nn.Module, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the answer characters, and which problems are entirely right."""
    logits = model(seqs[:, :-1])[:, ANSWER_AT - 1 :]  # predictions of the answer positions
    target = seqs[:, ANSWER_AT:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    right = (logits.argmax(-1) == target).all(dim=1)
    return loss, right


model = GPT().to(device)
opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

# --------------------------------------------------------------------------- resume
ckpt_path = hpc_agent.checkpoint_dir() / "last.pt"
step, trained_s = 0, 0.0
if ckpt_path.exists():  # a requeued trial continues where it stopped
    state = torch.load(ckpt_path, map_location=device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    step, trained_s = state["step"], state["trained_s"]
    print(f"resumed at step {step} ({trained_s:.1f}s trained)")


def lr_at(s: int) -> float:
    warm = cfg["warmup_steps"]
    return cfg["lr"] * min(1.0, (s + 1) / warm) if warm else cfg["lr"]


# --------------------------------------------------------------------------- evaluation: do not change
@torch.no_grad()
def evaluate() -> tuple[float, float]:
    model.eval()
    loss, right = answer_loss(model, val_data)
    model.train()
    return loss.item(), right.float().mean().item()


# --------------------------------------------------------------------------- training
t0 = time.time() - trained_s
model.train()
train_loss = math.nan
budget_s = cfg["train_seconds"] * hpc_agent.fidelity()  # a confirmation run trains longer
while time.time() - t0 < budget_s and hpc_agent.time_left() > 5:
    for g in opt.param_groups:
        g["lr"] = lr_at(step)
    loss, _ = answer_loss(model, batch(train_rng, cfg["batch_size"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    train_loss = loss.item()
    step += 1
    if step % cfg["eval_every"] == 0:
        val_loss, val_acc = evaluate()
        hpc_agent.log(step=step, val_loss=val_loss, val_acc=val_acc, train_loss=train_loss)
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "trained_s": time.time() - t0,
        }
        torch.save(state, ckpt_path)

val_loss, val_acc = evaluate()
hpc_agent.log(step=step, val_loss=val_loss, val_acc=val_acc, train_loss=train_loss)
print(f"done: step {step} val_loss {val_loss:.4f} val_acc {val_acc:.4f} on {device}")
