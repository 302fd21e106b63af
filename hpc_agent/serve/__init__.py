"""``hpc-agent serve``: a live, read-only web page of a campaign.

:mod:`~hpc_agent.serve.feed` keeps the campaign's state current from the journal's new bytes
(``Journal.read_from``, as the driver does) and answers what changed since a client's last
look; :mod:`~hpc_agent.serve.pages` builds the trial page, the lineage and the analyses;
:mod:`~hpc_agent.serve.app` is the HTTP side (Starlette on uvicorn, the token gate); the page
itself (HTML, JavaScript, CSS, and uPlot, vendored with its licence) is ``static/``, shipped in
the wheel. Nothing here writes into a results folder or takes the driver's lock.

It may import what reads results (the outputs, the science, the store, the configuration,
the in-job code); never the loop (it drives nothing) nor the CLI.
"""
