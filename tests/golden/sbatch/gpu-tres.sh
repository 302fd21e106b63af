#!/bin/bash

# Parameters
#SBATCH --account=my-project
#SBATCH --array=0-49%50
#SBATCH --cpus-per-task=16
#SBATCH --error=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --hint=nomultithread
#SBATCH --job-name=hpca.demo.g0003.abcd1234
#SBATCH --mail-type=FAIL
#SBATCH --mail-user=me@example.edu
#SBATCH --mem=128G
#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/RESULTS/submitit/g0003.abcd1234/%A_%a_0_log.out
#SBATCH --partition=gpu-long
#SBATCH --signal=B:USR2@300
#SBATCH --time=1440

# setup
trap '' USR2; export HPC_AGENT_JOB_START=$(date +%s)  # hpc-agent: see slurm_task
source /etc/profile.d/modules.sh
module load cuda/12.4

# command
export SUBMITIT_EXECUTOR=slurm
exec /VENV/bin/python -u -m hpc_agent.slurm_task /RESULTS/submitit/g0003.abcd1234/array.tasks.json
