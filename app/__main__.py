"""`python -m app` runs the `gallery` command (the container entrypoint uses it)."""

from app.cli import main

main()
