"""The ``spirolm`` command line: thin typer commands over the library, grouped as the CLI groups them."""
