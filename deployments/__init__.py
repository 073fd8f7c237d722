"""How it runs: the CLI, the one-command local stack, Prefect deployments, container and Google
Cloud definitions. May import everything."""
