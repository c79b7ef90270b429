"""Dead letters: a failed document is listed with its category, replayed once after a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from pipeline.usecases.dead_letters import list_letters, replay, show_letter
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_server import FakeModelServer
from tests.support.pipeline_helpers import document, process_document, upload
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def test_replay_after_a_fix_is_idempotent_and_keeps_history(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(51)
    fake_model_server.fields = invoice.expected()

    def misconfigured(name: str) -> object:
        raise PermanentError(ErrorCategory.CONFIGURATION, "PAGEMILL_ANTHROPIC_API_KEY is not set")

    broken = replace(deps, extractor_for=misconfigured)  # type: ignore[arg-type]
    doc_id = upload(
        deps, bucket_with_queue.bucket, "needs-key.pdf", render_pdf(invoice), "anthropic"
    )
    corrupt_id = upload(
        deps, bucket_with_queue.bucket, "corrupt.pdf", corrupt_pdf(b"x"), "anthropic"
    )
    assert process_document(broken, doc_id) is DocumentStatus.FAILED
    assert process_document(deps, corrupt_id) is DocumentStatus.FAILED

    with deps.sessions() as session:
        letters = {x.document_id: x for x in list_letters(session)}
    assert letters[doc_id].category == "configuration"
    assert letters[corrupt_id].category == "bad_input"

    # The CLI lists the same.
    out = subprocess.run(
        [sys.executable, "-m", "workers", "dlq", "list", "--format", "json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert {x["document_id"]: x["category"] for x in json.loads(out.stdout)} == {
        doc_id: "configuration",
        corrupt_id: "bad_input",
    }

    # After the fix (a key is configured), the replay processes the document once.
    with transaction(deps.sessions) as session:
        assert replay(session, letters[doc_id].id) == doc_id
    with transaction(deps.sessions) as session:
        assert replay(session, letters[doc_id].id) is None  # a second replay does nothing
    assert document(deps, doc_id).status == "pending"
    assert process_document(deps, doc_id) is DocumentStatus.DONE

    # The corrupt file fails again: a new letter, the replayed one kept as history.
    with transaction(deps.sessions) as session:
        replay(session, letters[corrupt_id].id)
    assert process_document(deps, corrupt_id) is DocumentStatus.FAILED
    with deps.sessions() as session:
        open_letters = list_letters(session)
        detail = show_letter(session, open_letters[0].id)
    assert [x.document_id for x in open_letters] == [corrupt_id]
    assert detail is not None and len(detail["history"]) == 2
    assert detail["history"][0]["replayed_at"] is not None
