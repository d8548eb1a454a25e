"""`ioc keys`: create, list and revoke API keys (the secret is printed once, at creation)."""

from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ioc.api.keys import SCOPES, KeyRequestError, create_key, list_keys, revoke_key
from ioc.core.settings import get_settings

app = typer.Typer(help="API keys of citizen apps, source systems and agencies (scopes: "
                       + ", ".join(SCOPES) + ").", no_args_is_help=True)
console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    errors.print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(1)


def _db_error(exc: psycopg.Error) -> typer.Exit:
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return _fail("no api_keys table: run `ioc db migrate` first")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _fail(f"database: {first}")


@app.command()
def create(name: Annotated[str, typer.Argument(help="Who holds the key, e.g. so-gtvt.")],
           scope: Annotated[list[str], typer.Option(help="Granted scope (repeatable), e.g."
                                                    " reports:create.")]) -> None:
    """Create a key and print it once: it cannot be shown again."""
    try:
        key, secret = create_key(get_settings(), name, scope)
    except KeyRequestError as exc:
        raise _fail(str(exc)) from None
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    errors.print(f"key {key.name!r} ({key.key_id}) with scopes {', '.join(key.scopes)};"
                 " store it now, it is not shown again:")
    print(secret)  # stdout: only the key, for scripts


@app.command("list")
def list_() -> None:
    """Keys with their scopes and use (never their secrets)."""
    try:
        found = list_keys(get_settings())
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    table = Table("name", "key id", "scopes", "created", "last used", "revoked")
    for k in found:
        table.add_row(k.name, k.key_id, ",".join(k.scopes), f"{k.created_at:%Y-%m-%d %H:%M}",
                      f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-",
                      f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-")
    console.print(table)


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name (or key id).")]) -> None:
    """Revoke a key: it is refused from the next request on."""
    try:
        count = revoke_key(get_settings(), name)
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    if count == 0:
        raise _fail(f"no live key named {name!r}")
    errors.print(f"revoked {count} key(s) named {name!r}")


if __name__ == "__main__":
    app()
