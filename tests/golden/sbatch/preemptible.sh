#!/bin/bash

# Parameters
#SBATCH --array=0-49%50
#SBATCH --cpus-per-task=4
#SBATCH --error=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.err
#SBATCH --gres=gpu:1
#SBATCH --job-name=hpca.demo.g0003.abcd1234
#SBATCH --mem=32G
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.out
#SBATCH --partition=preempt
#SBATCH --qos=preemptible
#SBATCH --requeue
#SBATCH --signal=B:USR2@180
#SBATCH --time=240

# setup
trap '' USR2; export HPC_AGENT_JOB_START=$(date +%s)  # hpc-agent: see slurm_task

# command
export SUBMITIT_EXECUTOR=slurm
exec /VENV/bin/python -u -m hpc_agent.slurm_task /RESULTS/submitit/g0003.abcd1234/array.tasks.json
