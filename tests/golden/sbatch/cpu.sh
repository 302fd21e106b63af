#!/bin/bash

# Parameters
#SBATCH --account=my-lab
#SBATCH --array=0-49%50
#SBATCH --cpus-per-task=4
#SBATCH --error=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.err
#SBATCH --job-name=hpca.demo.g0003.abcd1234
#SBATCH --mem=8G
#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.out
#SBATCH --partition=cpu
#SBATCH --signal=B:USR2@60
#SBATCH --time=12

# setup
trap '' USR2; export HPC_AGENT_JOB_START=$(date +%s)  # hpc-agent: see slurm_task
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK

# command
export SUBMITIT_EXECUTOR=slurm
exec /VENV/bin/python -u -m hpc_agent.slurm_task /RESULTS/submitit/g0003.abcd1234/array.tasks.json
