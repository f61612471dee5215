"""The typer commands: thin skins over the library modules (one module per command)."""
