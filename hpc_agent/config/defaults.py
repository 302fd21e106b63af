"""Every default of hpc-agent, in one commented block. Units are in the names.

A campaign's defaults (what ``campaign.toml`` may leave out), the scheduler's and the LLM
client's: every module reads them from here, and ``docs/campaign.md`` lists them. Nothing
here imports anything.
"""

# ------------------------------------------------------------------------------- a campaign
DEFAULT_GENERATIONS = 3
DEFAULT_BATCH_SIZE = 4
DEFAULT_TIME_BUDGET_S = 300.0  # one trial's budget (HPC_AGENT_TIME_BUDGET_S)
DEFAULT_KILL_GRACE_S = 10.0  # SIGTERM at the budget, SIGKILL this much later
DEFAULT_MAX_RETRIES = 2  # requeues of an interrupted trial without progress before it is given up
DEFAULT_MAX_PROGRESS_REQUEUES = 50  # requeues after an attempt that wrote a checkpoint
DEFAULT_EVALUATE_TIME_S = 600.0  # [experiment] evaluate: the fixed evaluator's own budget
JOB_OVERHEAD_MIN = 2  # scheduler + interpreter start-up, on top of the budget, in a job's limit

# ------------------------------------------------------------------------------- the schedule
DEFAULT_SCHEDULE = "sync"  # generations as barriers; "async": they overlap (docs/campaign.md says why)
ASYNC_STATUS_INTERVAL_S = 0.25  # async: a slot that frees is noticed within this (one listing a look)
PLANNER_LATENCY_RUNS = 5  # the planner's expected latency: the median of its last this-many plans

# ------------------------------------------------------------------------------- rigor
DEFAULT_RIGOR_K = 2.0  # a challenger is kept when it is better by more than k standard errors
DEFAULT_RIGOR_ALPHA = 0.05  # or, with [rigor] rule = "welch", at this level
DEFAULT_NOISE_RUNS = 3  # with one seed, generation 0's first configuration runs this often (the noise)
DEFAULT_CONFIRM_SEEDS = 3  # [confirm]: runs of each configuration confirmed

# ------------------------------------------------------------------------------- the executors
DEFAULT_POLL_LOCAL_S = 0.5  # local lanes: liveness from /proc, cheap
DEFAULT_POLL_SLURM_S = 30.0  # a real cluster's controller is shared: one squeue per 30 s
DEFAULT_SIGNAL_DELAY_S = 60  # stop a trial this long before its job's time limit (checkpoint)
STATUS_INTERVAL_S = 2.0  # the slowest the driver looks for ended trials (their ended/ notices)
STATUS_SWEEP_S = 10.0  # and reads every open trial's status file (unannounced ends, `running`)

# ------------------------------------------------------------------------------- the LLM planner
DEFAULT_LLM_TEMPERATURE = 0.7
DEFAULT_LLM_MAX_REPAIRS = 2  # re-asks with the validation errors before dropping a proposal
DEFAULT_LLM_MAX_RETRIES = 3  # transport retries (429, 5xx, timeouts) before falling back to TPE
DEFAULT_LLM_TIMEOUT_S = 300.0
DEFAULT_LLM_CONTEXT_TOKENS = 24_000  # prompt budget; the history is summarised to fit
DEFAULT_TPE_STARTUP_TRIALS = 8
DEFAULT_EDIT_FORMAT = "search_replace"  # [planner] edit_format: the patch form the LLM is asked for
DEFAULT_TPE_STRATEGY = "refine"  # chosen by bench/bench_search.py (docs/benchmarks.md)
