"""``python -m xaimed``: the same as the ``xaimed`` command."""

from xaimed.cli import app

app(prog_name="xaimed")
