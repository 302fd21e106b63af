from hpc_agent.cli import main

main()
