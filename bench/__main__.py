"""``python -m bench`` is the ``bench`` command."""

from bench.cli import cli

if __name__ == "__main__":
    cli(prog_name="bench")
