"""Run `python -m repe_tradeoff` as the CLI (also under `accelerate launch -m`)."""
from repe_tradeoff.cli import main

main()
