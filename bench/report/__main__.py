"""``python -m bench.report``: see ``bench.report``."""

from bench.report.build import main
from imsim.cli import run

if __name__ == "__main__":
    run(main)
