"""nanolm, code-first: the same small GPT as examples/nanolm, with no search space.

As in Karpathy's autoresearch, the hyperparameters are constants in this file, and the agent
changes them, or anything else here (model, optimizer, schedule, batches), by editing it:
every experiment is a hypothesis and a patch of train.py, applied to the champion's version.
The data and the metric live in prepare.py, which no trial may change: training ends by
saving the model (prepare.save_model), and the campaign's fixed evaluator, `python
prepare.py --evaluate` run from the unmodified code, scores it (val_bpb, and the held-out
test_bpb). Each run trains for TRAIN_SECONDS of wall-clock time (x hpc_agent.fidelity() in
a confirmation run); checkpoints go to hpc_agent.checkpoint_dir(), and a requeued run
resumes there on the same clock. `python train.py` runs it by hand.
"""

import json
import os
import time

import prepare
import torch
import torch.nn.functional as F
from torch import nn

import hpc_agent

# --------------------------------------------------------------------------- hyperparameters
N_LAYER = 2
N_EMBD = 64  # width: N_EMBD // HEAD_DIM attention heads
HEAD_DIM = 32
LR = 1e-2  # AdamW peak learning rate
WEIGHT_DECAY = 0.1  # on the weight matrices only
WARMUP_FRAC = 0.05  # linear warmup over this share of the budget
COOLDOWN_FRAC = 0.5  # linear decay to 0 over the last share of the budget
BATCH_SIZE = 8  # sequences of prepare.SEQ_LEN bytes per step
TRAIN_SECONDS = 60.0  # the fixed training budget, wall-clock (evaluations excluded)
EVAL_EVERY_S = 15.0  # seconds of training between evaluations (and checkpoints)
RESERVE_S = 15.0  # stop training when the trial has less time left than this
SEED = hpc_agent.seed()  # set by hpc-agent: each of [campaign] seeds, and a replicate's own

cfg = {k: v for k, v in globals().items() if k.isupper() and isinstance(v, (int, float))}  # for run.json
torch.manual_seed(SEED)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type == "cpu":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # trials share the cores
else:
    torch.backends.cuda.matmul.allow_tf32 = True
bf16 = device.type == "cuda"  # bfloat16 matmuls on a GPU; full precision on the CPU (faster there)

# --------------------------------------------------------------------------- data
train_data = prepare.load("train", device)
val_data = prepare.load("val", device)
gen = torch.Generator(device=device).manual_seed(SEED)
T = prepare.SEQ_LEN


def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the training text: inputs and the bytes that follow them."""
    i = torch.randint(len(train_data) - T - 1, (BATCH_SIZE, 1), generator=gen, device=device)
    w = train_data[i + torch.arange(T + 1, device=device)].long()
    return w[:, :-1], w[:, 1:]


# --------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, n_embd: int, head_dim: int) -> None:
        super().__init__()
        self.n_head = n_embd // head_dim
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        e = N_EMBD
        self.tok = nn.Embedding(prepare.VOCAB_SIZE, e)
        self.pos = nn.Embedding(T, e)
        self.blocks = nn.Sequential(*[Block(e, HEAD_DIM) for _ in range(N_LAYER)])
        self.ln = nn.LayerNorm(e)
        self.head = nn.Linear(e, prepare.VOCAB_SIZE, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))


model = GPT().to(device)
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR,
    betas=(0.9, 0.95),
)


def lr_at(progress: float) -> float:
    """The learning rate at a share of the training budget: warmup, constant, linear cooldown."""
    warm, cool = WARMUP_FRAC, COOLDOWN_FRAC
    if progress < warm:
        return LR * (progress + 1e-3) / warm
    if progress > 1 - cool:
        return LR * max(0.0, 1 - progress) / cool
    return LR


# --------------------------------------------------------------------------- resume
ckpt_path = hpc_agent.checkpoint_dir() / "last.pt"
step, trained_s = 0, 0.0
if ckpt_path.exists():  # a requeued trial continues where it stopped, on the same clock
    state = torch.load(ckpt_path, map_location="cpu")  # loading copies to the model's device
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    step, trained_s = state["step"], state["trained_s"]
    print(f"resumed at step {step} ({trained_s:.1f}s trained)")


def save_checkpoint() -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state()}
    torch.save({**state, "step": step, "trained_s": trained_s}, ckpt_path.with_suffix(".tmp"))
    os.replace(ckpt_path.with_suffix(".tmp"), ckpt_path)  # a kill mid-save leaves the old one


n_params = sum(p.numel() for p in model.parameters())
data = prepare.manifest()
run = {"config": cfg, "device": str(device), "n_params": n_params, "data": data}
run_path = (hpc_agent.trial_dir() or hpc_agent.checkpoint_dir()) / "run.json"
run_path.write_text(json.dumps(run, indent=2))
print(f"{n_params:,} parameters on {device}; data: {data['bytes']} bytes, sha256 {data['sha256']}")

# --------------------------------------------------------------------------- training
model.train()
losses: list[float] = []
every = EVAL_EVERY_S
next_eval = (trained_s // every + 1) * every
budget_s = TRAIN_SECONDS * hpc_agent.fidelity()  # a confirmation run trains longer
while trained_s < budget_s and hpc_agent.time_left() > RESERVE_S:
    t = time.perf_counter()
    lr = lr_at(trained_s / budget_s)
    for g in opt.param_groups:
        g["lr"] = lr
    x, y = get_batch()
    loss = F.cross_entropy(model(x).float().reshape(-1, prepare.VOCAB_SIZE), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    losses.append(loss.item())  # waits for the GPU: the clock measures the work done
    step += 1
    trained_s += time.perf_counter() - t
    if trained_s >= next_eval and trained_s < budget_s:
        next_eval = (trained_s // every + 1) * every
        val_bpb = prepare.evaluate_bpb(model, val_data)
        hpc_agent.log(step=step, val_bpb=val_bpb, train_loss=sum(losses) / len(losses), train_s=trained_s)
        losses = []
        save_checkpoint()

# --------------------------------------------------------------------------- the model, for the evaluator
save_checkpoint()
if losses:  # none if resumed at the end
    hpc_agent.log(step=step, train_loss=sum(losses) / len(losses), train_s=trained_s)
prepare.save_model(model, hpc_agent.checkpoint_dir())  # `python prepare.py --evaluate` scores it
run.update(step=step, trained_s=trained_s)
run_path.write_text(json.dumps(run, indent=2))
print(f"done: step {step} after {trained_s:.1f}s on {device}; the evaluator scores the saved model")
