"""`pagemill dlq`: list, show, replay and purge the documents that failed for good."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from pipeline.money import json_default
from workers.cli.shared import OutputFormat, die, session_factory, settings_or_exit

dlq_app = typer.Typer(help="Dead letters: documents that failed for good, kept for replay.")


@dlq_app.command("list")
def dlq_list(
    category: Annotated[str | None, typer.Option(help="Only this error category.")] = None,
    all_letters: Annotated[
        bool, typer.Option("--all", help="Include letters already replayed.")
    ] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.TABLE,
) -> None:
    """List dead letters."""
    from pipeline.usecases.dead_letters import list_letters

    with session_factory(settings_or_exit())() as session:
        letters = list_letters(session, category=category, include_replayed=all_letters)
    if output_format is OutputFormat.JSON:
        typer.echo(json.dumps([asdict(x) for x in letters], default=json_default, indent=2))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    for x in letters:
        replayed = f" replayed {x.replay_count}x" if x.replayed_at else ""
        typer.echo(
            f"{x.id:>5}  doc {x.document_id:<6} {x.category:<22} {x.bucket}/{x.key}  "
            f"{x.message}{replayed}"
        )


@dlq_app.command("show")
def dlq_show(letter_id: Annotated[int, typer.Argument(help="Dead letter id.")]) -> None:
    """Show one dead letter with its document, failure history and provider calls."""
    from pipeline.usecases.dead_letters import show_letter

    with session_factory(settings_or_exit())() as session:
        detail = show_letter(session, letter_id)
    if detail is None:
        die(f"no dead letter {letter_id}")
    typer.echo(json.dumps(detail, default=json_default, indent=2, ensure_ascii=False))


@dlq_app.command("replay")
def dlq_replay(
    letter_id: Annotated[int | None, typer.Argument(help="Dead letter id.")] = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Replay every open letter.")] = False,
    category: Annotated[str | None, typer.Option(help="With --all: only this category.")] = None,
) -> None:
    """Send dead-lettered documents back through the pipeline (each letter replays once)."""
    from pipeline.db.session import transaction
    from pipeline.usecases.dead_letters import open_letter_ids, replay
    from workers.tasks.documents import enqueue_document

    if (letter_id is None) == (not all_letters):
        die("give a dead letter id or --all")
    sessions = session_factory(settings_or_exit())
    with sessions() as session:
        ids = open_letter_ids(session, category) if all_letters else [letter_id]
    replayed = 0
    for one in ids:
        assert one is not None
        with transaction(sessions) as session:
            document_id = replay(session, one)
        if document_id is None:
            typer.echo(f"dead letter {one}: already replayed or unknown", err=True)
            continue
        enqueue_document(document_id)
        replayed += 1
        typer.echo(f"dead letter {one}: document {document_id} re-enqueued")
    typer.echo(f"{replayed} replayed")


@dlq_app.command("purge")
def dlq_purge(
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    replayed_only: Annotated[bool, typer.Option(help="Only letters already replayed.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete dead letters (documents stay failed, with their error)."""
    from pipeline.db.session import transaction
    from pipeline.usecases.dead_letters import purge

    if not yes:
        typer.confirm("delete these dead letters?", abort=True)
    with transaction(session_factory(settings_or_exit())) as session:
        count = purge(session, category=category, replayed_only=replayed_only)
    typer.echo(f"{count} dead letter(s) deleted")
