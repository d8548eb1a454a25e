"""The `ioc` command line: one typer app, its sub-commands one module each."""
